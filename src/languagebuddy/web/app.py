"""The FastAPI application: health, readiness, metrics, and the routers of each feature.

Routes are thin (verify, parse, hand over); everything they need is on ``app.state.services``,
built once in the lifespan from settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from languagebuddy.config import Settings, get_settings
from languagebuddy.logs import get_logger
from languagebuddy.metrics import INBOX_DEPTH, REGISTRY
from languagebuddy.services import Services, build_services
from languagebuddy.store.db import ping

log = get_logger(__name__)


async def start_services(settings: Settings) -> Services:
    """Build the services; on SQLite, bring the schema up to date (PostgreSQL: `db upgrade`)."""
    services = build_services(settings)
    if settings.is_sqlite:
        from languagebuddy.store.migrate import upgrade

        await upgrade(settings.database_url)
    from languagebuddy.store.keys import ensure_signing_key

    services.signing_key = await ensure_signing_key(services.sessions, settings.signing_key)
    from languagebuddy.services import build_calls

    build_calls(services)
    return services


def create_app(settings: Settings | None = None, *, run_worker: bool = True) -> FastAPI:
    """The ASGI app. ``run_worker`` also runs inbox workers inside this process."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await start_services(settings or get_settings())
        app.state.services = services
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        if not services.settings.is_sqlite:  # wake workers of other processes at once
            from languagebuddy.inbox.notify import Notifier

            notifier = Notifier(services.engine)
            services.inbox.on_put(notifier.poke)
            tasks.append(asyncio.create_task(notifier.run(stop)))
        if run_worker:
            from languagebuddy.services import run_worker as run_inbox_worker

            tasks.append(asyncio.create_task(run_inbox_worker(services, stop)))
        log.info("service started", channels=sorted(services.channels), worker=run_worker)
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
        """Readiness: the database is reachable."""
        services: Services = request.app.state.services
        if await ping(services.engine):
            return JSONResponse({"status": "ready", "database": "ok"})
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)

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
    from languagebuddy.web.calls import mount_call_routes

    mount_call_routes(app)
    app.add_middleware(WebhookFastPath)
    return app
