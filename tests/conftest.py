"""Shared fixtures: real databases (a SQLite file and the machine's PostgreSQL) and settings.

PostgreSQL tests run in a database of their own, created for this test session and dropped at
the end, so parallel runs on one machine never see each other's rows. ``LB_TEST_POSTGRES_URL``
points at the server; without a reachable server the PostgreSQL cases are skipped locally and fail
in CI (``CI=true``), where the database is part of the contract.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from languagebuddy.store.db import create_all, make_engine
from tests.fakes.openai import FakeOpenAI

POSTGRES_ADMIN_URL = os.environ.get(
    "LB_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


async def _admin(statement: str) -> None:
    import asyncpg

    dsn = POSTGRES_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session."""
    name = f"lb_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}"


async def _reset_postgres(url: str) -> None:
    engine = make_engine(url)
    from languagebuddy.store.models import Base

    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        # and alembic's version table, so the next upgrade starts from zero
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using this runs once on SQLite and once on PostgreSQL, on an empty schema."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    asyncio.run(_reset_postgres(url))
    yield url


@pytest.fixture
async def engine(any_db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(any_db_url)
    await create_all(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(sqlite_url)
    await create_all(eng)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="module")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    """One fake OpenAI per test module (starting a server per test would dominate the time)."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_openai(fake_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The module's fake OpenAI with no script and no recorded requests left by other tests."""
    fake_openai_server.reset()
    yield fake_openai_server
    fake_openai_server.reset()
