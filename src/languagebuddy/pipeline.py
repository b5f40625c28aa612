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

import asyncio
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
from languagebuddy.logs import get_logger
from languagebuddy.metrics import STAGE_SECONDS
from languagebuddy.store import outbox, repos
from languagebuddy.store.outbox import Part
from languagebuddy.tutor.api import TutorInput, TutorReply

if TYPE_CHECKING:
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
        if stored:  # a retry: deliver what was composed and not yet sent
            await self._deliver(item, channel, stored)
            return
        # Before anything shows (no typing indicator for group talk that is not for the buddy,
        # no learner created for it): whether and how this turn is answered.
        plan = await self._plan(item, channel)
        if plan is None:
            return  # not for the buddy, or deleted before it was answered: no reply
        clock = StageClock()
        typing = asyncio.create_task(_keep_typing(channel, event))
        try:
            with clock.stage("learner"):
                learner_id = await self._learner(item)
            parts = await self._compose(item, channel, learner_id, clock, plan)
        finally:
            typing.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await typing
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
        turns: list[dict[str, object]] = []
        if not reply.erased:
            common = {"learner_id": learner_id, "channel": event.channel}
            inbound = {
                **common,
                "direction": "in",
                "modality": reply.modality,
                "text": reply.inbound_memory or event.text,
                "provider_message_id": event.message_id,
                "timings": {**clock.timings, **reply.timings},
            }
            if turn_input.images:
                inbound["media"] = _media_meta(turn_input)
            outbound = {**common, "direction": "out", "modality": "text", "text": reply.text}
            turns = [inbound, {**outbound, "status": "pending"}]
            if event.kind is Kind.CALL_RECAP:  # a call recap (issue 14) logs only the reply
                turns = turns[1:]
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

    async def _learner(self, item: Claimed) -> int:
        """The learner behind the event, created on first contact."""
        event = item.event
        async with self.engine.begin() as conn:
            learner_id, created = await repos.learner_id_for(
                conn,
                event.channel,
                event.user_id,
                phone_e164=event.phone_e164,
                display_name=event.display_name,
                language_hint=event.language_hint,
            )
        if created:
            log.info("new learner", learner=learner_id, channel=event.channel)
        return learner_id

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
        outbound = [OutboundPart(kind=p.kind, text=p.body) for p in pending]
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
        event = item.event
        async with self.engine.begin() as conn:
            turn_id = await outbox.mark_sent(conn, item.id, parts, ids)
            if turn_id is not None:  # every message of the reply: a reaction to any finds it
                chat = event.chat_id or event.user_id
                await outbox.record_sent(conn, event.channel, chat, turn_id, ids)

    async def _apply_status(self, event: InboundEvent) -> None:
        if not event.message_id or not event.status:
            return
        async with self.sessions.begin() as session:
            await repos.set_turn_status(session, event.message_id, event.status, event.status_error)


async def _keep_typing(channel: Channel, event: InboundEvent) -> None:
    """Show the typing indicator until cancelled, sent again every ``typing_interval``
    seconds where the platform's indicator fades sooner than a slow answer."""
    while True:
        await channel.typing(event)
        if not channel.typing_interval:
            return
        await asyncio.sleep(channel.typing_interval)


def _media_meta(turn: TutorInput) -> dict[str, Any] | None:
    """What the log keeps of the photos: sizes and hashes, never the bytes."""
    if not turn.images:
        return None
    if len(turn.images) == 1:
        return turn.images[0].meta
    return {"photos": [image.meta for image in turn.images], "left_out": turn.photos_left_out}
