"""Speech to text over the official SDK (``client.audio.transcriptions.create``).

Each model family is asked for what it can tell about its own confidence: whisper-1 answers
``verbose_json`` whose segments carry ``avg_logprob`` and ``no_speech_prob``; the gpt-4o
transcribe models answer ``json`` with token ``logprobs`` when asked. From them come the words
heard with low confidence (for one pronunciation tip) and Whisper's well-known hallucinations on
silence ("Thank you for watching."), which are dropped instead of being answered.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

from languagebuddy.ai.chat import call_failed
from languagebuddy.metrics import MODEL_CALLS

# Whisper's own rule for a segment that is not speech.
NO_SPEECH_PROB = 0.6
NO_SPEECH_LOGPROB = -1.0
# Below this a whisper-1 segment, or a gpt-4o word, counts as heard unclearly.
UNCLEAR_SEGMENT_LOGPROB = -0.9
UNCLEAR_WORD_PROB = 0.5
MAX_UNCLEAR = 5
MAX_PHRASE_WORDS = 8
MAX_PROMPT_CHARS = 600  # Whisper reads the last 224 tokens of a prompt
_PUNCTUATION = ".,;:!?¿¡\"'«»“”()…-—"


@dataclass(frozen=True)
class Transcript:
    text: str
    model: str
    language: str | None = None
    unclear: tuple[str, ...] = ()  # words (gpt-4o) or short phrases (whisper-1) heard unclearly
    dropped_segments: int = 0  # segments Whisper itself flagged as not speech
    seconds: float = 0.0  # request latency
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def heard_speech(self) -> bool:
        return bool(self.text.strip())


def _is_logprob_model(model: str) -> bool:
    return model.startswith("gpt-4o") and "transcribe" in model and "diarize" not in model


def transcription_prompt(name: str | None, terms: list[str]) -> str | None:
    """The prompt that helps the model spell the learner's name and their new words."""
    parts = [name.strip()] if name and name.strip() else []
    text = ""
    for term in terms:
        candidate = ", ".join([*parts, term])
        if len(candidate) > MAX_PROMPT_CHARS:
            break
        parts.append(term)
        text = candidate
    text = text or ", ".join(parts)
    return f"{text}." if text else None


class TranscriptionClient:
    """One per process; the model comes from ``LB_STT_MODEL``."""

    def __init__(self, client: AsyncOpenAI, model: str) -> None:
        self._client = client
        self.model = model

    async def transcribe(
        self,
        file: tuple[str, bytes, str],
        *,
        language: str | None = None,
        prompt: str | None = None,
    ) -> Transcript:
        """Transcribe ``(filename, bytes, mime)``. ``language`` is an ISO 639-1 hint (the
        learner's target language). Raises ``ModelUnavailable`` / ``ModelRejected``."""
        kwargs: dict[str, Any] = {"model": self.model, "file": file}
        if language and len(language) == 2 and language.isalpha():
            kwargs["language"] = language.lower()
        if prompt:
            kwargs["prompt"] = prompt
        if self.model == "whisper-1":
            kwargs["response_format"] = "verbose_json"
            kwargs["timestamp_granularities"] = ["segment"]
        elif _is_logprob_model(self.model):
            kwargs["response_format"] = "json"
            kwargs["include"] = ["logprobs"]
        started = time.perf_counter()
        try:
            response = await self._client.audio.transcriptions.create(**kwargs)
        except openai.OpenAIError as exc:
            raise call_failed(exc, "stt", self.model) from exc
        MODEL_CALLS.labels("stt", "ok").inc()
        transcript = _read(response, self.model)
        return Transcript(
            text=transcript.text,
            model=self.model,
            language=transcript.language,
            unclear=transcript.unclear,
            dropped_segments=transcript.dropped_segments,
            seconds=time.perf_counter() - started,
            usage=transcript.usage,
        )


def _read(response: Any, model: str) -> Transcript:
    usage = getattr(response, "usage", None)
    usage_dict = usage.model_dump() if hasattr(usage, "model_dump") else {}
    if isinstance(response, str):
        return Transcript(text=response.strip(), model=model)
    segments = getattr(response, "segments", None)
    if segments:
        return _from_segments(response, segments, model, usage_dict)
    logprobs = getattr(response, "logprobs", None)
    text = (getattr(response, "text", "") or "").strip()
    unclear = _unclear_words(logprobs) if logprobs else ()
    return Transcript(text=text, model=model, unclear=unclear, usage=usage_dict)


def _from_segments(
    response: Any, segments: list[Any], model: str, usage: dict[str, Any]
) -> Transcript:
    kept: list[str] = []
    unclear: list[str] = []
    dropped = 0
    for segment in segments:
        if segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < NO_SPEECH_LOGPROB:
            dropped += 1
            continue
        text = segment.text.strip()
        if not text:
            continue
        kept.append(text)
        if segment.avg_logprob < UNCLEAR_SEGMENT_LOGPROB and len(unclear) < MAX_UNCLEAR:
            unclear.append(" ".join(text.split()[:MAX_PHRASE_WORDS]))
    return Transcript(
        text=" ".join(kept),
        model=model,
        language=getattr(response, "language", None),
        unclear=tuple(unclear),
        dropped_segments=dropped,
        usage=usage,
    )


def _unclear_words(logprobs: list[Any]) -> tuple[str, ...]:
    """Words (a token opening with a space starts one) whose probability, the product of their
    tokens', is under :data:`UNCLEAR_WORD_PROB`."""
    words: list[tuple[str, float]] = []
    for item in logprobs:
        token = getattr(item, "token", None) or ""
        logprob = getattr(item, "logprob", None)
        if logprob is None or not token:
            continue
        if token[:1].isspace() or not words:
            words.append((token.strip(), logprob))
        else:
            text, total = words[-1]
            words[-1] = (text + token, total + logprob)
    threshold = math.log(UNCLEAR_WORD_PROB)
    unclear: list[str] = []
    for text, total in words:
        bare = text.strip(_PUNCTUATION)
        if total < threshold and bare and bare not in unclear:
            unclear.append(bare)
    return tuple(unclear[:MAX_UNCLEAR])
