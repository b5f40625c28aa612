"""Repository functions: the only code that writes SQL about learners and their memory.

Functions take an ``AsyncSession`` and leave committing to the caller, so a caller can make
several writes atomic (a reply's turns and its outbox parts, for example).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from languagebuddy.store.models import (
    Call,
    Identity,
    InboxItem,
    Learner,
    OutboxPart,
    SentMessage,
    Turn,
    Usage,
    VocabularyItem,
)


async def find_learner(session: AsyncSession, channel: str, channel_user_id: str) -> Learner | None:
    row = await session.execute(
        select(Learner)
        .join(Identity, Identity.learner_id == Learner.id)
        .where(Identity.channel == channel, Identity.channel_user_id == channel_user_id)
    )
    return row.scalar_one_or_none()


async def find_learner_by_phone(session: AsyncSession, phone_e164: str) -> Learner | None:
    row = await session.execute(select(Learner).where(Learner.phone_e164 == phone_e164))
    return row.scalar_one_or_none()


async def find_or_create_learner(
    session: AsyncSession,
    channel: str,
    channel_user_id: str,
    *,
    phone_e164: str | None = None,
    display_name: str | None = None,
    language_hint: str | None = None,
) -> tuple[Learner, bool]:
    """The learner behind a channel identity, created on first contact. A known phone number
    links the new identity to the existing learner (one learner, one memory)."""
    learner = await find_learner(session, channel, channel_user_id)
    if learner is not None:
        if display_name and not learner.display_name:
            learner.display_name = display_name
        return learner, False
    created = False
    if phone_e164:
        learner = await find_learner_by_phone(session, phone_e164)
    if learner is None:
        learner = Learner(
            display_name=display_name,
            phone_e164=phone_e164,
            interface_language=language_hint,
        )
        session.add(learner)
        created = True
    try:
        async with session.begin_nested():
            await session.flush()
            session.add(
                Identity(learner_id=learner.id, channel=channel, channel_user_id=channel_user_id)
            )
            await session.flush()
    except IntegrityError:
        # Another worker created the same identity first: use theirs.
        existing = await find_learner(session, channel, channel_user_id)
        if existing is None:
            raise
        return existing, False
    return learner, created


async def learner_id_for(
    conn: AsyncConnection,
    channel: str,
    channel_user_id: str,
    *,
    phone_e164: str | None = None,
    display_name: str | None = None,
    language_hint: str | None = None,
) -> tuple[int, bool, str]:
    """(learner id, created, voice mode) for a channel identity, on the connection of the
    caller's transaction. Known learners (every message but the first) take one Core select;
    first contact goes through ``find_or_create_learner`` (phone linking, races)."""
    row = (
        await conn.execute(
            select(Identity.learner_id, Learner.display_name, Learner.voice_mode)
            .join(Learner, Learner.id == Identity.learner_id)
            .where(Identity.channel == channel, Identity.channel_user_id == channel_user_id)
        )
    ).first()
    if row is not None:
        if display_name and not row.display_name:
            await conn.execute(
                update(Learner)
                .where(Learner.id == row.learner_id)
                .values(display_name=display_name)
            )
        return row.learner_id, False, row.voice_mode or "auto"
    session = AsyncSession(bind=conn, expire_on_commit=False)
    learner, created = await find_or_create_learner(
        session,
        channel,
        channel_user_id,
        phone_e164=phone_e164,
        display_name=display_name,
        language_hint=language_hint,
    )
    await session.flush()
    return learner.id, created, learner.voice_mode or "auto"


async def get_learner(session: AsyncSession, learner_id: int) -> Learner | None:
    return await session.get(Learner, learner_id)


async def update_learner(session: AsyncSession, learner_id: int, **fields: Any) -> None:
    allowed = {
        "display_name",
        "native_language",
        "target_language",
        "level",
        "voice_mode",
        "interface_language",
        "summary",
        "summary_upto_turn_id",
        "phone_e164",
    }
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"not learner profile fields: {sorted(unknown)}")
    await session.execute(
        update(Learner).where(Learner.id == learner_id).values(**fields, updated_at=time.time())
    )


async def add_turn(session: AsyncSession, **fields: Any) -> Turn:
    turn = Turn(**fields)
    session.add(turn)
    await session.flush()
    return turn


async def recent_turns(session: AsyncSession, learner_id: int, limit: int) -> list[Turn]:
    """The last ``limit`` turns, oldest first."""
    rows = await session.execute(
        select(Turn).where(Turn.learner_id == learner_id).order_by(Turn.id.desc()).limit(limit)
    )
    return list(reversed(rows.scalars().all()))


async def turns_between(
    session: AsyncSession, learner_id: int, after_id: int | None, upto_id: int
) -> list[Turn]:
    """Turns with ``after_id < id <= upto_id``, oldest first (for the rolling summary)."""
    stmt = select(Turn).where(Turn.learner_id == learner_id, Turn.id <= upto_id)
    if after_id is not None:
        stmt = stmt.where(Turn.id > after_id)
    rows = await session.execute(stmt.order_by(Turn.id))
    return list(rows.scalars().all())


async def count_turns_after(session: AsyncSession, learner_id: int, after_id: int | None) -> int:
    stmt = select(func.count()).select_from(Turn).where(Turn.learner_id == learner_id)
    if after_id is not None:
        stmt = stmt.where(Turn.id > after_id)
    return int((await session.execute(stmt)).scalar_one())


async def clear_memory(session: AsyncSession, learner_id: int) -> None:
    """Forget the conversation (``/reset``) but keep the profile and vocabulary."""
    await _delete_sent_messages(session, learner_id)
    await session.execute(delete(Turn).where(Turn.learner_id == learner_id))
    await update_learner(session, learner_id, summary=None, summary_upto_turn_id=None)


async def upsert_vocabulary(
    session: AsyncSession,
    learner_id: int,
    language: str,
    term: str,
    meaning: str | None = None,
    example: str | None = None,
) -> VocabularyItem:
    term = term.strip()[:200]
    row = await session.execute(
        select(VocabularyItem).where(
            VocabularyItem.learner_id == learner_id,
            VocabularyItem.language == language,
            VocabularyItem.term == term,
        )
    )
    item = row.scalar_one_or_none()
    if item is None:
        item = VocabularyItem(
            learner_id=learner_id, language=language, term=term, meaning=meaning, example=example
        )
        session.add(item)
    else:
        item.times_seen += 1
        item.meaning = meaning or item.meaning
        item.example = example or item.example
    await session.flush()
    return item


async def vocabulary(
    session: AsyncSession, learner_id: int, limit: int = 50
) -> list[VocabularyItem]:
    rows = await session.execute(
        select(VocabularyItem)
        .where(VocabularyItem.learner_id == learner_id)
        .order_by(VocabularyItem.updated_at.desc())
        .limit(limit)
    )
    return list(rows.scalars().all())


async def record_usage(
    session: AsyncSession,
    learner_id: int | None,
    kind: str,
    model: str,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    audio_seconds: float = 0.0,
) -> None:
    session.add(
        Usage(
            learner_id=learner_id,
            kind=kind,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            audio_seconds=audio_seconds,
        )
    )


async def record_usage_rows(
    session: AsyncSession, learner_id: int, rows: list[dict[str, Any]]
) -> None:
    """Usage rows of one turn in one statement. Raises IntegrityError when the learner no
    longer exists (erased by ``/forget-me`` while the model was answering)."""
    now = time.time()
    await session.execute(
        insert(Usage),
        [{"learner_id": learner_id, "created_at": now, "audio_seconds": 0.0, **r} for r in rows],
    )


async def set_turn_status(
    session: AsyncSession, provider_message_id: str, status: str, error_code: str | None
) -> int:
    """Apply a delivery receipt to the outbound turn with that provider id; returns rows hit.

    Receipts can arrive out of order (read before delivered): a later state never goes back.
    """
    rank = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
    rows = await session.execute(
        select(Turn).where(Turn.provider_message_id == provider_message_id)
    )
    hit = 0
    for turn in rows.scalars():
        if rank.get(status, 0) >= rank.get(turn.status or "", 0):
            turn.status = status
            turn.error_code = error_code
        hit += 1
    return hit


async def outbox_parts(session: AsyncSession, inbox_item_id: int) -> list[OutboxPart]:
    rows = await session.execute(
        select(OutboxPart).where(OutboxPart.inbox_item_id == inbox_item_id).order_by(OutboxPart.seq)
    )
    return list(rows.scalars().all())


LEARNER_REFERENCE_HELP = (
    "the internal id (42), channel:user-id (telegram:123456789, whatsapp:5511987654321) or "
    "a phone number in E.164 (+5511987654321)"
)
_PHONE_SEPARATORS = re.compile(r"[\s().-]")


async def resolve_learner(session: AsyncSession, reference: str) -> Learner | None:
    """The learner an operator names: ``LEARNER_REFERENCE_HELP`` lists the forms."""
    ref = reference.strip()
    if ref.isdigit():
        return await session.get(Learner, int(ref))
    if ref.startswith("+"):
        phone = "+" + _PHONE_SEPARATORS.sub("", ref[1:])
        return await find_learner_by_phone(session, phone) if phone[1:].isdigit() else None
    channel, sep, user = ref.partition(":")
    if sep and channel and user:
        return await find_learner(session, channel.lower(), user)
    return None


def iso_time(epoch: float | None) -> str | None:
    """Epoch seconds (how the schema stores times) as ISO 8601 UTC, for people to read."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def export_learner(session: AsyncSession, learner_id: int) -> dict[str, Any] | None:
    """Everything stored about a learner, as plain JSON-able data (times in ISO 8601 UTC)."""
    learner = await session.get(Learner, learner_id)
    if learner is None:
        return None

    def plain(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column in obj.__table__.columns:
            if column.key in skip:
                continue
            value = getattr(obj, column.key)
            out[column.key] = iso_time(value) if column.key.endswith("_at") else value
        return out

    identities = await session.execute(select(Identity).where(Identity.learner_id == learner_id))
    turns = await session.execute(
        select(Turn).where(Turn.learner_id == learner_id).order_by(Turn.id)
    )
    vocab = await session.execute(
        select(VocabularyItem).where(VocabularyItem.learner_id == learner_id)
    )
    usage = await session.execute(select(Usage).where(Usage.learner_id == learner_id))
    calls = await session.execute(select(Call).where(Call.learner_id == learner_id))
    return {
        "learner": plain(learner),
        "identities": [plain(i) for i in identities.scalars()],
        "turns": [plain(t) for t in turns.scalars()],
        "vocabulary": [plain(v) for v in vocab.scalars()],
        "usage": [plain(u) for u in usage.scalars()],
        "calls": [plain(c, skip=("stream_nonce",)) for c in calls.scalars()],
    }


async def delete_learner(session: AsyncSession, learner_id: int) -> bool:
    """Erase a learner everywhere: profile, identities, turns, vocabulary, usage, and the
    payloads of their inbox items (which may hold message text)."""
    learner = await session.get(Learner, learner_id)
    if learner is None:
        return False
    identities = await session.execute(
        select(Identity.channel, Identity.channel_user_id).where(Identity.learner_id == learner_id)
    )
    order_keys = [f"{channel}:{user}" for channel, user in identities.all()]
    await _delete_sent_messages(session, learner_id)
    for model in (Turn, VocabularyItem, Usage, Call, Identity):
        await session.execute(delete(model).where(model.learner_id == learner_id))
    if order_keys:
        await session.execute(
            update(InboxItem)
            .where(InboxItem.order_key.in_(order_keys), InboxItem.status.in_(("done", "dead")))
            .values(payload={"erased": True})
        )
        done_ids = select(InboxItem.id).where(
            InboxItem.order_key.in_(order_keys), InboxItem.status.in_(("done", "dead"))
        )
        await session.execute(delete(OutboxPart).where(OutboxPart.inbox_item_id.in_(done_ids)))
    await session.execute(delete(Learner).where(Learner.id == learner_id))
    return True


# --- the buddy's message ids, reactions, deletions ------------------------------------------


async def _delete_sent_messages(session: AsyncSession, learner_id: int) -> None:
    """Explicitly, not by cascade: SQLite enforces foreign keys only per connection."""
    turns = select(Turn.id).where(Turn.learner_id == learner_id)
    await session.execute(delete(SentMessage).where(SentMessage.turn_id.in_(turns)))


async def buddy_turn(
    session: AsyncSession, channel: str, chat_id: str, provider_message_id: str
) -> Turn | None:
    """The buddy's turn that platform message belongs to, if it is one of ours."""
    row = await session.execute(
        select(Turn)
        .join(SentMessage, SentMessage.turn_id == Turn.id)
        .where(
            SentMessage.channel == channel,
            SentMessage.chat_id == chat_id,
            SentMessage.provider_message_id == provider_message_id,
        )
        .limit(1)
    )
    return row.scalars().first()


async def learner_turns_for(
    session: AsyncSession, channel: str, provider_message_id: str, inbox_item_ids: list[int]
) -> list[Turn]:
    """The learner's logged turns for a platform message: by its id, or by the inbox items that
    answered it (a photo of a set is logged on the set's first item)."""
    condition = Turn.provider_message_id == provider_message_id
    if inbox_item_ids:
        condition = condition | Turn.inbox_item_id.in_(inbox_item_ids)
    rows = await session.execute(
        select(Turn).where(Turn.channel == channel, Turn.direction == "in", condition)
    )
    return list(rows.scalars().all())


async def answers_to(session: AsyncSession, inbox_item_ids: list[int]) -> list[Turn]:
    """The buddy's turns that answered those inbox items."""
    if not inbox_item_ids:
        return []
    rows = await session.execute(
        select(Turn).where(Turn.inbox_item_id.in_(inbox_item_ids), Turn.direction == "out")
    )
    return list(rows.scalars().all())


async def blank_outbox(session: AsyncSession, inbox_item_ids: list[int]) -> None:
    """Drop the stored text of replies already sent (what is unsent must still go out)."""
    if inbox_item_ids:
        await session.execute(
            update(OutboxPart)
            .where(OutboxPart.inbox_item_id.in_(inbox_item_ids), OutboxPart.sent_at.is_not(None))
            .values(body="")
        )


def redact_turn(turn: Turn) -> None:
    """Forget what a deleted message said; the turn stays, so the buddy's answer keeps its
    place in the conversation."""
    turn.text = None
    turn.transcript = None
    turn.media = None
    turn.redacted_at = time.time()


async def move_identity(
    session: AsyncSession,
    channel: str,
    old_user_id: str,
    new_user_id: str | None,
    *,
    phone_e164: str | None,
) -> Learner | None:
    """A learner's account moved (a new phone number): the old identity becomes the new one and
    the phone follows, so the next message finds the same learner and memory. If the new id
    already wrote first (and got a fresh learner), that learner is folded into this one."""
    learner = await find_learner(session, channel, old_user_id)
    if learner is None:
        return None
    if new_user_id:
        newer = await find_learner(session, channel, new_user_id)
        if newer is not None and newer.id != learner.id:
            await _merge_learner(session, newer.id, into=learner.id)
        await session.execute(
            delete(Identity).where(
                Identity.channel == channel, Identity.channel_user_id == new_user_id
            )
        )
        await session.execute(
            update(Identity)
            .where(Identity.channel == channel, Identity.channel_user_id == old_user_id)
            .values(channel_user_id=new_user_id)
        )
        await session.execute(
            update(SentMessage)
            .where(SentMessage.channel == channel, SentMessage.chat_id == old_user_id)
            .values(chat_id=new_user_id)
        )
    if phone_e164 and phone_e164 != learner.phone_e164:
        holder = await find_learner_by_phone(session, phone_e164)
        if holder is not None and holder.id != learner.id:
            await _merge_learner(session, holder.id, into=learner.id)
        await update_learner(session, learner.id, phone_e164=phone_e164)
    await session.flush()
    return learner


async def _merge_learner(session: AsyncSession, source_id: int, *, into: int) -> None:
    """Move a learner's log, usage, words and other identities to another and delete it."""
    for model in (Turn, Usage):
        await session.execute(
            update(model).where(model.learner_id == source_id).values(learner_id=into)
        )
    taken = select(VocabularyItem.term).where(VocabularyItem.learner_id == into)
    await session.execute(
        update(VocabularyItem)
        .where(VocabularyItem.learner_id == source_id, VocabularyItem.term.not_in(taken))
        .values(learner_id=into)
    )
    await session.execute(delete(VocabularyItem).where(VocabularyItem.learner_id == source_id))
    await session.execute(
        update(Identity).where(Identity.learner_id == source_id).values(learner_id=into)
    )
    await session.execute(delete(Learner).where(Learner.id == source_id))
    await session.flush()
