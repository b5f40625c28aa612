"""The `languagebuddy` command (typer): serve, worker, chat, db, doctor, webhooks, learner."""

from __future__ import annotations

import asyncio
import gc
import getpass
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from languagebuddy.config import ConfigError, Settings, load_settings
from languagebuddy.logs import configure_logging

app = typer.Typer(no_args_is_help=True, add_completion=False, help="LanguageBuddy service.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
learner_app = typer.Typer(no_args_is_help=True, help="A learner's data.")
app.add_typer(db_app, name="db")
app.add_typer(learner_app, name="learner")


def freeze_startup_heap() -> None:
    """Keep what start-up built (SQLAlchemy, pydantic, FastAPI, the SDKs: it lives as long as
    the process) out of the cyclic collector. Left in, every full collection walked it again:
    pauses of 115-135 ms every few seconds under load, which were the webhooks' p99."""
    gc.collect()
    gc.freeze()


def _settings() -> Settings:
    """Load settings or exit with the one-line reason."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level)
    return settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not run a worker.")] = False,
) -> None:
    """Run the HTTP + WebSocket server (and an in-process worker unless --no-worker)."""
    import uvicorn

    from languagebuddy.web.app import create_app

    settings = _settings()
    web_app = create_app(settings, run_worker=not no_worker)
    freeze_startup_heap()
    uvicorn.run(
        web_app,
        host=host,
        port=port,
        proxy_headers=True,
        forwarded_allow_ips="*",
        log_level="warning",
        access_log=False,
        # Call media sockets: audio does not compress, deflate would only burn CPU per frame.
        ws_per_message_deflate=False,
    )


@app.command()
def worker() -> None:
    """Run only the inbox worker (scale out beside `serve --no-worker`)."""
    settings = _settings()

    async def main() -> None:
        from languagebuddy.services import run_worker
        from languagebuddy.web.app import start_services

        services = await start_services(settings)
        freeze_startup_heap()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_worker(services, stop)
        finally:
            await services.aclose()

    asyncio.run(main())


@app.command()
def chat(
    message: Annotated[
        str | None, typer.Option(help="Send one message and print the reply.")
    ] = None,
    image: Annotated[
        Path | None, typer.Option(help="Send a photo (with --message as caption).")
    ] = None,
    voice: Annotated[Path | None, typer.Option(help="Send a voice note.")] = None,
    user: Annotated[str | None, typer.Option(help="Learner id in the terminal.")] = None,
) -> None:
    """Talk to the buddy in the terminal, through the same pipeline as every channel."""
    settings = _settings()
    if "log_level" not in settings.model_fields_set:  # the learner reads the talk, not our logs
        configure_logging("warning")
    learner_key = user or getpass.getuser()
    from languagebuddy.cli_chat import run_chat

    code = asyncio.run(run_chat(settings, learner_key, message=message, image=image, voice=voice))
    raise typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    settings = _settings()
    from languagebuddy.store.migrate import upgrade_sync

    upgrade_sync(settings.database_url)
    typer.echo("database is up to date")


@app.command()
def doctor() -> None:
    """Check configuration, database, codecs and each configured provider."""
    settings = _settings()
    from languagebuddy.doctor import run_doctor

    ok = asyncio.run(run_doctor(settings))
    raise typer.Exit(0 if ok else 1)


@app.command()
def webhooks(
    register: Annotated[
        str | None, typer.Option(help="Register the webhook with a platform (telegram).")
    ] = None,
) -> None:
    """Print every webhook / stream URL to paste into the platform consoles."""
    settings = _settings()
    from languagebuddy.channels.setup import describe_webhooks, register_telegram

    typer.echo(describe_webhooks(settings))
    if register is None:
        return
    if register != "telegram":
        typer.echo(f"cannot register {register!r}: only telegram supports it", err=True)
        raise typer.Exit(2)
    typer.echo(asyncio.run(register_telegram(settings)))


async def _with_session(settings: Settings, action):  # type: ignore[no-untyped-def]
    from languagebuddy.store.db import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            return await action(session)
    finally:
        await engine.dispose()


@learner_app.command("export")
def learner_export(learner_id: int) -> None:
    """Print everything stored about a learner as JSON."""
    settings = _settings()
    from languagebuddy.store import repos

    data = asyncio.run(_with_session(settings, lambda s: repos.export_learner(s, learner_id)))
    if data is None:
        typer.echo(f"no learner {learner_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@learner_app.command("delete")
def learner_delete(learner_id: int) -> None:
    """Erase a learner everywhere."""
    settings = _settings()
    from languagebuddy.store import repos

    if not asyncio.run(_with_session(settings, lambda s: repos.delete_learner(s, learner_id))):
        typer.echo(f"no learner {learner_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"learner {learner_id} erased")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
