"""Vonage's media WebSocket: the caller's 16 kHz L16 frames to the model's 24 kHz audio
(``VonageStreamReader``), and the model's audio back to the caller as exact 640-byte frames,
paced a little ahead of real time, with ``notify`` placed where the audio it follows ends and
``clear`` at once on barge-in (``VonageOutbound``).

Inbound, Vonage sends one text message first, ``websocket:connected`` with the NCCO's
``content-type`` and ``headers`` at its top level, then binary frames of 20 ms and text
messages (``websocket:notify`` echoes, ``websocket:cleared``, ``websocket:dtmf``). Each frame
is resampled by the call's own uplink stream and handed on as base64, the model's format.

Vonage plays binary frames in order from a buffer of up to a minute and echoes a
``{"action":"notify","payload":…}`` as ``websocket:notify`` once the audio sent before it has
played: that echo is how we know what the caller heard. So

* frames are sent ahead of real time by ``lead_ms`` at most (the buffer never runs dry when
  our loop is late by less than that, and never holds more than that), topped up every
  ``tick_ms`` while there is audio (a wake-up per tick, not per frame);
* a mark names a point of the model's audio; the resampler still holds the last ~20 ms of it
  and the framer the last partial frame, so its notify goes out after the frame that contains
  that point, when that frame goes, not when the mark is asked for: the echo then means
  exactly "heard up to here";
* ``end`` lets the resampler's tail and the last partial frame out (padded with silence) when
  the model finishes an answer;
* ``clear`` sends ``{"action":"clear"}`` before anything else and drops, at once, every frame
  and notify still queued here and whatever the resampler holds.

``VonageCarrier`` is the bridge's side of it: the model's base64 PCM decoded and handed to
``VonageOutbound``, whose pacing task the media route starts and stops with the call.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from languagebuddy.calls.socket import MediaSocket
from languagebuddy.calls.vonage import CONTENT_TYPE
from languagebuddy.logs import get_logger
from languagebuddy.media.resample import CARRIER_RATE, FRAME_BYTES, MODEL_RATE, Downlink, Uplink

log = get_logger(__name__)

FRAME_MS = 20
FRAME_SAMPLES = FRAME_BYTES // 2
LEAD_MS = 100.0
TICK_MS = 40.0
CLEAR = '{"action":"clear"}'

SendBytes = Callable[[bytes], Awaitable[None]]
SendText = Callable[[str], Awaitable[None]]


def notify_message(name: str) -> str:
    """A few per answer, not per frame: the standard JSON encoder is fine here."""
    return json.dumps({"action": "notify", "payload": {"mark": name}}, separators=(",", ":"))


class FramePacer:
    """Sends queued frames (and the notifies between them) at most ``lead_ms`` ahead of the
    caller's playback, which it reckons from what it sent since the buffer last ran dry."""

    def __init__(
        self,
        send_bytes: SendBytes,
        send_text: SendText,
        *,
        lead_ms: float = LEAD_MS,
        tick_ms: float = TICK_MS,
    ) -> None:
        self._send_bytes = send_bytes
        self._send_text = send_text
        self.lead_ms = lead_ms
        self.tick_s = tick_ms / 1000.0
        self._queue: deque[bytes | str] = deque()  # frames (bytes) and notifies (str)
        self._loop = asyncio.get_running_loop()
        self._work = asyncio.Event()
        self._spurt_at = 0.0  # when the caller's buffer last started from empty
        self._spurt_ms = 0.0  # audio sent since then
        self.frames_sent = 0
        self.frames_dropped = 0
        self.error: Exception | None = None  # why the pacer stopped, when it did
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.ensure_future(self._run())
        return self._task

    def put(self, items: list[bytes | str]) -> None:
        if items:
            self._queue.extend(items)
            self._work.set()

    def drop(self) -> int:
        """Forget every queued frame and notify; returns how many frames were dropped."""
        dropped = sum(1 for item in self._queue if type(item) is bytes)
        self._queue.clear()
        self.frames_dropped += dropped
        # Vonage drops its buffer on clear too: the next audio starts a new spurt.
        self._spurt_at = self._loop.time()
        self._spurt_ms = 0.0
        return dropped

    def buffered_ms(self, now: float | None = None) -> float:
        """Audio we sent that the caller has not heard yet (by our reckoning)."""
        now = self._loop.time() if now is None else now
        ahead = self._spurt_ms - (now - self._spurt_at) * 1000.0
        return ahead if ahead > 0.0 else 0.0

    @property
    def queued_frames(self) -> int:
        return sum(1 for item in self._queue if type(item) is bytes)

    async def _run(self) -> None:
        try:
            await self._pace()
        except Exception as exc:  # the socket is gone: the call's reader sees it close too
            self.error = exc

    async def _pace(self) -> None:
        queue = self._queue
        loop = self._loop
        while True:
            if not queue:
                self._work.clear()
                await self._work.wait()
                continue
            now = loop.time()
            ahead = self._spurt_ms - (now - self._spurt_at) * 1000.0
            if ahead <= 0.0:  # the caller's buffer is empty: a new spurt starts now
                self._spurt_at = now
                self._spurt_ms = ahead = 0.0
            while queue and ahead < self.lead_ms:
                item = queue.popleft()
                if type(item) is bytes:
                    await self._send_bytes(item)
                    self._spurt_ms += FRAME_MS
                    ahead += FRAME_MS
                    self.frames_sent += 1
                else:
                    await self._send_text(item)  # type: ignore[arg-type]
            while queue and type(queue[0]) is str:  # notifies due now need no room
                await self._send_text(queue.popleft())  # type: ignore[arg-type]
            if queue:
                # Sleep until a tick's worth of room has opened (or the buffer would dry).
                room_at = self._spurt_at + (self._spurt_ms - self.lead_ms) / 1000.0 + self.tick_s
                await asyncio.sleep(max(0.0, room_at - loop.time()))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class VonageOutbound:
    """The model's audio to one Vonage call: resampled, framed, marked and paced."""

    def __init__(
        self,
        send_bytes: SendBytes,
        send_text: SendText,
        *,
        lead_ms: float = LEAD_MS,
        tick_ms: float = TICK_MS,
    ) -> None:
        self._send_text = send_text
        self.downlink = Downlink()
        self.pacer = FramePacer(send_bytes, send_text, lead_ms=lead_ms, tick_ms=tick_ms)
        # Since the last end or clear: model samples taken, frames made, and the marks whose
        # point the frames have not reached yet (name, output sample they wait for).
        self._samples_in = 0
        self._frames_out = 0
        self._marks: deque[tuple[str, int]] = deque()
        self.clears = 0

    def start(self) -> asyncio.Task[None]:
        return self.pacer.start()

    def audio(self, pcm: bytes) -> None:
        """Model audio (16-bit little-endian at 24 kHz, any chunking) for the caller."""
        self._samples_in += len(pcm) // 2
        self._queue(self.downlink.push(pcm))

    def mark(self, name: str) -> None:
        """Have Vonage tell us (``websocket:notify`` with ``{"mark": name}``) once the caller
        has heard all the audio given so far."""
        target = -(-self._samples_in * CARRIER_RATE // MODEL_RATE)  # round up: all of it
        if target <= self._frames_out * FRAME_SAMPLES and not self._marks:
            self.pacer.put([notify_message(name)])
        else:
            self._marks.append((name, target))

    def end(self) -> None:
        """The model finished this answer: its last ~40 ms go out now, and every mark with it."""
        self._queue(self.downlink.end())
        items: list[bytes | str] = [notify_message(name) for name, _ in self._marks]
        self._marks.clear()
        self.pacer.put(items)
        self._samples_in = self._frames_out = 0

    async def clear(self) -> int:
        """Barge-in: everything held here is dropped at once (nothing queued can follow the
        clear onto the wire), then Vonage is told to drop its buffer. Returns the frames
        dropped here."""
        self.downlink.reset()
        self._marks.clear()
        self._samples_in = self._frames_out = 0
        dropped = self.pacer.drop()
        self.clears += 1
        await self._send_text(CLEAR)
        return dropped

    def _queue(self, frames: list[bytes]) -> None:
        if not frames:
            return
        if not self._marks:
            self._frames_out += len(frames)
            self.pacer.put(frames)  # type: ignore[arg-type]
            return
        items: list[bytes | str] = []
        marks = self._marks
        for frame in frames:
            items.append(frame)
            self._frames_out += 1
            reached = self._frames_out * FRAME_SAMPLES
            while marks and marks[0][1] <= reached:
                items.append(notify_message(marks.popleft()[0]))
        self.pacer.put(items)

    @property
    def unsent_ms(self) -> float:
        """Audio given to us that has not gone to Vonage yet (queued here, in the resampler
        or in the last partial frame)."""
        return self.pacer.queued_frames * FRAME_MS + self.downlink.pending_ms

    async def aclose(self) -> None:
        await self.pacer.aclose()


class VonageCarrier:
    """The bridge's carrier for a Vonage socket: model audio (base64 s16le 24 kHz) out as
    paced 640-byte frames, marks as ``notify``, barge-in as ``clear``."""

    min_chunk_ms = 0  # VonageOutbound frames the audio itself

    def __init__(
        self, socket: MediaSocket, *, lead_ms: float = LEAD_MS, tick_ms: float = TICK_MS
    ) -> None:
        self.outbound = VonageOutbound(
            socket.send_bytes, socket.send_text, lead_ms=lead_ms, tick_ms=tick_ms
        )
        self._b64decode = base64.b64decode

    def start(self) -> asyncio.Task[None]:
        """Start pacing frames out; ``aclose`` stops it (the call owns both ends)."""
        return self.outbound.start()

    async def send_audio(self, audio_b64: str, nbytes: int) -> None:
        self.outbound.audio(self._b64decode(audio_b64))

    async def send_mark(self, name: str) -> None:
        self.outbound.mark(name)

    async def send_clear(self) -> None:
        await self.outbound.clear()

    async def finish_audio(self) -> None:
        self.outbound.end()

    async def aclose(self) -> None:
        await self.outbound.aclose()


# -- inbound ------------------------------------------------------------------------------------


class CallerSink(Protocol):
    """Where the caller's side of the socket goes (the bridge)."""

    async def caller_audio(self, audio_b64: str) -> None: ...

    def caller_mark(self, name: str) -> None: ...

    async def caller_dtmf(self, digit: str) -> None: ...


@dataclass(frozen=True)
class Connected:
    """Vonage's first message: the audio format and the NCCO headers it echoes."""

    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class VonageStreamReader:
    """Reads Vonage's side of the socket and drives the sink until the socket closes."""

    def __init__(self, receive: Callable[[], Awaitable[str | bytes | None]]) -> None:
        self._receive = receive
        self.uplink = Uplink()
        self.connected: Connected | None = None
        self.frames = 0
        self.odd_frames = 0  # binary frames that were not 640 bytes (resampled all the same)
        self.bad_messages = 0
        self.cleared = 0

    async def wait_connected(self) -> Connected | None:
        """Vonage's ``websocket:connected``; None when the socket closed before it, or when
        it announces audio other than L16 at 16 kHz (the NCCO asked for that)."""
        while self.connected is None:
            message = await self._receive()
            if message is None:
                return None
            if isinstance(message, bytes):  # audio before the greeting: not Vonage's order
                self.bad_messages += 1
                continue
            event = _json(message)
            if event is None or event.get("event") != "websocket:connected":
                self.bad_messages += 1
                continue
            content_type = str(event.get("content-type", "")).replace(" ", "").lower()
            if content_type != CONTENT_TYPE:
                log.warning("vonage.stream_format_refused", content_type=content_type[:40])
                return None
            headers = {
                str(k): str(v)
                for k, v in event.items()
                if k not in ("event", "content-type") and isinstance(v, str | int | float)
            }
            self.connected = Connected(content_type, headers)
        return self.connected

    async def run(self, sink: CallerSink) -> None:
        """Forward the caller's frames, notifies and keys until the socket closes."""
        receive = self._receive
        push = self.uplink.push
        caller_audio = sink.caller_audio
        b64encode = base64.b64encode
        while True:
            message = await receive()
            if message is None:
                return
            if type(message) is bytes:
                self.frames += 1
                if len(message) != FRAME_BYTES:
                    self.odd_frames += 1
                audio = push(message)
                if audio:  # empty while the filter fills, at the very start
                    await caller_audio(b64encode(audio).decode("ascii"))
                continue
            event = _json(message)
            kind = event.get("event") if event is not None else None
            if kind == "websocket:notify":
                payload = event.get("payload")  # type: ignore[union-attr]
                name = payload.get("mark") if isinstance(payload, dict) else None
                if isinstance(name, str):
                    sink.caller_mark(name)
            elif kind == "websocket:dtmf":
                digit = event.get("digit")  # type: ignore[union-attr]
                if isinstance(digit, str | int) and str(digit):
                    await sink.caller_dtmf(str(digit))
            elif kind == "websocket:cleared":
                self.cleared += 1
            else:
                self.bad_messages += 1


def _json(message: str | bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(message)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
