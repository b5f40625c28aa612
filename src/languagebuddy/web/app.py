"""The FastAPI application: health, readiness, metrics, and the routers of each feature.

Routes are thin (verify, parse, hand over); everything they need is on ``app.state.services``,
built once in the lifespan from settings.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from languagebuddy.config import Settings, get_settings
from languagebuddy.logs import get_logger
from languagebuddy.metrics import INBOX_DEPTH, REGISTRY
from languagebuddy.services import MISSING_KEY, Services, start_services
from languagebuddy.store.schema import schema_state

log = get_logger(__name__)


def create_app(settings: Settings | None = None, *, run_worker: bool = True) -> FastAPI:
    """The ASGI app. ``run_worker`` also runs inbox workers inside this process.

    Every process of ``serve --workers N`` builds its own: its own pool, NOTIFY sender,
    LISTEN connection and worker. The schema was migrated once by the parent before the
    processes were started; here it is only checked (one query)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings or get_settings()
        needs_model = run_worker or config.telnyx_enabled or config.vonage_enabled
        if needs_model and not config.openai_api_key:
            from languagebuddy.config import ConfigError

            raise ConfigError(MISSING_KEY)
        services = await start_services(config)
        app.state.services = services
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        if not services.settings.is_sqlite:  # wake workers of other processes at once
            from languagebuddy.inbox.notify import Notifier

            notifier = Notifier(services.engine, sender=services.instance_id)
            services.inbox.on_put(notifier.poke)
            tasks.append(asyncio.create_task(notifier.run(stop)))
        if run_worker:
            from languagebuddy.services import run_worker as run_inbox_worker

            tasks.append(asyncio.create_task(run_inbox_worker(services, stop)))
        log.info(
            "process ready",
            pid=os.getpid(),
            channels=sorted(services.channels),
            worker=run_worker,
            db_pool=None if config.is_sqlite else config.db_pool_size,
        )
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                with suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(task, timeout=30)
            await services.aclose()

    app = FastAPI(title="LanguageBuddy", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        """Readiness: the database answers and holds the schema revision this code needs
        (a replica left behind by a newer deploy's migration must stop taking traffic)."""
        services: Services = request.app.state.services
        try:
            async with services.engine.connect() as conn:
                state = await schema_state(conn)
        except Exception:
            return JSONResponse(
                {"status": "unavailable", "database": "unreachable"}, status_code=503
            )
        if not state.usable:
            body = {
                "status": "unavailable",
                "database": "ok",
                "schema": {"current": state.current, "needed": state.head},
                "detail": state.problem(),
            }
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "database": "ok", "schema": state.current})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        services: Services = request.app.state.services
        with suppress(Exception):
            depth = await services.inbox.depth()
            for status in ("pending", "processing", "done", "dead"):
                INBOX_DEPTH.labels(status).set(depth.get(status, 0))
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    from languagebuddy.web.webhooks import WebhookFastPath
    from languagebuddy.web.webhooks import router as webhooks_router

    app.include_router(webhooks_router)
    from languagebuddy.web.media import router as media_router

    app.include_router(media_router)
    from languagebuddy.web.calls import MEDIA_STREAMS, mount_call_routes

    mount_call_routes(app)
    app.add_middleware(WebhookFastPath, sockets=MEDIA_STREAMS)
    return app
