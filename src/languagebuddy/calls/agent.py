"""The conversation side of a live call, whatever the carrier: the Realtime session's setup
and greeting, tools, DTMF, transcripts and usage, and the call's lifecycle (maximum length,
silence, session renewal, reconnect or apology, hang-up).

``CallAgent.run`` owns every task and socket of the call: the carrier's reader, the model's
reader, the lifecycle watch and tool executions all live inside it, and when any of them ends
the call (the caller hung up, the buddy said goodbye, the model could not be reached) the
others are cancelled and the Realtime socket closed before it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from openai import AsyncOpenAI

from languagebuddy.ai.realtime import (
    AudioFormat,
    RealtimeClosed,
    RealtimeSession,
    dumps,
    session_update,
)
from languagebuddy.calls.bridge import Bridge, Carrier
from languagebuddy.config import Settings
from languagebuddy.logs import get_logger, redact_id
from languagebuddy.tutor import prompts
from languagebuddy.tutor.calls import CallBrief
from languagebuddy.tutor.phrases import phrase

log = get_logger(__name__)

REPLAY_ENTRIES = 40  # conversation items replayed into a renewed or reconnected session
GOODBYE = "goodbye"
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


class CallControl(Protocol):
    """The provider's call-control commands a live call needs (REST, not the media socket).
    ``region_url``: the host the provider named for this call's commands, if any."""

    provider: str

    async def hang_up(self, provider_call_id: str, *, region_url: str | None = None) -> None: ...

    async def say(
        self, provider_call_id: str, text: str, language: str, *, region_url: str | None = None
    ) -> float:
        """Speak ``text`` with the carrier's own voice; returns about how long it takes."""


class CallerStream(Protocol):
    """The provider's inbound reader, driving the bridge until the caller's side ends."""

    async def run(self, bridge: Bridge) -> None: ...


class TutorForCalls(Protocol):
    async def call_brief(self, learner_id: int) -> CallBrief: ...

    async def run_call_tool(self, learner_id: int, name: str, arguments: str) -> Any: ...


@dataclass
class TranscriptEntry:
    role: str  # learner | buddy
    item_id: str
    text: str = ""
    interrupted: bool = False
    at: float = field(default_factory=time.time)


@dataclass
class CallOutcome:
    """What a finished call leaves for memory and the call record."""

    transcript: list[TranscriptEntry]
    end_reason: str
    input_tokens: int = 0
    output_tokens: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    audio_in_seconds: float = 0.0
    audio_out_seconds: float = 0.0
    words: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LiveCall:
    call_id: int
    learner_id: int
    provider_call_id: str
    region_url: str | None = None  # where this call's REST commands go, when not the default


class CallAgent:
    def __init__(
        self,
        *,
        call: LiveCall,
        brief: CallBrief,
        settings: Settings,
        openai: AsyncOpenAI,
        tutor: TutorForCalls,
        control: CallControl,
        carrier: Carrier,
        audio_format: AudioFormat,
    ) -> None:
        self.call = call
        self.brief = brief
        self.settings = settings
        self.openai = openai
        self.tutor = tutor
        self.control = control
        self.format = audio_format
        self.bridge = Bridge(carrier, self, audio_format)
        self._loop = asyncio.get_running_loop()
        self.started_at = self._loop.time()
        self.session: RealtimeSession | None = None
        self.sessions_opened = 0
        self.reconnects = 0
        self.greeted = False
        self.response_active = False
        self.learner_speaking = False
        self.last_activity = self.started_at
        self.ending: str | None = None
        self.ending_at = 0.0
        self._goodbye_requested = False
        self._queued_response: dict[str, Any] | None = None
        self._last_request: dict[str, Any] | None = None
        self._hangup = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.transcript: list[TranscriptEntry] = []
        self._entries: dict[str, TranscriptEntry] = {}
        self.end_reason = "caller_hung_up"
        self.input_tokens = 0
        self.output_tokens = 0
        self.usage: dict[str, Any] = {}
        self.words: list[str] = []

    # -- the call's life --------------------------------------------------------------------

    async def run(self, stream: CallerStream) -> CallOutcome:
        """Run the call until either side ends it; every task and socket is gone on return."""
        reader = self._spawn(stream.run(self.bridge))
        model = self._spawn(self._model_life())
        watch = self._spawn(self._watch())
        hangup = self._spawn(self._hangup.wait())
        try:
            await asyncio.wait({reader, model, watch, hangup}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and self.ending is None:
                self.end_reason = "caller_hung_up"
        finally:
            await self._shutdown()
        return self.outcome()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        session, self.session = self.session, None
        self.bridge.model = None
        closing = [asyncio.ensure_future(session.close())] if session else []
        await asyncio.gather(*tasks, *closing, return_exceptions=True)

    def outcome(self) -> CallOutcome:
        """What the call leaves so far (also after it was cancelled)."""
        bridge = self.bridge
        return CallOutcome(
            transcript=[e for e in self.transcript if e.text.strip()],
            end_reason=self.end_reason,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            usage={
                **self.usage,
                "sessions": self.sessions_opened,
                "reconnects": self.reconnects,
                "barge_ins": bridge.barge_ins,
            },
            # The caller's base64 text is 4/3 of its bytes.
            audio_in_seconds=round(
                bridge.caller_bytes * 3 / 4 / self.format.bytes_per_ms / 1000, 2
            ),
            audio_out_seconds=round(bridge.model_bytes / self.format.bytes_per_ms / 1000, 2),
            words=self.words,
        )

    # -- the Realtime session ---------------------------------------------------------------

    async def _model_life(self) -> None:
        """Open the session, pump it; on a drop reconnect once with the context, else
        apologise through the carrier and hang up."""
        try:
            await self._open_session(replay=False)
        except RealtimeClosed as exc:
            await self._give_up(f"connect: {exc}")
            return
        while True:
            current = self.session
            assert current is not None
            try:
                await self.bridge.pump(current)
            except RealtimeClosed as exc:
                if self.session is not current:  # renewed: pump the new session
                    continue
                if self.reconnects >= 1:
                    await self._give_up(f"dropped again: {exc}")
                    return
                self.reconnects += 1
                log.warning(
                    "call.realtime_dropped",
                    call=self.call.call_id,
                    code=exc.code,
                    reconnecting=True,
                )
                try:
                    await self._open_session(replay=True)
                except RealtimeClosed as again:
                    await self._give_up(f"reconnect failed: {again}")
                    return
                self._request_response(
                    "The line dropped for a moment. Say in a few words that you are back, then "
                    "continue where you were."
                )

    async def _open_session(self, *, replay: bool) -> None:
        """Replace a dead (or no) session by a new one; with ``replay`` the conversation so
        far is replayed into it first."""
        old, self.session = self.session, None
        self.bridge.model = None
        if old is not None:
            await old.close()
        self._swap(await self._new_session(replay=replay))

    async def _renew(self) -> None:
        """Before the provider's session cap: a fresh session with the conversation replayed,
        swapped in at a quiet moment; the old one is closed after the swap."""
        try:
            session = await self._new_session(replay=True)
        except RealtimeClosed as exc:
            log.warning("call.renew_failed", call=self.call.call_id, error=str(exc))
            return
        old = self.session
        self._swap(session)
        if old is not None:
            await old.close()
        log.info("call.session_renewed", call=self.call.call_id, sessions=self.sessions_opened)

    async def _new_session(self, *, replay: bool) -> RealtimeSession:
        session = await RealtimeSession.open(
            self.openai,
            self.settings.realtime_model,
            connect_seconds=self.settings.realtime_connect_timeout,
        )
        self.sessions_opened += 1
        await session.send(dumps(self._session_update()))
        if replay:
            for event in self._replay_events():
                await session.send(dumps(event))
        return session

    def _swap(self, session: RealtimeSession) -> None:
        self.response_active = False
        self.bridge.forget_response_audio()
        self.session = session
        self.bridge.model = session

    def _session_update(self) -> dict[str, Any]:
        brief = self.brief
        return session_update(
            model=self.settings.realtime_model,
            instructions=brief.instructions,
            voice=self.settings.realtime_voice,
            audio_format=self.format,
            transcription_model=self.settings.realtime_transcribe_model,
            language=brief.language,
            silence_ms=brief.silence_ms,
            tools=brief.tools,
        )

    def _replay_events(self) -> list[dict[str, Any]]:
        events = []
        for entry in [e for e in self.transcript if e.text.strip()][-REPLAY_ENTRIES:]:
            if entry.role == "learner":
                content = [{"type": "input_text", "text": entry.text}]
                role = "user"
            else:
                content = [{"type": "output_text", "text": entry.text}]
                role = "assistant"
            events.append(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": role, "content": content},
                }
            )
        return events

    async def _send(self, event: dict[str, Any]) -> None:
        session = self.session
        if session is None:
            return
        with suppress(RealtimeClosed):
            await session.send(dumps(event))

    def _request_response(self, instructions: str, *, purpose: str | None = None) -> None:
        """Ask for a response now, or as soon as the current one is done (the API refuses a
        second active response)."""
        response: dict[str, Any] = {"instructions": self.brief.instructions + "\n\n" + instructions}
        if purpose:
            response["metadata"] = {"purpose": purpose}
            response["tool_choice"] = "none"
        event = {"type": "response.create", "response": response}
        self._last_request = event
        if self.response_active:
            self._queued_response = event
            return
        self.response_active = True  # until response.done; response.created confirms
        self._spawn(self._send(event))

    # -- what the bridge reports ------------------------------------------------------------

    async def on_speech_started(self) -> None:
        self.learner_speaking = True
        self.last_activity = self._loop.time()

    async def on_dtmf(self, digit: str) -> None:
        self.last_activity = self._loop.time()
        if digit == "#":
            self.end("dtmf")
        elif digit == "*":
            self._request_response(prompts.call_repeat_slowly(self._last_buddy_sentence()))

    async def on_model_event(self, kind: str, event: dict[str, Any]) -> None:
        handler = _HANDLERS.get(kind)
        if handler is not None:
            await handler(self, event)

    async def _on_session_updated(self, event: dict[str, Any]) -> None:
        if not self.greeted:
            self.greeted = True
            self._request_response(self.brief.greeting)

    async def _on_response_created(self, event: dict[str, Any]) -> None:
        self.response_active = True
        self.last_activity = self._loop.time()

    async def _on_response_done(self, event: dict[str, Any]) -> None:
        self.response_active = False
        self.last_activity = self._loop.time()
        response = event.get("response") or {}
        self._add_usage(response.get("usage") or {})
        purpose = (response.get("metadata") or {}).get("purpose")
        if purpose == GOODBYE:
            self._spawn(self._hang_up_after_goodbye())
            return
        queued, self._queued_response = self._queued_response, None
        if queued is not None:
            self.response_active = True
            await self._send(queued)

    async def _on_speech_stopped(self, event: dict[str, Any]) -> None:
        self.learner_speaking = False
        self.last_activity = self._loop.time()

    async def _on_item(self, event: dict[str, Any]) -> None:
        item = event.get("item") or {}
        item_id = item.get("id")
        if item.get("type") != "message" or not item_id or item_id in self._entries:
            return
        content = item.get("content") or []
        if any(part.get("type") in _TEXT_PARTS for part in content):
            return  # our own replayed context, already in the transcript
        role = "learner" if item.get("role") == "user" else "buddy"
        entry = TranscriptEntry(role=role, item_id=item_id)
        self._entries[item_id] = entry
        self.transcript.append(entry)

    def _entry(self, item_id: str | None, role: str) -> TranscriptEntry:
        key = item_id or f"anon-{len(self.transcript)}"
        entry = self._entries.get(key)
        if entry is None:
            entry = TranscriptEntry(role=role, item_id=key)
            self._entries[key] = entry
            self.transcript.append(entry)
        return entry

    async def _on_learner_transcript(self, event: dict[str, Any]) -> None:
        text = event.get("transcript")
        if isinstance(text, str) and text.strip():
            self._entry(event.get("item_id"), "learner").text = text.strip()
        usage = event.get("usage")
        if isinstance(usage, dict):
            seen = self.usage.setdefault("transcription", {})
            for key in ("input_tokens", "output_tokens", "total_tokens", "seconds"):
                if isinstance(usage.get(key), int | float):
                    seen[key] = seen.get(key, 0) + usage[key]

    async def _on_buddy_transcript(self, event: dict[str, Any]) -> None:
        text = event.get("transcript")
        if isinstance(text, str) and text.strip():
            self._entry(event.get("item_id"), "buddy").text = text.strip()

    async def _on_truncated(self, event: dict[str, Any]) -> None:
        entry = self._entries.get(event.get("item_id") or "")
        if entry is not None:
            entry.interrupted = True

    async def _on_function_call(self, event: dict[str, Any]) -> None:
        name = event.get("name")
        call_id = event.get("call_id")
        if not isinstance(name, str) or not isinstance(call_id, str):
            return
        self._spawn(self._run_tool(name, call_id, str(event.get("arguments") or "{}")))

    async def _on_error(self, event: dict[str, Any]) -> None:
        # "already shorter", "no active response", a refused response.create: the call goes
        # on; a refused response.create is asked again after the current response.
        error = event.get("error") or {}
        code = error.get("code")
        log.info("call.realtime_error", call=self.call.call_id, code=code, type=error.get("type"))
        if code == "conversation_already_has_active_response" and self._queued_response is None:
            self._queued_response = self._last_request
            self.response_active = True

    # -- tools ------------------------------------------------------------------------------

    async def _run_tool(self, name: str, call_id: str, arguments: str) -> None:
        try:
            result = await self.tutor.run_call_tool(self.call.learner_id, name, arguments)
        except Exception:
            log.exception("call.tool_failed", call=self.call.call_id, tool=name)
            output = '{"ok": false, "error": "the tool failed"}'
            result = None
        else:
            output = result.output
        await self._send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": output},
            }
        )
        if result is not None:
            self.words.extend(result.words)
            if result.end_call:
                self.end("end_call")
                return
            if result.profile_changed:
                self.brief = await self.tutor.call_brief(self.call.learner_id)
                await self._send(self._session_update())
        if self.ending is None:
            self._request_response("Continue the conversation with the tool's result.")

    # -- ending -----------------------------------------------------------------------------

    def end(self, reason: str) -> None:
        """End the call with a spoken goodbye; hung up once it has been heard (or after
        ``call_goodbye_seconds`` at most)."""
        if self.ending is not None:
            return
        self.ending = reason
        self.end_reason = reason
        self.ending_at = self._loop.time()
        log.info("call.ending", call=self.call.call_id, reason=reason)
        self._request_response(prompts.call_goodbye(reason), purpose=GOODBYE)

    async def _hang_up_after_goodbye(self) -> None:
        left = self.settings.call_goodbye_seconds - (self._loop.time() - self.ending_at)
        await self.bridge.wait_played(max(0.5, left))
        await self._hang_up()

    async def _hang_up(self) -> None:
        try:
            await self.control.hang_up(self.call.provider_call_id, region_url=self.call.region_url)
        except Exception as exc:  # the stream closes below anyway; the webhook finalises
            log.warning(
                "call.hangup_failed", call=redact_id(self.call.provider_call_id), error=str(exc)
            )
        self._hangup.set()

    async def _give_up(self, why: str) -> None:
        """The model cannot be reached: the carrier apologises in its own voice, then hangs up."""
        self.end_reason = "model_unavailable"
        self.ending = self.ending or "model_unavailable"
        log.warning("call.model_unavailable", call=self.call.call_id, why=why[:200])
        lang = self.brief.phrase_language
        try:
            seconds = await self.control.say(
                self.call.provider_call_id,
                phrase("call_apology", lang),
                lang,
                region_url=self.call.region_url,
            )
            await asyncio.sleep(min(seconds, 8.0))
        except Exception as exc:
            log.warning("call.apology_failed", call=self.call.call_id, error=str(exc))
        await self._hang_up()

    # -- lifecycle watch --------------------------------------------------------------------

    async def _watch(self) -> None:
        """Maximum length, silence, goodbye deadline and session renewal, twice a second."""
        settings = self.settings
        while True:
            await asyncio.sleep(0.5)
            now = self._loop.time()
            if self.response_active or self.learner_speaking or self.bridge.unplayed_ms() > 0:
                self.last_activity = now
            if self.ending is not None:
                if now - self.ending_at > settings.call_goodbye_seconds:
                    await self._hang_up()
                    return
                continue
            if now - self.started_at >= settings.call_max_seconds:
                self.end("max_length")
            elif now - self.last_activity >= settings.call_silence_seconds:
                self.end("silence")
            elif (
                self.session is not None
                and now - self.session.opened_at >= settings.realtime_renew_seconds
                and now - self.last_activity > 0.3
            ):
                await self._renew()

    # -- usage ------------------------------------------------------------------------------

    def _add_usage(self, usage: dict[str, Any]) -> None:
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        for side in ("input_token_details", "output_token_details"):
            details = usage.get(side)
            if isinstance(details, dict):
                seen = self.usage.setdefault(side, {})
                for key, value in details.items():
                    if isinstance(value, int):
                        seen[key] = seen.get(key, 0) + value

    def _last_buddy_sentence(self) -> str | None:
        for entry in reversed(self.transcript):
            if entry.role == "buddy" and entry.text:
                sentences = [s for s in _split_sentences(entry.text) if s]
                return sentences[-1] if sentences else entry.text
        return None


def _split_sentences(text: str) -> list[str]:
    import re

    return [s.strip() for s in re.split(r"(?<=[.!?。！？])\s+", text.strip())]


_HANDLERS = {
    "session.updated": CallAgent._on_session_updated,
    "response.created": CallAgent._on_response_created,
    "response.done": CallAgent._on_response_done,
    "input_audio_buffer.speech_stopped": CallAgent._on_speech_stopped,
    "conversation.item.added": CallAgent._on_item,
    "conversation.item.created": CallAgent._on_item,
    "conversation.item.input_audio_transcription.completed": CallAgent._on_learner_transcript,
    "response.output_audio_transcript.done": CallAgent._on_buddy_transcript,
    "response.audio_transcript.done": CallAgent._on_buddy_transcript,
    "conversation.item.truncated": CallAgent._on_truncated,
    "response.function_call_arguments.done": CallAgent._on_function_call,
    "error": CallAgent._on_error,
}
