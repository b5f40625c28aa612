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
from languagebuddy.store import repos
from languagebuddy.store.models import OutboxPart, Turn
from languagebuddy.tutor.api import TutorInput, TutorReply

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

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
        async with self.sessions() as session:
            parts = await repos.outbox_parts(session, item.id)
        if not parts:
            parts = await self._compose(item, channel)
        await self._deliver(item, channel, parts)

    async def _compose(self, item: Claimed, channel: Channel) -> list[OutboxPart]:
        """Ask the tutor and store the exchange with its outbox parts, atomically."""
        event = item.event
        clock = StageClock()
        typing = asyncio.create_task(_keep_typing(channel, event))
        try:
            with clock.stage("learner"):
                learner_id = await self._learner_id(event)
            with clock.stage("media"):
                turn_input = await self._prepare_input(event, channel)
            with clock.stage("tutor"):
                try:
                    reply: TutorReply = await self.tutor.respond(learner_id, turn_input)
                except ModelUnavailable:
                    await self._apologise_once(item, channel, learner_id)
                    raise
        finally:
            typing.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await typing
        texts = split_text(reply.text, channel.max_text_length)
        async with self.sessions.begin() as session:
            if not reply.erased:
                timings = {**clock.timings, **reply.timings}
                # A call recap (issue 14) has no learner message to log, only the reply.
                if event.kind is not Kind.CALL_RECAP:
                    await repos.add_turn(
                        session,
                        learner_id=learner_id,
                        inbox_item_id=item.id,
                        direction="in",
                        modality=reply.modality,
                        channel=event.channel,
                        text=reply.inbound_memory or event.text,
                        provider_message_id=event.message_id,
                        media=getattr(turn_input.image, "meta", None),
                        timings=timings,
                    )
                await repos.add_turn(
                    session,
                    learner_id=learner_id,
                    inbox_item_id=item.id,
                    direction="out",
                    modality="text",
                    channel=event.channel,
                    text=reply.text,
                    status="pending",
                )
            parts = [
                OutboxPart(inbox_item_id=item.id, seq=n, kind="text", body=text)
                for n, text in enumerate(texts)
            ]
            session.add_all(parts)
        log.info(
            "reply composed",
            item=item.id,
            channel=event.channel,
            kind=event.kind.value,
            parts=len(parts),
            timings=clock.timings,
        )
        return parts

    async def _learner_id(self, event: InboundEvent) -> int:
        async with self.sessions.begin() as session:
            learner, created = await repos.find_or_create_learner(
                session,
                event.channel,
                event.user_id,
                phone_e164=event.phone_e164,
                display_name=event.display_name,
                language_hint=event.language_hint,
            )
            if created:
                log.info("new learner", learner=learner.id, channel=event.channel)
            return learner.id

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

    async def _deliver(self, item: Claimed, channel: Channel, parts: list[OutboxPart]) -> None:
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

    async def _mark_sent(self, item: Claimed, parts: list[OutboxPart], ids: list[str]) -> None:
        if not parts:
            return
        now = time.time()
        async with self.sessions.begin() as session:
            for part, provider_id in zip(parts, ids, strict=False):
                stored = await session.get(OutboxPart, part.id)
                if stored is not None:
                    stored.sent_at = now
                    stored.provider_message_id = provider_id
                part.sent_at = now
            turn = await _outbound_turn(session, item.id)
            if turn is not None and ids:
                turn.provider_message_id = turn.provider_message_id or ids[0]
                turn.status = "sent"

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


async def _outbound_turn(session: AsyncSession, inbox_item_id: int) -> Turn | None:
    from sqlalchemy import select

    row = await session.execute(
        select(Turn).where(Turn.inbox_item_id == inbox_item_id, Turn.direction == "out")
    )
    return row.scalars().first()
