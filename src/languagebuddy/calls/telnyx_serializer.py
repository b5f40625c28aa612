"""Telnyx media streaming (bidirectional RTP mode, PCMU) to and from the bridge.

Inbound (Telnyx -> us, JSON text): ``connected``, ``start``, ``media``, ``dtmf``, ``mark``,
``stop``, ``error``. Outbound: ``media`` (base64 PCMU, 20 ms to 30 s per message), ``mark``,
``clear``. The call is answered with ``audio/pcmu`` on the model side too, so the base64 text
Telnyx sends is pasted into the model's ``append`` event unchanged, and the model's deltas
into Telnyx's ``media`` messages: the bytes reach the other side exactly as they left.

Media frames are forwarded in sequence-number order: a frame older than one already forwarded
(a late or repeated frame) is dropped, since playing it late would scramble the audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from languagebuddy.ai.realtime import loads
from languagebuddy.calls.bridge import Bridge, is_base64
from languagebuddy.calls.socket import MediaSocket, SocketGone
from languagebuddy.logs import get_logger

log = get_logger(__name__)

_MEDIA_HEAD = '{"event":"media","media":{"payload":"'
_MEDIA_TAIL = '"}}'
_MARK_HEAD = '{"event":"mark","mark":{"name":"'
_CLEAR = '{"event":"clear"}'


@dataclass
class StreamStart:
    """What Telnyx's ``start`` message says about the stream."""

    stream_id: str | None = None
    call_control_id: str | None = None
    encoding: str | None = None
    sample_rate: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TelnyxCarrier:
    """Outbound half: the bridge's audio, marks and clears as Telnyx messages."""

    min_chunk_ms = 20  # Telnyx refuses shorter RTP chunks

    def __init__(self, socket: MediaSocket) -> None:
        self._send = socket.send_text

    async def send_audio(self, audio_b64: str, nbytes: int) -> None:
        await self._send(_MEDIA_HEAD + audio_b64 + _MEDIA_TAIL)

    async def send_mark(self, name: str) -> None:
        await self._send(_MARK_HEAD + name + _MEDIA_TAIL)

    async def send_clear(self) -> None:
        await self._send(_CLEAR)

    async def finish_audio(self) -> None:
        """Nothing held back: the bridge pads an answer's last short piece itself."""


class TelnyxStreamReader:
    """Inbound half: reads Telnyx's messages and drives the bridge until ``stop`` or close."""

    def __init__(self, socket: MediaSocket) -> None:
        self.socket = socket
        self.start = StreamStart()
        self.started = False
        self.stopped = False
        self.late_frames = 0
        self.bad_frames = 0
        self.errors: list[dict[str, Any]] = []

    async def wait_start(self) -> StreamStart | None:
        """Read up to Telnyx's ``start`` (after ``connected``); None if the socket closed."""
        while not self.started:
            message = await self.socket.receive()
            if message is None:
                return None
            self._control(message)
            if self.stopped:
                return None
        return self.start

    async def run(self, bridge: Bridge) -> None:
        """Forward frames to the bridge until Telnyx sends ``stop`` or the socket closes."""
        receive = self.socket.receive
        caller_audio = bridge.caller_audio
        last_seq = 0
        while True:
            message = await receive()
            if message is None:
                return
            try:
                event = loads(message)
                kind = event["event"]
            except (ValueError, KeyError, TypeError):
                self.bad_frames += 1
                continue
            if kind == "media":
                try:
                    media = event["media"]
                    seq = int(event.get("sequence_number") or 0)
                    payload = media["payload"]
                except (KeyError, TypeError, ValueError):
                    self.bad_frames += 1
                    continue
                if seq and seq <= last_seq:
                    self.late_frames += 1
                    continue
                last_seq = seq or last_seq
                if media.get("track", "inbound") != "inbound":
                    continue
                if not isinstance(payload, str) or not is_base64(payload):
                    self.bad_frames += 1  # never pasted into the model's JSON
                    continue
                await caller_audio(payload)
            elif kind == "mark":
                name = (event.get("mark") or {}).get("name")
                if isinstance(name, str):
                    bridge.caller_mark(name)
            elif kind == "dtmf":
                digit = (event.get("dtmf") or {}).get("digit")
                if isinstance(digit, str) and digit:
                    await bridge.caller_dtmf(digit)
            elif kind == "stop":
                self.stopped = True
                return
            else:
                self._control(message, event)

    def _control(self, message: str | bytes, event: dict[str, Any] | None = None) -> None:
        if event is None:
            try:
                event = loads(message)
            except ValueError:
                self.bad_frames += 1
                return
        kind = event.get("event")
        if kind == "start":
            start = event.get("start") or {}
            media_format = start.get("media_format") or {}
            self.start = StreamStart(
                stream_id=event.get("stream_id"),
                call_control_id=start.get("call_control_id"),
                encoding=media_format.get("encoding"),
                sample_rate=media_format.get("sample_rate"),
            )
            self.started = True
        elif kind == "stop":
            self.stopped = True
        elif kind == "error":
            payload = event.get("payload") or {}
            self.errors.append(payload)
            log.warning("telnyx.stream_error", code=payload.get("code"), title=payload.get("title"))
        # "connected" and anything new: nothing to do


__all__ = ["SocketGone", "StreamStart", "TelnyxCarrier", "TelnyxStreamReader"]
