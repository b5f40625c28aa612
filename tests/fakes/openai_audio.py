"""The fake OpenAI's audio endpoints, as the real API serves them (C6 in shared/PROTOCOLS.md).

``POST /v1/audio/transcriptions`` (multipart): bearer auth (the fake's dispatcher), a ``file``
with a name, a model; the upload must decode with PyAV (else the API's 400 "Invalid file
format"); answers ``json``, ``verbose_json`` (segments with ``avg_logprob`` and
``no_speech_prob``, whisper-1 only) or ``text``, and ``logprobs`` when ``include[]=logprobs`` is
asked of a gpt-4o transcribe model. Transcripts are scripted; unscripted audio gets
:data:`DEFAULT_TRANSCRIPT`.

``POST /v1/audio/speech`` (JSON): real encoded speech-like audio (a voiced source through vowel
formants, syllable by syllable) whose length is proportional to the input text, in the asked
format (``pcm`` 24 kHz s16le mono, ``wav``, ``opus`` in OGG, ``aac`` ADTS, ``mp3``, ``flac``),
streamed in 100 ms chunks.

Latency knobs for benchmarks: ``transcribe_delay`` (seconds before a transcript), and
``speech_first_byte`` + ``speech_seconds_per_audio_second`` (the stream's pacing).

    fake.audio.transcript("Hola, me llamo Ana.", unclear=["llamo"])
    fake.audio.fail("speech", 503)
    fake.audio.speeches[0].duration_s
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

if TYPE_CHECKING:
    from tests.fakes.openai import FakeOpenAI, Predicate

DEFAULT_TRANSCRIPT = "Hola, quiero practicar español contigo."
SPEECH_RATE = 24_000
CHARS_PER_SECOND = 15.0  # a natural speaking pace
CHUNK_SECONDS = 0.1
UPLOAD_FORMATS = ["flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"]
TRANSCRIBE_MODELS = {
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-transcribe",
    "gpt-4o-transcribe-diarize",
}
VOICES = {
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
}
SPEECH_MIME = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
}
_LANGUAGE_NAMES = {"es": "spanish", "en": "english", "fr": "french", "ja": "japanese"}


# --------------------------------------------------------------------------- speech


def speech_like(
    text: str, *, rate: int = SPEECH_RATE, speed: float = 1.0, cps: float = CHARS_PER_SECOND
) -> np.ndarray:
    """Deterministic speech-like int16 mono audio lasting ``len(text) / cps / speed`` seconds:
    a pulse-like voiced source with falling intonation, shaped by the formants of a vowel per
    syllable (~4.5 syllables/s), consonant noise at onsets, short pauses, -20 dBFS."""
    seconds = max(0.5, len(text.strip()) / cps) / speed
    n = round(seconds * rate)
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    t = np.arange(n) / rate
    f0 = 185.0 - 55.0 * t / seconds + 10.0 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    syllables = max(1, int(seconds * 4.5))
    bounds = np.linspace(0, n, syllables + 1).astype(int)
    lengths = np.diff(bounds)
    vowels = np.array([(730, 1090), (270, 2290), (530, 1840), (570, 840), (300, 870)], float)
    chosen = vowels[rng.integers(0, len(vowels), syllables)]
    f1 = np.repeat(chosen[:, 0], lengths)
    f2 = np.repeat(chosen[:, 1], lengths)
    voiced = np.zeros(n)
    for k in range(1, 22):
        fk = k * f0
        gain = 1 / (1 + ((fk - f1) / 90) ** 2) + 0.6 / (1 + ((fk - f2) / 130) ** 2) + 0.015
        voiced += gain * np.sin(k * phase)
    position = np.concatenate([np.arange(m) / max(m, 1) for m in lengths])
    envelope = np.sin(np.pi * position) ** 0.6
    pauses = rng.random(syllables) < 0.12
    pauses[0] = pauses[-1] = False
    envelope *= np.repeat(~pauses, lengths)
    noise = np.diff(rng.standard_normal(n + 1)) * 0.25
    onset = np.repeat(np.ones(syllables), lengths) * (position < 0.08)
    signal = voiced * envelope + noise * onset * np.repeat(~pauses, lengths)
    edge = min(n // 4, int(0.05 * rate))  # real speech audio starts and ends with a silence
    signal[:edge] = 0
    signal[n - edge :] = 0
    rms = math.sqrt(float(np.mean(signal[signal != 0] ** 2))) if np.any(signal) else 1.0
    scaled = signal * (10 ** (-20 / 20) * 32767 / rms)
    return np.clip(scaled, -32767, 32767).astype(np.int16)


def encode_speech(pcm: np.ndarray, response_format: str, rate: int = SPEECH_RATE) -> bytes:
    """The speech in the speech endpoint's ``response_format``."""
    if response_format == "pcm":
        return pcm.astype("<i2").tobytes()
    container, codec = {
        "wav": ("wav", "pcm_s16le"),
        "opus": ("ogg", "libopus"),
        "aac": ("adts", "aac"),
        "mp3": ("mp3", "libmp3lame"),
        "flac": ("flac", "flac"),
    }[response_format]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def decoded_seconds(data: bytes) -> tuple[float, str, str, int]:
    """(duration, container, codec, sample rate) of an audio file, by decoding all of it."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = stream.codec_context.sample_rate
        return samples / rate, container.format.name, stream.codec_context.name, rate


# --------------------------------------------------------------------------- records & scripts


@dataclass
class TranscriptionRecord:
    model: str
    filename: str
    content_type: str
    size: int
    container: str
    codec: str
    duration_s: float
    response_format: str
    language: str | None
    prompt: str | None
    include: list[str]


@dataclass
class SpeechRecord:
    model: str
    voice: str
    input: str
    response_format: str
    instructions: str | None
    speed: float | None
    duration_s: float
    size: int


@dataclass
class ScriptedTranscript:
    """One scripted transcript. ``unclear`` words come back with low confidence; ``no_speech``
    answers the way Whisper does on silence (a hallucinated segment it flags as non-speech)."""

    text: str
    unclear: list[str] = field(default_factory=list)
    no_speech: bool = False
    language: str = "es"
    when: Predicate | None = None
    times: int | None = 1
    status: int = 200


class FakeAudio:
    """Installs the audio endpoints on a :class:`FakeOpenAI` and keeps their knobs and logs."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self._fake = fake
        self._lock = threading.Lock()
        self._speech_cache: dict[tuple[str, float], np.ndarray] = {}
        self.transcriptions: list[TranscriptionRecord] = []
        self.speeches: list[SpeechRecord] = []
        self.transcribe_delay = 0.0
        self.speech_first_byte = 0.0
        self.speech_seconds_per_audio_second = 0.0
        # Decode every upload (tests); a benchmark may turn it off while it measures, since
        # the decoding would take CPU from the service on the same machine.
        self.verify_uploads = True
        fake.add_endpoint("/v1/audio/transcriptions", "transcribe", self._transcriptions)
        fake.add_endpoint("/v1/audio/speech", "speech", self._speech)

    def reset(self) -> None:
        with self._lock:
            self.transcriptions.clear()
            self.speeches.clear()
        self.transcribe_delay = 0.0
        self.speech_first_byte = 0.0
        self.speech_seconds_per_audio_second = 0.0
        self.verify_uploads = True

    # -- scripting -------------------------------------------------------------------------

    def transcript(
        self,
        text: str,
        *,
        unclear: list[str] | None = None,
        no_speech: bool = False,
        language: str = "es",
        times: int | None = 1,
    ) -> None:
        """The next transcription request (``times`` of them) hears ``text``."""
        self._fake.script(
            ScriptedTranscript(text, list(unclear or []), no_speech, language, times=times),
            "transcribe",
        )

    def fail(self, endpoint: str, status: int = 500, *, times: int | None = 1) -> None:
        """The next ``times`` requests to ``transcribe`` or ``speech`` answer ``status``."""
        from tests.fakes.openai import Scripted

        self._fake.script(Scripted(status=status, times=times), endpoint)

    def speech_pcm(self, text: str, speed: float = 1.0) -> np.ndarray:
        key = (text, speed)
        with self._lock:
            cached = self._speech_cache.get(key)
        if cached is None:
            cached = speech_like(text, speed=speed)
            with self._lock:
                self._speech_cache[key] = cached
        return cached

    # -- /v1/audio/transcriptions ----------------------------------------------------------

    async def _transcriptions(self, request: Request, body: dict[str, Any]) -> Response:
        from tests.fakes.openai import openai_error

        loop = asyncio.get_running_loop()
        arrived = loop.time()  # the latency knob counts from here, decoding included
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return openai_error(400, "Expected multipart/form-data.")
        form = await request.form()
        upload = form.get("file")
        model = str(form.get("model") or "")
        if not isinstance(upload, UploadFile):
            return openai_error(400, "Missing required parameter: 'file'.", param="file")
        if model not in TRANSCRIBE_MODELS:
            return openai_error(400, f"Invalid model '{model}'.", param="model")
        data = await upload.read()
        extension = (upload.filename or "").rsplit(".", 1)[-1].lower()
        if len(data) > 25 * 1024 * 1024:
            return openai_error(413, "Maximum content size limit (26214400) exceeded.")
        try:
            if extension not in UPLOAD_FORMATS:
                raise ValueError(extension)
            if self.verify_uploads:
                duration, container, codec, _ = await asyncio.to_thread(decoded_seconds, data)
            else:
                duration, container, codec = 1.0, "unchecked", "unchecked"
        except Exception:
            return openai_error(
                400, f"Invalid file format. Supported formats: {UPLOAD_FORMATS}", param="file"
            )
        if duration < 0.1:
            return openai_error(400, "Audio file is too short. Minimum audio length is 0.1 s.")
        response_format = str(form.get("response_format") or "json")
        include = [str(v) for key in ("include[]", "include") for v in form.getlist(key)]
        language = str(form.get("language")) if form.get("language") else None
        gpt4o = model.startswith("gpt-4o")
        if gpt4o and response_format not in ("json", "text"):
            return openai_error(
                400,
                f"response_format '{response_format}' is not compatible with model '{model}'. "
                "Use 'json' or 'text' instead.",
                param="response_format",
            )
        if include and (not gpt4o or response_format != "json"):
            return openai_error(400, "logprobs are only supported with json and gpt-4o models.")
        if language is not None and (len(language) != 2 or not language.isalpha()):
            return openai_error(400, f"Invalid language '{language}': use ISO-639-1.")
        record = TranscriptionRecord(
            model=model,
            filename=upload.filename or "",
            content_type=upload.content_type or "",
            size=len(data),
            container=container,
            codec=codec,
            duration_s=duration,
            response_format=response_format,
            language=language,
            prompt=str(form.get("prompt")) if form.get("prompt") else None,
            include=include,
        )
        with self._lock:
            self.transcriptions.append(record)
        item = self._fake._take("transcribe", {"model": model, "language": language})
        wait = arrived + self.transcribe_delay - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if item is not None and item.status != 200:
            return self._fake._error(item)  # type: ignore[arg-type]
        script = (
            item if isinstance(item, ScriptedTranscript) else ScriptedTranscript(DEFAULT_TRANSCRIPT)
        )
        return _transcription_response(script, record, "logprobs" in include)

    # -- /v1/audio/speech ------------------------------------------------------------------

    async def _speech(self, request: Request, body: dict[str, Any]) -> Response:
        from tests.fakes.openai import openai_error

        arrived = asyncio.get_running_loop().time()  # latency counts from here, not after synthesis
        model = str(body.get("model") or "")
        voice = body.get("voice")
        text = body.get("input")
        response_format = str(body.get("response_format") or "mp3")
        instructions = body.get("instructions")
        speed = body.get("speed")
        if not (model.startswith("tts-") or model.startswith("gpt-4o-mini-tts")):
            return openai_error(400, f"Invalid model '{model}'.", param="model")
        if voice not in VOICES:
            return openai_error(400, f"Invalid voice '{voice}'.", param="voice")
        if not isinstance(text, str) or not text.strip():
            return openai_error(400, "Input must be a non-empty string.", param="input")
        if len(text) > 4096:
            return openai_error(400, "Input is longer than 4096 characters.", param="input")
        if response_format not in SPEECH_MIME:
            return openai_error(400, f"Invalid response_format '{response_format}'.")
        if instructions is not None and model.startswith("tts-"):
            return openai_error(400, f"instructions are not supported with model '{model}'.")
        if speed is not None and not (isinstance(speed, int | float) and 0.25 <= speed <= 4.0):
            return openai_error(400, "speed must be between 0.25 and 4.0.", param="speed")
        if body.get("stream_format") not in (None, "audio"):
            return openai_error(400, "This fake streams raw audio only.")
        item = self._fake._take("speech", body)
        if item is not None and item.status != 200:
            return self._fake._error(item)  # type: ignore[arg-type]
        pcm = await asyncio.to_thread(self.speech_pcm, text, float(speed or 1.0))
        audio = await asyncio.to_thread(encode_speech, pcm, response_format)
        duration = len(pcm) / SPEECH_RATE
        with self._lock:
            self.speeches.append(
                SpeechRecord(
                    model=model,
                    voice=str(voice),
                    input=text,
                    response_format=response_format,
                    instructions=instructions if isinstance(instructions, str) else None,
                    speed=float(speed) if speed is not None else None,
                    duration_s=duration,
                    size=len(audio),
                )
            )
        return StreamingResponse(
            self._paced(audio, duration, arrived), media_type=SPEECH_MIME[response_format]
        )

    async def _paced(self, audio: bytes, duration: float, start: float) -> AsyncIterator[bytes]:
        """The audio in 100 ms-of-audio chunks, the first after ``speech_first_byte``, the rest
        at ``speech_seconds_per_audio_second`` (on an absolute schedule: no drift)."""
        chunks = max(1, math.ceil(duration / CHUNK_SECONDS))
        size = math.ceil(len(audio) / chunks)
        if size % 2:
            size += 1
        loop = asyncio.get_running_loop()
        per_chunk = self.speech_seconds_per_audio_second * duration / chunks
        for index, offset in enumerate(range(0, len(audio), size)):
            due = start + self.speech_first_byte + index * per_chunk
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield audio[offset : offset + size]


def _transcription_response(
    script: ScriptedTranscript, record: TranscriptionRecord, logprobs: bool
) -> Response:
    text = script.text
    duration = record.duration_s
    if record.response_format == "text":
        return PlainTextResponse(("" if script.no_speech else text) + "\n")
    if record.response_format == "verbose_json":
        segments = _segments(script, duration)
        body: dict[str, Any] = {
            "task": "transcribe",
            "language": _LANGUAGE_NAMES.get(script.language, script.language),
            "duration": round(duration, 2),
            "text": " ".join(s["text"].strip() for s in segments),
            "segments": segments,
            "usage": {"type": "duration", "seconds": math.ceil(duration)},
        }
        return JSONResponse(body)
    shown = "Thank you for watching." if script.no_speech else text
    body = {"text": shown}
    if record.model.startswith("gpt-4o"):
        audio_tokens = int(duration * 10)
        text_tokens = len(record.prompt or "") // 4
        output = len(shown) // 4 + 1
        body["usage"] = {
            "type": "tokens",
            "input_tokens": audio_tokens + text_tokens,
            "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
            "output_tokens": output,
            "total_tokens": audio_tokens + text_tokens + output,
        }
        if logprobs:
            body["logprobs"] = _token_logprobs(shown, script.unclear, script.no_speech)
    else:
        body["usage"] = {"type": "duration", "seconds": math.ceil(duration)}
    return JSONResponse(body)


def _sentences(text: str) -> list[str]:
    parts: list[str] = []
    current = ""
    for word in text.split():
        current = f"{current} {word}".strip()
        if word[-1:] in ".!?":
            parts.append(current)
            current = ""
    if current:
        parts.append(current)
    return parts or [text]


def _segments(script: ScriptedTranscript, duration: float) -> list[dict[str, Any]]:
    """Whisper's segments: one per sentence, spread over the audio."""
    if script.no_speech:
        sentences, unclear_rows = ["Thank you for watching."], [True]
    else:
        sentences = _sentences(script.text)
        lowered = [w.lower() for w in script.unclear]
        unclear_rows = [
            any(w.strip(".,!?¿¡").lower() in lowered for w in s.split()) for s in sentences
        ]
    step = duration / len(sentences)
    out = []
    for index, (sentence, unclear) in enumerate(zip(sentences, unclear_rows, strict=True)):
        out.append(
            {
                "id": index,
                "seek": 0,
                "start": round(index * step, 2),
                "end": round((index + 1) * step, 2),
                "text": " " + sentence,
                "tokens": [50364 + zlib.crc32(w.encode()) % 1000 for w in sentence.split()],
                "temperature": 0.0,
                "avg_logprob": -1.25 if unclear else -0.21,
                "compression_ratio": 1.31,
                "no_speech_prob": 0.92 if script.no_speech else 0.012,
            }
        )
    return out


def _token_logprobs(text: str, unclear: list[str], no_speech: bool) -> list[dict[str, Any]]:
    """gpt-4o transcribe logprobs: roughly one token per word, with its leading space."""
    lowered = [w.lower() for w in unclear]
    out = []
    for index, word in enumerate(text.split()):
        token = word if index == 0 else " " + word
        bare = word.strip(".,!?¿¡").lower()
        logprob = -2.3 if no_speech or bare in lowered else -0.015
        out.append({"token": token, "logprob": logprob, "bytes": list(token.encode())})
    return out
