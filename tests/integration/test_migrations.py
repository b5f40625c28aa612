"""Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from languagebuddy.store.db import make_engine
from languagebuddy.store.migrate import upgrade
from languagebuddy.store.models import Base
from languagebuddy.store.schema import head_revision


async def test_upgrade_matches_models(any_db_url: str) -> None:
    assert (await upgrade(any_db_url)).before is None
    assert (await upgrade(any_db_url)).before == head_revision()  # idempotent
    engine = make_engine(any_db_url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    await engine.dispose()
    assert diff == []


def test_db_upgrade_command_says_what_it_did(sqlite_url: str) -> None:
    """Created, upgraded from one revision to the next, already at the latest."""
    import asyncio

    said = []
    head = head_revision()
    for step in range(3):
        if step == 1:  # back to the first revision, so that the next run upgrades
            engine = make_engine(sqlite_url)
            asyncio.run(_drop_schema(engine))
            asyncio.run(upgrade(sqlite_url, "0001"))
        result = subprocess.run(
            [sys.executable, "-m", "languagebuddy.cli", "db", "upgrade"],
            env={"DATABASE_URL": sqlite_url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        said.append(result.stdout.strip().split(": ", 1)[1])
    assert said == [
        f"created the schema at revision {head}",
        f"upgraded the schema from revision 0001 to {head}",
        f"the schema is already at revision {head}, the latest",
    ]


async def _drop_schema(engine) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.execute(text("DROP TABLE alembic_version"))
    await engine.dispose()


def test_cheap_head_agrees_with_alembic() -> None:
    """``store/schema.py`` reads the head without Alembic; it must name the same one."""
    from alembic.script import ScriptDirectory

    from languagebuddy.store.migrate import alembic_config
    from languagebuddy.store.schema import head_revision

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert head_revision() == script.get_current_head()


def test_migration_result_says_what_happened() -> None:
    from languagebuddy.store.migrate import MigrationResult

    assert MigrationResult(None, "0001").describe() == "created the schema at revision 0001"
    assert MigrationResult("0001", "0002").describe() == (
        "upgraded the schema from revision 0001 to 0002"
    )
    assert MigrationResult("0002", "0002").describe() == (
        "the schema is already at revision 0002, the latest"
    )


async def test_a_schema_this_code_cannot_use_is_refused(any_db_url: str) -> None:
    """Newer than this code knows: never migrated, refused with one line; `/readyz` too."""
    import pytest
    from sqlalchemy import text

    from languagebuddy.config import load_settings
    from languagebuddy.startup import StartupError, check_database

    settings = load_settings(database_url=any_db_url)
    await check_database(settings, migrate=True)  # empty: migrated at start
    engine = make_engine(any_db_url)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    await engine.dispose()
    with pytest.raises(StartupError, match="9999, newer than this version"):
        await check_database(settings, migrate=True)
