"""A protocol-faithful fake of the OpenAI Realtime WebSocket (GA interface), mounted by
``FakeOpenAI`` at ``/v1/realtime`` so the official SDK's ``client.realtime.connect`` reaches it
through ``OPENAI_BASE_URL`` exactly as it reaches api.openai.com.

What it does like the real service: bearer auth at the handshake (HTTP 401 otherwise), GA
event names and shapes, ``session.update`` merged and echoed as ``session.updated``, audio in
``audio/pcmu`` (8 kHz μ-law) or ``audio/pcm`` (24 kHz s16le); server VAD by energy on the
appended audio (``speech_started`` / ``speech_stopped`` / ``committed`` and a user item, then a
response when ``create_response``), barge-in that cancels the active response
(``interrupt_response``); responses whose audio deltas are paced at real time (a small lead,
as the real service runs slightly ahead); function calls; ``conversation.item.truncate``
checked against the audio it actually sent for that item (an ``error`` past the end); errors
for a second active response and for cancelling none.

Tests script responses (``respond``), inject faults (``drop_sessions_after``,
``refuse_connects``) and read what every session received (``sessions``).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes import speech

_PCMU_FLOAT = speech.pcmu_table().astype(np.float64)
FORMATS = {"audio/pcmu": 8, "audio/pcma": 8, "audio/pcm": 48}  # bytes per ms
VOICES = {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}


@dataclass
class Spoken:
    """One scripted response: what the model says (and for how long), or tools it calls."""

    transcript: str = ""
    audio_ms: int | None = None  # default: ~65 ms per character, 600 ms at least
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    when: Callable[[dict[str, Any]], bool] | None = None  # on the response.create request
    times: int | None = 1


@dataclass
class ItemAudio:
    item_id: str
    role: str
    sent_ms: float = 0.0
    audio: bytearray = field(default_factory=bytearray)
    transcript: str = ""
    truncated_at: int | None = None


class FakeRealtimeSession:
    """One connection's state and everything it received, readable from the test thread."""

    def __init__(self, number: int, model: str | None, keep_audio: bool) -> None:
        self.number = number
        self.model = model
        self.keep_audio = keep_audio
        self.opened_at = time.time()
        self.closed_at: float | None = None
        self.config: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": f"sess_fake{number}",
            "model": model,
            "output_modalities": ["audio"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
            },
        }
        self.events: list[dict[str, Any]] = []  # every client event but appends
        self.audio_in = bytearray()
        self.appends = 0
        self.append_times: list[tuple[float, str]] = []  # (arrival, base64) when recording
        self.in_ms = 0.0
        self.items: dict[str, ItemAudio] = {}
        self.truncations: list[dict[str, Any]] = []
        self.errors_sent: list[dict[str, Any]] = []
        self.speech_started_at: list[float] = []  # monotonic time of each speech_started
        self.deltas_sent: list[tuple[float, str, bytes]] = []  # (time, item, bytes) recording
        self.responses: list[dict[str, Any]] = []  # response.create requests, in order
        self.responding = False

    @property
    def in_format(self) -> dict[str, Any]:
        return self.config["audio"]["input"]["format"]

    @property
    def out_format(self) -> dict[str, Any]:
        return self.config["audio"]["output"]["format"]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("type") == kind]


class FakeRealtime:
    """The Realtime endpoint of a FakeOpenAI (one per fake, shared by its sessions)."""

    def __init__(
        self,
        api_key: str,
        *,
        delta_ms: tuple[int, int] = (20, 120),
        lead_ms: int = 120,
        vad_threshold_dbfs: float = -40.0,
        vad_start_ms: int = 60,
        keep_audio: bool = True,
        record_timing: bool = False,
        transcription_delay: float = 0.05,
    ) -> None:
        self.api_key = api_key
        self.delta_ms = delta_ms
        self.lead_ms = lead_ms
        self.vad_threshold_dbfs = vad_threshold_dbfs
        self.vad_start_ms = vad_start_ms
        self.keep_audio = keep_audio
        self.record_timing = record_timing
        self.transcription_delay = transcription_delay
        self.sessions: list[FakeRealtimeSession] = []
        self.user_transcripts: deque[str] = deque()
        self._scripts: deque[Spoken] = deque()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._drop_after: float | None = None
        self._drops_left = 0
        self._refuse_left = 0
        self.refused = 0
        self.active = 0

    # -- scripting and faults (test thread) --------------------------------------------------

    def respond(self, transcript: str = "", **options: Any) -> FakeRealtime:
        """Script the next response (in order; unscripted responses say a default line)."""
        with self._lock:
            self._scripts.append(Spoken(transcript=transcript, **options))
        return self

    def hear(self, *transcripts: str) -> FakeRealtime:
        """What the transcription of the caller's next utterances says."""
        with self._lock:
            self.user_transcripts.extend(transcripts)
        return self

    def drop_sessions_after(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` sessions are cut (close 1011) ``seconds`` after they open."""
        with self._lock:
            self._drop_after, self._drops_left = seconds, count

    def refuse_connects(self, count: int) -> None:
        """The next ``count`` connection attempts get HTTP 503 at the handshake."""
        with self._lock:
            self._refuse_left = count

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.user_transcripts.clear()
            self._drop_after, self._drops_left, self._refuse_left = None, 0, 0
            self.sessions = []
            self.refused = 0

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.01)
        raise AssertionError("the fake Realtime never reached the expected state")

    def _take(self, request: dict[str, Any]) -> Spoken | None:
        with self._lock:
            for item in list(self._scripts):
                if item.when is None or item.when(request):
                    if item.times is not None:
                        item.times -= 1
                        if item.times <= 0:
                            self._scripts.remove(item)
                    return item
        return None

    # -- the socket ---------------------------------------------------------------------------

    async def handle(self, websocket: WebSocket) -> None:
        auth = websocket.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            await _deny(websocket, 401, "invalid_api_key", "Incorrect API key provided.")
            return
        with self._lock:
            refuse = self._refuse_left > 0
            if refuse:
                self._refuse_left -= 1
                self.refused += 1
            drop_after = None
            if self._drops_left > 0:
                self._drops_left -= 1
                drop_after = self._drop_after
        if refuse:
            await _deny(websocket, 503, "server_error", "The server is overloaded.")
            return
        model = websocket.query_params.get("model")
        if not model:
            await _deny(websocket, 400, "missing_model", "Missing required parameter: 'model'.")
            return
        await websocket.accept()
        session = FakeRealtimeSession(next(self._numbers), model, self.keep_audio)
        with self._lock:
            self.sessions = [*self.sessions, session]
        self.active += 1
        runner = _SessionRunner(self, session, websocket)
        try:
            await runner.run(drop_after)
        finally:
            self.active -= 1
            session.closed_at = time.time()


async def _deny(websocket: WebSocket, status: int, code: str, message: str) -> None:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    try:
        await websocket.send_denial_response(JSONResponse(body, status_code=status))
    except RuntimeError:  # the server has no denial-response extension
        await websocket.close(code=1008)


class _SessionRunner:
    """The server side of one session: reads client events, runs VAD and responses."""

    def __init__(self, fake: FakeRealtime, session: FakeRealtimeSession, ws: WebSocket) -> None:
        self.fake = fake
        self.session = session
        self.ws = ws
        self.ids = itertools.count(1)
        self.response_task: asyncio.Task[None] | None = None
        self.response_cancel: asyncio.Event | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.speaking = False
        self.voiced_ms = 0.0
        self.silent_ms = 0.0
        self.speech_start_ms = 0.0
        self.user_item: str | None = None
        self.last_item: str | None = None
        self.call_ids: set[str] = set()
        self.closed = False

    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{self.session.number}x{next(self.ids)}"

    async def send(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        event = {"type": event.pop("type"), "event_id": self._id("event"), **event}
        try:
            await self.ws.send_text(orjson.dumps(event).decode())
        except Exception:  # the client went away
            self.closed = True

    async def error(self, code: str, message: str, *, client_event_id: Any = None, **kw: Any):
        error = {
            "type": kw.get("error_type", "invalid_request_error"),
            "code": code,
            "message": message,
            "param": kw.get("param"),
            "event_id": client_event_id,
        }
        self.session.errors_sent.append(error)
        await self.send({"type": "error", "error": error})

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, drop_after: float | None) -> None:
        session = self.session
        await self.send({"type": "session.created", "session": dict(session.config)})
        if drop_after is not None:
            self.spawn(self._drop(drop_after))
        try:
            while not self.closed:
                try:
                    text = await self.ws.receive_text()
                except (WebSocketDisconnect, RuntimeError):
                    break
                await self.on_message(text)
        finally:
            self.closed = True
            for task in list(self.tasks):
                task.cancel()
            if self.response_task is not None:
                self.response_task.cancel()

    async def _drop(self, after: float) -> None:
        await asyncio.sleep(after)
        self.closed = True
        await self.ws.close(code=1011, reason="server error")

    async def on_message(self, text: str) -> None:
        try:
            event = orjson.loads(text)
            kind = event["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self.error("invalid_json", "The event could not be parsed as JSON.")
            return
        if kind == "input_audio_buffer.append":
            await self.on_append(event)
            return
        self.session.events.append(event)
        handler = getattr(self, "on_" + kind.replace(".", "_"), None)
        if handler is None:
            await self.error(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: 'session.update', …",
                client_event_id=event.get("event_id"),
                param="type",
            )
            return
        await handler(event)

    # -- session ------------------------------------------------------------------------------

    async def on_session_update(self, event: dict[str, Any]) -> None:
        update = event.get("session") or {}
        if update.get("type") not in (None, "realtime"):
            await self.error("invalid_value", "session.type must be 'realtime'", param="type")
            return
        for side in ("input", "output"):
            fmt = ((update.get("audio") or {}).get(side) or {}).get("format")
            if fmt is None:
                continue
            if fmt.get("type") not in FORMATS or (
                fmt.get("type") == "audio/pcm" and fmt.get("rate", 24000) != 24000
            ):
                await self.error(
                    "invalid_value",
                    f"Invalid audio format {fmt!r}",
                    param=f"session.audio.{side}.format",
                )
                return
        voice = ((update.get("audio") or {}).get("output") or {}).get("voice")
        if voice is not None and voice not in VOICES:
            await self.error("invalid_value", f"Invalid voice {voice!r}", param="voice")
            return
        _merge(self.session.config, update)
        await self.send({"type": "session.updated", "session": dict(self.session.config)})

    # -- input audio and VAD --------------------------------------------------------------------

    async def on_append(self, event: dict[str, Any]) -> None:
        session = self.session
        audio = event.get("audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (ValueError, TypeError):
            await self.error("invalid_value", "Invalid base64 audio", param="audio")
            return
        fmt = session.in_format.get("type")
        bpm = FORMATS.get(fmt, 48)
        if len(data) % (2 if fmt == "audio/pcm" else 1):
            await self.error("invalid_value", "Audio is not a whole number of samples")
            return
        session.appends += 1
        if self.fake.record_timing:
            session.append_times.append((time.monotonic(), audio))
        if session.keep_audio:
            session.audio_in += data
        ms = len(data) / bpm
        session.in_ms += ms
        if fmt == "audio/pcm":
            linear = np.frombuffer(data, dtype="<i2").astype(np.float64)
        else:
            linear = _PCMU_FLOAT[np.frombuffer(data, dtype=np.uint8)]
        # Energy VAD: mean square against the threshold, without a log per frame.
        limit = (10 ** (self.fake.vad_threshold_dbfs / 20) * 32768) ** 2 * linear.size
        await self._vad(float(linear @ linear) > limit, ms)

    async def _vad(self, voiced: bool, ms: float) -> None:
        detection = self.session.config["audio"]["input"].get("turn_detection")
        if not detection:
            return
        if not self.speaking:
            self.voiced_ms = self.voiced_ms + ms if voiced else 0.0
            if self.voiced_ms >= self.fake.vad_start_ms:
                self.speaking = True
                self.silent_ms = 0.0
                self.speech_start_ms = self.session.in_ms - self.voiced_ms
                self.user_item = self._id("item")
                self.session.speech_started_at.append(time.monotonic())
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": int(self.speech_start_ms),
                        "item_id": self.user_item,
                    }
                )
                if detection.get("interrupt_response", True) and self.response_task:
                    assert self.response_cancel is not None
                    self.response_cancel.set()
            return
        self.silent_ms = self.silent_ms + ms if not voiced else 0.0
        if self.silent_ms >= detection.get("silence_duration_ms", 500):
            self.speaking = False
            self.voiced_ms = 0.0
            item_id = self.user_item or self._id("item")
            end_ms = int(self.session.in_ms - self.silent_ms)
            await self.send(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": end_ms,
                    "item_id": item_id,
                }
            )
            await self.send(
                {
                    "type": "input_audio_buffer.committed",
                    "previous_item_id": self.last_item,
                    "item_id": item_id,
                }
            )
            self.session.items[item_id] = ItemAudio(item_id, "user")
            item = {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}],
            }
            await self.send(
                {
                    "type": "conversation.item.added",
                    "previous_item_id": self.last_item,
                    "item": item,
                }
            )
            await self.send({"type": "conversation.item.done", "item": item})
            self.last_item = item_id
            transcription = self.session.config["audio"]["input"].get("transcription")
            if transcription:
                said = self.fake.user_transcripts.popleft() if self.fake.user_transcripts else None
                duration = end_ms - self.speech_start_ms
                self.spawn(self._transcribe(item_id, said or f"(speech of {duration:.0f} ms)"))
            if detection.get("create_response", True) and self.response_task is None:
                self._start_response({})

    async def _transcribe(self, item_id: str, text: str) -> None:
        await asyncio.sleep(self.fake.transcription_delay)
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": text,
                "usage": {
                    "type": "tokens",
                    "input_tokens": 20,
                    "output_tokens": 8,
                    "total_tokens": 28,
                },
            }
        )

    async def on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        item_id = self._id("item")
        await self.send(
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": self.last_item,
                "item_id": item_id,
            }
        )
        self.last_item = item_id

    async def on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        await self.send({"type": "input_audio_buffer.cleared"})

    # -- conversation ----------------------------------------------------------------------------

    async def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = dict(event.get("item") or {})
        kind = item.get("type")
        if kind == "function_call_output" and item.get("call_id") not in self.call_ids:
            await self.error(
                "invalid_value",
                f"No tool call found with call_id '{item.get('call_id')}'.",
                client_event_id=event.get("event_id"),
            )
            return
        if kind not in ("message", "function_call_output", "function_call"):
            await self.error("invalid_value", f"Invalid item type {kind!r}", param="item.type")
            return
        item.setdefault("id", self._id("item"))
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        self.session.items[item["id"]] = ItemAudio(item["id"], item.get("role", kind))
        await self.send(
            {"type": "conversation.item.added", "previous_item_id": self.last_item, "item": item}
        )
        await self.send({"type": "conversation.item.done", "item": item})
        self.last_item = item["id"]

    async def on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item = self.session.items.get(event.get("item_id") or "")
        end_ms = event.get("audio_end_ms")
        if item is None:
            await self.error(
                "item_truncate_invalid_item_id",
                f"Item with item_id '{event.get('item_id')}' not found.",
                client_event_id=event.get("event_id"),
            )
            return
        if not isinstance(end_ms, int) or end_ms < 0:
            await self.error("invalid_value", "audio_end_ms must be a non-negative integer")
            return
        if end_ms > item.sent_ms:
            await self.error(
                "invalid_value",
                f"Audio content of {int(item.sent_ms)}ms is already shorter than {end_ms}ms",
                client_event_id=event.get("event_id"),
            )
            return
        item.truncated_at = end_ms
        self.session.truncations.append(
            {
                "item_id": item.item_id,
                "audio_end_ms": end_ms,
                "sent_ms": item.sent_ms,
                "at": time.time(),
            }
        )
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item.item_id,
                "content_index": event.get("content_index", 0),
                "audio_end_ms": end_ms,
            }
        )

    async def on_response_create(self, event: dict[str, Any]) -> None:
        if self.response_task is not None:
            await self.error(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress.",
                client_event_id=event.get("event_id"),
            )
            return
        self._start_response(event.get("response") or {})

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        if self.response_task is None or self.response_cancel is None:
            await self.error(
                "response_cancel_not_active",
                "Cancellation failed: no active response found",
                client_event_id=event.get("event_id"),
            )
            return
        self.response_cancel.set()

    # -- responses --------------------------------------------------------------------------------

    def _start_response(self, request: dict[str, Any]) -> None:
        self.session.responses.append(request)
        self.session.responding = True
        self.response_cancel = asyncio.Event()
        self.response_task = asyncio.ensure_future(self._respond(request, self.response_cancel))

    async def _respond(self, request: dict[str, Any], cancel: asyncio.Event) -> None:
        try:
            await self._generate(request, cancel)
        finally:
            self.response_task = None
            self.response_cancel = None
            self.session.responding = False

    async def _generate(self, request: dict[str, Any], cancel: asyncio.Event) -> None:
        script = self.fake._take(request) or Spoken(transcript=_default_line(request))
        response_id = self._id("resp")
        metadata = request.get("metadata")
        base = {"id": response_id, "object": "realtime.response", "metadata": metadata}
        await self.send(
            {
                "type": "response.created",
                "response": {**base, "status": "in_progress", "output": []},
            }
        )
        output: list[dict[str, Any]] = []
        index = 0
        for name, args in script.tool_calls:
            call_id = self._id("call")
            self.call_ids.add(call_id)
            item_id = self._id("item")
            arguments = args if isinstance(args, str) else orjson.dumps(args).decode()
            item = {
                "id": item_id,
                "type": "function_call",
                "status": "in_progress",
                "name": name,
                "call_id": call_id,
                "arguments": "",
            }
            common = {"response_id": response_id, "item_id": item_id, "output_index": index}
            await self.send(
                {
                    "type": "response.output_item.added",
                    "response_id": response_id,
                    "output_index": index,
                    "item": item,
                }
            )
            await self.send(
                {
                    "type": "response.function_call_arguments.delta",
                    **common,
                    "call_id": call_id,
                    "delta": arguments,
                }
            )
            await self.send(
                {
                    "type": "response.function_call_arguments.done",
                    **common,
                    "call_id": call_id,
                    "name": name,
                    "arguments": arguments,
                }
            )
            done_item = {**item, "status": "completed", "arguments": arguments}
            await self.send(
                {
                    "type": "response.output_item.done",
                    "response_id": response_id,
                    "output_index": index,
                    "item": done_item,
                }
            )
            self.session.items[item_id] = ItemAudio(item_id, "function_call")
            output.append(done_item)
            index += 1
        status = "completed"
        audio_ms = 0.0
        if script.transcript or script.audio_ms:
            item_id, sent_ms, cancelled = await self._speak(script, response_id, index, cancel)
            audio_ms = sent_ms
            output.append(
                {
                    "id": item_id,
                    "type": "message",
                    "role": "assistant",
                    "status": "incomplete" if cancelled else "completed",
                    "content": [{"type": "output_audio", "transcript": script.transcript}],
                }
            )
            if cancelled:
                status = "cancelled"
        details = (
            {"type": "cancelled", "reason": "turn_detected"} if status == "cancelled" else None
        )
        in_tokens = int(self.session.in_ms / 50) + 100
        out_tokens = int(audio_ms / 50) + len(script.transcript) // 4
        await self.send(
            {
                "type": "response.done",
                "response": {
                    **base,
                    "status": status,
                    "status_details": details,
                    "output": output,
                    "usage": {
                        "total_tokens": in_tokens + out_tokens,
                        "input_tokens": in_tokens,
                        "output_tokens": out_tokens,
                        "input_token_details": {
                            "text_tokens": 100,
                            "audio_tokens": in_tokens - 100,
                            "cached_tokens": 0,
                        },
                        "output_token_details": {
                            "text_tokens": len(script.transcript) // 4,
                            "audio_tokens": int(audio_ms / 50),
                        },
                    },
                },
            }
        )

    async def _speak(
        self, script: Spoken, response_id: str, index: int, cancel: asyncio.Event
    ) -> tuple[str, float, bool]:
        """Audio deltas at real time (``lead_ms`` ahead), stopped by a barge-in."""
        session = self.session
        item_id = self._id("item")
        fmt = session.out_format.get("type")
        bpm = FORMATS.get(fmt, 48)
        ms = script.audio_ms or max(600, 65 * len(script.transcript))
        seed = session.number * 1000 + next(self.ids)
        if fmt == "audio/pcm":
            audio = speech.pcm16_bytes(speech.speech(ms / 1000, 24000, seed=seed))
        else:
            audio = speech.encode_pcmu(speech.speech(ms / 1000, seed=seed))
        record = ItemAudio(item_id, "assistant", transcript=script.transcript)
        session.items[item_id] = record
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        common = {
            "response_id": response_id,
            "item_id": item_id,
            "output_index": index,
            "content_index": 0,
        }
        await self.send(
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": index,
                "item": item,
            }
        )
        await self.send(
            {"type": "conversation.item.added", "previous_item_id": self.last_item, "item": item}
        )
        self.last_item = item_id
        await self.send(
            {
                "type": "response.content_part.added",
                **common,
                "part": {"type": "output_audio", "transcript": ""},
            }
        )
        await self.send(
            {"type": "response.output_audio_transcript.delta", **common, "delta": script.transcript}
        )
        rng = np.random.default_rng(seed)
        low, high = self.fake.delta_ms
        loop = asyncio.get_running_loop()
        start = loop.time()
        offset = 0
        cancelled = False
        while offset < len(audio):
            if cancel.is_set():
                cancelled = True
                break
            size = int(rng.integers(low, high + 1)) * bpm
            chunk = audio[offset : offset + size]
            due = start + (record.sent_ms - self.fake.lead_ms) / 1000
            wait = due - loop.time()
            if wait > 0:
                try:
                    await asyncio.wait_for(cancel.wait(), wait)
                    cancelled = True
                    break
                except TimeoutError:
                    pass
            await self.send(
                {
                    "type": "response.output_audio.delta",
                    **common,
                    "delta": base64.b64encode(chunk).decode(),
                }
            )
            if self.fake.record_timing:
                session.deltas_sent.append((time.monotonic(), item_id, chunk))
            offset += len(chunk)
            record.sent_ms += len(chunk) / bpm
            if session.keep_audio:
                record.audio += chunk
        await self.send({"type": "response.output_audio.done", **common})
        await self.send(
            {
                "type": "response.output_audio_transcript.done",
                **common,
                "transcript": script.transcript,
            }
        )
        part = {"type": "output_audio", "transcript": script.transcript}
        await self.send({"type": "response.content_part.done", **common, "part": part})
        done = {**item, "status": "incomplete" if cancelled else "completed", "content": [part]}
        await self.send(
            {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": index,
                "item": done,
            }
        )
        await self.send({"type": "conversation.item.done", "item": done})
        return item_id, record.sent_ms, cancelled


def _default_line(request: dict[str, Any]) -> str:
    instructions = str(request.get("instructions") or "")
    if "goodbye" in instructions.lower():
        return "¡Hasta pronto! Ha sido un placer."
    return "¡Muy bien! Cuéntame un poco más, por favor."


def _merge(target: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


class _WebsocketsAdapter:
    """A ``websockets`` server connection with the few Starlette ``WebSocket`` methods the
    session runner uses."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        request = connection.request
        self.headers = {k.lower(): v for k, v in request.headers.raw_items()}
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(request.path).query)
        self.query_params = {k: v[0] for k, v in query.items()}

    async def accept(self) -> None:
        return None

    async def send_text(self, text: str) -> None:
        await self._connection.send(text)

    async def receive_text(self) -> str:
        from websockets.exceptions import ConnectionClosed

        try:
            message = await self._connection.recv()
        except ConnectionClosed:
            raise WebSocketDisconnect(1000) from None
        return message if isinstance(message, str) else message.decode()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self._connection.close(code, reason or "")

    async def send_denial_response(self, response: Any) -> None:
        raise RuntimeError("denied in process_request")


async def serve_lightweight(fake: FakeRealtime, host: str = "127.0.0.1", port: int = 0):
    """The same sessions under the ``websockets`` library instead of uvicorn + Starlette: a
    lighter server for benchmarks, where the fake must not take the CPU the product is
    measured on. Auth is checked at the handshake as in ``FakeRealtime.handle``. Returns the
    server (``.sockets[0].getsockname()`` for the port)."""
    from websockets.asyncio.server import serve

    def check(connection: Any, request: Any) -> Any:
        if request.headers.get("Authorization") != f"Bearer {fake.api_key}":
            return connection.respond(401, "Incorrect API key provided.\n")
        if not request.path.startswith("/v1/realtime"):
            return connection.respond(404, "Not found\n")
        return None

    async def handler(connection: Any) -> None:
        await fake.handle(_WebsocketsAdapter(connection))  # type: ignore[arg-type]

    return await serve(handler, host, port, process_request=check, compression=None, max_size=None)
