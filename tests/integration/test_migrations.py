"""Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from languagebuddy.store.db import make_engine
from languagebuddy.store.migrate import upgrade
from languagebuddy.store.models import Base


async def test_upgrade_matches_models(any_db_url: str) -> None:
    await upgrade(any_db_url)
    await upgrade(any_db_url)  # idempotent
    engine = make_engine(any_db_url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    await engine.dispose()
    assert diff == []


def test_db_upgrade_command(sqlite_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "languagebuddy.cli", "db", "upgrade"],
        env={"DATABASE_URL": sqlite_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
