"""``languagebuddy serve``: checks before listening, what the operator is told, and uvicorn in
one process or several.

With ``--workers N`` the parent binds the port once, migrates the schema once (under the
migration lock) and then starts N uvicorn processes that share the listening socket; each
builds its own app (pool, NOTIFY sender, LISTEN connection, in-process worker), so one
machine's cores all take webhooks and all handle events. Several workers claiming from one
inbox is already safe (leases, ``SKIP LOCKED``), and a NOTIFY from any process wakes them all.
"""

from __future__ import annotations

import asyncio
import functools
import socket

from languagebuddy.config import Settings
from languagebuddy.logs import configure_logging, get_logger
from languagebuddy.startup import (
    bind_listener,
    check_database,
    database_label,
    freeze_startup_heap,
    require_openai_key,
)

log = get_logger(__name__)


def prepare(settings: Settings, host: str, port: int, *, run_worker: bool) -> socket.socket:
    """Everything that can stop ``serve`` before it takes traffic, in the order an operator
    would fix it; returns the bound socket. Raises ``StartupError``."""
    if settings.telnyx_enabled or settings.vonage_enabled:
        require_openai_key(settings, "phone calls (a call provider is configured)")
    if settings.vonage_enabled:  # its REST calls are signed with this key: check it now
        from languagebuddy.calls.vonage import load_private_key

        load_private_key(settings.vonage_private_key_path)
    sock = bind_listener(host, port)
    try:
        state = asyncio.run(check_database(settings, migrate=True))
    except BaseException:
        sock.close()
        raise
    log.info("database ready", database=database_label(settings.database_url), schema=state.current)
    return sock


def report(settings: Settings, host: str, port: int, *, workers: int, run_worker: bool) -> None:
    """Say where we listen, where the platforms reach us, and what is on and off and why."""
    from languagebuddy.channels.setup import integrations

    local = host in ("127.0.0.1", "localhost", "::1")
    log.info(
        "listening",
        address=f"http://{f'[{host}]' if ':' in host else host}:{port}",
        processes=workers,
        reach=(
            "this machine only; --host 0.0.0.0 (or LB_HOST) to accept other machines"
            if local
            else "every interface; --host 127.0.0.1 (or LB_HOST) for this machine only"
        ),
    )
    public = settings.public_base_url
    fields: dict[str, str] = {"url": public}
    if not public.startswith("https://"):
        fields["warning"] = "platforms only call https URLs: set PUBLIC_BASE_URL"
    log.info("public url", **fields)
    for spec in integrations(settings):
        if spec.enabled:
            extra = {"warning": spec.hint} if spec.hint else {}
            log.info(f"{spec.kind} enabled", name=spec.name, webhook=public + spec.path, **extra)
        else:
            log.info(f"{spec.kind} off", name=spec.name, why=spec.hint)
    if run_worker:
        log.info(
            "worker in process",
            concurrency=settings.concurrency,
            model=settings.chat_model,
            openai=settings.openai_base_url or "https://api.openai.com/v1",
        )
    elif not settings.openai_api_key:
        log.warning(
            "OPENAI_API_KEY is not set: messages are stored but not answered until it is; set "
            "it in the environment or .env (see .env.example) and restart"
        )
    else:
        log.info("no worker in this process (--no-worker): run `languagebuddy worker` beside it")


def build_app(settings: Settings, run_worker: bool):  # type: ignore[no-untyped-def]
    """The app factory each uvicorn process calls (a module function, so that it pickles into
    the processes ``--workers`` spawns)."""
    from languagebuddy.web.app import create_app

    configure_logging(settings.log_level)
    app = create_app(settings, run_worker=run_worker)
    freeze_startup_heap()
    return app


def run(settings: Settings, sock: socket.socket, *, workers: int, run_worker: bool) -> bool:
    """Serve on ``sock`` until a signal; False when the app never started."""
    import uvicorn

    if workers > 1:  # the processes share the pool: N must not multiply the connections
        share = max(2, -(-settings.db_pool_size // workers))
        settings = settings.model_copy(update={"db_pool_size": share})
    config = uvicorn.Config(
        functools.partial(build_app, settings, run_worker),
        factory=True,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips="*",
        log_level="warning",
        access_log=False,
        # Call media sockets: audio does not compress, deflate would only burn CPU per frame.
        ws_per_message_deflate=False,
    )
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[sock]).run()
        return True
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return server.started
