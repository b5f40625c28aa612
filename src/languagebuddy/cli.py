"""The `languagebuddy` command (typer): serve, worker, chat, db, doctor, webhooks, learner.

Thin on purpose: each command reads settings, calls one function, and turns the expected
failures into one line and an exit code (2: cannot start, fix the setting named; 1: the
command ran and something failed). Start-up checks live in ``startup.py``.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from languagebuddy.config import ConfigError, Settings, load_settings
from languagebuddy.logs import configure_logging

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help="LanguageBuddy service.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
learner_app = typer.Typer(no_args_is_help=True, help="A learner's data.")
app.add_typer(db_app, name="db")
app.add_typer(learner_app, name="learner")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def startup_errors() -> Iterator[None]:
    """A start-up failure is one line and exit 2, never a traceback."""
    from languagebuddy.startup import StartupError

    try:
        yield
    except (StartupError, ConfigError) as exc:
        raise fail(str(exc)) from None


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
    host: Annotated[
        str | None,
        typer.Option(help="Interface to bind [default: LB_HOST or 127.0.0.1; 0.0.0.0 for all]."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: LB_PORT or 8000].")] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes sharing the port.")
    ] = 1,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not run a worker.")] = False,
) -> None:
    """Run the HTTP + WebSocket server (and an in-process worker unless --no-worker)."""
    from languagebuddy.web import server

    settings = _settings()
    host = host or settings.serve_host
    port = port if port is not None else settings.serve_port
    # Without a model key the service still starts (the first `make run` on a fresh machine):
    # webhooks are stored, nothing is lost, and the log says what is missing.
    run_worker = not no_worker and bool(settings.openai_api_key)
    with startup_errors():
        sock = server.prepare(settings, host, port, run_worker=run_worker)
    server.report(settings, host, port, workers=workers, run_worker=run_worker)
    if not server.run(settings, sock, workers=workers, run_worker=run_worker):
        raise fail("the server did not start (see the log above)")


@app.command()
def worker() -> None:
    """Run only the inbox worker (scale out beside `serve --no-worker`)."""
    settings = _settings()

    async def main() -> None:
        from languagebuddy.services import run_worker, start_services
        from languagebuddy.startup import freeze_startup_heap, require_openai_key

        require_openai_key(settings, "the worker")
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

    with startup_errors():
        asyncio.run(main())


def _existing_file(option: str, path: Path | None) -> None:
    if path is not None and not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise fail(f"{option} {path}: the file {what}")


@app.command()
def chat(
    message: Annotated[
        str | None, typer.Option(help="Send one message and print the reply.")
    ] = None,
    image: Annotated[
        Path | None, typer.Option(help="Send a photo (with --message as caption).")
    ] = None,
    voice: Annotated[Path | None, typer.Option(help="Send a voice note.")] = None,
    user: Annotated[
        str | None, typer.Option(help="Learner id in the terminal [default: your login].")
    ] = None,
    drop_earlier: Annotated[
        bool,
        typer.Option(
            "--drop-earlier", help="Drop this learner's unanswered earlier messages first."
        ),
    ] = False,
) -> None:
    """Talk to the buddy in the terminal, through the same pipeline as every channel."""
    _existing_file("--image", image)
    _existing_file("--voice", voice)
    if image is not None and voice is not None:
        raise fail("give --image or --voice, not both")
    settings = _settings()
    if "log_level" not in settings.model_fields_set:  # the learner reads the talk, not our logs
        configure_logging("error")
    learner_key = user or getpass.getuser()
    from languagebuddy.startup import freeze_startup_heap, require_openai_key, startup_imports

    with startup_errors():
        require_openai_key(settings, "chat")
        with startup_imports():
            from languagebuddy import cli_chat
        freeze_startup_heap(collect=False)
        try:
            if message is None and image is None and voice is None:
                code = cli_chat.run_interactive(settings, learner_key, drop_earlier=drop_earlier)
            else:
                event = cli_chat.make_event(learner_key, message, image, voice)
                code = asyncio.run(
                    cli_chat.run_once(settings, learner_key, event, drop_earlier=drop_earlier)
                )
        except KeyboardInterrupt:
            code = 130
    raise typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (and say what changed)."""
    settings = _settings()
    from languagebuddy.startup import database_label, upgrade_database

    with startup_errors():
        result = asyncio.run(upgrade_database(settings))
    typer.echo(f"{database_label(settings.database_url)}: {result.describe()}")


@app.command()
def doctor() -> None:
    """Check configuration, database, codecs, the model and each configured provider."""
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
    from languagebuddy.channels.setup import RegistrationError, describe_webhooks, register_telegram

    if register is None:
        typer.echo(describe_webhooks(settings))
        return
    if register != "telegram":
        raise fail(f"cannot register {register!r}: only telegram supports it")
    try:
        typer.echo(asyncio.run(register_telegram(settings)))
    except RegistrationError as exc:
        raise fail(str(exc), 2 if exc.config else 1) from None


LEARNER_ARGUMENT = typer.Argument(
    metavar="LEARNER",
    help="The internal id (42), channel:user-id (telegram:123456789) or a phone (+5511987654321).",
)


def _on_learner(settings: Settings, reference: str, action: Callable[..., Any]) -> Any:
    """Run ``action(session, learner_id)`` in one transaction; exit 1 when nobody matches."""
    from languagebuddy.store import repos
    from languagebuddy.store.db import make_engine, make_sessionmaker

    async def main() -> Any:
        from languagebuddy.startup import check_database

        await check_database(settings, migrate=False)
        engine = make_engine(settings.database_url)
        try:
            async with make_sessionmaker(engine).begin() as session:
                learner = await repos.resolve_learner(session, reference)
                if learner is None:
                    return None
                return await action(session, learner.id)
        finally:
            await engine.dispose()

    with startup_errors():
        result = asyncio.run(main())
    if result is None:
        raise fail(f"no learner {reference!r}; name one by {repos.LEARNER_REFERENCE_HELP}", 1)
    return result


@learner_app.command("export")
def learner_export(reference: Annotated[str, LEARNER_ARGUMENT]) -> None:
    """Print everything stored about a learner as JSON (times in ISO 8601 UTC)."""
    settings = _settings()
    from languagebuddy.store import repos

    data = _on_learner(settings, reference, repos.export_learner)
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@learner_app.command("delete")
def learner_delete(reference: Annotated[str, LEARNER_ARGUMENT]) -> None:
    """Erase a learner everywhere."""
    settings = _settings()
    from languagebuddy.store import repos

    async def erase(session: Any, learner_id: int) -> int | None:
        return learner_id if await repos.delete_learner(session, learner_id) else None

    learner_id = _on_learner(settings, reference, erase)
    typer.echo(f"learner {learner_id} ({reference}) erased")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
