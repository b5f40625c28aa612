"""Repository functions for phone calls: the ``calls`` table and what a call leaves behind.

Like ``repos``, every function takes an ``AsyncSession`` and leaves committing to the caller.
The statements that decide a race (a redelivered webhook, a replayed stream token) are single
conditional statements, so two processes can never both win.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from languagebuddy.store.models import Call, Identity, Turn, VocabularyItem


async def open_call(
    session: AsyncSession,
    provider: str,
    provider_call_id: str,
    *,
    from_e164: str | None,
    to_e164: str | None,
    provider_session_id: str | None = None,
) -> tuple[Call, bool]:
    """The call's row, created on first sight; ``True`` when this delivery created it."""
    postgres = session.bind.dialect.name == "postgresql"
    insert = pg_insert if postgres else sqlite_insert
    statement = (
        insert(Call)
        .values(
            provider=provider,
            provider_call_id=provider_call_id,
            provider_session_id=provider_session_id,
            from_e164=from_e164,
            to_e164=to_e164,
            status="ringing",
            created_at=time.time(),
            input_tokens=0,
            output_tokens=0,
            audio_in_seconds=0.0,
            audio_out_seconds=0.0,
        )
        .on_conflict_do_nothing(index_elements=["provider", "provider_call_id"])
        .returning(Call.id)
    )
    created = (await session.execute(statement)).first() is not None
    call = await find_call(session, provider, provider_call_id)
    assert call is not None
    return call, created


async def find_call(session: AsyncSession, provider: str, provider_call_id: str) -> Call | None:
    row = await session.execute(
        select(Call).where(Call.provider == provider, Call.provider_call_id == provider_call_id)
    )
    return row.scalar_one_or_none()


async def get_call(session: AsyncSession, call_id: int) -> Call | None:
    return await session.get(Call, call_id, populate_existing=True)


async def update_call(session: AsyncSession, call_id: int, **fields: Any) -> None:
    await session.execute(update(Call).where(Call.id == call_id).values(**fields))


async def claim_stream(session: AsyncSession, call_id: int, nonce: str) -> bool:
    """Mark the call's stream token as used; ``False`` if it was used already (or never
    issued for this call). One conditional UPDATE: exactly one connection can win."""
    result = await session.execute(
        update(Call)
        .where(
            Call.id == call_id,
            Call.stream_nonce == nonce,
            Call.stream_claimed_at.is_(None),
            Call.status != "ended",
        )
        .values(stream_claimed_at=time.time(), status="live")
    )
    return result.rowcount == 1


async def end_call(session: AsyncSession, call_id: int, **fields: Any) -> bool:
    """Record the end of a call once: the first caller sets ``ended_at``; later ones only add
    the fields still empty (the webhook's hang-up cause after the stream's own end). A
    ``duration_s`` the provider gives (what it bills) replaces our own reckoning."""
    call = await get_call(session, call_id)
    if call is None:
        return False
    billed = fields.pop("duration_s", None)
    first = call.ended_at is None
    if first:
        call.ended_at = fields.pop("ended_at", None) or time.time()
        call.status = "ended"
        started = call.answered_at or call.created_at
        call.duration_s = round(max(0.0, call.ended_at - started), 3)
    if billed is not None:
        call.duration_s = float(billed)
    for key, value in fields.items():
        if value is not None and getattr(call, key) in (None, 0, 0.0):
            setattr(call, key, value)
    return first


async def mark_memory_saved(session: AsyncSession, call_id: int) -> bool:
    """Claim the right to write the call's transcript into memory (once per call)."""
    result = await session.execute(
        update(Call)
        .where(Call.id == call_id, Call.memory_saved_at.is_(None))
        .values(memory_saved_at=time.time())
    )
    return result.rowcount == 1


async def messaging_identity(
    session: AsyncSession, learner_id: int, channels: list[str]
) -> Identity | None:
    """The learner's identity on the messaging channel they used last (among ``channels``),
    where a call's recap should go; ``None`` when they only ever called."""
    if not channels:
        return None
    last = await session.execute(
        select(Turn.channel)
        .where(Turn.learner_id == learner_id, Turn.direction == "in", Turn.channel.in_(channels))
        .order_by(Turn.id.desc())
        .limit(1)
    )
    preferred = last.scalar_one_or_none()
    rows = await session.execute(
        select(Identity)
        .where(Identity.learner_id == learner_id, Identity.channel.in_(channels))
        .order_by(Identity.id.desc())
    )
    identities = list(rows.scalars())
    for identity in identities:
        if identity.channel == preferred:
            return identity
    return identities[0] if identities else None


async def words_since(
    session: AsyncSession, learner_id: int, since: float, limit: int = 20
) -> list[VocabularyItem]:
    """Vocabulary saved or revisited since ``since`` (a call's new words, for its recap)."""
    rows = await session.execute(
        select(VocabularyItem)
        .where(VocabularyItem.learner_id == learner_id, VocabularyItem.updated_at >= since)
        .order_by(VocabularyItem.updated_at)
        .limit(limit)
    )
    return list(rows.scalars())
