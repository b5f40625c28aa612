"""The provider-neutral audio bridge of one call: caller audio to the model, model audio to the
caller, and barge-in decided from what the caller actually heard.

A provider contributes only a ``Carrier`` (its serializer bound to its socket): it turns the
provider's inbound messages into calls on the bridge (``caller_audio``, ``caller_mark``,
``caller_dtmf``) and the bridge's outbound audio, marks and clears into its wire format. Audio
crosses the bridge as base64 text in the model's format: for Telnyx PCMU that is the very
string the carrier sent or the model produced, so bytes are never decoded or re-encoded.

What the caller heard is counted in milliseconds of model audio by ``PlayoutClock``: marks
acknowledged by the carrier plus the wall-clock time since the last acknowledgement, never
more than was sent and never before the first chunk. On ``speech_started`` while audio is
still unplayed, the carrier's buffer is cleared first, at once, and the model's item is
truncated where the caller stopped hearing it.

Per-frame work is kept to string operations and a few attribute reads: no models, no logging.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections import deque
from contextlib import suppress
from typing import Any, Protocol

from languagebuddy.ai.realtime import AudioFormat, RealtimeClosed, RealtimeSession, append_event
from languagebuddy.ai.realtime import dumps as dump_event
from languagebuddy.ai.realtime import loads as load_event

# Base64 as the carriers and the model send it; checked before it is pasted into JSON text.
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
is_base64 = _BASE64.fullmatch

_AUDIO_DELTA = frozenset({"response.output_audio.delta", "response.audio.delta"})
_AUDIO_DONE = frozenset({"response.output_audio.done", "response.audio.done"})
_SPEECH_STARTED = "input_audio_buffer.speech_started"
MARK_EVERY_MS = 200


class Carrier(Protocol):
    """The provider's half of a call's media socket, behind its serializer."""

    # Carriers refuse shorter outbound chunks (Telnyx: 20 ms); 0 when the serializer frames
    # audio itself (Vonage's fixed 640-byte frames).
    min_chunk_ms: int

    async def send_audio(self, audio_b64: str, nbytes: int) -> None:
        """Play model-format audio (base64 of ``nbytes`` bytes) to the caller."""

    async def send_mark(self, name: str) -> None:
        """Ask to be told (``caller_mark(name)``) when the audio sent so far has played."""

    async def send_clear(self) -> None:
        """Drop whatever audio the carrier still holds for the caller."""

    async def finish_audio(self) -> None:
        """The model's answer is complete: let out whatever the serializer holds back for
        more (a resampler's tail, a partial frame)."""


class BridgeListener(Protocol):
    """What the call's conversation logic hears from the bridge (everything but audio)."""

    async def on_model_event(self, kind: str, event: dict[str, Any]) -> None: ...

    async def on_speech_started(self) -> None: ...

    async def on_dtmf(self, digit: str) -> None: ...


def b64_len(audio_b64: str) -> int:
    """Bytes that base64 text decodes to, without decoding it."""
    n = len(audio_b64)
    if not n:
        return 0
    return n * 3 // 4 - (2 if audio_b64.endswith("==") else 1 if audio_b64[-1] == "=" else 0)


class PlayoutClock:
    """Milliseconds of model audio sent to the carrier and heard by the caller.

    ``anchor`` is a known point of playback (a mark's acknowledgement, or the moment audio
    was sent into an idle buffer): from there playback runs at real time until it reaches
    what was sent.
    """

    __slots__ = ("anchor_ms", "anchor_t", "sent_ms")

    def __init__(self) -> None:
        self.sent_ms = 0.0
        self.anchor_ms = 0.0
        self.anchor_t = 0.0

    def played(self, now: float) -> float:
        heard = self.anchor_ms + (now - self.anchor_t) * 1000.0
        return heard if heard < self.sent_ms else self.sent_ms

    def sent(self, ms: float, now: float) -> None:
        if self.played(now) >= self.sent_ms:  # the buffer had run dry: this plays from now
            self.anchor_ms = self.sent_ms
            self.anchor_t = now
        self.sent_ms += ms

    def acknowledged(self, ms: float, now: float) -> None:
        self.anchor_ms = ms
        self.anchor_t = now

    def cleared(self, now: float) -> float:
        """The carrier dropped what was unplayed: only what was heard counts as sent."""
        heard = self.played(now)
        self.sent_ms = self.anchor_ms = heard
        self.anchor_t = now
        return heard

    def unplayed(self, now: float) -> float:
        return self.sent_ms - self.played(now)


class Bridge:
    """Audio both ways for one call, with marks, played-time accounting and barge-in."""

    def __init__(
        self,
        carrier: Carrier,
        listener: BridgeListener,
        audio_format: AudioFormat,
    ) -> None:
        self.carrier = carrier
        self.listener = listener
        self.format = audio_format
        self.model: RealtimeSession | None = None
        self.clock = PlayoutClock()
        self._loop = asyncio.get_running_loop()
        self._bytes_per_ms = audio_format.bytes_per_ms
        self._min_chunk = carrier.min_chunk_ms * audio_format.bytes_per_ms
        self._silence = b"\xff" if audio_format.name == "pcmu" else b"\x00"
        self._pending = bytearray()  # model audio shorter than the carrier's minimum chunk
        self._marks: deque[tuple[str, float]] = deque()
        self._mark_seq = 0
        self._marked_ms = 0.0  # clock.sent_ms at the last mark
        self.item_id: str | None = None  # the assistant item whose audio is being sent
        self.item_start_ms = 0.0
        self._dropped_items: set[str] = set()
        # Usage and what the conversation logic watches (times in loop seconds).
        self.caller_bytes = 0
        self.model_bytes = 0
        self.last_model_audio_at = 0.0
        self.barge_ins = 0

    # -- caller -> model (the carrier's reader calls these) ------------------------------------

    async def caller_audio(self, audio_b64: str) -> None:
        """One inbound frame, base64 in the model's format, forwarded as it is."""
        model = self.model
        if model is None:  # between two Realtime sessions: the frame is lost, not queued
            return
        self.caller_bytes += len(audio_b64)
        try:  # noqa: SIM105 - try/except costs nothing per frame, suppress() does
            await model.send(append_event(audio_b64))
        except RealtimeClosed:
            pass  # the model's reader sees the same close and decides what to do

    def caller_mark(self, name: str) -> None:
        """The carrier played everything sent before the mark ``name``."""
        marks = self._marks
        while marks:
            queued, ms = marks.popleft()
            if queued == name:
                self.clock.acknowledged(ms, self._loop.time())
                return
        # unknown: a mark from before a clear, already dropped

    async def caller_dtmf(self, digit: str) -> None:
        await self.listener.on_dtmf(digit)

    # -- model -> caller ------------------------------------------------------------------------

    async def pump(self, model: RealtimeSession) -> None:
        """Read the model's events until its socket closes (raises RealtimeClosed)."""
        recv = model.recv
        on_event = self.listener.on_model_event
        while True:
            event = load_event(await recv())
            kind = event.get("type")
            if kind in _AUDIO_DELTA:
                await self._audio_delta(event)
            elif kind == _SPEECH_STARTED:
                await self.barge_in()
                await self.listener.on_speech_started()
            else:
                if kind in _AUDIO_DONE:
                    await self._flush(event.get("item_id"))
                await on_event(kind, event)

    async def _audio_delta(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        delta = event.get("delta")
        if not isinstance(delta, str) or not delta or item_id in self._dropped_items:
            return
        if not is_base64(delta):
            return
        if item_id != self.item_id:
            await self._flush(self.item_id)
            self.item_id = item_id
            self.item_start_ms = self.clock.sent_ms
        nbytes = b64_len(delta)
        self.model_bytes += nbytes
        if self._pending or nbytes < self._min_chunk:
            self._pending += base64.b64decode(delta)
            if len(self._pending) < self._min_chunk:
                return
            delta = base64.b64encode(self._pending).decode("ascii")
            nbytes = len(self._pending)
            self._pending.clear()
        await self._send(delta, nbytes)

    async def _flush(self, item_id: str | None) -> None:
        """The item's audio is complete: send what was held back for being too short (padded
        to the carrier's minimum) and mark the end, to know when the caller heard it all."""
        if item_id is None or item_id != self.item_id:
            return
        await self.carrier.finish_audio()
        if not self._pending:
            if self._marked_ms < self.clock.sent_ms:
                await self._mark()
            return
        pad = self._min_chunk - len(self._pending)
        if pad > 0:
            self._pending += self._silence * pad
        data = bytes(self._pending)
        self._pending.clear()
        await self._send(base64.b64encode(data).decode("ascii"), len(data), last=True)

    async def _send(self, audio_b64: str, nbytes: int, *, last: bool = False) -> None:
        now = self._loop.time()
        await self.carrier.send_audio(audio_b64, nbytes)
        clock = self.clock
        clock.sent(nbytes / self._bytes_per_ms, now)
        self.last_model_audio_at = now
        # A mark at least every MARK_EVERY_MS of audio and at the end of an item: between
        # marks the clock runs at real time, so more would only add messages both ways.
        if last or clock.sent_ms - self._marked_ms >= MARK_EVERY_MS:
            await self._mark()

    async def _mark(self) -> None:
        self._mark_seq += 1
        name = str(self._mark_seq)
        self._marked_ms = self.clock.sent_ms
        self._marks.append((name, self._marked_ms))
        await self.carrier.send_mark(name)

    # -- barge-in ---------------------------------------------------------------------------------

    async def barge_in(self) -> int | None:
        """The caller started speaking: if buddy audio is still unplayed, clear the carrier's
        buffer at once, then truncate the model's item at what was heard. Returns the
        ``audio_end_ms`` sent, or None when nothing was playing."""
        now = self._loop.time()
        item_id = self.item_id
        if item_id is None or self.clock.unplayed(now) <= 0.5:
            return None
        await self.carrier.send_clear()
        heard = self.clock.cleared(now)
        self._marks.clear()
        self._marked_ms = heard
        self._pending.clear()
        self.item_id = None
        self._dropped_items.add(item_id)
        self.barge_ins += 1
        item_sent = heard - self.item_start_ms
        audio_end_ms = max(0, int(item_sent))
        model = self.model
        if model is not None:
            truncate = {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
            with suppress(RealtimeClosed):
                await model.send(dump_event(truncate))
        return audio_end_ms

    # -- what the conversation logic asks -----------------------------------------------------

    def unplayed_ms(self) -> float:
        return self.clock.unplayed(self._loop.time()) + len(self._pending) / self._bytes_per_ms

    async def wait_played(self, limit_seconds: float) -> bool:
        """Wait until the caller has heard everything sent (a goodbye); False after
        ``limit_seconds``."""
        deadline = self._loop.time() + limit_seconds
        while True:
            left = self.unplayed_ms()
            if left <= 0.5:
                return True
            now = self._loop.time()
            if now >= deadline:
                return False
            await asyncio.sleep(min(left / 1000 + 0.02, deadline - now))

    def forget_response_audio(self) -> None:
        """A new Realtime session: item ids of the old one mean nothing any more."""
        self.item_id = None
        self._pending.clear()
        self._dropped_items.clear()
