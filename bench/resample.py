"""The resampling a Vonage call costs, per call-second, beside a floor, and the quality each
soxr recipe gives for it (issue 15: "the resampling cost per call-second on its own").

A call resamples both ways, 50 frames a second each: the caller's 20 ms L16 frames at 16 kHz
up to the model's 24 kHz (``Uplink``), and the model's 24 kHz audio down to exact 640-byte
16 kHz frames (``Downlink``, framing included). Each row runs one call's pair of streams over
speech-like audio in 20 ms pieces and reports the CPU (``time.process_time``, best of
``--repeats``) per frame each way and per call-second (50 + 50 frames), and, on test tones, the
quality the issue asks for: SINAD of a 1 kHz tone through 16k -> 24k -> 16k in 20 ms frames,
the energy above 7.5 kHz (clicks at frame edges would show there), the level of a 7 kHz tone
after the round trip (the top of wideband speech), what is left of a 10 kHz model tone at
16 kHz (aliasing), and the delay each direction adds (mean and maximum at steady state). Levels
are shown down to -120 dB; below that the measure only sees int16 rounding patterns.

Rows:
- ``soxr <Q>``: ``media.resample`` as the product runs it, for each soxr recipe (``QQ`` to
  ``VHQ``); the product's choice is marked.
- ``soxr <Q> int16``: soxr's own int16 mode (cheaper, but adds random dither: not
  reproducible, so not bit-exact across chunkings).
- ``stateless per frame``: ``soxr.resample`` on each frame alone (what the stream replaces).
- ``floor: numpy linear``: the least that does the same work: stateful linear interpolation in
  numpy (no anti-alias filter), straight to 640-byte frames. Ratios are against this row.

A second table runs the whole outbound half of the Vonage serializer (``VonageOutbound``:
resampling, framing, a notify every 200 ms, pacing ``LEAD_MS`` ahead on a 40 ms tick) for
``--calls`` concurrent calls in one event loop, each given its answer as the model gives it
(all at once, in 100 ms deltas) over a socket that only counts bytes, in CPU ms per
call-second; beside it the same work without pacing (every frame sent at once), so the
pacer's own cost shows.

    .venv/bin/python bench/resample.py              # ~20 s
    .venv/bin/python bench/resample.py --seconds 60 --repeats 9 --calls 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
from common import Column, print_table, save_results

from languagebuddy.calls.vonage_serializer import LEAD_MS, VonageOutbound
from languagebuddy.media import resample
from languagebuddy.media.resample import CARRIER_RATE, FRAME_BYTES, MODEL_RATE, Downlink, Uplink

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the test signals live in tests/, not an installed package
    sys.path.insert(0, str(ROOT))

from tests.audio_quality import (  # noqa: E402
    band_energy_db,
    rms_db,
    sinad_db,
    speech_like,
    steady,
    tone,
    tone_level_db,
)

NAME = "resample"
FRAME_16K = CARRIER_RATE // 50
FRAME_24K = MODEL_RATE // 50
QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")

COLUMNS = [
    Column("variant", "variant", width=22),
    Column("up_us", "up µs/frame", ".2f"),
    Column("down_us", "down µs/frame", ".2f"),
    Column("cpu_ms_per_call_s", "CPU ms/call-s", ".3f"),
    Column("ratio", "x floor", ".2f"),
    Column("sinad_db", "SINAD 1k dB", ".1f"),
    Column("above_7k5_db", ">7.5k dB", ".1f"),
    Column("level_7k_db", "7k dB", ".2f"),
    Column("alias_10k_db", "alias 10k dB", ".1f"),
    Column("delay_up_ms", "delay up ms", ".1f"),
    Column("delay_up_max_ms", "max", ".1f"),
    Column("delay_down_ms", "delay down ms", ".1f"),
    Column("delay_down_max_ms", "max", ".1f"),
]


@dataclass
class Pair:
    """One call's two directions: ``up`` takes a 640-byte frame and returns 24 kHz bytes,
    ``down`` takes 24 kHz bytes and returns whole 640-byte frames."""

    up: Callable[[bytes], bytes]
    down: Callable[[bytes], list[bytes]]


def product(quality: str) -> Callable[[], Pair]:
    def make() -> Pair:
        up, down = Uplink(quality=quality), Downlink(quality=quality)
        return Pair(up.push, down.push)

    return make


def soxr_int16(quality: str) -> Callable[[], Pair]:
    def make() -> Pair:
        up = soxr.ResampleStream(CARRIER_RATE, MODEL_RATE, 1, dtype="int16", quality=quality)
        down = soxr.ResampleStream(MODEL_RATE, CARRIER_RATE, 1, dtype="int16", quality=quality)
        framer = resample.Framer()

        def up_fn(frame: bytes) -> bytes:
            return up.resample_chunk(np.frombuffer(frame, "<i2")).tobytes()

        def down_fn(pcm: bytes) -> list[bytes]:
            return framer.push(down.resample_chunk(np.frombuffer(pcm, "<i2")).tobytes())

        return Pair(up_fn, down_fn)

    return make


def stateless() -> Pair:
    framer = resample.Framer()

    def up_fn(frame: bytes) -> bytes:
        x = np.frombuffer(frame, "<i2")
        return soxr.resample(x, CARRIER_RATE, MODEL_RATE, quality="HQ").tobytes()

    def down_fn(pcm: bytes) -> list[bytes]:
        x = np.frombuffer(pcm, "<i2")
        return framer.push(soxr.resample(x, MODEL_RATE, CARRIER_RATE, quality="HQ").tobytes())

    return Pair(up_fn, down_fn)


class LinearStream:
    """Stateful linear interpolation at a fixed frame size: the previous frame's last sample
    joins each frame to the one before, so there is no edge step; no anti-alias filter."""

    def __init__(self, frame_in: int, frame_out: int) -> None:
        positions = np.arange(frame_out) * frame_in / frame_out  # in input samples
        self.index = positions.astype(np.int64)  # 0..frame_in-1, into [previous] + frame
        self.weight = (positions - self.index).astype(np.float32)
        self.previous = np.zeros(1, np.float32)

    def __call__(self, frame: bytes) -> bytes:
        x = np.concatenate((self.previous, np.frombuffer(frame, "<i2").astype(np.float32)))
        self.previous = x[-1:]
        a = x[self.index]
        y = a + (x[self.index + 1] - a) * self.weight
        return np.rint(y).astype("<i2").tobytes()


def floor() -> Pair:
    up = LinearStream(FRAME_16K, FRAME_24K)
    down = LinearStream(FRAME_24K, FRAME_16K)
    return Pair(up, lambda pcm: [down(pcm)])  # 480 samples in: exactly one 640-byte frame out


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


def cpu_per_frame(
    make: Callable[[], Pair], up_frames: list[bytes], down_chunks: list[bytes]
) -> tuple[float, float]:
    """CPU µs per 20 ms frame, each direction, of one run on a fresh pair."""
    pair = make()
    up, down = pair.up, pair.down
    start = time.process_time()
    for frame in up_frames:
        up(frame)
    middle = time.process_time()
    for chunk in down_chunks:
        down(chunk)
    end = time.process_time()
    return (middle - start) / len(up_frames) * 1e6, (end - middle) / len(down_chunks) * 1e6


def quality(make: Callable[[], Pair]) -> dict[str, float]:
    """The issue's measures on test tones, with 20 ms pieces throughout."""
    pair = make()
    signal = tone(2.0, CARRIER_RATE)
    out = b"".join(
        b"".join(pair.down(pair.up(frame))) for frame in chunks(signal.tobytes(), FRAME_BYTES)
    )
    round_trip = steady(np.frombuffer(out, "<i2"), CARRIER_RATE)
    pair = make()
    high = tone(1.0, CARRIER_RATE, 7000.0).tobytes()
    out7k = b"".join(b"".join(pair.down(pair.up(frame))) for frame in chunks(high, FRAME_BYTES))
    pair = make()
    model = tone(1.0, MODEL_RATE, 10_000.0).tobytes()
    alias = b"".join(b"".join(pair.down(piece)) for piece in chunks(model, FRAME_24K * 2))
    measured = {
        "sinad_db": sinad_db(round_trip, CARRIER_RATE, 1000.0),
        "above_7k5_db": band_energy_db(round_trip, CARRIER_RATE, 7500.0),
        "level_7k_db": tone_level_db(
            steady(np.frombuffer(out7k, "<i2"), CARRIER_RATE), CARRIER_RATE, 7000.0
        ),
        "alias_10k_db": rms_db(steady(np.frombuffer(alias, "<i2"), CARRIER_RATE)),
    }
    return {key: max(value, -120.0) for key, value in measured.items()}


def delays(make: Callable[[], Pair]) -> dict[str, float]:
    """The delay each direction adds with 20 ms pieces: audio taken in but not yet given out,
    averaged over frames 25-150 (soxr works in blocks, so it swings from frame to frame) and
    its maximum there (framing included for the downlink)."""
    pair = make()
    up_lag, down_lag = [], []
    taken_up = given_up = taken_down = given_down = 0
    for frame in range(150):
        given_up += len(pair.up(bytes(FRAME_BYTES))) // 2
        given_down += len(b"".join(pair.down(bytes(FRAME_24K * 2)))) // 2
        taken_up += FRAME_24K
        taken_down += FRAME_16K
        if frame >= 25:
            up_lag.append((taken_up - given_up) * 1000 / MODEL_RATE)
            down_lag.append((taken_down - given_down) * 1000 / CARRIER_RATE)
    return {
        "delay_up_ms": float(np.mean(up_lag)),
        "delay_up_max_ms": max(up_lag),
        "delay_down_ms": float(np.mean(down_lag)),
        "delay_down_max_ms": max(down_lag),
    }


OUTBOUND_COLUMNS = [
    Column("variant", "outbound serializer", width=26),
    Column("calls", "calls", "d"),
    Column("call_seconds", "call-s", ".0f"),
    Column("cpu_ms_per_call_s", "CPU ms/call-s", ".3f"),
    Column("ratio", "x unpaced", ".2f"),
    Column("frames", "frames", ",d"),
]


class CountingSocket:
    """A socket that only counts; ``done`` once ``expected`` frames went through it."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.frames = 0
        self.texts = 0
        self.done = asyncio.Event()

    async def send_bytes(self, data: bytes) -> None:
        self.frames += 1
        if self.frames >= self.expected:
            self.done.set()

    async def send_text(self, text: str) -> None:
        self.texts += 1


async def outbound_calls(calls: int, seconds: float, *, paced: bool) -> dict[str, float]:
    """CPU of ``calls`` concurrent outbound halves, each playing one ``seconds`` answer."""
    audio = speech_like(seconds, MODEL_RATE, seed=3).tobytes()
    delta = MODEL_RATE // 10 * 2  # 100 ms
    frames = -(-(len(audio) // 2 * CARRIER_RATE // MODEL_RATE) // (FRAME_BYTES // 2))
    sockets = [CountingSocket(frames) for _ in range(calls)]

    async def one(socket: CountingSocket) -> None:
        outbound = VonageOutbound(
            socket.send_bytes, socket.send_text, lead_ms=LEAD_MS if paced else 1e12
        )
        outbound.start()
        for start in range(0, len(audio), delta):
            outbound.audio(audio[start : start + delta])
            if start % (delta * 2) == 0:
                outbound.mark(str(start))
        outbound.end()
        await socket.done.wait()
        await outbound.aclose()

    started = time.process_time()
    await asyncio.gather(*(one(socket) for socket in sockets))
    cpu = time.process_time() - started
    return {
        "calls": calls,
        "call_seconds": calls * seconds,
        "cpu_ms_per_call_s": cpu * 1000 / (calls * seconds),
        "frames": sum(socket.frames for socket in sockets),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="speech per direction")
    parser.add_argument("--repeats", type=int, default=5, help="CPU runs per row (best kept)")
    parser.add_argument("--calls", type=int, default=50, help="concurrent outbound halves")
    parser.add_argument("--call-seconds", type=float, default=5.0, help="each call's answer")
    args = parser.parse_args()

    caller = speech_like(args.seconds, CARRIER_RATE, seed=1).tobytes()
    model = speech_like(args.seconds, MODEL_RATE, seed=2).tobytes()
    up_frames = chunks(caller, FRAME_BYTES)
    down_chunks = chunks(model, FRAME_24K * 2)

    variants: list[tuple[str, Callable[[], Pair]]] = [("floor: numpy linear", floor)]
    for q in QUALITIES:
        mark = " (chosen)" if q == resample.QUALITY else ""
        variants.append((f"soxr {q}{mark}", product(q)))
    variants.append((f"soxr {resample.QUALITY} int16", soxr_int16(resample.QUALITY)))
    variants.append(("stateless per frame", stateless))

    # Round-robin over the variants, best of ``repeats`` each: a shared machine's load drifts,
    # and it should weigh on every row alike.
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name, _ in variants}
    for _ in range(args.repeats):
        for name, make in variants:
            up_us, down_us = cpu_per_frame(make, up_frames, down_chunks)
            best[name] = [min(best[name][0], up_us), min(best[name][1], down_us)]
    rows = []
    for name, make in variants:
        up_us, down_us = best[name]
        rows.append(
            {
                "variant": name,
                "up_us": up_us,
                "down_us": down_us,
                "cpu_ms_per_call_s": (up_us + down_us) * 50 / 1000,
                **quality(make),
                **delays(make),
            }
        )
    floor_cpu = rows[0]["cpu_ms_per_call_s"]
    for row in rows:
        row["ratio"] = row["cpu_ms_per_call_s"] / floor_cpu
    print(f"resampling per call (both directions, 50 frames/s each way), load {os.getloadavg()}")
    print_table(rows, COLUMNS)
    chosen = next(row for row in rows if row["variant"].endswith("(chosen)"))
    print(
        f"\nchosen {resample.QUALITY}: {chosen['cpu_ms_per_call_s']:.3f} ms CPU per call-second "
        f"({chosen['ratio']:.2f}x the floor's {floor_cpu:.3f}); "
        f"SINAD {chosen['sinad_db']:.1f} dB (target > 60), "
        f"above 7.5 kHz {chosen['above_7k5_db']:.1f} dB (target < -60)"
    )
    outbound = []
    for name, paced in (("unpaced (all frames at once)", False), ("VonageOutbound, paced", True)):
        outbound.append(
            {
                "variant": name,
                **asyncio.run(outbound_calls(args.calls, args.call_seconds, paced=paced)),
            }
        )
    for row in outbound:
        row["ratio"] = row["cpu_ms_per_call_s"] / outbound[0]["cpu_ms_per_call_s"]
    print()
    print_table(outbound, OUTBOUND_COLUMNS)
    path = save_results(
        NAME,
        {
            "parameters": {
                "seconds": args.seconds,
                "repeats": args.repeats,
                "calls": args.calls,
                "call_seconds": args.call_seconds,
            },
            "chosen_quality": resample.QUALITY,
            "rows": rows,
            "outbound": outbound,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
