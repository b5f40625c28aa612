"""A protocol-faithful Vonage Voice: the answer and event webhooks it sends, the REST API it
serves, and callers on the media WebSocket, over real HTTP and WebSockets on 127.0.0.1.

* Webhooks are signed as Vonage signs them: ``Authorization: Bearer <JWT>``, HS256 with the
  signature secret, claims ``iat``, ``jti``, ``iss``, ``api_key``, ``application_id`` and
  ``payload_hash`` (SHA-256 hex of the raw body, for requests that have one).
* A call starts with the answer webhook (GET with the fields in the query, or POST JSON), whose
  NCCO is parsed and checked as Vonage would (a ``connect`` to one ``websocket`` endpoint, a
  known ``content-type``, ``headers`` within 512 bytes...). Then the phone leg's events go to
  ``event_url`` and the socket leg's to the NCCO's ``eventUrl``; a socket that cannot connect
  reports ``failed`` there and the NCCO it answers (``eventType: synchronous``) is followed.
* The caller connects to the NCCO's ``uri``, with the NCCO ``headers`` in the handshake and
  flattened into the first text message (``websocket:connected`` with ``content-type``), then
  streams 640-byte L16 frames every 20 ms on an absolute clock (speech-like audio while
  talking, a quiet line otherwise). What comes back is played at real time from a buffer
  (underruns, the buffer's depth and how much was played when are recorded); ``clear`` drops
  what is unplayed and answers ``websocket:cleared``; ``notify`` is echoed as
  ``websocket:notify`` once the audio sent before it has played. DTMF goes as
  ``websocket:dtmf``.
* The REST API (``PUT /v1/calls/{uuid}`` hangup/transfer, ``PUT /v1/calls/{uuid}/talk``)
  accepts only an RS256 JWT signed by the application's private key (a test keypair generated
  here, its private half in a temp file for ``VONAGE_PRIVATE_KEY_PATH``), with
  ``application_id``, ``iat``, ``jti`` and ``exp``. A call that has ended is a 404. The API is
  also served on a second host, the ``region_url`` the answer webhook names.

    with FakeVonage() as vonage:
        settings = load_settings(**vonage.settings(), ...)
        vonage.answer_url = f"{service.base_url}/calls/vonage/answer"
        vonage.event_url = f"{service.base_url}/calls/vonage/events"
        call = vonage.dial("+34600111222")
        caller = call.wait_connected(); call.say(1.2); call.hang_up()
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import jwt
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.audio_quality import speech_like
from tests.fakes.faults import Faults
from tests.fakes.server import FakeServer

RATE = 16_000
BYTES_PER_MS = RATE * 2 // 1000  # 32: L16 mono at 16 kHz
FRAME_BYTES = 640  # 20 ms
CONTENT_TYPES = {"audio/l16;rate=16000": 640, "audio/l16;rate=8000": 320}
MAX_HEADERS_BYTES = 512
ERRORS = "https://developer.nexmo.com/api-errors"
UNDERRUN_GAP_S = 0.25  # a longer silence is a pause between answers, not a starved buffer
# Vonage phone-leg statuses after which nothing else happens on the call.
FINAL = {"completed", "busy", "cancelled", "failed", "rejected", "timeout", "unanswered"}


def vonage_error(status: int, title: str, detail: str, kind: str) -> JSONResponse:
    """Vonage's problem-details error body."""
    return JSONResponse(
        {
            "type": f"{ERRORS}#{kind}",
            "title": title,
            "detail": detail,
            "instance": str(uuid.uuid4()),
        },
        status_code=status,
    )


def digits(number: str) -> str:
    """E.164 to the bare digits Vonage sends ("+447700900000" -> "447700900000")."""
    return number.lstrip("+")


def line_noise(seconds: float, seed: int) -> bytes:
    """A quiet line (about -62 dBFS): never digital zero, so no two frames are equal."""
    rng = np.random.default_rng(seed + 7919)
    return (rng.normal(0, 26, int(seconds * RATE))).astype("<i2").tobytes()


def check_ncco(ncco: Any) -> list[str]:
    """What Vonage would refuse in an answer NCCO (empty when it is fine)."""
    if not isinstance(ncco, list) or not ncco:
        return ["the NCCO is not a non-empty JSON array of actions"]
    problems: list[str] = []
    for index, action in enumerate(ncco):
        where = f"action {index}"
        if not isinstance(action, dict) or not isinstance(action.get("action"), str):
            problems.append(f"{where} is not an object with an action")
            continue
        kind = action["action"]
        if kind == "talk":
            text = action.get("text")
            if not isinstance(text, str) or not text or len(text) > 1500:
                problems.append(f"{where}: talk needs a text of 1-1500 characters")
        elif kind == "connect":
            problems += _check_connect(action, where)
        else:
            problems.append(f"{where}: action {kind!r} is not one this fake knows")
    return problems


def _check_connect(action: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    if action.get("eventType", "synchronous") != "synchronous":
        problems.append(f"{where}: eventType must be 'synchronous'")
    event_url = action.get("eventUrl")
    if event_url is not None and not (
        isinstance(event_url, list)
        and len(event_url) == 1
        and isinstance(event_url[0], str)
        and event_url[0].startswith(("http://", "https://"))
    ):
        problems.append(f"{where}: eventUrl must be an array of one http(s) URL")
    caller = action.get("from")
    if caller is not None and not (isinstance(caller, str) and caller.isdigit()):
        problems.append(f"{where}: from must be a number in international digits")
    endpoints = action.get("endpoint")
    if not isinstance(endpoints, list) or len(endpoints) != 1 or not isinstance(endpoints[0], dict):
        return [*problems, f"{where}: endpoint must be an array of one endpoint"]
    endpoint = endpoints[0]
    if endpoint.get("type") != "websocket":
        problems.append(f"{where}: endpoint type {endpoint.get('type')!r} is not websocket")
    uri = endpoint.get("uri")
    if not isinstance(uri, str) or not uri.startswith(("ws://", "wss://")):
        problems.append(f"{where}: websocket uri must be ws:// or wss://")
    if endpoint.get("content-type") not in CONTENT_TYPES:
        problems.append(f"{where}: content-type must be one of {sorted(CONTENT_TYPES)}")
    headers = endpoint.get("headers", {})
    if not isinstance(headers, dict):
        problems.append(f"{where}: headers must be an object")
    elif len(json.dumps(headers, separators=(",", ":")).encode()) > MAX_HEADERS_BYTES:
        problems.append(f"{where}: headers are over {MAX_HEADERS_BYTES} bytes")
    return problems


class Playout:
    """The caller's side of the line: a buffer played at real time from the moment audio
    arrives into an empty one. Positions are bytes of L16 at 16 kHz."""

    def __init__(self) -> None:
        self.queued = 0  # bytes that will have played once the buffer empties
        self._anchor_pos = 0
        self._anchor_t = 0.0
        self._cleared_at = -1.0
        self.underruns = 0
        self.underrun_ms = 0.0
        self.underrun_events: list[tuple[float, float]] = []  # (time, gap ms)
        self.max_buffered_ms = 0.0

    def played(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        heard = self._anchor_pos + int((now - self._anchor_t) * 1000 * BYTES_PER_MS)
        return min(heard, self.queued)

    def buffered_ms(self, now: float | None = None) -> float:
        return (self.queued - self.played(now)) / BYTES_PER_MS

    def add(self, nbytes: int, now: float) -> None:
        if self.played(now) >= self.queued:  # ran dry: this audio plays from now
            dry_at = self._anchor_t + (self.queued - self._anchor_pos) / BYTES_PER_MS / 1000
            gap = now - dry_at
            if self.queued and 0 < gap < UNDERRUN_GAP_S and now - self._cleared_at > 0.3:
                self.underruns += 1
                self.underrun_ms += gap * 1000
                self.underrun_events.append((now, gap * 1000))
            self._anchor_pos = self.queued
            self._anchor_t = now
        self.queued += nbytes
        depth = self.buffered_ms(now)
        if depth > self.max_buffered_ms:
            self.max_buffered_ms = depth

    def clear(self, now: float) -> int:
        """Drop what is unplayed; returns how many bytes were dropped."""
        heard = self.played(now)
        dropped = self.queued - heard
        self.queued = self._anchor_pos = heard
        self._anchor_t = now
        self._cleared_at = now
        return dropped


class FakeCaller:
    """Vonage's side of one media WebSocket: a caller who talks and listens at real time."""

    def __init__(
        self,
        call: FakeCall,
        *,
        seed: int,
        notify_on_clear: Literal["drop", "fire"] = "drop",
        line_seconds: float = 20.0,
    ) -> None:
        self.call = call
        self.seed = seed
        # What happens to a notify whose audio a clear dropped: Vonage's docs do not say, so
        # the product must cope with both (it never plays, or it is echoed at once).
        self.notify_on_clear = notify_on_clear
        self.socket: Any = None
        self.frame_bytes = FRAME_BYTES
        self._line = line_noise(line_seconds, seed)
        self._line_pos = 0
        self._upcoming = bytearray()
        self.started_at = 0.0
        self.frames_sent = 0
        self.record_audio = True
        self.record_frames = False
        self.sent_audio = bytearray()
        self.sent_frames: list[tuple[float, bytes]] = []  # (time, frame) when record_frames
        self.speech_sent_at: list[float] = []  # when each utterance's first frame went out
        self.playout = Playout()
        self.received = bytearray()  # every audio byte received, in order (clears included)
        self.frames_received = 0
        self.frame_times: list[tuple[float, int, int]] = []  # (arrival, offset, played then)
        self.bad_frames: list[int] = []  # sizes of binary frames that were not 640 bytes
        self.messages: list[dict[str, Any]] = []  # every text message received, with "at"
        self.unknown: list[Any] = []  # text messages Vonage would not understand
        self.clears: list[dict[str, float]] = []
        self.notifies: list[dict[str, Any]] = []  # echoed: payload, at, played
        self._pending_notify: list[tuple[Any, int, asyncio.TimerHandle]] = []
        self.dtmf_sent: list[str] = []
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.closed_by: Literal["vonage", "app"] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- what the test does ----------------------------------------------------------------

    def say(self, seconds: float, seed: int | None = None) -> None:
        """Start talking now for ``seconds`` of speech-like audio."""
        seed = seed if seed is not None else self.seed + len(self.speech_sent_at) + 1
        audio = speech_like(seconds, RATE, seed=seed).tobytes()
        self._upcoming += audio[: len(audio) - len(audio) % self.frame_bytes]
        self.speech_sent_at.append(0.0)

    def press(self, digit: str, duration_ms: int = 260) -> None:
        self.dtmf_sent.append(digit)
        self._send_text({"event": "websocket:dtmf", "digit": digit, "duration": duration_ms})

    @property
    def played_bytes(self) -> int:
        return self.playout.played()

    def text_events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("action") == name]

    # -- the socket ----------------------------------------------------------------------------

    async def run(self, uri: str, headers: dict[str, str], content_type: str) -> bool:
        """Connect and stream until either side closes; False when the socket never opened."""
        from websockets.asyncio.client import connect

        self.frame_bytes = CONTENT_TYPES[content_type]
        try:
            self.socket = await connect(
                uri,
                additional_headers={k: str(v) for k, v in headers.items()},
                compression=None,
                max_size=None,
                open_timeout=10,
            )
        except Exception as exc:
            self.call.stream_error = f"{type(exc).__name__}: {exc}"
            self.closed.set()
            return False
        first = {"event": "websocket:connected", "content-type": content_type, **headers}
        await self.socket.send(json.dumps(first))
        self.started_at = time.monotonic()
        self.connected.set()
        sender = asyncio.ensure_future(self._frames())
        try:
            async for message in self.socket:
                self._on_message(message)
        except Exception:
            pass
        finally:
            sender.cancel()
            for _, _, handle in self._pending_notify:
                handle.cancel()
            self._pending_notify.clear()
            self.close_code = self.socket.close_code
            if self.closed_by is None:
                self.closed_by = "app"
            self.closed.set()
        return True

    async def close(self) -> None:
        """Vonage ends the socket (the call ended or was transferred away)."""
        if self.socket is None or self.closed.is_set():
            return
        self.closed_by = "vonage"
        with contextlib.suppress(Exception):
            await self.socket.close()
        await self.closed.wait()

    def _on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        if isinstance(message, bytes):
            if len(message) != self.frame_bytes:
                self.bad_frames.append(len(message))
            played = self.playout.played(now)
            self.frame_times.append((now, len(self.received), played))
            self.received += message
            self.frames_received += 1
            self.playout.add(len(message), now)
            return
        try:
            command = json.loads(message)
        except ValueError:
            self.unknown.append(message)
            return
        if not isinstance(command, dict):
            self.unknown.append(command)
            return
        self.messages.append({**command, "at": now})
        action = command.get("action")
        if action == "clear":
            self._on_clear(now)
        elif action == "notify" and isinstance(command.get("payload"), dict):
            self._on_notify(command["payload"], now)
        else:
            self.unknown.append(command)

    def _on_clear(self, now: float) -> None:
        played = self.playout.played(now)
        dropped = self.playout.clear(now)
        self.clears.append({"at": now, "played": played, "dropped": dropped})
        pending, self._pending_notify = self._pending_notify, []
        for payload, position, handle in pending:
            handle.cancel()
            if self.notify_on_clear == "fire":
                self._echo(payload, min(position, played))
        self._send_text({"event": "websocket:cleared"})

    def _on_notify(self, payload: dict[str, Any], now: float) -> None:
        position = self.playout.queued
        left_ms = (position - self.playout.played(now)) / BYTES_PER_MS
        if left_ms <= 0 and not self._pending_notify:
            self._echo(payload, position)
            return
        handle = asyncio.get_running_loop().call_later(left_ms / 1000, self._fire_notifies)
        self._pending_notify.append((payload, position, handle))

    def _fire_notifies(self) -> None:
        played = self.playout.played()
        while self._pending_notify and self._pending_notify[0][1] <= played:
            payload, position, _ = self._pending_notify.pop(0)
            self._echo(payload, position)

    def _echo(self, payload: dict[str, Any], position: int) -> None:
        """``position``: the audio (bytes, in playout terms) sent before the notify."""
        self.notifies.append(
            {
                "payload": payload,
                "at": time.monotonic(),
                "position": position,
                "played": self.playout.played(),
            }
        )
        self._send_text({"event": "websocket:notify", "payload": payload})

    def _send_text(self, message: dict[str, Any]) -> None:
        if self.socket is None or self.closed.is_set():
            return
        task = asyncio.ensure_future(self._send_quietly(json.dumps(message)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_quietly(self, data: str | bytes) -> None:
        with contextlib.suppress(Exception):
            await self.socket.send(data)

    async def _frames(self) -> None:
        """One frame every 20 ms on an absolute schedule (no drift)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        size = self.frame_bytes
        for n in itertools.count():
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
            if self._upcoming:
                frame = bytes(self._upcoming[:size])
                del self._upcoming[:size]
                if self.speech_sent_at and self.speech_sent_at[-1] == 0.0:
                    self.speech_sent_at[-1] = time.monotonic()
            else:
                if self._line_pos + size > len(self._line):
                    self._line_pos = 0
                frame = self._line[self._line_pos : self._line_pos + size]
                self._line_pos += size
            try:
                await self.socket.send(frame)
            except Exception:
                return
            if self.record_frames:
                self.sent_frames.append((time.monotonic(), frame))
            if self.record_audio:
                self.sent_audio += frame
            self.frames_sent += 1


@dataclass
class FakeCall:
    """One call at the fake: what it was told and what it did."""

    fake: FakeVonage
    uuid: str
    from_number: str  # E.164
    to_number: str
    conversation_uuid: str = field(default_factory=lambda: f"CON-{uuid.uuid4()}")
    socket_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "started"
    ncco: Any = None
    ncco_problems: list[str] = field(default_factory=list)
    answer_status: int | None = None
    fallback_ncco: Any = None
    talks: list[dict[str, Any]] = field(default_factory=list)  # NCCO talk actions followed
    events: list[dict[str, Any]] = field(default_factory=list)  # webhooks sent and answers
    rest: list[dict[str, Any]] = field(default_factory=list)  # verified REST calls
    stream_error: str | None = None
    caller: FakeCaller | None = None
    started_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    answered: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None

    @property
    def websocket(self) -> dict[str, Any] | None:
        """The NCCO's websocket endpoint, when it has one."""
        for action in self.ncco or []:
            if isinstance(action, dict) and action.get("action") == "connect":
                return (action.get("endpoint") or [None])[0]
        return None

    def event_statuses(self, leg: str | None = None) -> list[str]:
        return [e["status"] for e in self.events if leg is None or e["leg"] == leg]

    # -- test-thread helpers ---------------------------------------------------------------

    def wait_connected(self, timeout: float = 10.0) -> FakeCaller:
        deadline = time.time() + timeout
        while time.time() < deadline:
            caller = self.caller
            if caller is not None and caller.connected.is_set():
                return caller
            if self.stream_error or self.ncco_problems or self.ended.is_set():
                break
            time.sleep(0.01)
        raise AssertionError(
            f"the socket never connected: error={self.stream_error} "
            f"ncco_problems={self.ncco_problems} answer_status={self.answer_status}"
        )

    def wait_ended(self, timeout: float = 10.0) -> None:
        if not self.ended.wait(timeout):
            raise AssertionError(f"call did not end; events: {self.event_statuses()}")

    def say(self, seconds: float) -> None:
        self.fake.call_soon(lambda: self._caller().say(seconds))

    def press(self, digit: str) -> None:
        self.fake.call_soon(lambda: self._caller().press(digit))

    def hang_up(self) -> None:
        """The caller hangs up: the socket closes, then the legs' ``completed`` events."""
        self.fake.run(self.fake._end(self, "completed"))

    def _caller(self) -> FakeCaller:
        assert self.caller is not None, "the socket is not connected"
        return self.caller


class FakeVonage:
    """Vonage Voice for one application: webhooks out, REST in, callers on sockets; one loop
    thread drives the callers and webhooks."""

    def __init__(
        self,
        *,
        application_id: str | None = None,
        api_key: str = "a1b2c3d4",
        answer_method: Literal["GET", "POST"] = "GET",
        send_region_url: bool = True,
        notify_on_clear: Literal["drop", "fire"] = "drop",
        record_frames: bool = False,
    ) -> None:
        self.application_id = application_id or str(uuid.uuid4())
        self.api_key = api_key
        self.signature_secret = secrets.token_urlsafe(48)
        self.answer_method = answer_method
        self.send_region_url = send_region_url
        self.notify_on_clear = notify_on_clear
        # Callers keep every frame they send with its time, from the first (benchmarks), and
        # then not the audio as one buffer.
        self.record_frames = record_frames
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self._key.public_key()
        self._dir = Path(tempfile.mkdtemp(prefix="fake-vonage-"))
        self.private_key_path = self._dir / "private.key"
        self.private_key_path.write_bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.answer_url: str | None = None
        self.event_url: str | None = None
        self.calls: dict[str, FakeCall] = {}
        self.refused: list[dict[str, Any]] = []  # REST requests refused (401), with the reason
        self.jtis: list[str] = []
        self.faults = Faults()
        self.redeliver_on_5xx = 2
        routes = [
            Route("/v1/calls", self._list, methods=["GET"]),
            Route("/v1/calls/{uuid}", self._modify, methods=["PUT"]),
            Route("/v1/calls/{uuid}/talk", self._talk, methods=["PUT", "DELETE"]),
        ]
        self.app = Starlette(routes=routes)
        self.server = FakeServer(self.app)
        self.region = FakeServer(self.app)  # the same API on the call's "region" host
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-vonage", daemon=True
        )
        self._http: httpx.AsyncClient | None = None
        self._seeds = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeVonage:
        self.server.start()
        self.region.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        async def close_all() -> None:
            for call in list(self.calls.values()):
                if call.caller is not None:
                    await call.caller.close()
                if call.task is not None:
                    call.task.cancel()
            if self._http is not None:
                await self._http.aclose()

        with contextlib.suppress(Exception):
            self.run(close_all(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self.server.stop()
        self.region.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> FakeVonage:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self) -> dict[str, str]:
        """The product's settings for this fake (``load_settings(**fake.settings())``)."""
        return {
            "vonage_application_id": self.application_id,
            "vonage_private_key_path": str(self.private_key_path),
            "vonage_signature_secret": self.signature_secret,
            "vonage_api_base_url": self.server.base_url,
        }

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        self._loop.call_soon_threadsafe(fn)

    # -- signing -----------------------------------------------------------------------------

    def sign(
        self,
        body: bytes,
        *,
        secret: str | None = None,
        issued_at: float | None = None,
        payload_hash: str | None = None,
        hash_body: bool = True,
        **claims: Any,
    ) -> dict[str, str]:
        """The ``Authorization`` header Vonage sends with a webhook. The keywords make the
        wrong ones tests need (another secret, an old ``iat``, a hash of another body)."""
        payload: dict[str, Any] = {
            "iat": int(time.time() if issued_at is None else issued_at),
            "jti": str(uuid.uuid4()),
            "iss": "Vonage",
            "api_key": self.api_key,
            "application_id": self.application_id,
        }
        if payload_hash is not None:
            payload["payload_hash"] = payload_hash
        elif hash_body and body:
            payload["payload_hash"] = hashlib.sha256(body).hexdigest()
        payload.update(claims)
        token = jwt.encode(payload, secret or self.signature_secret, algorithm="HS256")
        return {"authorization": f"Bearer {token}"}

    # -- calls -------------------------------------------------------------------------------

    def dial(
        self,
        from_number: str,
        to_number: str = "+447700900000",
        *,
        method: Literal["GET", "POST"] | None = None,
    ) -> FakeCall:
        """A new incoming call (from the test thread): the answer webhook has been answered
        when this returns; the socket connects in the background."""
        return self.run(self.ring(from_number, to_number, method=method))

    async def ring(
        self,
        from_number: str,
        to_number: str = "+447700900000",
        *,
        method: Literal["GET", "POST"] | None = None,
    ) -> FakeCall:
        """``dial`` from inside the fake's loop (benchmarks drive many calls from there)."""
        call = FakeCall(self, str(uuid.uuid4()), from_number, to_number)
        self.calls[call.uuid] = call
        await self._phone_event(call, "started")
        await self._phone_event(call, "ringing")
        ncco = await self._fetch_answer(call, method or self.answer_method)
        if ncco is None:
            await self._finish(call, "failed")
            return call
        call.task = asyncio.ensure_future(self._follow(call, ncco))
        return call

    def live_call(
        self, from_number: str = "+34600111222", to_number: str = "+447700900000"
    ) -> FakeCall:
        """A call that is up at Vonage without having gone through the answer webhook (for
        tests of the REST API alone)."""
        call = FakeCall(self, str(uuid.uuid4()), from_number, to_number, status="answered")
        call.answered_at = time.time()
        call.answered.set()
        self.calls[call.uuid] = call
        return call

    async def _fetch_answer(self, call: FakeCall, method: str) -> Any:
        assert self.answer_url, "set answer_url to the service's /calls/vonage/answer"
        fields = {
            "to": digits(call.to_number),
            "from": digits(call.from_number),
            "uuid": call.uuid,
            "conversation_uuid": call.conversation_uuid,
        }
        if self.send_region_url:
            fields["region_url"] = self.region.base_url
        client = self._client()
        for _ in range(self.redeliver_on_5xx + 1):
            try:
                if method == "GET":
                    url = f"{self.answer_url}?{urlencode(fields)}"
                    response = await client.get(url, headers=self.sign(b""))
                else:
                    body = json.dumps(fields).encode()
                    headers = {"content-type": "application/json", **self.sign(body)}
                    response = await client.post(self.answer_url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                call.stream_error = f"answer webhook: {type(exc).__name__}"
                return None
            call.answer_status = response.status_code
            if response.status_code < 500:
                break
            await asyncio.sleep(0.2)
        if call.answer_status != 200:
            return None
        try:
            ncco = response.json()
        except ValueError:
            call.ncco_problems = ["the answer is not JSON"]
            return None
        call.ncco = ncco
        call.ncco_problems = check_ncco(ncco)
        return None if call.ncco_problems else ncco

    async def _follow(self, call: FakeCall, ncco: list[dict[str, Any]]) -> None:
        """Run the NCCO's actions in order, as Vonage does; the call ends after the last."""
        call.status = "answered"
        call.answered_at = time.time()
        call.answered.set()
        await self._phone_event(call, "answered", start_time=_now())
        for action in ncco:
            if call.status in FINAL:
                return
            if action["action"] == "talk":
                call.talks.append(action)
                await asyncio.sleep(min(2.0, len(action["text"]) / 60))
            elif action["action"] == "connect":
                replacement = await self._connect(call, action)
                if replacement is not None:  # the socket failed: its event's answer
                    call.fallback_ncco = replacement
                    if not check_ncco(replacement):
                        await self._follow_fallback(call, replacement)
                    break
        if call.status not in FINAL:
            await self._finish(call, "completed")

    async def _follow_fallback(self, call: FakeCall, ncco: list[dict[str, Any]]) -> None:
        for action in ncco:
            if action["action"] == "talk":
                call.talks.append(action)
                await asyncio.sleep(min(2.0, len(action["text"]) / 60))

    async def _connect(self, call: FakeCall, action: dict[str, Any]) -> Any:
        """Open the socket and stay on it until it closes; returns the NCCO the socket leg's
        event URL answered to ``failed``, when the socket could not connect."""
        endpoint = action["endpoint"][0]
        event_url = (action.get("eventUrl") or [None])[0]
        headers = {str(k): str(v) for k, v in (endpoint.get("headers") or {}).items()}
        await self._socket_event(call, event_url, "started", headers)
        caller = FakeCaller(
            call, seed=next(self._seeds) * 100, notify_on_clear=self.notify_on_clear
        )
        caller.record_frames = self.record_frames
        caller.record_audio = not self.record_frames
        call.caller = caller
        run = asyncio.ensure_future(caller.run(endpoint["uri"], headers, endpoint["content-type"]))
        opened = asyncio.ensure_future(caller.connected.wait())
        await asyncio.wait({run, opened}, return_when=asyncio.FIRST_COMPLETED)
        if not caller.connected.is_set():
            opened.cancel()
            await run
            answer = await self._socket_event(call, event_url, "failed", headers)
            return answer if isinstance(answer, list) else None
        await self._socket_event(call, event_url, "answered", headers)
        await run
        if caller.closed_by == "app":
            await self._socket_event(call, event_url, "disconnected", headers)
        else:
            await self._socket_event(call, event_url, "completed", headers)
        return None

    async def _end(self, call: FakeCall, status: str) -> None:
        """The call ends at Vonage's side (the caller hung up, or a REST hangup)."""
        if call.status in FINAL:
            return
        call.status = status
        if call.caller is not None:
            await call.caller.close()
        if call.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(call.task), timeout=5)
        await self._finish(call, status, force=True)

    async def _finish(self, call: FakeCall, status: str, *, force: bool = False) -> None:
        if call.ended.is_set() or (call.status in FINAL and not force):
            return
        call.status = status
        call.ended_at = time.time()
        extra: dict[str, Any] = {}
        if status == "completed" and call.answered_at is not None:
            extra = {
                "start_time": _iso(call.answered_at),
                "end_time": _iso(call.ended_at),
                "duration": str(int(call.ended_at - call.answered_at)),
                "rate": "0.00450000",
                "price": f"{(call.ended_at - call.answered_at) / 60 * 0.0045:.8f}",
                "network": "23410",
            }
        await self._phone_event(call, status, **extra)
        call.ended.set()

    # -- webhooks ----------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10)
        return self._http

    async def _phone_event(self, call: FakeCall, status: str, **extra: Any) -> Any:
        payload = {
            "from": digits(call.from_number),
            "to": digits(call.to_number),
            "uuid": call.uuid,
            "conversation_uuid": call.conversation_uuid,
            "status": status,
            "direction": "inbound",
            "timestamp": _now(),
            **extra,
        }
        return await self._post_event(call, "phone", self.event_url, payload)

    async def _socket_event(
        self, call: FakeCall, url: str | None, status: str, headers: dict[str, str]
    ) -> Any:
        endpoint = call.websocket or {}
        payload = {
            "from": digits(call.from_number),
            "to": endpoint.get("uri", ""),
            "uuid": call.socket_uuid,
            "conversation_uuid": call.conversation_uuid,
            "status": status,
            "direction": "outbound",
            "timestamp": _now(),
            "headers": headers,
        }
        return await self._post_event(call, "websocket", url or self.event_url, payload)

    async def _post_event(
        self, call: FakeCall, leg: str, url: str | None, payload: dict[str, Any]
    ) -> Any:
        """POST a signed event; returns the answer's JSON (an NCCO, for synchronous events)."""
        record: dict[str, Any] = {"leg": leg, "status": payload["status"], "payload": payload}
        call.events.append(record)
        if not url:
            return None
        body = json.dumps(payload).encode()
        for _ in range(self.redeliver_on_5xx + 1):
            headers = {"content-type": "application/json", **self.sign(body)}
            try:
                response = await self._client().post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                record["http_status"] = f"{type(exc).__name__}"
                return None
            record["http_status"] = response.status_code
            if response.status_code < 500:
                break
            await asyncio.sleep(0.2)
        try:
            return response.json() if response.content else None
        except ValueError:
            return None

    # -- REST --------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        """The claims of a valid application JWT, or the 401 Vonage answers."""
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        reason = None
        claims: dict[str, Any] = {}
        if scheme.lower() != "bearer" or not token:
            reason = "missing bearer token"
        else:
            try:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(
                    token,
                    self.public_key,
                    algorithms=["RS256"],
                    options={"require": ["application_id", "iat", "jti", "exp"]},
                )
                if header.get("alg") != "RS256":
                    reason = "not RS256"
                elif claims["application_id"] != self.application_id:
                    reason = "another application"
                elif claims["iat"] > time.time() + 60:
                    reason = "issued in the future"
                elif claims["exp"] - claims["iat"] > 24 * 3600:
                    reason = "valid for more than 24 hours"
            except jwt.InvalidTokenError as exc:
                reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            self.refused.append({"path": request.url.path, "reason": reason, "at": time.time()})
            return None, vonage_error(
                401, "Invalid credentials", f"Authentication failed: {reason}", "unauthorized"
            )
        self.jtis.append(str(claims["jti"]))
        return claims, None

    def _record(self, call: FakeCall, request: Request, kind: str, body: Any) -> None:
        host = "region" if request.url.port == self.region.port else "api"
        call.rest.append({"action": kind, "body": body, "host": host, "at": time.time()})

    async def _list(self, request: Request) -> Response:
        """``GET /v1/calls``: the most recent calls, newest first (HAL, as Vonage pages)."""
        _, refusal = self._authorize(request)
        if refusal is not None:
            return refusal
        try:
            size = max(1, min(100, int(request.query_params.get("page_size", "10"))))
        except ValueError:
            return vonage_error(400, "Bad Request", "page_size is not a number", "bad-request")
        calls = sorted(self.calls.values(), key=lambda c: c.started_at, reverse=True)[:size]
        records = [
            {
                "uuid": c.uuid,
                "conversation_uuid": c.conversation_uuid,
                "status": c.status,
                "direction": "inbound",
                "from": {"type": "phone", "number": digits(c.from_number)},
                "to": {"type": "phone", "number": digits(c.to_number)},
            }
            for c in calls
        ]
        return JSONResponse(
            {
                "count": len(self.calls),
                "page_size": size,
                "record_index": 0,
                "_links": {"self": {"href": "/v1/calls?page_size=" + str(size)}},
                "_embedded": {"calls": records},
            }
        )

    async def _modify(self, request: Request) -> Response:
        _, refusal = self._authorize(request)
        if refusal is not None:
            return refusal
        if (fault := self.faults.take(request.url.path)) is not None:
            return fault.response()
        try:
            body = await request.json()
        except ValueError:
            return vonage_error(400, "Bad Request", "The body is not JSON", "bad-request")
        call = self.calls.get(request.path_params["uuid"])
        if call is None or call.status in FINAL:
            return vonage_error(
                404, "Not Found", "The call was not found or has ended", "not-found"
            )
        action = body.get("action") if isinstance(body, dict) else None
        self._record(call, request, str(action), body)
        if action == "hangup":
            self.call_soon(lambda: asyncio.ensure_future(self._end(call, "completed")))
            return Response(status_code=204)
        if action == "transfer":
            destination = body.get("destination") or {}
            ncco = destination.get("ncco")
            if destination.get("type") != "ncco" or (ncco is None and not destination.get("url")):
                return vonage_error(400, "Bad Request", "destination is invalid", "bad-request")
            if ncco is not None and check_ncco(ncco):
                return vonage_error(400, "Bad Request", "; ".join(check_ncco(ncco)), "bad-request")
            self.call_soon(lambda: asyncio.ensure_future(self._transfer(call, ncco)))
            return Response(status_code=204)
        if action in ("mute", "unmute", "earmuff", "unearmuff"):
            return Response(status_code=204)
        return vonage_error(400, "Bad Request", f"unknown action {action!r}", "bad-request")

    async def _transfer(self, call: FakeCall, ncco: list[dict[str, Any]] | None) -> None:
        """The call leaves its socket for the new NCCO, then ends after it."""
        if call.caller is not None:
            await call.caller.close()
        if call.task is not None:
            call.task.cancel()
        for action in ncco or []:
            if action.get("action") == "talk":
                call.talks.append(action)
        await self._finish(call, "completed")

    async def _talk(self, request: Request) -> Response:
        _, refusal = self._authorize(request)
        if refusal is not None:
            return refusal
        if (fault := self.faults.take(request.url.path)) is not None:
            return fault.response()
        call = self.calls.get(request.path_params["uuid"])
        if call is None or call.status in FINAL:
            return vonage_error(
                404, "Not Found", "The call was not found or has ended", "not-found"
            )
        if request.method == "DELETE":
            self._record(call, request, "talk_stop", None)
            return JSONResponse({"message": "Talk stopped", "uuid": call.uuid})
        try:
            body = await request.json()
        except ValueError:
            return vonage_error(400, "Bad Request", "The body is not JSON", "bad-request")
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
            return vonage_error(400, "Bad Request", "text is required", "bad-request")
        self._record(call, request, "talk", body)
        call.talks.append({"action": "talk", **body})
        return JSONResponse({"message": "Talk started", "uuid": call.uuid})


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def _now() -> str:
    return _iso(time.time())
