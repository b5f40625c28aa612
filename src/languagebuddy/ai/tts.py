"""Text to speech over the official SDK, streamed (``with_streaming_response``).

The audio is asked for as ``pcm`` (24 kHz, 16-bit signed little-endian, mono, no header): the
one format whose bytes can go to our encoder the moment they arrive, whatever the chunking.
Speaking style: ``instructions`` on the models that take them (gpt-4o-mini-tts), ``speed`` on
the ones that do not (tts-1, tts-1-hd, which refuse instructions).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from languagebuddy.ai.chat import call_failed
from languagebuddy.errors import ModelUnavailable
from languagebuddy.metrics import MODEL_CALLS

PCM_RATE = 24_000
PCM_BYTES_PER_SECOND = PCM_RATE * 2
MAX_INPUT_CHARS = 4096
_CHUNK = 8192


def _transport_errors() -> tuple[type[Exception], ...]:
    """What a body read raises when the connection breaks: the SDK's transport (httpx2 in
    recent releases, httpx before) does not wrap errors that happen after the headers."""
    errors: list[type[Exception]] = [httpx.HTTPError]
    try:
        import httpx2  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - older SDKs
        pass
    else:
        errors.append(httpx2.HTTPError)
    return tuple(errors)


_STREAM_ERRORS = _transport_errors()


@dataclass(frozen=True)
class SpeechStyle:
    """How to speak: ``instructions`` for instruction-following models, ``speed`` otherwise."""

    instructions: str | None = None
    speed: float = 1.0


def takes_instructions(model: str) -> bool:
    return not model.startswith("tts-1")


class SpeechClient:
    """One per process; model and voice come from ``LB_TTS_MODEL`` and ``LB_TTS_VOICE``."""

    def __init__(self, client: AsyncOpenAI, model: str, voice: str) -> None:
        self._client = client
        self.model = model
        self.voice = voice

    def _request(self, text: str, style: SpeechStyle) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "voice": self.voice,
            "input": text[:MAX_INPUT_CHARS],
            "response_format": "pcm",
        }
        if takes_instructions(self.model):
            if style.instructions:
                kwargs["instructions"] = style.instructions
        elif style.speed != 1.0:
            kwargs["speed"] = style.speed
        return kwargs

    async def stream(self, text: str, style: SpeechStyle | None = None) -> AsyncIterator[bytes]:
        """The speech for ``text`` as raw PCM chunks, as they arrive. Raises
        ``ModelUnavailable`` / ``ModelRejected`` (also when the stream breaks half-way)."""
        kwargs = self._request(text, style or SpeechStyle())
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                **kwargs
            ) as response:
                async for chunk in response.iter_bytes(_CHUNK):
                    if chunk:
                        yield chunk
        except openai.OpenAIError as exc:
            raise call_failed(exc, "tts", self.model) from exc
        except _STREAM_ERRORS as exc:  # the connection broke while the audio streamed
            MODEL_CALLS.labels("tts", "connection_error").inc()
            raise ModelUnavailable(f"speech stream broke: {type(exc).__name__}") from exc
        MODEL_CALLS.labels("tts", "ok").inc()
