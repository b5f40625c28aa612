"""The message path after the inbox: learner lookup, media preparation, the tutor, rendering
and delivery. Channel-neutral: it talks to a channel only through the Channel protocol.

Exactly-once replies across crashes: the reply's text is written to the outbox in the same
transaction as the conversation turns, before anything is sent. A reclaimed item finds its outbox
and only delivers the parts not yet marked sent — the model is never asked twice for one event.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import TYPE_CHECKING

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


class MessagePipeline:
    """Handles one claimed inbox item end to end (the worker's handler)."""

    def __init__(self, services: Services, tutor: Tutor) -> None:
        self.settings = services.settings
        self.sessions = services.sessions
        self.engine = services.engine
        self.channels: dict[str, Channel] = services.channels
        self.tutor = tutor
        self.inbox: Inbox = services.inbox

    async def __call__(self, item: Claimed) -> None:
        event = item.event
        if event.kind is Kind.STATUS:
            await self._apply_status(event)
            return
        channel = self.channels.get(event.channel)
        if channel is None:
            raise PermanentFailure(f"channel {event.channel!r} is not configured")
        clock = StageClock()
        typing = asyncio.create_task(_keep_typing(channel, event))
        try:
            with clock.stage("learner"):
                parts, learner_id = await self._outbox_and_learner(item)
            if not parts:
                parts = await self._compose(item, channel, learner_id, clock)
        finally:
            typing.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await typing
        await self._deliver(item, channel, parts)

    async def _compose(
        self, item: Claimed, channel: Channel, learner_id: int, clock: StageClock
    ) -> list[Part]:
        """Ask the tutor and store the exchange with its outbox parts, atomically."""
        event = item.event
        with clock.stage("media"):
            turn_input = await self._prepare_input(event, channel)
        with clock.stage("tutor"):
            try:
                reply: TutorReply = await self.tutor.respond(learner_id, turn_input)
            except ModelUnavailable:
                await self._apologise_once(item, channel, learner_id)
                raise
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
            if turn_input.image is not None:
                inbound["media"] = turn_input.image.meta
            outbound = {**common, "direction": "out", "modality": "text", "text": reply.text}
            turns = [inbound, {**outbound, "status": "pending"}]
            if event.kind is Kind.CALL_RECAP:  # a call recap (issue 14) logs only the reply
                turns = turns[1:]
        async with self.engine.begin() as conn:
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

    async def _outbox_and_learner(self, item: Claimed) -> tuple[list[Part], int]:
        """The reply already stored for this item (a retry resumes its delivery), and the
        learner behind the event, created on first contact: one transaction for both."""
        event = item.event
        async with self.engine.begin() as conn:
            parts = await outbox.parts_of(conn, item.id)
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
        return parts, learner_id

    async def _prepare_input(self, event: InboundEvent, channel: Channel) -> TutorInput:
        """Turn the event into the tutor's input; media is fetched and checked in memory."""
        if event.kind is Kind.TEXT:
            return TutorInput(kind=Kind.TEXT, text=event.text, language_hint=event.language_hint)
        if event.kind is Kind.IMAGE:
            from languagebuddy.media.images import ImageRejected, prepare_image_async

            try:
                media = await channel.download(event)
            except DeliveryError as exc:
                if exc.retryable:
                    raise
                problem = "image_too_large" if exc.code == "too_large" else "image_download_failed"
                return TutorInput(kind=Kind.IMAGE, caption=event.caption, problem=problem)
            try:
                image = await prepare_image_async(media.data, max_side=self.settings.image_max_side)
            except ImageRejected as exc:
                return TutorInput(kind=Kind.IMAGE, caption=event.caption, problem=exc.code)
            finally:
                del media
            return TutorInput(kind=Kind.IMAGE, caption=event.caption, image=image)
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
        async with self.engine.begin() as conn:
            await outbox.mark_sent(conn, item.id, parts, ids)

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
