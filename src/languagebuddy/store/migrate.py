"""Alembic, driven from code: ``languagebuddy db upgrade`` and the migration at start.

Migrations run under a lock so that several processes starting together (a deploy of three
``serve`` replicas, ``serve --workers 4``) migrate once and the others wait and find the schema
done: a PostgreSQL session advisory lock, or on SQLite an exclusive ``flock`` of the database
file. The revision is read again once the lock is held, so the one that waited does nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from languagebuddy.logs import get_logger
from languagebuddy.store.db import make_engine
from languagebuddy.store.schema import current_revision, head_revision

log = get_logger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed 64-bit number no other tool on the database uses: "LBMIGRAT" in ASCII.
MIGRATION_LOCK_KEY = 0x4C424D4947524154


@dataclass(frozen=True)
class MigrationResult:
    before: str | None
    after: str | None

    def describe(self) -> str:
        """What happened, for the operator: created / upgraded from X to Y / already at Y."""
        if self.before == self.after:
            return f"the schema is already at revision {self.after}, the latest"
        if self.before is None:
            return f"created the schema at revision {self.after}"
        return f"upgraded the schema from revision {self.before} to {self.after}"


def alembic_config(database_url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def _alembic_upgrade(connection: Connection, database_url: str, revision: str) -> None:
    """Alembic's upgrade over our connection (env.py uses it instead of its own engine)."""
    from alembic import command

    config = alembic_config(database_url)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def migrate(database_url: str, revision: str = "head") -> MigrationResult:
    """Bring the schema to ``revision`` under the migration lock; says what it did."""
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn, _migration_lock(conn, database_url):
            before = await current_revision(conn)
            await conn.commit()
            target = head_revision() if revision == "head" else revision
            if before != target:
                await conn.run_sync(_alembic_upgrade, database_url, revision)
                await conn.commit()
            after = await current_revision(conn)
            await conn.commit()
    finally:
        await engine.dispose()
    if before != after:
        log.info("schema migrated", before=before, after=after)
    return MigrationResult(before, after)


async def upgrade(database_url: str, revision: str = "head") -> MigrationResult:
    """The name tests and benchmarks know: ``migrate``."""
    return await migrate(database_url, revision)


@asynccontextmanager
async def _migration_lock(conn: AsyncConnection, database_url: str) -> AsyncIterator[None]:
    if conn.dialect.name == "postgresql":
        async with _advisory_lock(conn):
            yield
        return
    path = make_url(database_url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        yield  # a private in-memory database: nobody to race with
        return
    await conn.execute(text("SELECT 1"))  # opens (creates) the file before we lock it
    await conn.commit()
    fd = os.open(path, os.O_RDONLY)
    try:
        if not _try_flock(fd):
            log.info("another process is migrating the schema; waiting for it")
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@asynccontextmanager
async def _advisory_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    """A session-level advisory lock: it outlives the transactions the migration commits."""
    params = {"key": MIGRATION_LOCK_KEY}
    got = (await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), params)).scalar()
    if not got:
        log.info("another process is migrating the schema; waiting for it")
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), params)
    await conn.commit()
    try:
        yield
    finally:
        await conn.rollback()
        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), params)
        await conn.commit()
