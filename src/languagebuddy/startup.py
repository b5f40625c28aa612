"""Start-up checks shared by every command that opens the database or a port.

Each failure an operator can meet on a first run (database down, login refused, a SQLite file
in a folder that does not exist, a schema too old or too new, the port taken, no OpenAI key)
becomes a ``StartupError`` whose message is one line naming the setting and the fix; the CLI
prints it and exits 2. Nothing here is needed on the hot path: it runs once per process.

Importing this module is cheap (SQLAlchemy and the store are imported where used), so that a
command can turn the collector off before its big imports (``startup_imports``).
"""

from __future__ import annotations

import errno
import gc
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from languagebuddy.config import Settings
from languagebuddy.logs import get_logger

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from languagebuddy.store.migrate import MigrationResult
    from languagebuddy.store.schema import SchemaState

log = get_logger(__name__)


def make_url(database_url: str) -> URL:
    from sqlalchemy.engine import make_url as parse

    return parse(database_url)


CONNECT_TIMEOUT_SECONDS = 10.0


class StartupError(RuntimeError):
    """The process cannot start; the message is the one line to print."""


# --------------------------------------------------------------------------- the database


def database_label(database_url: str) -> str:
    """Where the database is, without the password: 'PostgreSQL at db:5432/lb', 'SQLite ./x'."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database or ':memory:'}"
    where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    return f"PostgreSQL at {where}"


def sqlite_path(database_url: str) -> Path | None:
    """The SQLite file a URL names (None for PostgreSQL or an in-memory database)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def check_sqlite_folder(database_url: str) -> None:
    """SQLite creates the file but not its folder; say so instead of 'unable to open'."""
    path = sqlite_path(database_url)
    if path is None:
        return
    folder = path.absolute().parent
    if not folder.is_dir():
        raise StartupError(
            f"DATABASE_URL: the folder {folder} of the SQLite file {path} does not exist: "
            f"create it (mkdir -p {folder}) or point DATABASE_URL elsewhere"
        )


def explain_database_error(exc: BaseException, database_url: str) -> str:
    """One line for a failure to connect, naming DATABASE_URL and what to change."""
    where = database_label(database_url)
    url = make_url(database_url)
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain)
    if "InvalidPasswordError" in names:
        return (
            f"DATABASE_URL: {where} refused the password for user {url.username!r}: "
            "fix the user and password in DATABASE_URL"
        )
    if "InvalidAuthorizationSpecificationError" in names:
        detail = next(
            (str(e) for e in chain if type(e).__name__ == "InvalidAuthorizationSpecificationError"),
            "login refused",
        )
        return (
            f"DATABASE_URL: {where} refused the login ({detail}): fix the user in "
            "DATABASE_URL or create that role"
        )
    if "InvalidCatalogNameError" in names:
        return (
            f"DATABASE_URL: {where} has no database {url.database!r}: create it "
            f"(createdb {url.database}) or fix the name in DATABASE_URL"
        )
    if "TooManyConnectionsError" in names:
        return f"DATABASE_URL: {where} has no free connection slots: raise max_connections"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return f"DATABASE_URL: cannot resolve the host {url.host!r}: fix the host in DATABASE_URL"
    if any(isinstance(e, TimeoutError) for e in chain):
        return (
            f"DATABASE_URL: no answer from {where} within {CONNECT_TIMEOUT_SECONDS:.0f} s: "
            "check the host, the port and the firewall"
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Errno 111" in text:
        return (
            f"DATABASE_URL: cannot reach {where} (connection refused): start PostgreSQL or "
            "fix the host and port in DATABASE_URL"
        )
    if any(isinstance(e, OSError) for e in chain):
        first = next(e for e in chain if isinstance(e, OSError))
        return f"DATABASE_URL: cannot reach {where} ({first}): check DATABASE_URL"
    if "unable to open database file" in text:
        return (
            f"DATABASE_URL: cannot open the {where}: check that its folder exists and is writable"
        )
    last = chain[-1]
    return f"DATABASE_URL: cannot use {where} ({type(last).__name__}: {last}): check DATABASE_URL"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (SQLAlchemy wraps the driver's error)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


async def read_schema(settings: Settings) -> SchemaState:
    """Connect and read the schema revision. Raises ``StartupError``."""
    from languagebuddy.store.db import make_engine
    from languagebuddy.store.schema import schema_state

    check_sqlite_folder(settings.database_url)
    connect_args = {} if settings.is_sqlite else {"timeout": CONNECT_TIMEOUT_SECONDS}
    engine = make_engine(settings.database_url, pool_size=1, **connect_args)
    try:
        async with engine.connect() as conn:
            return await schema_state(conn)
    except Exception as exc:
        raise StartupError(explain_database_error(exc, settings.database_url)) from None
    finally:
        await engine.dispose()


async def upgrade_database(settings: Settings) -> MigrationResult:
    """`db upgrade`, and the migration at start: under the migration lock, says what it did."""
    from languagebuddy.store.migrate import migrate

    state = await read_schema(settings)
    if state.newer:
        raise StartupError(state.problem() or "")
    try:
        return await migrate(settings.database_url)
    except Exception as exc:
        raise StartupError(
            f"migrating the {database_label(settings.database_url)} failed "
            f"({type(exc).__name__}: {exc}); nothing is served until `languagebuddy db upgrade` "
            "succeeds"
        ) from None


async def check_database(settings: Settings, *, migrate: bool) -> SchemaState:
    """The database answers and holds the schema this code needs; with ``migrate`` (and
    ``LB_MIGRATE_ON_START``, on by default) it is migrated first when behind. Raises
    ``StartupError`` with the one line to print. A SQLite file that is not there is only
    created when it is also migrated: a refusal leaves nothing behind."""
    may_migrate = migrate and settings.migrate_on_start
    why_not = " (LB_MIGRATE_ON_START is off)" if migrate and not may_migrate else ""
    path = sqlite_path(settings.database_url)
    if not may_migrate and path is not None and not path.exists():
        check_sqlite_folder(settings.database_url)
        raise StartupError(
            f"DATABASE_URL: the SQLite file {path} does not exist: check DATABASE_URL, or "
            f"create it with `languagebuddy db upgrade`{why_not}"
        )
    state = await read_schema(settings)
    if state.usable:
        return state
    if state.newer or not may_migrate:
        raise StartupError((state.problem() or "") + ("" if state.newer else why_not))
    from languagebuddy.store.schema import SchemaState

    result = await upgrade_database(settings)
    return SchemaState(current=result.after, head=state.head)


# --------------------------------------------------------------------------- the port


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket ``serve`` hands to uvicorn (one per machine, shared by its worker
    processes), bound here so that a taken port is one clear line, not a log and exit 1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(_bind_problem(exc, host, port)) from None
    except OverflowError:
        sock.close()
        raise StartupError(f"--port {port}: not a port number (1-65535)") from None
    # Listening at once: a request that arrives while the app starts waits in the backlog
    # (answered when ready) instead of being refused.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _bind_problem(exc: OSError, host: str, port: int) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve --host {host!r}: use an IP address such as 127.0.0.1"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another `languagebuddy serve`?): stop "
            "it or choose another port with --port or LB_PORT"
        )
    if exc.errno == errno.EACCES:
        return (
            f"no permission to listen on port {port}: ports below 1024 need privileges; use "
            "--port 8000 behind a reverse proxy"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{host} is not an address of this machine: use --host 127.0.0.1 (this machine "
            "only) or --host 0.0.0.0 (every interface)"
        )
    return f"cannot listen on {host}:{port} ({exc.strerror or exc}): check --host and --port"


# --------------------------------------------------------------------------- the model


def require_openai_key(settings: Settings, needed_by: str, otherwise: str = "") -> None:
    """The model is needed and there is no key: say so now, not after a timeout."""
    if not settings.openai_api_key:
        raise StartupError(
            f"OPENAI_API_KEY is not set: {needed_by} needs the model; set it in the "
            f"environment or .env (see .env.example){otherwise}"
        )


# --------------------------------------------------------------------------- the process


@contextmanager
def startup_imports() -> Iterator[None]:
    """No cyclic collection while the big imports run: they allocate ~100k objects that all
    live as long as the process, and the collections they trigger find nothing to free
    (~10% of a one-shot `chat`)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def freeze_startup_heap(*, collect: bool = True) -> None:
    """Keep what start-up built (SQLAlchemy, pydantic, FastAPI, the SDKs: it lives as long as
    the process) out of the cyclic collector. Left in, every full collection walked it again:
    pauses of 115-135 ms every few seconds under load, which were the webhooks' p99; and a
    short-lived command spent ~0.4 s collecting it at exit. ``collect=False`` skips the
    collection before the freeze (~70 ms) where a little garbage kept for life does not
    matter (a one-shot command)."""
    if collect:
        gc.collect()
    gc.freeze()
