"""Speech-like telephone audio for the call fakes, encoded and decoded with PyAV.

Not real speech, but shaped like it where it matters to a voice pipeline: a voiced source with
a wandering pitch and a few formant-ish harmonics, chopped into syllables at ~4 Hz, over a low
noise floor, so that energy VAD sees speech and pauses, no two 20 ms frames are equal (frames
can be matched across processes by content), and the bytes are real G.711 μ-law (PyAV's
``pcm_mulaw`` codec) or 16-bit PCM.
"""

from __future__ import annotations

from functools import lru_cache

import av
import numpy as np

PCMU_RATE = 8000
FRAME_MS = 20


def speech(
    seconds: float, rate: int = PCMU_RATE, *, seed: int = 0, level: float = 0.3
) -> np.ndarray:
    """Float samples in [-1, 1]: syllables of voiced sound at about -16 dBFS RMS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6.28)) + rng.normal(0, 2, n)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in (1, 2, 3, 5, 8))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.28)), 0, None) ** 0.5
    envelope = 0.35 + 0.65 * syllables
    signal = level * voiced * envelope / 1.6 + rng.normal(0, 0.002, n)
    return np.clip(signal, -1, 1)


def silence(seconds: float, rate: int = PCMU_RATE, *, seed: int = 0) -> np.ndarray:
    """A quiet line (about -55 dBFS of noise): never digital zero, so frames stay unique."""
    rng = np.random.default_rng(seed + 7919)
    return rng.normal(0, 0.0018, int(seconds * rate))


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16)


def encode_pcmu(samples: np.ndarray) -> bytes:
    """Float samples at 8 kHz to G.711 μ-law bytes, with PyAV."""
    ctx = av.CodecContext.create("pcm_mulaw", "w")
    ctx.sample_rate = PCMU_RATE
    ctx.layout = "mono"
    ctx.format = "s16"
    frame = av.AudioFrame.from_ndarray(
        to_int16(samples).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = PCMU_RATE
    out = b"".join(bytes(p) for p in ctx.encode(frame))
    return out + b"".join(bytes(p) for p in ctx.encode(None))


@lru_cache(maxsize=1)
def pcmu_table() -> np.ndarray:
    """μ-law byte -> linear int16, from PyAV's decoder (for the fake model's VAD)."""
    ctx = av.CodecContext.create("pcm_mulaw", "r")
    ctx.sample_rate = PCMU_RATE
    ctx.layout = "mono"
    frames = ctx.decode(av.Packet(bytes(range(256))))
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


def decode_pcmu(data: bytes) -> np.ndarray:
    return pcmu_table()[np.frombuffer(data, dtype=np.uint8)]


def pcm16_bytes(samples: np.ndarray) -> bytes:
    """Float samples to 16-bit little-endian PCM bytes."""
    return to_int16(samples).astype("<i2").tobytes()


def rms_dbfs(linear: np.ndarray) -> float:
    if linear.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(linear.astype(np.float64))))) / 32768
    return 20 * np.log10(max(rms, 1e-6))


def utterance_pcmu(
    speech_seconds: float, *, seed: int, lead_silence: float = 0.0, tail_silence: float = 0.0
) -> bytes:
    """Silence, speech, silence as μ-law bytes (whole 20 ms frames)."""
    parts = []
    if lead_silence:
        parts.append(silence(lead_silence, seed=seed))
    parts.append(speech(speech_seconds, seed=seed))
    if tail_silence:
        parts.append(silence(tail_silence, seed=seed + 1))
    data = encode_pcmu(np.concatenate(parts))
    frame = PCMU_RATE * FRAME_MS // 1000
    return data[: len(data) - len(data) % frame]
