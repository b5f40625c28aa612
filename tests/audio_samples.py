"""Real audio files made with PyAV, in every format learners' apps send, for the tests.

``voice_note(fmt, seconds)`` encodes the fake speech model's speech-like signal (so the files
sound like a voice, not a tone) as one of :data:`INBOUND_FORMATS`: OGG/Opus (WhatsApp and
Telegram voice notes), AAC in ADTS (WhatsApp ``audio/aac``), M4A (LINE, iPhones), AMR-NB
(WhatsApp ``audio/amr``, old Android), MP4 (``audio/mp4``) and MP3 (``audio/mpeg``).

AMR-NB is the exception: PyAV's wheels stopped shipping an AMR encoder (libopencore_amrnb)
in 18.1.1, while its decoder stays. So the AMR note is a real recording kept beside this file,
``samples/speech-12k2.amr``: the same ``speech_like(SAMPLE_TEXT)`` signal encoded by PyAV
18.1.0's libopencore_amrnb at 12.2 kbit/s. AMR frames stand alone in their container (a
header byte and a fixed-size payload per 20 ms), so other lengths are made by repeating or
cutting its frames.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
        Format("amr_nb", "amr", "amrnb", 8_000, "audio/amr", "voice.amr"),  # a recording
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
    if fmt == "amr_nb":
        assert text == SAMPLE_TEXT, "the AMR recording says SAMPLE_TEXT only"
        return amr_recording(seconds)
    pcm = speech_like(text)
    if seconds is not None:
        reps = int(np.ceil(seconds * 24_000 / len(pcm)))
        pcm = np.tile(pcm, reps)[: int(seconds * 24_000)]
    return encode(pcm, 24_000, INBOUND_FORMATS[fmt])


AMR_RECORDING = Path(__file__).parent / "samples" / "speech-12k2.amr"
AMR_MAGIC = b"#!AMR\n"
# Payload bytes of an AMR-NB frame by its frame type (RFC 4867 section 5.3); 15 = no data.
_AMR_PAYLOAD = (12, 13, 15, 17, 19, 20, 26, 31, 5, 0, 0, 0, 0, 0, 0, 0)


def amr_recording(seconds: float | None = None) -> bytes:
    """The AMR-NB recording, its 20 ms frames repeated or cut to ``seconds``."""
    data = AMR_RECORDING.read_bytes()
    assert data.startswith(AMR_MAGIC)
    frames: list[bytes] = []
    position = len(AMR_MAGIC)
    while position < len(data):
        size = 1 + _AMR_PAYLOAD[(data[position] >> 3) & 0x0F]
        frames.append(data[position : position + size])
        position += size
    if seconds is not None:
        wanted = round(seconds * 50)
        frames = (frames * (wanted // len(frames) + 1))[:wanted]
    return AMR_MAGIC + b"".join(frames)


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
