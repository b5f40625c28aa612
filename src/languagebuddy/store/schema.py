"""Which schema revision the code needs and which one a database has, read cheaply.

Every process checks this at start (and ``/readyz`` on every probe), so it must not cost what
Alembic costs: importing Alembic and building its script directory is ~110 ms, a tenth of a
one-shot ``chat``. The head is read from the migration files' ``revision`` / ``down_revision``
assignments instead (``ast``, no import), and the database's revision with one query.
``tests/integration/test_migrations.py`` checks the head against Alembic's own answer.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

VERSIONS = Path(__file__).with_name("migrations") / "versions"


def _assignments(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                found[target.id] = ast.literal_eval(node.value)
    return found


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The revision this code's migrations end at (exactly one head, or ValueError)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(VERSIONS.glob("*.py")):
        found = _assignments(path)
        if "revision" not in found:
            continue  # __init__.py
        revisions.add(str(found["revision"]))
        down = found.get("down_revision")
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, tuple | list):
            parents.update(str(d) for d in down)
    heads = revisions - parents
    if len(heads) != 1:
        raise ValueError(f"migrations must have exactly one head, found {sorted(heads)}")
    return heads.pop()


def known_revisions() -> set[str]:
    """Every revision this code has a migration for."""
    return {
        str(found["revision"])
        for path in VERSIONS.glob("*.py")
        if "revision" in (found := _assignments(path))
    }


async def current_revision(conn: AsyncConnection) -> str | None:
    """The database's revision, or None when it has no schema yet (no ``alembic_version``).
    Asks whether the table exists first: a failed SELECT would abort a PostgreSQL
    transaction the caller may still want to use."""
    if conn.dialect.name == "postgresql":
        exists = "SELECT to_regclass('alembic_version') IS NOT NULL"
    else:
        exists = (
            "SELECT count(*) > 0 FROM sqlite_master"
            " WHERE type = 'table' AND name = 'alembic_version'"
        )
    if not (await conn.execute(text(exists))).scalar():
        return None
    row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
    return row[0] if row else None


@dataclass(frozen=True)
class SchemaState:
    """What a database's revision means for this code."""

    current: str | None
    head: str

    @property
    def usable(self) -> bool:
        return self.current == self.head

    @property
    def newer(self) -> bool:
        """The database was migrated by a newer LanguageBuddy than this one."""
        return self.current is not None and self.current not in known_revisions()

    def problem(self) -> str | None:
        """One line saying why this code cannot use the schema, or None."""
        if self.usable:
            return None
        if self.current is None:
            return "the database has no schema yet: run `languagebuddy db upgrade`"
        if self.newer:
            return (
                f"the database schema is at revision {self.current}, newer than this version "
                f"of LanguageBuddy knows (latest {self.head}): upgrade LanguageBuddy"
            )
        return (
            f"the database schema is at revision {self.current}, this version needs "
            f"{self.head}: run `languagebuddy db upgrade`"
        )


async def schema_state(conn: AsyncConnection) -> SchemaState:
    return SchemaState(current=await current_revision(conn), head=head_revision())
