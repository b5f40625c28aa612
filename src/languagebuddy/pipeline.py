"""The message path after the inbox: learner lookup, media preparation, the tutor, rendering
and delivery. Channel-neutral: it talks to a channel only through the Channel protocol.

Exactly-once replies across crashes: the reply's text is written to the outbox in the same
transaction as the conversation turns, before anything is sent. A reclaimed item finds its outbox
and only delivers the parts not yet marked sent — the model is never asked twice for one event.

Events that are not turns (reactions, deletions, edits, new identities) go to ``side_events``;
photos sent together are gathered by ``photo_sets``. Both are planned before anything is shown
to the learner (``_plan``), and whatever other inbox items a turn answers are taken from the inbox
in the same transaction as its reply.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from languagebuddy import photo_sets, side_events
from languagebuddy.channels.base import Channel
from languagebuddy.channels.split import split_text
from languagebuddy.errors import DeliveryError, ModelUnavailable, PermanentFailure
from languagebuddy.events import InboundEvent, Kind, OutboundPart
from languagebuddy.inbox.queue import Claimed, Inbox
from languagebuddy.indicator import TypingIndicator
from languagebuddy.logs import get_logger
from languagebuddy.metrics import STAGE_SECONDS
from languagebuddy.store import outbox, repos
from languagebuddy.store.outbox import Part
from languagebuddy.tutor.api import TutorInput, TutorReply

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from languagebuddy.services import Services
    from languagebuddy.tutor.agent import Tutor

log = get_logger(__name__)


class StageClock:
    """Times each stage of one event, for the log line, the turn's timings and /metrics."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, clock: StageClock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.started
        self.clock.timings[self.name] = round(elapsed * 1000, 2)
        STAGE_SECONDS.labels(self.name).observe(elapsed)


@dataclass
class TurnPlan:
    """How a turn is answered: the event as the learner left it (their latest edit folded in),
    the photos sent with it, and the other inbox items answered with it."""

    event: InboundEvent
    photos: photo_sets.PhotoSet
    absorbed: list[int] = field(default_factory=list)
    replying_to: str | None = None


class MessagePipeline:
    """Handles one claimed inbox item end to end (the worker's handler)."""

    def __init__(self, services: Services, tutor: Tutor) -> None:
        self.settings = services.settings
        self.sessions = services.sessions
        self.engine = services.engine
        self.channels: dict[str, Channel] = services.channels
        self.tutor = tutor
        self.inbox: Inbox = services.inbox
        self.side_events = side_events.SideEvents(services.sessions, services.inbox)
        from languagebuddy.voice.reply import VoiceReplies

        self.voice = VoiceReplies(self, services)

    async def __call__(self, item: Claimed) -> None:
        event = item.event
        if event.kind is Kind.STATUS:
            await self._apply_status(event)
            return
        if not event.kind.is_turn:
            await self.side_events.handle(item)
            return
        channel = self.channels.get(event.channel)
        if channel is None:
            raise PermanentFailure(f"channel {event.channel!r} is not configured")
        async with self.engine.connect() as conn:
            stored = await outbox.parts_of(conn, item.id)
        if stored and not self.voice.resumes(stored):
            await self._deliver(item, channel, stored)  # a retry: what was composed, unsent
            return
        plan = None
        if not self.voice.composed(stored):
            # Before anything shows (no typing indicator for group talk that is not for the
            # buddy, no learner created for it): whether and how this turn is answered.
            plan = await self._plan(item, channel)
            if plan is None:
                return  # not for the buddy, or deleted before it was answered: no reply
        clock = StageClock()
        typing = TypingIndicator(channel, event).start()
        prefetch = self.voice.prefetch(item, channel, stored)  # downloads beside the lookup
        try:
            with clock.stage("learner"):
                learner_id, voice_mode = await self._learner(item)
            if stored or self.voice.takes(event, channel, voice_mode):
                turn = VoiceTurn(item, channel, stored, learner_id, clock, typing, plan)
                await self.voice.handle(turn, prefetch)
                return
            assert plan is not None
            parts = await self._compose(item, channel, learner_id, clock, plan)
        finally:
            await self.voice.drop(prefetch)
            await typing.stop()
        await self._deliver(item, channel, parts)

    async def _plan(self, item: Claimed, channel: Channel) -> TurnPlan | None:
        """Decide whether and how the turn is answered, before any model call."""
        event = item.event
        if event.extra.get("redacted"):
            return None  # settled silently before a crash took the rest of the work
        context = await side_events.context(event, channel, self.sessions)
        changes = await side_events.pending_changes(self.inbox, item)
        if not context.for_the_buddy or changes.deletions:
            await self._finish_silently(item, changes.ids)
            log.info(
                "turn not answered",
                item=item.id,
                channel=event.channel,
                reason="deleted" if changes.deletions else "not for the buddy",
            )
            return None
        window = self.settings.photo_set_window_seconds
        if photo_sets.may_have_siblings(event, channel, window):
            await channel.typing(event)  # the learner sees the buddy at work while it waits
        photos = await photo_sets.collect(
            self.inbox, item, channel, window=window, cap=self.settings.photo_set_max
        )
        return TurnPlan(
            event=changes.apply(event),
            photos=photos,
            absorbed=[*photos.taken, *changes.ids],
            replying_to=context.replying_to,
        )

    async def _finish_silently(self, item: Claimed, absorbed: list[int]) -> None:
        """No reply: the item's text is blanked in the inbox (a deleted message, or group
        talk not meant for the buddy) with the items that came with it, in one transaction."""
        async with self.engine.begin() as conn:
            await self.inbox.take(conn, item, absorbed)
            if item.event.message_id:
                await self.inbox.redact(conn, item.event.channel, item.event.message_id)

    async def _compose(
        self, item: Claimed, channel: Channel, learner_id: int, clock: StageClock, plan: TurnPlan
    ) -> list[Part]:
        """Ask the tutor and store the exchange with its outbox parts, atomically (with the
        inbox items answered along: the rest of a photo set, folded edits)."""
        event = plan.event
        with clock.stage("media"):
            turn_input = await self._prepare_input(event, channel, plan)
        with clock.stage("tutor"):
            try:
                reply: TutorReply = await self.tutor.respond(learner_id, turn_input)
            except ModelUnavailable:
                await self._apologise_once(item, channel, learner_id)
                raise
        # Deleted while the buddy was thinking: the answer is dropped with the message.
        late = await side_events.pending_changes(self.inbox, item)
        if late.deletions:
            await self._finish_silently(item, [*plan.absorbed, *late.ids])
            log.info("turn deleted while answering", item=item.id, channel=event.channel)
            return []
        texts = split_text(reply.text, channel.max_text_length)
        turns = exchange_turns(
            event,
            learner_id,
            reply,
            timings={**clock.timings, **reply.timings},
            media=_media_meta(turn_input),
        )
        async with self.engine.begin() as conn:
            await self.inbox.take(conn, item, plan.absorbed)
            parts = await outbox.store_reply(conn, item.id, turns, [("text", t) for t in texts])
        log.info(
            "reply composed",
            item=item.id,
            channel=event.channel,
            kind=event.kind.value,
            parts=len(parts),
            timings=clock.timings,
        )
        return parts

    async def _learner(self, item: Claimed) -> tuple[int, str]:
        """The learner behind the event (created on first contact) and their voice
        preference."""
        event = item.event
        async with self.engine.begin() as conn:
            learner_id, created, voice_mode = await repos.learner_id_for(
                conn,
                event.channel,
                event.user_id,
                phone_e164=event.phone_e164,
                display_name=event.display_name,
                language_hint=event.language_hint,
            )
        if created:
            log.info("new learner", learner=learner_id, channel=event.channel)
        return learner_id, voice_mode

    async def _prepare_input(
        self, event: InboundEvent, channel: Channel, plan: TurnPlan
    ) -> TutorInput:
        """Turn the event into the tutor's input; media is fetched and checked in memory."""
        if event.kind is Kind.TEXT:
            return TutorInput(
                kind=Kind.TEXT,
                text=event.text,
                language_hint=event.language_hint,
                forwarded=event.forwarded,
                replying_to=plan.replying_to,
            )
        if event.kind is Kind.IMAGE:
            photos = plan.photos
            photos.events = [  # the claimed photo with its edited caption
                event if other.message_id == event.message_id else other for other in photos.events
            ]
            prepared = await photo_sets.prepare(
                photos,
                channel,
                cap=self.settings.photo_set_max,
                max_side=self.settings.image_max_side,
                max_short_side=self.settings.image_max_short_side or None,
            )
            caption = photos.caption
            if prepared.problem is not None:
                return TutorInput(kind=Kind.IMAGE, caption=caption, problem=prepared.problem)
            return TutorInput(
                kind=Kind.IMAGE,
                caption=caption,
                image=prepared.images[0],
                more_images=tuple(prepared.images[1:]),
                photos_left_out=prepared.left_out,
                forwarded=event.forwarded,
                replying_to=plan.replying_to,
            )
        if event.kind is Kind.CALL_RECAP:  # put by the call service when a call ends
            return TutorInput(kind=Kind.CALL_RECAP, call_id=int(event.extra["call_id"]))
        unsupported = event.unsupported_type or event.kind.value
        return TutorInput(kind=Kind.UNSUPPORTED, unsupported_type=unsupported)

    async def _apologise_once(self, item: Claimed, channel: Channel, learner_id: int) -> None:
        """Tell the learner we are slow, once per event; the event itself is retried later."""
        if item.apology_sent:
            return
        with suppress(Exception):
            text = await self.tutor.apology(learner_id)
            await channel.send(
                item.event,
                [OutboundPart(kind="text", text=text)],
                idempotency_key=f"inbox-{item.id}-apology",
            )
            await self.inbox.mark_apology_sent(item)

    async def _deliver(self, item: Claimed, channel: Channel, parts: list[Part]) -> None:
        pending = [p for p in parts if p.sent_at is None]
        if not pending:
            return
        outbound = [outbound_part(p) for p in pending]
        started = time.perf_counter()
        try:
            ids = await channel.send(
                item.event, outbound, idempotency_key=f"inbox-{item.id}-{pending[0].seq}"
            )
        except DeliveryError as exc:
            await self._mark_sent(item, pending[: len(exc.delivered)], exc.delivered)
            raise
        STAGE_SECONDS.labels("send").observe(time.perf_counter() - started)
        await self._mark_sent(item, pending, ids)

    async def _mark_sent(self, item: Claimed, parts: list[Part], ids: list[str]) -> None:
        if not parts:
            return
        async with self.engine.begin() as conn:
            await record_delivery(conn, item, parts, ids)

    async def _apply_status(self, event: InboundEvent) -> None:
        if not event.message_id or not event.status:
            return
        async with self.sessions.begin() as session:
            await repos.set_turn_status(session, event.message_id, event.status, event.status_error)


@dataclass
class VoiceTurn:
    """What the voice path gets of an event the pipeline hands it."""

    item: Claimed
    channel: Channel
    stored: list[Part]  # its outbox so far (a retry resumes from it)
    learner_id: int
    clock: StageClock
    typing: TypingIndicator
    plan: TurnPlan | None  # None when the reply is stored already


async def record_delivery(
    conn: AsyncConnection, item: Claimed, parts: list[Part], ids: list[str]
) -> None:
    """Mark ``parts`` sent with their provider ids, and remember every id of the reply so
    that a reaction or a reply to any of its messages finds the turn."""
    event = item.event
    turn_id = await outbox.mark_sent(conn, item.id, parts, ids)
    if turn_id is not None:
        chat = event.chat_id or event.user_id
        await outbox.record_sent(conn, event.channel, chat, turn_id, ids)


def exchange_turns(
    event: InboundEvent,
    learner_id: int,
    reply: TutorReply,
    *,
    timings: dict[str, float],
    media: dict[str, Any] | None = None,
    transcript: str | None = None,
) -> list[dict[str, Any]]:
    """The conversation-log rows of one exchange (the learner's turn and the buddy's pending
    answer), for ``outbox.store_reply`` to write beside the reply's parts."""
    if reply.erased:
        return []
    common = {"learner_id": learner_id, "channel": event.channel}
    inbound: dict[str, Any] = {
        **common,
        "direction": "in",
        "modality": reply.modality,
        "text": reply.inbound_memory or event.text,
        "provider_message_id": event.message_id,
        "timings": timings,
    }
    if media is not None:
        inbound["media"] = media
    if transcript is not None:
        inbound["transcript"] = transcript
    outbound = {**common, "direction": "out", "modality": "text", "text": reply.text}
    turns = [inbound, {**outbound, "status": "pending"}]
    if event.kind is Kind.CALL_RECAP:  # a call recap (issue 14) logs only the reply
        turns = turns[1:]
    return turns


def outbound_part(part: Part) -> OutboundPart:
    """A stored text part as the channel sends it ("You said …" is text sent ahead)."""
    if part.kind == "heard":
        return OutboundPart(kind="text", text=part.body, interim=True)
    return OutboundPart(kind=part.kind, text=part.body)


def _media_meta(turn: TutorInput) -> dict[str, Any] | None:
    """What the log keeps of the photos: sizes and hashes, never the bytes."""
    if not turn.images:
        return None
    if len(turn.images) == 1:
        return turn.images[0].meta
    return {"photos": [image.meta for image in turn.images], "left_out": turn.photos_left_out}
