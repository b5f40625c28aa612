"""Alembic, driven from code: ``languagebuddy db upgrade`` and the SQLite auto-upgrade on serve."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_sync(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations. Alembic's env runs its own event loop, so it goes to a thread."""
    await asyncio.to_thread(upgrade_sync, database_url, revision)
