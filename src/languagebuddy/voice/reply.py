"""One voice exchange, exactly once: a voice note answered (by preference) with text and a voice
note, or a text answered with a voice note too (``/voice on``).

    download ─▶ decode ─▶ transcribe ─▶ "You said …" (stored, then sent at once)
             ─▶ tutor, streamed ─▶ sentences to speech as they complete ─▶ encoder
             ─▶ reply text (stored with the turns, sent) ─▶ voice note (stored, uploaded, sent)

What the outbox keeps, so that a reclaimed event (the worker died, the platform failed) picks
up where it stopped and never repeats a paid or visible step:

- the ``heard`` part holds the transcript: a reclaim neither transcribes nor says "You said"
  again once it was sent;
- the reply's ``text`` parts and the ``voice`` part (the text it speaks) are written with the
  turns: the chat model is never asked twice;
- the encoded note is stored on the ``voice`` part before upload, and the platform's media id
  after it: a crash or a 429/5xx after synthesis costs no second synthesis, a failed send no
  second upload; a crash before the note was stored synthesises it again from the stored text.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from languagebuddy import side_events
from languagebuddy.ai.stt import TranscriptionClient, transcription_prompt
from languagebuddy.ai.tts import PCM_BYTES_PER_SECOND, SpeechClient
from languagebuddy.channels.base import Channel
from languagebuddy.channels.split import split_text
from languagebuddy.errors import DeliveryError, ModelRejected, ModelUnavailable
from languagebuddy.events import InboundEvent, Kind, Media, OutboundPart
from languagebuddy.inbox.queue import Claimed
from languagebuddy.logs import get_logger
from languagebuddy.media.audio import AudioRejected, prepare_audio_async
from languagebuddy.media.types import EncodedAudio
from languagebuddy.metrics import STAGE_SECONDS, VOICE_MILESTONE_SECONDS
from languagebuddy.pipeline import (
    StageClock,
    VoiceTurn,
    exchange_turns,
    outbound_part,
    record_delivery,
)
from languagebuddy.store import outbox
from languagebuddy.store.models import Learner, Turn, Usage, VocabularyItem
from languagebuddy.store.outbox import Part
from languagebuddy.tutor.api import TutorInput, TutorReply
from languagebuddy.tutor.phrases import phrase, phrase_language
from languagebuddy.tutor.prompts import speech_style
from languagebuddy.voice.synthesis import SpeechAssembler

if TYPE_CHECKING:
    from languagebuddy.pipeline import MessagePipeline
    from languagebuddy.services import Services

log = get_logger(__name__)

HEARD, TEXT, VOICE = "heard", "text", "voice"
PROMPT_TERMS = 40  # recent words in the transcription prompt
MAX_HEARD_CHARS = 1000  # of the transcript quoted back in "You said …"


def wants_voice(mode: str, kind: Kind) -> bool:
    """/voice on: always; off: never; auto (default): a voice note gets a voice note."""
    return mode == "on" or (mode == "auto" and kind is Kind.VOICE)


@dataclass(frozen=True)
class LearnerView:
    """What the voice path needs of the learner, read once per event."""

    id: int
    display_name: str | None
    native_language: str | None
    interface_language: str | None
    target_language: str | None
    level: str | None
    voice_mode: str
    vocabulary: tuple[str, ...]


class VoiceClock(StageClock):
    """Stage durations (ms, and ``lb_stage_seconds``) plus milestones: ms from the learner's
    message arriving (the webhook) to a moment of the reply (``lb_voice_milestone_seconds``)."""

    def __init__(self, received_at: float) -> None:
        super().__init__()
        self.received_at = received_at
        # perf_counter() at the moment of received_at, to turn perf_counter readings into it
        self._origin = time.perf_counter() - max(0.0, time.time() - received_at)

    def mark(self, name: str, at: float | None = None) -> None:
        seconds = (time.perf_counter() if at is None else at) - self._origin
        self.timings[name] = round(seconds * 1000, 2)
        VOICE_MILESTONE_SECONDS.labels(name).observe(seconds)

    def add(self, name: str, seconds: float) -> None:
        self.timings[name] = round(seconds * 1000, 2)
        STAGE_SECONDS.labels(name).observe(seconds)


class VoiceReplies:
    """The voice path's entry points, called by the message pipeline."""

    def __init__(self, pipeline: MessagePipeline, services: Services) -> None:
        settings = services.settings
        self.pipeline = pipeline
        self.settings = settings
        self.engine = services.engine
        self.transcriber = TranscriptionClient(services.openai, settings.stt_model)
        self.speech = SpeechClient(services.openai, settings.tts_model, settings.tts_voice)

    @staticmethod
    def resumes(stored: list[Part]) -> bool:
        """Whether a stored outbox is a voice reply's (the voice path finishes it)."""
        return any(p.kind in (HEARD, VOICE) for p in stored)

    @staticmethod
    def composed(stored: list[Part]) -> bool:
        """Whether the reply itself is stored (only its delivery is left)."""
        return any(p.kind in (TEXT, VOICE) for p in stored)

    @staticmethod
    def takes(event: InboundEvent, channel: Channel, voice_mode: str) -> bool:
        """A voice note, or a text from a learner who asked for voice replies."""
        if event.kind is Kind.VOICE:
            return True
        return (
            event.kind is Kind.TEXT
            and channel.voice_format is not None
            and wants_voice(voice_mode, event.kind)
        )

    @staticmethod
    def prefetch(item: Claimed, channel: Channel, stored: list[Part]) -> Download | None:
        """Start downloading a voice note at once: it needs nothing of the learner, so it
        runs beside the learner lookup (a note already heard is not downloaded again)."""
        if item.event.kind is not Kind.VOICE or stored:
            return None
        return Download(channel, item.event)

    @staticmethod
    async def drop(prefetch: Download | None) -> None:
        """Cancel a download nobody used (the event failed before hearing it)."""
        if prefetch is not None:
            await prefetch.cancel()

    async def handle(self, turn: VoiceTurn, prefetch: Download | None) -> None:
        await _VoiceExchange(self, turn).run(prefetch)


class Download:
    """A voice note's download, started now and awaited later; ``seconds`` is how long the
    platform took (not how long anyone waited for it)."""

    def __init__(self, channel: Channel, event: InboundEvent) -> None:
        self.seconds: float | None = None
        self._started = time.perf_counter()
        self._task = asyncio.create_task(channel.download(event))
        self._task.add_done_callback(self._finished)

    def _finished(self, _: asyncio.Task[Media]) -> None:
        self.seconds = time.perf_counter() - self._started

    async def result(self) -> Media:
        return await self._task

    async def cancel(self) -> None:
        if not self._task.done():
            self._task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await self._task  # a failure nobody used was for nothing


@dataclass
class _Usage:
    """Audio seconds in (stt) and out (tts), written with the next stored step."""

    rows: list[tuple[str, str, float]] = field(default_factory=list)  # kind, model, seconds

    async def flush(self, conn: AsyncConnection, learner_id: int) -> None:
        if self.rows:
            await conn.execute(
                insert(Usage.__table__),
                [
                    {
                        "learner_id": learner_id,
                        "created_at": time.time(),
                        "kind": kind,
                        "model": model,
                        "input_tokens": 0,
                        "output_tokens": 0,
                        "audio_seconds": seconds,
                    }
                    for kind, model, seconds in self.rows
                ],
            )
        self.rows.clear()


class _VoiceExchange:
    """The state of one event on the voice path."""

    def __init__(self, replies: VoiceReplies, turn: VoiceTurn) -> None:
        self.replies = replies
        self.pipeline = replies.pipeline
        self.engine = replies.engine
        self.item = turn.item
        self.event: InboundEvent = turn.item.event  # whom to answer, on which platform
        self.plan = turn.plan
        # What the learner said, their latest edit folded in (when the reply is not stored).
        self.content = turn.plan.event if turn.plan is not None else self.event
        self.channel = turn.channel
        self.parts = turn.stored
        self.learner_id = turn.learner_id
        self.clock = VoiceClock(self.event.received_at)
        self.clock.timings.update(turn.clock.timings)
        self.clock.mark("started")  # since the webhook: the inbox wait, the plan, the lookup
        self.indicator = turn.typing
        self.usage = _Usage()
        self.reply_timings: dict[str, float] = {}
        self.timings_saved = False

    async def run(self, prefetch: Download | None) -> None:
        learner = await self._learner(self.learner_id)
        speak = self.channel.voice_format is not None and wants_voice(
            learner.voice_mode, self.event.kind
        )
        if self.replies.composed(self.parts):
            await self._finish_stored(learner)
        else:
            await self._compose(learner, speak, prefetch)

    # -- the learner -----------------------------------------------------------------------

    async def _learner(self, learner_id: int) -> LearnerView:
        async with self.engine.connect() as conn:
            learner = (
                await conn.execute(
                    select(
                        Learner.display_name,
                        Learner.native_language,
                        Learner.interface_language,
                        Learner.target_language,
                        Learner.level,
                        Learner.voice_mode,
                    ).where(Learner.id == learner_id)
                )
            ).first()
            if learner is None:
                raise LookupError(f"learner {learner_id} vanished")
            words = await conn.execute(
                select(VocabularyItem.term)
                .where(
                    VocabularyItem.learner_id == learner_id,
                    VocabularyItem.language == learner.target_language,
                )
                .order_by(VocabularyItem.updated_at.desc())
                .limit(PROMPT_TERMS)
            )
            terms = tuple(words.scalars())
        return LearnerView(
            id=learner_id,
            display_name=learner.display_name,
            native_language=learner.native_language,
            interface_language=learner.interface_language,
            target_language=learner.target_language,
            level=learner.level,
            voice_mode=learner.voice_mode or "auto",
            vocabulary=terms,
        )

    def _lang(self, learner: LearnerView) -> str:
        return phrase_language(
            learner.native_language, learner.interface_language, self.event.language_hint
        )

    # -- a new exchange --------------------------------------------------------------------

    async def _compose(self, learner: LearnerView, speak: bool, prefetch: Download | None) -> None:
        heard = next((p for p in self.parts if p.kind == HEARD), None)
        if self.event.kind is Kind.VOICE:
            if heard is None:
                heard, problem = await self._hear(learner, prefetch)
                if heard is None:
                    await self._answer_problem(learner, problem or "audio_corrupt")
                    return
            if heard.sent_at is None:
                await self.pipeline._deliver(self.item, self.channel, [heard])
                self.clock.mark("heard_sent")
            meta = heard.meta or {}
            turn_input = TutorInput(
                kind=Kind.VOICE,
                text=str(meta.get("transcript") or ""),
                unclear_words=tuple(meta.get("unclear") or ()),
                language_hint=self.event.language_hint,
                forwarded=self.content.forwarded,
                replying_to=self.plan.replying_to if self.plan is not None else None,
            )
        else:
            turn_input = TutorInput(
                kind=Kind.TEXT,
                text=self.content.text,
                language_hint=self.event.language_hint,
                forwarded=self.content.forwarded,
                replying_to=self.plan.replying_to if self.plan is not None else None,
            )
        self.indicator.poke(voice=speak)
        assembler = self._assembler(learner) if speak else None
        try:
            reply = await self._ask_tutor(learner, turn_input, assembler)
            if await self._deleted_meanwhile():
                return
            # Fixed answers (commands, unusable input) cost no model call and get no voice.
            speak = speak and not reply.erased and reply.usage.get("model_calls", 0) > 0
            parts = await self._store_reply(learner, reply, heard, speak)
            texts = [p for p in parts if p.kind == TEXT]
            voice_part = next((p for p in parts if p.kind == VOICE), None)
            if voice_part is None or assembler is None or not self.channel.single_reply:
                # The text goes at once; the learner reads while the note is made.
                await self.pipeline._deliver(self.item, self.channel, texts)
                texts = []
            if voice_part is not None and assembler is not None:
                self.indicator.poke(voice=True)
                audio = await self._synthesise(assembler, voice_part, learner)
                await self._send_voice(voice_part, audio, texts, learner, store=True)
        finally:
            if assembler is not None:
                await assembler.aclose()
        await self._save_timings()

    async def _hear(
        self, learner: LearnerView, prefetch: Download | None
    ) -> tuple[Part | None, str | None]:
        """Download (or take the prefetched download), check and transcribe the note; store
        the "You said" part with what was heard. (None, problem code) when the audio cannot
        be used."""
        settings = self.replies.settings
        download = prefetch or Download(self.channel, self.event)
        try:
            media = await download.result()
        except DeliveryError as exc:
            if exc.retryable:
                raise
            problem = "audio_too_large" if exc.code == "too_large" else "audio_download_failed"
            return None, problem
        finally:
            if download.seconds is not None:
                self.clock.add("download", download.seconds)
        with self.clock.stage("decode"):
            try:
                audio = await prepare_audio_async(
                    media.data, max_seconds=settings.voice_max_seconds
                )
            except AudioRejected as exc:
                log.info("voice.rejected", item=self.item.id, code=exc.code, reason=str(exc))
                return None, exc.code
            finally:
                del media
        prompt = transcription_prompt(learner.display_name, list(learner.vocabulary))
        with self.clock.stage("transcribe"):
            try:
                transcript = await self.replies.transcriber.transcribe(
                    (audio.upload_name, audio.upload, audio.upload_mime),
                    language=learner.target_language,
                    prompt=prompt,
                )
            except ModelRejected as exc:
                log.warning("voice.stt_rejected", item=self.item.id, status=exc.status_code)
                return None, "audio_corrupt"
            except ModelUnavailable:
                await self.pipeline._apologise_once(self.item, self.channel, learner.id)
                raise
        self.usage.rows.append(("stt", transcript.model, audio.duration_s))
        if not transcript.heard_speech:
            return None, "audio_silent"
        quoted = transcript.text
        if len(quoted) > MAX_HEARD_CHARS:
            quoted = quoted[: MAX_HEARD_CHARS - 1].rstrip() + "…"
        meta = {
            "transcript": transcript.text,
            "unclear": list(transcript.unclear),
            "model": transcript.model,
            "audio": audio.meta,
        }
        body = phrase("you_said", self._lang(learner), text=quoted)
        async with self.engine.begin() as conn:
            heard = await outbox.store_part(conn, self.item.id, 0, HEARD, body, meta)
            await self.usage.flush(conn, learner.id)
        log.info(
            "voice.heard",
            item=self.item.id,
            seconds=round(audio.duration_s, 2),
            unclear=len(transcript.unclear),
            sent_as=audio.meta["sent_as"],
        )
        return heard, None

    async def _answer_problem(self, learner: LearnerView, problem: str) -> None:
        """Unusable audio: the fixed phrase for the problem, as text, with no model call."""
        reply = await self.pipeline.tutor.respond(
            learner.id,
            TutorInput(kind=Kind.VOICE, problem=problem, language_hint=self.event.language_hint),
        )
        parts = await self._store_reply(learner, reply, None, speak=False)
        await self.pipeline._deliver(self.item, self.channel, parts)
        await self._save_timings()

    def _assembler(self, learner: LearnerView) -> SpeechAssembler:
        assert self.channel.voice_format is not None
        return SpeechAssembler(
            self.replies.speech,
            speech_style(learner.target_language, learner.level),
            self.channel.voice_format,
        )

    async def _ask_tutor(
        self, learner: LearnerView, turn: TutorInput, assembler: SpeechAssembler | None
    ) -> TutorReply:
        first_token = False

        async def on_delta(text: str) -> None:
            nonlocal first_token
            if not first_token:
                first_token = True
                self.clock.mark("first_token")
            if assembler is not None:
                await assembler.add(text)

        with self.clock.stage("tutor"):
            try:
                reply = await self.pipeline.tutor.respond(learner.id, turn, on_delta=on_delta)
            except ModelUnavailable:
                await self.pipeline._apologise_once(self.item, self.channel, learner.id)
                raise
        self.clock.mark("tutor_done")
        return reply

    async def _deleted_meanwhile(self) -> bool:
        """The learner deleted their message while the buddy was answering: the answer is
        dropped with it (as on the text path)."""
        late = await side_events.pending_changes(self.pipeline.inbox, self.item)
        if not late.deletions:
            return False
        absorbed = self.plan.absorbed if self.plan is not None else []
        await self.pipeline._finish_silently(self.item, [*absorbed, *late.ids])
        log.info("turn deleted while answering", item=self.item.id, channel=self.event.channel)
        return True

    async def _store_reply(
        self, learner: LearnerView, reply: TutorReply, heard: Part | None, speak: bool
    ) -> list[Part]:
        """The turns and the reply's outbox parts, in one transaction, before anything of the
        reply is sent."""
        texts = split_text(reply.text, self.channel.max_text_length)
        specs = [(TEXT, text) for text in texts] + ([(VOICE, reply.text)] if speak else [])
        meta = (heard.meta or {}) if heard is not None else {}
        self.reply_timings = dict(reply.timings)
        turns = exchange_turns(
            self.content,
            learner.id,
            reply,
            timings={**self.clock.timings, **reply.timings},
            media=meta.get("audio"),
            transcript=meta.get("transcript"),
        )
        async with self.engine.begin() as conn:
            if self.plan is not None:  # the items answered along (folded edits)
                await self.pipeline.inbox.take(conn, self.item, self.plan.absorbed)
            parts = await outbox.store_reply(
                conn,
                self.item.id,
                turns,
                specs,
                first_seq=heard.seq + 1 if heard is not None else 0,
            )
            if not reply.erased:
                await self.usage.flush(conn, learner.id)
        return parts

    # -- the voice note --------------------------------------------------------------------

    async def _synthesise(
        self, assembler: SpeechAssembler, part: Part, learner: LearnerView
    ) -> EncodedAudio | None:
        """Finish the note. None when the speech model stays unavailable: the learner has the
        text already, and the part is settled so that a retry does not try again."""
        try:
            audio = await assembler.finish(part.body)
        except (ModelUnavailable, ModelRejected) as exc:
            log.warning("voice.tts_failed", item=self.item.id, error=type(exc).__name__)
            audio = None
        finally:
            self._speech_timings(assembler, learner)
        if audio is None:
            await self._settle(part, learner, sent_at=time.time(), provider_message_id="skipped")
        return audio

    async def _settle(self, part: Part, learner: LearnerView, **values: Any) -> None:
        """Write to the voice part (with the usage rows gathered so far)."""
        async with self.engine.begin() as conn:
            await self.usage.flush(conn, learner.id)
            await outbox.update_part(conn, part.id, **values)

    def _speech_timings(self, assembler: SpeechAssembler, learner: LearnerView) -> None:
        if assembler.first_audio_at is not None:
            self.clock.mark("first_audio", assembler.first_audio_at)
        if assembler.synthesis_done_at is not None:
            self.clock.mark("synthesis_done", assembler.synthesis_done_at)
        self.clock.add("encode", assembler.encode_seconds)
        if assembler.pcm_bytes:
            seconds = assembler.pcm_bytes / PCM_BYTES_PER_SECOND
            self.usage.rows.append(("tts", self.replies.speech.model, seconds))

    async def _send_voice(
        self,
        part: Part,
        audio: EncodedAudio | None,
        texts: list[Part],
        learner: LearnerView,
        *,
        store: bool,
    ) -> None:
        """Store (``store``), upload (once) and send the note, after ``texts`` in the same
        send (on a single-reply platform the reply's text waits for its note).

        Storing runs beside the upload, and is complete before the send or any failure is
        reported: a platform error or a crash after it finds the note, never a second
        synthesis."""
        if audio is None:
            await self.pipeline._deliver(self.item, self.channel, texts)
            return
        stored = (
            asyncio.create_task(
                self._settle(
                    part,
                    learner,
                    audio=audio.data,
                    audio_mime=audio.mime,
                    duration_s=audio.duration_s,
                )
            )
            if store
            else None
        )
        try:
            await self._upload_and_send(part, audio, texts)
        finally:
            if stored is not None:
                await stored

    async def _upload_and_send(self, part: Part, audio: EncodedAudio, texts: list[Part]) -> None:
        outbound = OutboundPart(
            kind="voice",
            audio=audio.data,
            audio_mime=audio.mime,
            duration_s=audio.duration_s,
            media_ref=part.media_ref
            if part.media_ref and (part.media_ref_until or 0) > time.time()
            else None,
        )
        uploaded = None
        if outbound.media_ref is None:
            with self.clock.stage("upload"):
                uploaded = await self.channel.upload_voice(self.event, outbound)
            if uploaded is not None:
                outbound.media_ref = uploaded.ref
        first = texts[0].seq if texts else part.seq
        sent = [*texts, part]
        with self.clock.stage("send"):
            try:
                ids = await self.channel.send(
                    self.event,
                    [*(outbound_part(t) for t in texts), outbound],
                    idempotency_key=f"inbox-{self.item.id}-{first}",
                )
            except DeliveryError as exc:
                # What went out is marked; the upload is kept, so the retry does not repeat it.
                async with self.engine.begin() as conn:
                    if exc.delivered:
                        await record_delivery(
                            conn, self.item, sent[: len(exc.delivered)], exc.delivered
                        )
                    if uploaded is not None:
                        await outbox.update_part(
                            conn,
                            part.id,
                            media_ref=uploaded.ref,
                            media_ref_until=uploaded.expires_at,
                        )
                raise
        self.clock.mark("voice_sent")
        async with self.engine.begin() as conn:  # delivered, and the turn's timings, at once
            await record_delivery(conn, self.item, sent, ids)
            await self._write_timings(conn)
        self.timings_saved = True
        log.info(
            "voice.sent",
            item=self.item.id,
            seconds=round(audio.duration_s, 2),
            size=len(audio.data),
            timings=self.clock.timings,
        )

    # -- after a crash or a failed delivery ------------------------------------------------

    async def _finish_stored(self, learner: LearnerView) -> None:
        """The reply is stored: send what is unsent, in order; a voice part without its note
        is synthesised from its stored text (the chat model is not asked again)."""
        unsent = [p for p in self.parts if p.sent_at is None]
        voice_part = next((p for p in unsent if p.kind == VOICE), None)
        if voice_part is None or self.channel.voice_format is None:
            await self.pipeline._deliver(self.item, self.channel, unsent)
            return
        heard = [p for p in unsent if p.kind == HEARD]
        texts = [p for p in unsent if p.kind == TEXT]
        if not self.channel.single_reply:
            heard, texts = heard + texts, []
        await self.pipeline._deliver(self.item, self.channel, heard)
        self.indicator.poke(voice=True)
        audio = await self._stored_audio(voice_part)
        stored = audio is not None
        if audio is None:
            assembler = self._assembler(learner)
            try:
                audio = await self._synthesise(assembler, voice_part, learner)
            finally:
                await assembler.aclose()
        await self._send_voice(voice_part, audio, texts, learner, store=not stored)
        await self._save_timings()

    async def _stored_audio(self, part: Part) -> EncodedAudio | None:
        async with self.engine.connect() as conn:
            found = await outbox.stored_audio(conn, part.id)
        if found is None:
            return None
        data, mime, seconds = found
        log.info("voice.resumed", item=self.item.id, stored_bytes=len(data))
        return EncodedAudio(
            data=data, mime=mime, extension="", duration_s=seconds, sample_rate=0, codec=""
        )

    async def _save_timings(self) -> None:
        """The learner turn's timings, now with the stages after the turns were stored
        (unless the voice note's delivery wrote them already)."""
        if self.timings_saved:
            return
        async with self.engine.begin() as conn:
            await self._write_timings(conn)

    async def _write_timings(self, conn: AsyncConnection) -> None:
        timings = {**self.clock.timings, **self.reply_timings}
        await conn.execute(
            update(Turn.__table__)
            .where(Turn.inbox_item_id == self.item.id, Turn.direction == "in")
            .values(timings=timings)
        )
