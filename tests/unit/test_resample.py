"""The call resampler: quality of the 16k -> 24k -> 16k round trip in 20 ms frames, and the
framing properties the carrier relies on (exact 640-byte frames whatever the chunking)."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from languagebuddy.media.resample import (
    CARRIER_RATE,
    FRAME_BYTES,
    MODEL_RATE,
    Downlink,
    Framer,
    Resampler,
    Uplink,
)
from tests.audio_quality import band_energy_db, rms_db, sinad_db, steady, tone, tone_level_db

FRAME_16K = CARRIER_RATE // 50  # samples in 20 ms


def round_trip_in_frames(signal: np.ndarray) -> np.ndarray:
    """16 kHz carrier frames up to the model's 24 kHz and straight back down, 20 ms at a time,
    as a call does (the downlink's frames, concatenated)."""
    up, down = Uplink(), Downlink()
    frames: list[bytes] = []
    for start in range(0, len(signal), FRAME_16K):
        frames += down.push(up.push(signal[start : start + FRAME_16K].tobytes()))
    return np.frombuffer(b"".join(frames), "<i2")


def test_round_trip_of_a_1khz_tone_in_20ms_frames_keeps_snr_above_60_db() -> None:
    out = steady(round_trip_in_frames(tone(2.0, CARRIER_RATE)), CARRIER_RATE)
    assert len(out) > CARRIER_RATE
    assert sinad_db(out, CARRIER_RATE, 1000.0) > 60.0


def test_round_trip_has_no_discontinuity_at_frame_edges() -> None:
    out = steady(round_trip_in_frames(tone(2.0, CARRIER_RATE)), CARRIER_RATE)
    assert band_energy_db(out, CARRIER_RATE, 7500.0) < -60.0


def test_resampling_each_frame_on_its_own_clicks_and_fails_the_same_measure() -> None:
    """The measure can fail: stateless per-frame resampling (the design the stream replaces)
    puts a discontinuity at every frame edge."""
    signal = tone(2.0, CARRIER_RATE)
    frames = []
    for start in range(0, len(signal), FRAME_16K):
        up = soxr.resample(signal[start : start + FRAME_16K], CARRIER_RATE, MODEL_RATE)
        frames.append(soxr.resample(up, MODEL_RATE, CARRIER_RATE))
    out = steady(np.concatenate(frames), CARRIER_RATE)
    assert band_energy_db(out, CARRIER_RATE, 7500.0) > -60.0
    assert sinad_db(out, CARRIER_RATE, 1000.0) < 60.0


@pytest.mark.parametrize("hz", [300.0, 3400.0, 7000.0])
def test_wideband_speech_band_passes_both_ways_at_full_level(hz: float) -> None:
    out = steady(round_trip_in_frames(tone(1.0, CARRIER_RATE, hz)), CARRIER_RATE)
    assert abs(tone_level_db(out, CARRIER_RATE, hz)) < 0.1


def test_model_audio_above_the_carriers_band_does_not_alias_into_it() -> None:
    """The model speaks up to 12 kHz; at 16 kHz anything above 8 kHz must be filtered out, not
    folded back (10 kHz would alias to 6 kHz)."""
    down = Downlink()
    frames = down.push(tone(1.0, MODEL_RATE, 10_000.0).tobytes())
    out = steady(np.frombuffer(b"".join(frames), "<i2"), CARRIER_RATE)
    assert rms_db(out) < -90.0


def test_full_scale_overshoot_is_clipped_not_wrapped() -> None:
    """A full-scale square wave makes the filter ring past int16; the cast must not wrap."""
    square = np.where(np.arange(MODEL_RATE) % 48 < 24, 32767, -32768).astype("<i2")
    frames = Downlink().push(square.tobytes())
    out = np.frombuffer(b"".join(frames), "<i2").astype(np.int32)
    # A wrapped sample jumps by about 65536 between neighbours; a clipped one cannot.
    assert np.max(np.abs(np.diff(out))) < 65536 - 1000


# -- framing properties -------------------------------------------------------------------------


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({p % (len(data) + 1) for p in points})
    pieces, start = [], 0
    for edge in [*edges, len(data)]:
        pieces.append(data[start:edge])
        start = edge
    return pieces


def noise(samples: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(samples) * 6000).clip(-32768, 32767).astype("<i2").tobytes()


chunkings = st.lists(st.integers(min_value=0, max_value=10**6), max_size=40)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 3 * FRAME_BYTES), points=chunkings)
def test_framer_emits_only_whole_frames_and_keeps_the_rest(size: int, points: list[int]) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    framer = Framer()
    frames = [frame for piece in cut(data, points) for frame in framer.push(piece)]
    assert all(len(frame) == FRAME_BYTES for frame in frames)
    assert framer.pending < FRAME_BYTES
    assert len(frames) == size // FRAME_BYTES
    assert b"".join(frames) + data[len(frames) * FRAME_BYTES :] == data
    last = framer.flush()
    assert (last is None) == (size % FRAME_BYTES == 0)
    if last is not None:
        assert len(last) == FRAME_BYTES and last.endswith(bytes(FRAME_BYTES - size % FRAME_BYTES))


@settings(max_examples=40, deadline=None)
@given(
    samples=st.integers(0, MODEL_RATE // 2),
    seed=st.integers(0, 2**16),
    points=chunkings,
    rates=st.sampled_from([(CARRIER_RATE, MODEL_RATE), (MODEL_RATE, CARRIER_RATE)]),
)
def test_resampler_output_does_not_depend_on_how_the_input_was_cut(
    samples: int, seed: int, points: list[int], rates: tuple[int, int]
) -> None:
    """Bit-exact, odd byte counts included (a chunk may split a sample)."""
    data = noise(samples, seed)
    whole = Resampler(*rates)
    expected = whole.process(data) + whole.drain()
    pieces = Resampler(*rates)
    got = b"".join(pieces.process(piece) for piece in cut(data, points)) + pieces.drain()
    assert got == expected
    assert abs(len(got) // 2 - samples * rates[1] / rates[0]) <= 1  # every sample, once


@settings(max_examples=40, deadline=None)
@given(samples=st.integers(0, MODEL_RATE // 2), seed=st.integers(0, 2**16), points=chunkings)
def test_downlink_gives_the_same_640_byte_frames_whatever_the_model_chunking(
    samples: int, seed: int, points: list[int]
) -> None:
    data = noise(samples, seed)
    whole = Downlink()
    expected = whole.push(data) + whole.end()
    downlink = Downlink()
    frames: list[bytes] = []
    for piece in cut(data, points):
        frames += downlink.push(piece)
        assert downlink.framer.pending < FRAME_BYTES
    frames += downlink.end()
    assert frames == expected
    assert all(len(frame) == FRAME_BYTES for frame in frames)
    # Every resampled sample is in a frame once, padded up to the last whole frame.
    plain = Resampler(MODEL_RATE, CARRIER_RATE)
    resampled = plain.process(data) + plain.drain()
    assert b"".join(frames)[: len(resampled)] == resampled
    assert len(frames) == -(-len(resampled) // FRAME_BYTES)


def test_downlink_reset_drops_everything_buffered_at_once() -> None:
    downlink = Downlink()
    downlink.push(tone(0.13, MODEL_RATE).tobytes())  # a partial frame and a full filter
    assert downlink.pending_ms > 0
    downlink.reset()
    assert downlink.pending_ms == 0 and downlink.framer.pending == 0
    # Nothing of the interrupted audio comes out afterwards: silence in, silence out.
    frames = downlink.push(bytes(MODEL_RATE // 5 * 2)) + downlink.end()
    assert frames and all(frame == bytes(FRAME_BYTES) for frame in frames)


def test_downlink_end_lets_the_tail_out_and_starts_the_next_answer_clean() -> None:
    downlink = Downlink()
    first = tone(0.105, MODEL_RATE).tobytes()  # 105 ms: 5 frames and a quarter
    frames = downlink.push(first) + downlink.end()
    assert len(frames) == 6
    assert downlink.pending_ms == 0
    # The next answer is resampled as if the stream were new: the same input, the same frames.
    assert downlink.push(first) + downlink.end() == frames


def test_uplink_reset_forgets_the_callers_earlier_audio() -> None:
    uplink = Uplink()
    loud = tone(0.1, CARRIER_RATE).tobytes()
    for start in range(0, len(loud), FRAME_BYTES):
        uplink.push(loud[start : start + FRAME_BYTES])
    uplink.reset()
    out = b"".join(uplink.push(bytes(FRAME_BYTES)) for _ in range(10))
    assert out and out == bytes(len(out))
