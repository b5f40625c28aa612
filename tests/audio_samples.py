"""Real audio files made with PyAV, in every format learners' apps send, for the tests.

``voice_note(fmt, seconds)`` encodes the fake speech model's speech-like signal (so the files
sound like a voice, not a tone) as one of :data:`INBOUND_FORMATS`: OGG/Opus (WhatsApp and
Telegram voice notes), AAC in ADTS (WhatsApp ``audio/aac``), M4A (LINE, iPhones), AMR-NB
(WhatsApp ``audio/amr``, old Android), MP4 (``audio/mp4``) and MP3 (``audio/mpeg``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import av
import numpy as np

from tests.fakes.openai_audio import speech_like


@dataclass(frozen=True)
class Format:
    name: str
    container: str
    codec: str
    rate: int
    mime: str
    filename: str


INBOUND_FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("ogg_opus", "ogg", "libopus", 48_000, "audio/ogg", "voice.ogg"),
        Format("aac", "adts", "aac", 44_100, "audio/aac", "voice.aac"),
        Format("m4a", "ipod", "aac", 44_100, "audio/mp4", "voice.m4a"),
        Format("amr_nb", "amr", "libopencore_amrnb", 8_000, "audio/amr", "voice.amr"),
        Format("mp4", "mp4", "aac", 48_000, "audio/mp4", "voice.mp4"),
        Format("mp3", "mp3", "libmp3lame", 44_100, "audio/mpeg", "voice.mp3"),
    )
}
SAMPLE_TEXT = "Hola, ayer fui al mercado con mi hermana y compramos fruta fresca."


def encode(pcm: np.ndarray, rate: int, fmt: Format) -> bytes:
    """int16 ``pcm`` at ``rate`` in ``fmt`` (resampled to the codec's rate): mono when 1-D,
    stereo when shaped 2 x n."""
    layout = "stereo" if pcm.ndim == 2 else "mono"
    packed = np.ascontiguousarray(pcm.T).reshape(1, -1)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt.container) as container:
        stream = container.add_stream(fmt.codec, rate=fmt.rate)
        stream.layout = layout
        if fmt.codec == "libopencore_amrnb":
            stream.bit_rate = 12_200
        resampler = av.AudioResampler(
            format=stream.codec_context.format, layout=layout, rate=fmt.rate
        )
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
        frame.sample_rate = rate
        for out in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@lru_cache(maxsize=64)
def voice_note(
    fmt: str = "ogg_opus", seconds: float | None = None, text: str = SAMPLE_TEXT
) -> bytes:
    """A speech-like note in ``fmt``; ``seconds`` stretches or cuts it to that length."""
    pcm = speech_like(text)
    if seconds is not None:
        reps = int(np.ceil(seconds * 24_000 / len(pcm)))
        pcm = np.tile(pcm, reps)[: int(seconds * 24_000)]
    return encode(pcm, 24_000, INBOUND_FORMATS[fmt])


@lru_cache(maxsize=8)
def quiet_note(fmt: str = "ogg_opus", seconds: float = 3.0, dbfs: float = -65.0) -> bytes:
    """Room noise far below speech: what a pocket recording sounds like."""
    rng = np.random.default_rng(7)
    amplitude = 10 ** (dbfs / 20) * 32767
    pcm = np.clip(rng.normal(0, amplitude, int(seconds * 24_000)), -32767, 32767)
    return encode(pcm.astype(np.int16), 24_000, INBOUND_FORMATS[fmt])


def decoded(data: bytes) -> tuple[str, str, int, int, float]:
    """(container, codec, sample rate, channels, seconds) of a file, decoding all of it."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        ctx = stream.codec_context
        return (
            container.format.name,
            ctx.name,
            ctx.sample_rate,
            ctx.channels,
            samples / ctx.sample_rate,
        )
