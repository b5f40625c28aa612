"""Sample-rate conversion for calls whose carrier and model disagree on the rate (Vonage L16 at
16 kHz, OpenAI ``audio/pcm`` at 24 kHz), and the fixed-size framing the carrier needs.

Each direction of each call owns one stateful ``soxr.ResampleStream``: the filter's memory runs
across frame edges, so 20 ms frames join without the clicks that resampling each frame on its
own makes. soxr works in float32 here and we round to int16 ourselves: soxr's int16 mode adds
random dither, which would make the output depend on the run (and on how the input was cut);
with float32 it is bit-exact whatever the chunking, which the tests rely on.

The quality recipe is chosen by measurement (``bench/resample.py``): every recipe costs about
the same CPU per frame (soxr's per-call overhead dominates at 20 ms), so the choice is quality
against delay. ``HQ`` (soxr's default) is flat to 7.2 kHz, the whole wideband speech band, with
aliases below -120 dB, at about 21 ms of delay each way (mean, 20 ms frames); ``MQ`` measures
the same delay with 16-bit instead of 20-bit precision; ``LQ`` halves the uplink's delay but is
6 dB down at 6.5 kHz and 25 dB at 7 kHz (sibilants); ``VHQ`` doubles the delay for nothing a
caller can hear; ``QQ`` (cubic, no filter) folds the model's 8-12 kHz back into the band.

Per-frame work is a handful of numpy calls on a few hundred samples: no allocation beyond the
output, no logging.
"""

from __future__ import annotations

import numpy as np
import soxr

CARRIER_RATE = 16_000  # Vonage L16
MODEL_RATE = 24_000  # OpenAI audio/pcm
FRAME_MS = 20
FRAME_BYTES = CARRIER_RATE * FRAME_MS // 1000 * 2  # 640: one 20 ms frame of 16-bit mono at 16 kHz
QUALITY = "HQ"

_INT16_MIN = -32768.0
_INT16_MAX = 32767.0
# The clip ufunc itself: ``np.clip``'s Python wrapper costs 1.5 µs a call, a fifth of a frame's
# whole resampling (numpy 2 keeps it in ``_core``, numpy 1 in ``core``).
_clip = getattr(getattr(np, "_core", None) or np.core, "umath", np).clip
_rint = np.rint
_frombuffer = np.frombuffer
_float32 = np.float32


class Resampler:
    """One direction of one call: 16-bit little-endian mono bytes in, the same at another
    rate out. Keeps the filter state between calls; ``reset`` forgets it at once (barge-in),
    ``drain`` lets the tail out (the end of a stretch of audio)."""

    __slots__ = ("_carry", "_stream", "in_rate", "out_rate", "quality", "samples_in", "samples_out")

    def __init__(self, in_rate: int, out_rate: int, *, quality: str = QUALITY) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        self._carry = b""  # the odd byte of a chunk that split a sample
        # Totals since the last reset: what went in and came out, in samples (for callers that
        # map a point of the input to a point of the output, e.g. where a mark falls).
        self.samples_in = 0
        self.samples_out = 0

    def process(self, pcm: bytes) -> bytes:
        """Resample a chunk of any size; the output lags by the filter's delay."""
        if self._carry:
            pcm = self._carry + pcm
            self._carry = b""
        if len(pcm) & 1:
            self._carry = pcm[-1:]
            pcm = pcm[:-1]
        if not pcm:
            return b""
        samples = _frombuffer(pcm, "<i2").astype(_float32)
        self.samples_in += len(samples)
        return self._to_bytes(self._stream.resample_chunk(samples))

    def drain(self) -> bytes:
        """Everything still inside the filter, as if the input ended with silence; the stream
        is then ready for a fresh signal (the next stretch starts with no delay debt)."""
        self._carry = b""
        tail = self._to_bytes(self._stream.resample_chunk(np.zeros(0, _float32), last=True))
        self._stream.clear()
        self.samples_in = self.samples_out = 0
        return tail

    def reset(self) -> None:
        """Drop what is buffered, output included (the caller interrupted)."""
        self._carry = b""
        self._stream.clear()
        self.samples_in = self.samples_out = 0

    @property
    def delay_samples(self) -> float:
        """Output samples the filter holds back now (its current latency)."""
        return float(self._stream.delay())

    def _to_bytes(self, out: np.ndarray) -> bytes:
        if not len(out):
            return b""
        self.samples_out += len(out)
        # Filter ringing can overshoot full scale: clip before the cast, which would wrap.
        _clip(out, _INT16_MIN, _INT16_MAX, out=out)
        return _rint(out, out=out).astype("<i2").tobytes()


class Framer:
    """Cuts a byte stream into frames of exactly ``frame_bytes``, keeping the remainder (always
    shorter than a frame) for the next push."""

    __slots__ = ("_buffer", "frame_bytes")

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        self.frame_bytes = frame_bytes
        self._buffer = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        """The whole frames that ``data`` completes, in order (possibly none)."""
        size = self.frame_bytes
        buffer = self._buffer
        if not buffer and len(data) % size == 0:  # the common case: no copy into the buffer
            return [data[i : i + size] for i in range(0, len(data), size)]
        buffer += data
        whole = len(buffer) - len(buffer) % size
        if not whole:
            return []
        frames = [bytes(buffer[i : i + size]) for i in range(0, whole, size)]
        del buffer[:whole]
        return frames

    def flush(self) -> bytes | None:
        """The remainder as one last frame padded with silence, or None when there is none."""
        if not self._buffer:
            return None
        frame = bytes(self._buffer) + bytes(self.frame_bytes - len(self._buffer))
        self._buffer.clear()
        return frame

    def reset(self) -> None:
        self._buffer.clear()

    @property
    def pending(self) -> int:
        """Bytes held back, waiting to complete a frame (less than ``frame_bytes``)."""
        return len(self._buffer)


class Uplink:
    """The caller's audio to the model: 16 kHz carrier frames to 24 kHz model audio."""

    __slots__ = ("resampler",)

    def __init__(self, *, quality: str = QUALITY) -> None:
        self.resampler = Resampler(CARRIER_RATE, MODEL_RATE, quality=quality)

    def push(self, frame: bytes) -> bytes:
        """24 kHz audio for one carrier frame (empty while the filter fills at the start)."""
        return self.resampler.process(frame)

    def reset(self) -> None:
        self.resampler.reset()


class Downlink:
    """The model's audio to the caller: 24 kHz model audio of any chunking to exact 640-byte
    16 kHz frames."""

    __slots__ = ("framer", "resampler")

    def __init__(self, *, quality: str = QUALITY, frame_bytes: int = FRAME_BYTES) -> None:
        self.resampler = Resampler(MODEL_RATE, CARRIER_RATE, quality=quality)
        self.framer = Framer(frame_bytes)

    def push(self, pcm: bytes) -> list[bytes]:
        """The carrier frames this model audio completes."""
        return self.framer.push(self.resampler.process(pcm))

    def end(self) -> list[bytes]:
        """The model finished speaking: the filter's tail and the last partial frame (padded
        with silence), so that the end of the answer is heard now and not glued to the next."""
        frames = self.framer.push(self.resampler.drain())
        last = self.framer.flush()
        if last is not None:
            frames.append(last)
        return frames

    def reset(self) -> None:
        """Barge-in: whatever is buffered is dropped at once and never sent."""
        self.resampler.reset()
        self.framer.reset()

    @property
    def pending_ms(self) -> float:
        """Model audio taken in but not yet in a frame (the filter's delay and the remainder),
        in milliseconds of caller audio."""
        samples = self.resampler.delay_samples + self.framer.pending / 2
        return samples * 1000.0 / CARRIER_RATE
