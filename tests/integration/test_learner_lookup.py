"""How an operator names a learner for `learner export|delete`, on both databases."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from languagebuddy.store import repos
from languagebuddy.store.db import make_sessionmaker


async def test_learner_by_id_identity_or_phone(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine).begin() as session:
        learner, _ = await repos.find_or_create_learner(
            session, "whatsapp", "5511987654321", phone_e164="+5511987654321"
        )
        await repos.find_or_create_learner(
            session, "telegram", "777", phone_e164="+5511987654321"
        )  # the same person on Telegram: one learner
        for reference in (
            str(learner.id),
            "whatsapp:5511987654321",
            "telegram:777",
            "Telegram:777",
            "+5511987654321",
            "+55 11 98765-4321",
        ):
            found = await repos.resolve_learner(session, reference)
            assert found is not None and found.id == learner.id, reference
        for unknown in ("999999", "telegram:778", "+15550000000", "nobody", "+55abc", ":1"):
            assert await repos.resolve_learner(session, unknown) is None, unknown


def test_times_read_as_iso_utc() -> None:
    assert repos.iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert repos.iso_time(1764000000.25) == "2025-11-24T16:00:00.250Z"
    assert repos.iso_time(None) is None
