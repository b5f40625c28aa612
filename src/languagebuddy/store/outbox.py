"""The outbox of reply parts, in SQLAlchemy Core on a plain connection.

The outbox is what makes replies exactly-once across crashes: a reply's parts are written in
the same transaction as the conversation turns, before anything is sent, and each part is
marked sent as it is delivered. These statements run for every message, so they skip the ORM
(its sessions, identity map and unit of work cost more CPU than the statements themselves) and
each function takes the ``AsyncConnection`` of a transaction its caller opened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from languagebuddy.store.models import OutboxPart, SentMessage, Turn

_PARTS = OutboxPart.__table__
_TURNS = Turn.__table__
_SENT = SentMessage.__table__


@dataclass
class Part:
    """One stored part of a reply. A voice reply's parts also carry what is needed to finish
    it after a crash: the transcript of a ``heard`` part (``meta``), and the platform's handle
    on a ``voice`` part's uploaded audio (``media_ref``). The audio itself is read on demand
    (:func:`stored_audio`): it is not needed to resume anything else."""

    id: int
    seq: int
    kind: str
    body: str
    sent_at: float | None = None
    meta: dict[str, Any] | None = None
    media_ref: str | None = None
    media_ref_until: float | None = None


_PART_COLUMNS = (
    _PARTS.c.id,
    _PARTS.c.seq,
    _PARTS.c.kind,
    _PARTS.c.body,
    _PARTS.c.sent_at,
    _PARTS.c.meta,
    _PARTS.c.media_ref,
    _PARTS.c.media_ref_until,
)


async def parts_of(conn: AsyncConnection, inbox_item_id: int) -> list[Part]:
    """The parts already stored for an inbox item, in order (empty on a first attempt)."""
    rows = await conn.execute(
        select(*_PART_COLUMNS).where(_PARTS.c.inbox_item_id == inbox_item_id).order_by(_PARTS.c.seq)
    )
    return [Part(*row) for row in rows]


async def store_part(
    conn: AsyncConnection,
    inbox_item_id: int,
    seq: int,
    kind: str,
    body: str,
    meta: dict[str, Any] | None = None,
) -> Part:
    """One part stored on its own, ahead of the reply (the "You said" line of a voice note)."""
    result = await conn.execute(
        insert(_PARTS)
        .values(inbox_item_id=inbox_item_id, seq=seq, kind=kind, body=body, meta=meta)
        .returning(_PARTS.c.id)
    )
    return Part(id=result.scalar_one(), seq=seq, kind=kind, body=body, meta=meta)


async def update_part(conn: AsyncConnection, part_id: int, **values: Any) -> None:
    """Store what a voice part gained since (its audio, its media handle) or settle it."""
    await conn.execute(update(_PARTS).where(_PARTS.c.id == part_id).values(**values))


async def stored_audio(conn: AsyncConnection, part_id: int) -> tuple[bytes, str, float] | None:
    """(audio, MIME type, seconds) of a voice part whose note was stored, else None."""
    row = (
        await conn.execute(
            select(_PARTS.c.audio, _PARTS.c.audio_mime, _PARTS.c.duration_s).where(
                _PARTS.c.id == part_id
            )
        )
    ).first()
    if row is None or row.audio is None:
        return None
    return row.audio, row.audio_mime or "audio/ogg", row.duration_s or 0.0


async def store_reply(
    conn: AsyncConnection,
    inbox_item_id: int,
    turns: list[dict[str, Any]],
    parts: list[tuple[str, str]],
    *,
    first_seq: int = 0,
) -> list[Part]:
    """Insert the exchange's turns (``turns``: Turn column values, in order) and the reply's
    parts (``(kind, body)`` each, numbered from ``first_seq``); returns the parts as stored."""
    now = time.time()
    for turn in turns:  # one statement each: their columns differ (NULL where not given)
        await conn.execute(
            insert(_TURNS).values(inbox_item_id=inbox_item_id, created_at=now, **turn)
        )
    if not parts:
        return []
    rows = [
        {"inbox_item_id": inbox_item_id, "seq": seq, "kind": kind, "body": body}
        for seq, (kind, body) in enumerate(parts, start=first_seq)
    ]
    result = await conn.execute(
        insert(_PARTS).returning(_PARTS.c.id, sort_by_parameter_order=True), rows
    )
    return [
        Part(id=part_id, seq=row["seq"], kind=row["kind"], body=row["body"])
        for (part_id,), row in zip(result.all(), rows, strict=True)
    ]


async def mark_sent(
    conn: AsyncConnection, inbox_item_id: int, parts: list[Part], provider_ids: list[str]
) -> int | None:
    """Record what was delivered: each part's provider id, and the reply's turn as sent (with
    the first provider id, which delivery receipts will name). Returns that turn's id. A
    delivered voice note's audio is dropped: nothing will need it again."""
    now = time.time()
    for part, provider_id in zip(parts, provider_ids, strict=False):
        values: dict[str, Any] = {"sent_at": now, "provider_message_id": provider_id}
        if part.kind == "voice":
            values["audio"] = None
        await conn.execute(update(_PARTS).where(_PARTS.c.id == part.id).values(**values))
        part.sent_at = now
    if not provider_ids:
        return None
    result = await conn.execute(
        update(_TURNS)
        .where(_TURNS.c.inbox_item_id == inbox_item_id, _TURNS.c.direction == "out")
        .values(
            status="sent",
            provider_message_id=func.coalesce(_TURNS.c.provider_message_id, provider_ids[0]),
        )
        .returning(_TURNS.c.id)
    )
    return result.scalar()


async def record_sent(
    conn: AsyncConnection, channel: str, chat_id: str, turn_id: int, provider_ids: list[str]
) -> None:
    """Remember every platform id of a buddy's turn (a part split into several messages has
    them comma-joined), so that a reaction or a reply to any of them finds the turn. An id
    already known (a resend after a crash) is left as it is."""
    wanted = [i for joined in provider_ids for i in (joined or "").split(",") if 0 < len(i) <= 200]
    if not wanted:
        return
    now = time.time()
    rows = [
        {
            "channel": channel,
            "chat_id": chat_id,
            "provider_message_id": provider_id,
            "turn_id": turn_id,
            "created_at": now,
        }
        for provider_id in dict.fromkeys(wanted)
    ]
    insert_ = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(
        insert_(_SENT).on_conflict_do_nothing(
            index_elements=["channel", "chat_id", "provider_message_id"]
        ),
        rows,
    )
