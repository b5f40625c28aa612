"""Voice notes in and out, in memory only, with PyAV (the FFmpeg libraries in this process: no
ffmpeg binary, no temporary files).

In: :func:`prepare_audio` treats the bytes as hostile. The container is probed first and only
the formats learners' apps send are read; a file that states a length over the limit is refused
before anything is decoded. One decoding pass, mixed to mono, measures the real length and how
much of it is above the silence threshold, and, when the transcription endpoint cannot read the
file as it is (AMR, raw AAC), resamples it to a 16 kHz mono FLAC. When the file itself is the
upload and states its exact length (OGG/Opus voice notes, M4A), decoding stops as soon as
enough speech was heard: for a typical note, a second instead of all of it. Every failure is an
:class:`AudioRejected` whose ``code`` the tutor turns into a friendly reply.

Out: :class:`VoiceEncoder` takes the speech model's PCM as it streams in and writes one voice
note, OGG/Opus (WhatsApp, Telegram) or M4A/AAC (LINE).

Both are CPU work: call them through :func:`run_audio`, a small pool sized to the cores, so the
event loop never waits for a codec (PyAV releases the GIL inside the codecs).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, TypeVar

import av
import numpy as np
import soxr

from languagebuddy.media.types import EncodedAudio, PreparedAudio

AUDIO_CORRUPT: Final = "audio_corrupt"
AUDIO_TOO_LONG: Final = "audio_too_long"
AUDIO_EMPTY: Final = "audio_empty"
AUDIO_SILENT: Final = "audio_silent"
CODES: Final = frozenset({AUDIO_CORRUPT, AUDIO_TOO_LONG, AUDIO_EMPTY, AUDIO_SILENT})

STT_RATE: Final = 16_000  # what Whisper and the gpt-4o transcribe models listen at
TTS_RATE: Final = 24_000  # the speech endpoint's "pcm": 24 kHz, 16-bit signed LE, mono

# Containers learners' apps send: WhatsApp (OGG/Opus, AAC, AMR, MP4, MPEG), Telegram (OGG/Opus,
# any audio file), LINE (M4A), and the console (anything of these). Nothing else is probed into.
_INPUT_FORMATS: Final = frozenset(
    {"ogg", "mov,mp4,m4a,3gp,3g2,mj2", "amr", "mp3", "aac", "wav", "matroska,webm", "flac"}
)
# (container, codec) the transcription endpoint reads as they are -> (file name, MIME type).
# Sending the learner's own file is the smallest upload; the rest (AMR, raw ADTS AAC…) is sent
# as FLAC made from the decoded PCM.
_PASSTHROUGH: Final = {
    ("ogg", "opus"): ("voice.ogg", "audio/ogg"),
    ("ogg", "vorbis"): ("voice.ogg", "audio/ogg"),
    ("mp3", "mp3"): ("voice.mp3", "audio/mpeg"),
    ("mov,mp4,m4a,3gp,3g2,mj2", "aac"): ("voice.m4a", "audio/mp4"),
    ("wav", "pcm_s16le"): ("voice.wav", "audio/wav"),
    ("flac", "flac"): ("voice.flac", "audio/flac"),
    ("matroska,webm", "opus"): ("voice.webm", "audio/webm"),
}
MAX_UPLOAD_BYTES: Final = 24 * 1024 * 1024  # the endpoint takes 25 MB
# Containers whose stated length is exact, taken from the file itself (Ogg's last granule
# position, MP4's sample table, FLAC's STREAMINFO, WAV's data size) rather than estimated
# from a bit rate (MP3) or optional (WebM).
_EXACT_LENGTH: Final = frozenset({"ogg", "mov,mp4,m4a,3gp,3g2,mj2", "flac", "wav"})

# A container's stated length may be rounded, and the last packet padded.
_LENGTH_SLACK_S: Final = 0.5
MIN_SECONDS: Final = 0.3  # shorter is an accidental tap on the record button
# Speech is measured in 20 ms windows; a window counts as sound above this RMS. Phone noise
# floors sit around -60 dBFS and speech around -30 to -15 dBFS.
SILENCE_DBFS: Final = -45.0
MIN_SPEECH_S: Final = 0.25
# Decoding an otherwise broken file that still gave this much audio is kept (sent as FLAC).
_MIN_SALVAGED_S: Final = 1.0

_DECODE_ERRORS = (av.FFmpegError, ValueError, OverflowError, IndexError, OSError, EOFError)

T = TypeVar("T")

_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="audio")


async def run_audio(fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
    """Run codec work in the audio pool, off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, functools.partial(fn, *args, **kwargs))


class AudioRejected(Exception):
    """The learner's audio cannot be used; ``code`` says why (one of :data:`CODES`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"AudioRejected({self.code!r}, {str(self)!r})"


# --------------------------------------------------------------------------- decoding


def prepare_audio(data: bytes, *, max_seconds: float = 300.0) -> PreparedAudio:
    """Check a learner's voice note and make the transcription upload, in one decoding pass.

    Raises :class:`AudioRejected`: ``audio_corrupt`` (not audio we read, or broken),
    ``audio_too_long`` (over ``max_seconds``, refused from the container's stated length when
    it has one, else as soon as decoding passes the limit), ``audio_empty`` (shorter than
    0.3 s) or ``audio_silent`` (nothing above the silence threshold).
    """
    if not data:
        raise AudioRejected(AUDIO_EMPTY, "no audio data")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except _DECODE_ERRORS as exc:
        reason = f"not a readable audio file ({type(exc).__name__})"
        raise AudioRejected(AUDIO_CORRUPT, reason) from None
    with container:
        fmt = container.format.name
        if fmt not in _INPUT_FORMATS:
            raise AudioRejected(AUDIO_CORRUPT, f"unsupported container {fmt!r}")
        if not container.streams.audio:
            raise AudioRejected(AUDIO_CORRUPT, "no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context.codec.canonical_name
        stated = _stated_seconds(container, stream)
        if stated is not None and stated > max_seconds + _LENGTH_SLACK_S:
            raise AudioRejected(AUDIO_TOO_LONG, f"{stated:.1f} s stated, limit {max_seconds:g} s")
        passthrough = _PASSTHROUGH.get((fmt, codec))
        if container.streams.video or len(data) > MAX_UPLOAD_BYTES:
            passthrough = None
        # The file itself goes to the model and states its exact length: decoding can stop
        # once it has heard enough to know the note is not silent.
        exact = stated if passthrough is not None and fmt in _EXACT_LENGTH else None
        sound = _decode(
            container,
            stream,
            max_seconds,
            keep_pcm=passthrough is None,
            stop_at_speech=exact is not None,
        )
        channels = stream.codec_context.channels or 0
    duration = exact if exact is not None and sound.stopped_early else sound.seconds
    if sound.damaged and duration < _MIN_SALVAGED_S:
        raise AudioRejected(AUDIO_CORRUPT, "the audio could not be decoded")
    if duration < MIN_SECONDS:
        raise AudioRejected(AUDIO_EMPTY, f"{duration:.2f} s of audio")
    if sound.speech_s < MIN_SPEECH_S:
        raise AudioRejected(AUDIO_SILENT, f"{sound.speech_s:.2f} s above {SILENCE_DBFS:g} dBFS")
    if passthrough is not None and not sound.damaged:
        upload, (name, mime) = data, passthrough
    else:
        if passthrough is not None:  # planned to send the file as is, but it is broken
            sound = _salvage(data, max_seconds)
        upload, name, mime = encode_pcm_flac(sound.pcm16k()), "voice.flac", "audio/flac"
    return PreparedAudio(
        upload=upload,
        upload_name=name,
        upload_mime=mime,
        duration_s=duration,
        decoded_s=sound.seconds,
        speech_s=sound.speech_s,
        peak_dbfs=sound.peak_dbfs,
        container=fmt.split(",")[0],
        codec=codec,
        sample_rate=sound.rate,
        channels=int(channels),
        original_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def prepare_audio_async(data: bytes, *, max_seconds: float = 300.0) -> PreparedAudio:
    """:func:`prepare_audio` in the audio pool."""
    return await run_audio(prepare_audio, data, max_seconds=max_seconds)


def _salvage(data: bytes, max_seconds: float) -> _Sound:
    """Decode again keeping the audio, for a damaged file that cannot be sent as it is (rare:
    the first pass keeps no PCM when the file itself was to be the upload)."""
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        return _decode(container, container.streams.audio[0], max_seconds, keep_pcm=True)


def _stated_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """The length the file claims (container header or stream header), if any."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


class _Sound:
    """What one pass over the decoded audio learns: its length and loudness at the stream's
    own rate, and (when the upload is to be made from it) the audio at 16 kHz.

    Decoded frames are gathered into ~0.25 s blocks and handled with numpy and one stateful
    soxr stream: per 20 ms frame, libav's resampler filter graph cost more than decoding."""

    def __init__(self, rate: int, keep_pcm: bool) -> None:
        self.rate = rate
        self.window = max(1, rate // 50)  # 20 ms
        self._threshold = (10 ** (SILENCE_DBFS / 20)) ** 2 * self.window
        self._block: list[np.ndarray] = []
        self._block_len = 0
        self._carry = np.zeros(0, np.float32)
        self.samples = 0
        self.loud_windows = 0
        self.peak = 0.0
        self.damaged = False
        self.stopped_early = False
        self._resampler = soxr.ResampleStream(rate, STT_RATE, 1, "float32") if keep_pcm else None
        self._pcm: list[np.ndarray] = []

    @property
    def seconds(self) -> float:
        return self.samples / self.rate if self.rate else 0.0

    @property
    def speech_s(self) -> float:
        return self.loud_windows * self.window / self.rate if self.rate else 0.0

    @property
    def peak_dbfs(self) -> float:
        return 20 * math.log10(self.peak) if self.peak > 0 else -math.inf

    def add(self, mono: np.ndarray) -> None:
        self._block.append(mono)
        self._block_len += mono.size
        self.samples += mono.size
        if self._block_len >= self.rate // 4:
            self._flush()

    def close(self) -> None:
        self._flush(last=True)

    def _flush(self, last: bool = False) -> None:
        if self._block:
            block = np.concatenate(self._block) if len(self._block) > 1 else self._block[0]
            self._block, self._block_len = [], 0
            if block.size:
                self.peak = max(self.peak, float(np.max(np.abs(block))))
            if self._resampler is not None:
                self._pcm.append(self._resampler.resample_chunk(block))
            joined = np.concatenate([self._carry, block]) if self._carry.size else block
            whole = joined.size - joined.size % self.window
            windows = joined[:whole].reshape(-1, self.window)
            energy = np.einsum("ij,ij->i", windows, windows)
            self.loud_windows += int(np.count_nonzero(energy > self._threshold))
            self._carry = joined[whole:]
        if last and self._resampler is not None:
            self._pcm.append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))

    def pcm16k(self) -> np.ndarray:
        """The audio at 16 kHz as int16 (only when decoded with ``keep_pcm``)."""
        pcm = np.concatenate(self._pcm) if self._pcm else np.zeros(0, np.float32)
        return (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)


_SAMPLE_TYPES: Final = {
    "u8": np.uint8,
    "s16": np.int16,
    "s32": np.int32,
    "flt": np.float32,
    "dbl": np.float64,
    "s64": np.int64,
}


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame as mono float32 in [-1, 1], whatever its sample format and layout.
    Reads the planes' buffers directly (``to_ndarray`` stacks them, at several times the
    cost for the 20 ms frames voice notes are made of)."""
    name = frame.format.name.removesuffix("p")
    dtype = _SAMPLE_TYPES[name]
    channels = frame.layout.nb_channels or 1
    count = frame.samples
    if frame.format.is_planar:
        planes = [np.frombuffer(plane, dtype, count=count) for plane in frame.planes[:channels]]
        samples = planes[0] if channels == 1 else np.mean(planes, axis=0, dtype=np.float64)
    else:
        samples = np.frombuffer(frame.planes[0], dtype, count=count * channels)
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float64)
    if name == "u8":
        return ((samples.astype(np.float32) - 128.0) / 128.0).astype(np.float32, copy=False)
    if np.issubdtype(dtype, np.integer):
        scale = float(2 ** (np.dtype(dtype).itemsize * 8 - 1))
        return (samples / scale).astype(np.float32, copy=False)
    return samples.astype(np.float32, copy=False)


def _decode(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    max_seconds: float,
    *,
    keep_pcm: bool,
    stop_at_speech: bool = False,
) -> _Sound:
    """Decode the stream once; stop at the limit, at the first broken packet, or (with
    ``stop_at_speech``) as soon as enough speech was heard."""
    rate = int(stream.codec_context.sample_rate or 0)
    sound: _Sound | None = _Sound(rate, keep_pcm) if rate > 0 else None
    limit = (max_seconds + _LENGTH_SLACK_S) * max(rate, 1)
    damaged = False
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                if sound is None:  # the header had no rate; the first frame does
                    rate = frame.sample_rate
                    sound = _Sound(rate, keep_pcm)
                    limit = (max_seconds + _LENGTH_SLACK_S) * rate
                if frame.sample_rate != rate:
                    raise ValueError("the sample rate changed mid-stream")
                sound.add(_mono(frame))
            if sound is not None and sound.samples > limit:
                raise AudioRejected(AUDIO_TOO_LONG, f"over {max_seconds:g} s when decoded")
            if stop_at_speech and sound is not None and sound.speech_s >= MIN_SPEECH_S:
                sound.stopped_early = True
                break
    except _DECODE_ERRORS:
        damaged = True
    if sound is None:
        raise AudioRejected(AUDIO_CORRUPT, "no decodable audio")
    sound.close()
    sound.damaged = damaged
    return sound


def encode_pcm_flac(pcm: np.ndarray, rate: int = STT_RATE) -> bytes:
    """16-bit mono PCM as a FLAC file (lossless, about half the size of WAV)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate)
        stream.layout = "mono"
        step = 4096
        for start in range(0, len(pcm), step):
            frame = av.AudioFrame.from_ndarray(
                pcm[start : start + step].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class VoiceSpec:
    """How one platform's voice notes are encoded. ``sample_rate`` is what the note plays at;
    the encoder takes the speech model's 24 kHz PCM as it is (no resampling)."""

    container: str
    codec: str
    sample_rate: int
    bit_rate: int
    mime: str
    extension: str
    options: tuple[tuple[str, str], ...] = ()


VOICE_SPECS: Final = {
    # WhatsApp shows OGG/Opus as a voice note; Telegram draws its waveform. Opus runs at 48 kHz
    # whatever it is fed, so libopus takes the 24 kHz speech directly (resampling to 48 kHz
    # first added CPU and nothing audible: the speech has no content above 12 kHz). 60 ms
    # frames and complexity 5: a third of the codec calls of 20 ms frames, a smaller file, and
    # several hundred times real time; 32 kb/s is transparent for one speaking voice.
    "ogg_opus": VoiceSpec(
        "ogg",
        "libopus",
        48_000,
        32_000,
        "audio/ogg; codecs=opus",
        "ogg",
        (("application", "audio"), ("compression_level", "5"), ("frame_duration", "60")),
    ),
    # LINE plays M4A. AAC-LC at the speech model's own 24 kHz; FFmpeg's "fast" coder is 3-4x
    # quicker than its default and indistinguishable on speech at 48 kb/s.
    "m4a": VoiceSpec("ipod", "aac", TTS_RATE, 48_000, "audio/mp4", "m4a", (("aac_coder", "fast"),)),
}


class VoiceEncoder:
    """One voice note, written as PCM arrives: ``feed`` chunks of 16-bit mono PCM at 24 kHz
    (any size, even odd byte counts), then ``finish``. Not thread-safe: feed it from one task
    at a time (through :func:`run_audio`)."""

    def __init__(self, voice_format: str) -> None:
        self.spec = VOICE_SPECS[voice_format]
        self.input_rate = TTS_RATE
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, mode="w", format=self.spec.container)
        self._stream = self._container.add_stream(self.spec.codec, rate=self.input_rate)
        self._stream.layout = "mono"
        self._stream.bit_rate = self.spec.bit_rate
        for key, value in self.spec.options:
            self._stream.options[key] = value
        # libopus takes 16-bit samples as they come; FFmpeg's AAC wants planar float.
        self._float = self._stream.codec_context.format.name == "fltp"
        self._odd = b""
        self.samples_in = 0
        self._closed = False

    @property
    def seconds_in(self) -> float:
        return self.samples_in / self.input_rate

    def feed(self, pcm: bytes) -> None:
        if self._closed:
            raise RuntimeError("encoder already finished")
        if self._odd:
            pcm = self._odd + pcm
        whole = len(pcm) - len(pcm) % 2
        self._odd = pcm[whole:]
        if not whole:
            return
        samples = np.frombuffer(pcm, dtype="<i2", count=whole // 2).reshape(1, -1)
        if self._float:
            frame = av.AudioFrame.from_ndarray(
                samples.astype(np.float32) / 32768.0, format="fltp", layout="mono"
            )
        else:
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.input_rate
        frame.time_base = Fraction(1, self.input_rate)
        frame.pts = self.samples_in
        self.samples_in += samples.shape[1]
        self._encode(frame)

    def finish(self) -> EncodedAudio:
        """Flush and close; the voice note lasts what was fed."""
        if self._closed:
            raise RuntimeError("encoder already finished")
        if not self.samples_in:
            self.close()
            raise ValueError("no audio was fed")
        self._encode(None)
        self._container.close()
        self._closed = True
        return EncodedAudio(
            data=self._buffer.getvalue(),
            mime=self.spec.mime,
            extension=self.spec.extension,
            duration_s=self.seconds_in,
            sample_rate=self.spec.sample_rate,
            codec=self.spec.codec.removeprefix("lib"),
        )

    def close(self) -> None:
        """Drop an unfinished note (the reply was abandoned)."""
        if not self._closed:
            self._closed = True
            with suppress(*_DECODE_ERRORS):
                self._container.close()

    def _encode(self, frame: av.AudioFrame | None) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
