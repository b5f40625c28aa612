"""The storage under channel traffic, on real SQLite and PostgreSQL: what follows an item in the
inbox and taking it with the reply (atomically), blanking a deleted message everywhere it is
stored, the buddy's message ids, and moving a learner to a new phone number."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from languagebuddy.events import InboundEvent, Kind
from languagebuddy.inbox.queue import DONE, PENDING, Inbox
from languagebuddy.store import outbox, repos
from languagebuddy.store.models import Identity, InboxItem, Learner, Turn, Usage

LEASE = 30.0


def photo(n: int, user: str = "551100000001", album: str | None = None) -> InboundEvent:
    return InboundEvent(
        channel="whatsapp",
        event_id=f"wamid.{n}",
        message_id=f"wamid.{n}",
        user_id=user,
        kind=Kind.IMAGE,
        media_id=str(n),
        caption=f"caption {n}",
        album_id=album,
    )


async def status(engine: AsyncEngine) -> dict[str, tuple[str, int | None]]:
    async with async_sessionmaker(engine)() as session:
        items = (await session.execute(select(InboxItem).order_by(InboxItem.id))).scalars()
        return {i.dedupe_key: (i.status, i.merged_into) for i in items}


async def test_following_shows_the_learners_next_items_and_take_is_atomic(
    engine: AsyncEngine,
) -> None:
    inbox = Inbox(engine)
    await inbox.put_many([photo(1), photo(2), photo(3, user="other"), photo(4)])
    item = await inbox.claim("w", LEASE, ["whatsapp"])
    assert item is not None and item.event.event_id == "wamid.1"
    following = await inbox.following(item)
    assert [q.event.event_id for q in following] == ["wamid.2", "wamid.4"]  # not the other's
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    with pytest.raises(RuntimeError):  # a crash before the reply is stored takes nothing
        async with sessions.begin() as session:
            await inbox.take(session, item, [q.id for q in following])
            raise RuntimeError("the reply could not be stored")
    assert (await status(engine))["whatsapp:wamid.2"] == (PENDING, None)

    async with sessions.begin() as session:
        await inbox.take(session, item, [following[0].id])
    assert (await status(engine))["whatsapp:wamid.2"] == (DONE, item.id)
    with pytest.raises(LookupError):  # no longer waiting: never taken twice
        async with sessions.begin() as session:
            await inbox.take(session, item, [following[0].id, following[1].id])
    assert (await status(engine))["whatsapp:wamid.4"] == (PENDING, None)


async def test_redact_blanks_every_stored_copy_of_a_message(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    edit = InboundEvent(
        channel="whatsapp",
        event_id="wamid.E",
        message_id="wamid.E",
        user_id="551100000001",
        kind=Kind.EDIT,
        target_message_id="wamid.2",
        caption="a new caption",
    )
    await inbox.put_many([photo(1), photo(2), edit])
    item = await inbox.claim("w", LEASE, ["whatsapp"])
    assert item is not None
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions.begin() as session:
        await inbox.take(session, item, [q.id for q in await inbox.following(item)])
    async with sessions.begin() as session:
        answered = await inbox.redact(session, "whatsapp", "wamid.2")
    assert answered == [item.id, item.id]  # the photo and its edit, answered with the first
    async with sessions() as session:
        payloads = {
            i.dedupe_key: i.payload for i in (await session.execute(select(InboxItem))).scalars()
        }
    for key in ("whatsapp:wamid.2", "whatsapp:wamid.E"):
        assert payloads[key]["caption"] is None and payloads[key]["extra"]["redacted"] is True
    assert payloads["whatsapp:wamid.1"]["caption"] == "caption 1"


async def _learner_with_turn(session: AsyncSession, channel: str, user: str, text: str) -> Learner:
    learner, _ = await repos.find_or_create_learner(session, channel, user, phone_e164=f"+{user}")
    await repos.add_turn(
        session,
        learner_id=learner.id,
        direction="in",
        modality="text",
        channel=channel,
        text=text,
    )
    return learner


async def test_the_buddys_message_ids_find_its_turn(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions.begin() as session:
        learner = await _learner_with_turn(session, "telegram", "7100000001", "hola")
        turn = await repos.add_turn(
            session,
            learner_id=learner.id,
            inbox_item_id=77,
            direction="out",
            modality="text",
            channel="telegram",
            text="¡Hola!",
        )
    async with engine.begin() as conn:
        await outbox.record_sent(conn, "telegram", "7100000001", turn.id, ["41,42", "43"])
        await outbox.record_sent(conn, "telegram", "7100000001", turn.id, ["43"])  # a resend
    async with sessions() as session:
        for provider_id in ("41", "42", "43"):
            found = await repos.buddy_turn(session, "telegram", "7100000001", provider_id)
            assert found is not None and found.id == turn.id
        # Telegram numbers messages per chat: the same id in another chat is not ours.
        assert await repos.buddy_turn(session, "telegram", "-4700000001", "41") is None


async def test_a_number_change_moves_the_learner(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions.begin() as session:
        learner = await _learner_with_turn(session, "whatsapp", "5511900000001", "vivo en Recife")
    async with sessions.begin() as session:
        moved = await repos.move_identity(
            session, "whatsapp", "5511900000001", "5511900000002", phone_e164="+5511900000002"
        )
    assert moved is not None and moved.id == learner.id
    async with sessions() as session:
        found = await repos.find_learner(session, "whatsapp", "5511900000002")
        assert found is not None and found.id == learner.id
        assert found.phone_e164 == "+5511900000002"
        assert await repos.find_learner(session, "whatsapp", "5511900000001") is None


async def test_a_number_change_after_the_new_number_wrote_first_merges(
    engine: AsyncEngine,
) -> None:
    """The new number's first message raced ahead of the notice and made a fresh learner:
    the notice folds it into the real one, history, usage and all."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions.begin() as session:
        old = await _learner_with_turn(session, "whatsapp", "5511900000011", "antes")
        new = await _learner_with_turn(session, "whatsapp", "5511900000012", "después")
        await repos.record_usage(session, new.id, "chat", "gpt-4o", input_tokens=10)
    async with sessions.begin() as session:
        await repos.move_identity(
            session, "whatsapp", "5511900000011", "5511900000012", phone_e164="+5511900000012"
        )
    async with sessions() as session:
        found = await repos.find_learner(session, "whatsapp", "5511900000012")
        assert found is not None and found.id == old.id and found.phone_e164 == "+5511900000012"
        assert await session.get(Learner, new.id) is None
        texts = (
            await session.execute(select(Turn.text).where(Turn.learner_id == old.id))
        ).scalars()
        assert sorted(texts) == ["antes", "después"]
        usage = (await session.execute(select(Usage.learner_id))).scalars().all()
        assert usage == [old.id]
        identities = (
            await session.execute(
                select(Identity.channel_user_id).where(Identity.learner_id == old.id)
            )
        ).scalars()
        assert list(identities) == ["5511900000012"]
