"""A protocol-faithful Telnyx: Call Control REST, signed webhooks, and callers on the media
stream, served and driven over real HTTP and WebSockets on 127.0.0.1.

* Webhooks are signed as Telnyx signs them: ed25519 (a test keypair, PyNaCl) over
  ``"{timestamp}|{body}"``, in ``telnyx-signature-ed25519`` and ``telnyx-timestamp``.
* REST commands (``POST /v2/calls/{id}/actions/{action}``) need ``Authorization: Bearer
  <key>``; a command on an ended call gets ``422`` with code ``90018``; a repeated
  ``command_id`` is not executed twice. ``answer`` with a ``stream_url`` makes the fake connect
  to it as Telnyx does (``connected``, ``start``, then media), ``hangup`` ends the call
  (``stop`` on the stream, then the ``call.hangup`` webhook).
* A ``FakeCaller`` sends real-time-paced PCMU frames (20 ms, speech-like audio through PyAV,
  quiet line noise between utterances), plays what it receives at real time, echoes each
  ``mark`` once the audio sent before it has played (at once when nothing is queued), and
  honours ``clear`` (drops the queue, returns queued marks). It records everything.

    with FakeTelnyx() as telnyx:
        settings = load_settings(**telnyx.settings(), ...)
        telnyx.webhook_url = f"{service.base_url}/calls/telnyx/webhook"
        call = telnyx.dial("+34600111222")
        call.wait_streaming(); call.caller.say(1.2); call.hang_up()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
from nacl.signing import SigningKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import speech
from tests.fakes.server import FakeServer

BYTES_PER_MS = 8  # PCMU at 8 kHz
FRAME_BYTES = 160  # 20 ms
TRACKS = {"inbound_track", "outbound_track", "both_tracks"}
CODECS = {"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16"}


def telnyx_error(status: int, code: str, title: str, detail: str = "") -> JSONResponse:
    return JSONResponse(
        {"errors": [{"code": code, "title": title, "detail": detail or title}]}, status_code=status
    )


def sign(key: SigningKey, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Telnyx sends with a webhook body."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(ts.encode() + b"|" + body).signature
    return {
        "content-type": "application/json",
        "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
        "telnyx-timestamp": ts,
    }


def webhook_body(event_type: str, payload: dict[str, Any], *, attempt: int = 1) -> bytes:
    envelope = {
        "data": {
            "record_type": "event",
            "event_type": event_type,
            "id": str(uuid.uuid4()),
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
            "payload": payload,
        },
        "meta": {"attempt": attempt, "delivered_to": "https://example.com/calls/telnyx/webhook"},
    }
    return json.dumps(envelope).encode()


class FakeCaller:
    """The Telnyx side of one media stream: a caller who talks and listens at real time."""

    def __init__(self, call: FakeCall, *, seed: int, line_seconds: float = 30.0) -> None:
        self.call = call
        self.seed = seed
        self.socket: Any = None
        self.stream_id = str(uuid.uuid4())
        self._line = speech.encode_pcmu(speech.silence(line_seconds, seed=seed))
        self._line_pos = 0
        self._upcoming = bytearray()
        self._seq = itertools.count(1)
        self._chunk = itertools.count(1)
        self.started_at = 0.0
        self.frames_sent = 0
        self.sent_frames: list[tuple[float, str]] = []  # (time, base64) when recording
        self.record_frames = False
        self.record_audio = True
        self.sent_audio = bytearray()  # every byte sent, in order (when record_audio)
        self.speech_sent_at: list[float] = []  # when each utterance's first frame went out
        # What came back, and the playout model (bytes of PCMU).
        # Every byte of media received, in order, never truncated (a clear drops bytes from
        # the playout queue, not from this log); ``queued`` counts what playout will play.
        self.received = bytearray()
        self.queued = 0
        self.media_messages = 0
        self.media_times: list[tuple[float, int]] = []  # (arrival, offset in received)
        self.underrun_events: list[tuple[float, float]] = []  # (time, gap ms)
        self.messages: list[dict[str, Any]] = []  # every non-media message received
        self.marks_received: list[str] = []
        self.marks_echoed: list[tuple[str, float, int]] = []  # (name, time, played bytes)
        self.clears: list[dict[str, float]] = []
        self.underruns = 0
        self.underrun_ms = 0.0
        self._anchor_pos = 0
        self._anchor_t = 0.0
        self._cleared_at = 0.0
        self._pending_marks: list[tuple[str, int, asyncio.TimerHandle | None]] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.played_at_stop: int | None = None
        self._sending: set[asyncio.Task[None]] = set()

    # -- the test's controls (call from the fake's loop, or through FakeCall) ------------------

    def say(self, seconds: float, seed: int | None = None) -> None:
        """Start speaking now for ``seconds`` (speech frames replace the line noise)."""
        data = speech.encode_pcmu(
            speech.speech(
                seconds, seed=seed if seed is not None else self.seed + len(self.speech_sent_at) + 1
            )
        )
        self._upcoming += data[: len(data) - len(data) % FRAME_BYTES]
        self.speech_sent_at.append(0.0)

    # -- playout ----------------------------------------------------------------------------

    def played(self, now: float | None = None) -> int:
        """Bytes played so far (in playout positions: what clears dropped never plays)."""
        now = time.monotonic() if now is None else now
        heard = self._anchor_pos + int((now - self._anchor_t) * 1000 * BYTES_PER_MS)
        return min(heard, self.queued)

    def _on_media(self, data: bytes, now: float) -> None:
        total = self.queued
        if self.played(now) >= total:  # the buffer had run dry: this plays from now
            dry_at = self._anchor_t + (total - self._anchor_pos) / BYTES_PER_MS / 1000
            gap = now - dry_at
            if total and 0 < gap < 0.25 and now - self._cleared_at > 0.3:
                self.underruns += 1
                self.underrun_ms += gap * 1000
                self.underrun_events.append((now, gap * 1000))
            self._anchor_pos = total
            self._anchor_t = now
        self.media_times.append((now, len(self.received)))
        self.received += data
        self.queued += len(data)
        self.media_messages += 1

    def _on_mark(self, name: str, now: float) -> None:
        self.marks_received.append(name)
        position = self.queued
        left = position - self.played(now)
        if left <= 0 and not self._pending_marks:
            self._echo(name)
            return
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(0.0, left / BYTES_PER_MS / 1000), self._fire_marks)
        self._pending_marks.append((name, position, handle))

    def _fire_marks(self) -> None:
        played = self.played()
        while self._pending_marks and self._pending_marks[0][1] <= played:
            name, _, _ = self._pending_marks.pop(0)
            self._echo(name)

    def _echo(self, name: str) -> None:
        self.marks_echoed.append((name, time.monotonic(), self.played()))
        self._send(
            {
                "event": "mark",
                "sequence_number": str(next(self._seq)),
                "stream_id": self.stream_id,
                "mark": {"name": name},
            }
        )

    def _on_clear(self, now: float) -> None:
        heard = self.played(now)
        self.clears.append({"at": now, "played": heard, "dropped": self.queued - heard})
        self.queued = heard
        self._anchor_pos = heard
        self._anchor_t = now
        self._cleared_at = now
        pending, self._pending_marks = self._pending_marks, []
        for name, _, handle in pending:  # Telnyx returns the queued marks
            if handle is not None:
                handle.cancel()
            self._echo(name)

    # -- the stream -------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if self.socket is not None and not self.closed.is_set():
            task = asyncio.ensure_future(self._send_text(json.dumps(message)))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_text(self, text: str) -> None:
        try:
            await self.socket.send(text)
        except Exception:
            self.closed.set()

    async def run(self, url: str) -> None:
        from websockets.asyncio.client import connect

        try:
            self.socket = await connect(url, compression=None, max_size=None, open_timeout=10)
        except Exception as exc:
            self.call.stream_error = f"{type(exc).__name__}: {exc}"
            self.closed.set()
            return
        call = self.call
        await self.socket.send(json.dumps({"event": "connected", "version": "1.0.0"}))
        await self.socket.send(
            json.dumps(
                {
                    "event": "start",
                    "sequence_number": str(next(self._seq)),
                    "stream_id": self.stream_id,
                    "start": {
                        "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
                        "call_control_id": call.call_control_id,
                        "call_session_id": call.call_session_id,
                        "from": call.from_number,
                        "to": call.to_number,
                        "tags": [],
                        "client_state": None,
                        "custom_parameters": {},
                        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                    },
                }
            )
        )
        self.started_at = time.monotonic()
        call.streaming.set()
        sender = asyncio.ensure_future(self._frames())
        try:
            async for message in self.socket:
                self._on_message(message)
        except Exception:
            pass
        finally:
            sender.cancel()
            self.close_code = self.socket.close_code
            self.closed.set()

    def _on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        event = json.loads(message)
        kind = event.get("event")
        if kind == "media":
            self._on_media(base64.b64decode(event["media"]["payload"]), now)
            return
        self.messages.append({**event, "at": now})
        if kind == "mark":
            self._on_mark(event["mark"]["name"], now)
        elif kind == "clear":
            self._on_clear(now)

    async def _frames(self) -> None:
        """One 20 ms frame every 20 ms on an absolute schedule (no drift)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in itertools.count():
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
            if self._upcoming:
                frame = bytes(self._upcoming[:FRAME_BYTES])
                del self._upcoming[:FRAME_BYTES]
                if self.speech_sent_at and self.speech_sent_at[-1] == 0.0:
                    self.speech_sent_at[-1] = time.monotonic()
            else:
                if self._line_pos + FRAME_BYTES > len(self._line):
                    self._line_pos = 0
                frame = self._line[self._line_pos : self._line_pos + FRAME_BYTES]
                self._line_pos += FRAME_BYTES
            payload = base64.b64encode(frame).decode()
            seq = next(self._seq)
            chunk = next(self._chunk)
            text = (
                f'{{"event":"media","sequence_number":"{seq}","stream_id":"{self.stream_id}",'
                f'"media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{n * 20}",'
                f'"payload":"{payload}"}}}}'
            )
            if self.record_frames:
                self.sent_frames.append((time.monotonic(), payload))
            try:
                await self.socket.send(text)
            except Exception:
                return
            if self.record_audio:
                self.sent_audio += frame
            self.frames_sent += 1

    async def stop(self) -> None:
        """The call ended at Telnyx: ``stop`` on the stream, then the socket closes."""
        if self.socket is None or self.closed.is_set():
            return
        self.played_at_stop = self.played()
        try:
            await self.socket.send(
                json.dumps(
                    {
                        "event": "stop",
                        "sequence_number": str(next(self._seq)),
                        "stream_id": self.stream_id,
                        "stop": {
                            "user_id": "3e6f995f",
                            "call_control_id": self.call.call_control_id,
                        },
                    }
                )
            )
            await self.socket.close()
        except Exception:
            pass
        self.closed.set()

    def dtmf(self, digit: str) -> None:
        self._send(
            {
                "event": "dtmf",
                "sequence_number": str(next(self._seq)),
                "stream_id": self.stream_id,
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                "dtmf": {"digit": digit},
            }
        )


@dataclass
class FakeCall:
    fake: FakeTelnyx
    call_control_id: str
    from_number: str
    to_number: str
    call_session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    call_leg_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "parked"
    commands: list[dict[str, Any]] = field(default_factory=list)
    command_ids: dict[str, int] = field(default_factory=dict)
    webhook_statuses: list[tuple[str, int]] = field(default_factory=list)
    stream_url: str | None = None
    stream_error: str | None = None
    hangup_source: str | None = None
    caller: FakeCaller | None = None
    answered: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    streaming: asyncio.Event | None = None
    ended_at: float | None = None
    task: asyncio.Task[None] | None = None

    def payload(self, **extra: Any) -> dict[str, Any]:
        return {
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "connection_id": "2811212257810187875",
            "client_state": None,
            "from": self.from_number,
            "to": self.to_number,
            "direction": "incoming",
            "state": self.state,
            **extra,
        }

    # -- test-thread helpers ------------------------------------------------------------------

    def wait_answered(self, timeout: float = 10.0) -> None:
        if not self.answered.wait(timeout):
            raise AssertionError(f"call was not answered; commands: {self.commands}")

    def wait_streaming(self, timeout: float = 10.0) -> FakeCaller:
        self.wait_answered(timeout)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.caller is not None and self.streaming is not None and self.streaming.is_set():
                return self.caller
            if self.stream_error:
                raise AssertionError(f"stream failed: {self.stream_error}")
            time.sleep(0.01)
        raise AssertionError("the stream never started")

    def wait_ended(self, timeout: float = 10.0) -> None:
        if not self.ended.wait(timeout):
            raise AssertionError(
                f"call did not end; commands: {[c['action'] for c in self.commands]}"
            )

    def say(self, seconds: float) -> None:
        self.fake.call_soon(lambda: self._caller().say(seconds))

    def press(self, digit: str) -> None:
        self.fake.call_soon(lambda: self._caller().dtmf(digit))

    def hang_up(self) -> None:
        """The caller hangs up: the stream stops, then ``call.hangup`` (source caller)."""
        self.fake.run(self.fake._end(self, cause="normal_clearing", source="caller"))

    def _caller(self) -> FakeCaller:
        assert self.caller is not None, "not streaming"
        return self.caller

    def actions(self) -> list[str]:
        return [c["action"] for c in self.commands]


class FakeTelnyx:
    """Telnyx Call Control + media streaming; one loop thread drives callers and webhooks."""

    def __init__(self, *, api_key: str = "KEY_fake_telnyx_api_key") -> None:
        self.api_key = api_key
        self.signing_key = SigningKey.generate()
        self.public_key_b64 = base64.b64encode(bytes(self.signing_key.verify_key)).decode()
        self.webhook_url: str | None = None
        self.calls: dict[str, FakeCall] = {}
        self.unauthorized = 0
        self.redeliver_on_5xx = 3
        self.app = Starlette(
            routes=[Route("/v2/calls/{ccid}/actions/{action}", self._action, methods=["POST"])]
        )
        self.server = FakeServer(self.app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-telnyx", daemon=True
        )
        self._http: httpx.AsyncClient | None = None
        self._seeds = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeTelnyx:
        self.server.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        async def close_all() -> None:
            for call in list(self.calls.values()):
                if call.caller is not None:
                    await call.caller.stop()
            if self._http is not None:
                await self._http.aclose()

        with contextlib.suppress(Exception):
            self.run(close_all(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self.server.stop()

    def __enter__(self) -> FakeTelnyx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self) -> dict[str, str]:
        return {
            "telnyx_api_key": self.api_key,
            "telnyx_public_key": self.public_key_b64,
            "telnyx_api_base_url": f"{self.server.base_url}/v2",
        }

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        self._loop.call_soon_threadsafe(fn)

    # -- webhooks ----------------------------------------------------------------------------

    def headers(self, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        return sign(self.signing_key, body, timestamp)

    async def _post_webhook(self, call: FakeCall, event_type: str, **extra: Any) -> int:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10)
        assert self.webhook_url, "set webhook_url to the service's /calls/telnyx/webhook"
        status = 0
        for attempt in range(1, self.redeliver_on_5xx + 2):
            body = webhook_body(event_type, call.payload(**extra), attempt=attempt)
            try:
                response = await self._http.post(
                    self.webhook_url, content=body, headers=self.headers(body)
                )
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            call.webhook_statuses.append((event_type, status))
            if status and status < 500:
                break
            await asyncio.sleep(0.2)
        return status

    def dial(
        self, from_number: str, to_number: str = "+13125550100", *, deliveries: int = 1
    ) -> FakeCall:
        """A new incoming call: ``call.initiated`` delivered ``deliveries`` times at once."""
        call = FakeCall(self, f"v3:{uuid.uuid4().hex}", from_number, to_number)
        self.calls[call.call_control_id] = call

        async def ring() -> None:
            await asyncio.gather(
                *(
                    self._post_webhook(call, "call.initiated", start_time=_now())
                    for _ in range(deliveries)
                )
            )

        self.run(ring())
        return call

    async def connect_direct(self, url: str, from_number: str = "+34600000000") -> FakeCall:
        """A call whose stream connects straight to ``url``, without Call Control (for a
        benchmark's reference relay, which answers nothing)."""
        call = FakeCall(self, f"v3:{uuid.uuid4().hex}", from_number, "+13125550100")
        self.calls[call.call_control_id] = call
        call.state = "answered"
        call.stream_url = url
        call.answered.set()
        call.streaming = asyncio.Event()
        call.caller = FakeCaller(call, seed=next(self._seeds) * 100)
        call.task = asyncio.ensure_future(call.caller.run(url))
        return call

    async def ring(self, from_number: str, to_number: str = "+13125550100") -> FakeCall:
        """``dial`` from inside the fake's loop (benchmarks drive many calls from there)."""
        call = FakeCall(self, f"v3:{uuid.uuid4().hex}", from_number, to_number)
        self.calls[call.call_control_id] = call
        await self._post_webhook(call, "call.initiated", start_time=_now())
        return call

    async def end(self, call: FakeCall) -> None:
        """The caller hangs up (from inside the fake's loop)."""
        await self._end(call, cause="normal_clearing", source="caller")

    def deliver(self, call: FakeCall, event_type: str, **extra: Any) -> int:
        return self.run(self._post_webhook(call, event_type, **extra))

    # -- REST --------------------------------------------------------------------------------

    async def _action(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            self.unauthorized += 1
            return telnyx_error(401, "10009", "Authentication failed", "The API key is invalid.")
        ccid = request.path_params["ccid"]
        action = request.path_params["action"]
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return telnyx_error(400, "10015", "Invalid JSON body")
        call = self.calls.get(ccid)
        if call is None:
            return telnyx_error(422, "90015", "Invalid Call Control ID")
        call.commands.append({"action": action, "body": body, "at": time.time()})
        if call.state == "hangup":
            return telnyx_error(
                422, "90018", "Call has already ended", "This call is no longer active"
            )
        command_id = body.get("command_id")
        if command_id:
            seen = call.command_ids.get(command_id, 0)
            call.command_ids[command_id] = seen + 1
            if seen:
                return JSONResponse({"data": {"result": "ok"}})
        if action == "answer":
            problem = _check_answer(body)
            if problem:
                return telnyx_error(422, "10032", "Invalid parameter", problem)
            call.state = "answered"
            call.stream_url = body.get("stream_url")
            self.call_soon(lambda: asyncio.ensure_future(self._answered(call)))
            return JSONResponse({"data": {"result": "ok", "recording_id": None}})
        if action == "hangup":
            self.call_soon(
                lambda: asyncio.ensure_future(self._end(call, "normal_clearing", "callee"))
            )
            return JSONResponse({"data": {"result": "ok"}})
        if action in ("speak", "streaming_start", "streaming_stop", "transfer"):
            return JSONResponse({"data": {"result": "ok"}})
        return telnyx_error(422, "10032", "Invalid action", f"unknown action {action!r}")

    async def _answered(self, call: FakeCall) -> None:
        call.answered.set()
        await self._post_webhook(call, "call.answered", start_time=_now())
        if call.stream_url:
            call.streaming = asyncio.Event()
            call.caller = FakeCaller(call, seed=next(self._seeds) * 100)
            await self._post_webhook(call, "streaming.started", stream_url=call.stream_url)
            call.task = asyncio.ensure_future(call.caller.run(call.stream_url))

    async def _end(self, call: FakeCall, cause: str, source: str) -> None:
        if call.state == "hangup":
            return
        call.state = "hangup"
        call.hangup_source = source
        call.ended_at = time.time()
        if call.caller is not None:
            await call.caller.stop()
        await self._post_webhook(
            call, "call.hangup", hangup_cause=cause, hangup_source=source, sip_hangup_cause="200"
        )
        call.ended.set()


def _check_answer(body: dict[str, Any]) -> str | None:
    url = body.get("stream_url")
    if url is not None and not str(url).startswith(("ws://", "wss://")):
        return "stream_url must be a ws:// or wss:// URL"
    if body.get("stream_track", "inbound_track") not in TRACKS:
        return "stream_track is invalid"
    if body.get("stream_bidirectional_mode", "mp3") not in ("mp3", "rtp"):
        return "stream_bidirectional_mode is invalid"
    if body.get("stream_bidirectional_codec", "PCMU") not in CODECS:
        return "stream_bidirectional_codec is invalid (case-sensitive)"
    return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
