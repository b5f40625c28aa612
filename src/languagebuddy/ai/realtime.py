"""One OpenAI Realtime session (GA interface) over the official SDK, lean enough for a call.

The SDK makes the connection (URL derived from ``OPENAI_BASE_URL``, bearer auth, its WebSocket
options); after that a call exchanges ~50 events a second each way, so this module keeps the
per-event cost down:

* client events are JSON text we build ourselves; the two hot ones (``append`` in, nothing
  else per frame) by string concatenation around the base64 audio, which is forwarded as the
  string the carrier sent: no decode, no re-encode, no pydantic model per event;
* server events are read as raw bytes (``recv_bytes``) and parsed once with orjson into plain
  dicts, instead of the SDK's per-event pydantic construction;
* no per-message compression on the socket (audio does not compress, deflate only costs CPU).

Nothing here knows about calls, carriers or the tutor: it is a socket that speaks Realtime.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson
from openai import AsyncOpenAI

# The audio formats a bridge can exchange with the model, with their byte rate (bytes per ms)
# so that played time can be counted from bytes.


@dataclass(frozen=True)
class AudioFormat:
    name: str
    ga_format: dict[str, Any]
    bytes_per_ms: int


PCMU = AudioFormat("pcmu", {"type": "audio/pcmu"}, 8)  # G.711 μ-law, 8 kHz
PCM24K = AudioFormat("pcm24k", {"type": "audio/pcm", "rate": 24000}, 48)  # s16le 24 kHz

# The socket options the SDK passes to ``websockets``: no permessage-deflate, no size cap on
# incoming events (a long response's transcript can be large), a bounded write buffer.
WEBSOCKET_OPTIONS: dict[str, Any] = {
    "compression": None,
    "max_size": None,
    "write_limit": 1 << 20,
}

_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'
_TAIL = '"}'

loads = orjson.loads


def dumps(event: dict[str, Any]) -> str:
    """A client event as JSON text (orjson: a few µs for the biggest ones)."""
    return orjson.dumps(event).decode()


def append_event(audio_b64: str) -> str:
    """``input_audio_buffer.append`` around base64 audio that is already checked base64."""
    return _APPEND_HEAD + audio_b64 + _TAIL


class RealtimeClosed(Exception):
    """The Realtime socket closed or failed; ``code`` is the WebSocket close code if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class RealtimeSession:
    """A connected Realtime socket: ``send`` JSON text, ``recv`` raw event bytes, ``close``.

    Opened with ``await RealtimeSession.open(client, model)``; the SDK's own reconnection is
    left off, since a call reconnects with its own context (see calls/agent.py).
    """

    def __init__(self, connection: Any, model: str) -> None:
        self._connection = connection
        # The SDK's send goes through its reconnect queue (an ownership check and the
        # current task looked up on every call: ~8 % of a call's CPU in the profile). Without
        # SDK reconnection there is nothing to queue for, so events go straight to the
        # ``websockets`` connection the SDK opened, when it exposes one.
        raw = getattr(connection, "_connection", None)
        self._send = raw.send if raw is not None and hasattr(raw, "send") else connection.send_raw
        self.model = model
        self.closed = False
        self.opened_at = asyncio.get_running_loop().time()

    @classmethod
    async def open(
        cls, client: AsyncOpenAI, model: str, *, connect_seconds: float = 10.0
    ) -> RealtimeSession:
        manager = client.realtime.connect(
            model=model,
            websocket_connection_options={**WEBSOCKET_OPTIONS, "open_timeout": connect_seconds},  # type: ignore[typeddict-unknown-key]
        )
        try:
            connection = await asyncio.wait_for(manager.enter(), connect_seconds)
        except (OSError, TimeoutError) as exc:
            raise RealtimeClosed(f"connect failed: {type(exc).__name__}") from exc
        except Exception as exc:  # handshake refused (401, 404...) or protocol error
            raise RealtimeClosed(f"connect failed: {type(exc).__name__}: {exc}") from exc
        return cls(connection, model)

    async def send(self, text: str) -> None:
        """Send one client event (JSON text)."""
        try:
            await self._send(text)
        except Exception as exc:
            raise _closed(exc) from exc

    async def send_event(self, event: dict[str, Any]) -> None:
        await self.send(dumps(event))

    async def recv(self) -> bytes:
        """The next server event's raw JSON bytes; RealtimeClosed when the socket ends."""
        try:
            return await self._connection.recv_bytes()
        except Exception as exc:
            raise _closed(exc) from exc

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with suppress(Exception):  # closing a dead socket: nothing else to do
            await asyncio.wait_for(self._connection.close(), 1.0)


def _closed(exc: BaseException) -> RealtimeClosed:
    code = None
    received = getattr(exc, "rcvd", None)
    if received is not None:
        code = getattr(received, "code", None)
    return RealtimeClosed(f"{type(exc).__name__}: {exc}", code)


def session_update(
    *,
    model: str,
    instructions: str,
    voice: str,
    audio_format: AudioFormat,
    transcription_model: str | None,
    language: str | None,
    silence_ms: int,
    tools: list[dict[str, Any]],
    idle_timeout_ms: int | None = None,
) -> dict[str, Any]:
    """The GA ``session.update`` for a phone call: audio in and out in the carrier's format,
    server VAD with a silence fitted to the learner, transcription in the target language."""
    transcription: dict[str, Any] | None = None
    if transcription_model:
        transcription = {"model": transcription_model}
        if language:
            transcription["language"] = language
    turn_detection: dict[str, Any] = {
        "type": "server_vad",
        "create_response": True,
        "interrupt_response": True,
        "silence_duration_ms": silence_ms,
        "prefix_padding_ms": 300,
    }
    if idle_timeout_ms:
        turn_detection["idle_timeout_ms"] = idle_timeout_ms
    session: dict[str, Any] = {
        "type": "realtime",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": instructions,
        "audio": {
            "input": {
                "format": audio_format.ga_format,
                "transcription": transcription,
                "turn_detection": turn_detection,
                "noise_reduction": {"type": "near_field"},
            },
            "output": {"format": audio_format.ga_format, "voice": voice},
        },
        "tools": tools,
        "tool_choice": "auto",
    }
    return {"type": "session.update", "session": session}
