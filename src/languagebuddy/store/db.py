"""Engine and session factory. SQLite runs in WAL mode with a busy timeout so that the web
process and workers can write side by side."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from languagebuddy.store.models import Base

# PostgreSQL connections kept per process (as many again may open under a burst).
DEFAULT_POOL_SIZE = 20


def make_engine(
    url: str, *, pool_size: int = DEFAULT_POOL_SIZE, **connect_args: object
) -> AsyncEngine:
    """An async engine tuned for the backend the URL names."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30, **connect_args})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # No pre-ping: it costs round trips on every checkout of the webhook path. A connection
    # that died with the server fails its statement instead and is discarded by the pool; the
    # webhook then answers 503 and the platform redelivers, the worker retries the item.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def create_all(engine: AsyncEngine) -> None:
    """Create the schema directly (tests that do not exercise migrations)."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
