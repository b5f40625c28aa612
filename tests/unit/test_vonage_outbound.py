"""The outbound half of the Vonage serializer on a recording socket: exact frames, notifies
exactly where the audio they follow ends, pacing no further ahead than the lead, and clear."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from languagebuddy.calls.vonage_serializer import (
    CLEAR,
    FRAME_SAMPLES,
    VonageOutbound,
    VonageStreamReader,
)
from languagebuddy.media.resample import CARRIER_RATE, FRAME_BYTES, MODEL_RATE, Downlink, Uplink
from tests.audio_quality import speech_like


class Wire:
    """What went onto the socket, in order, and when."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.times: list[float] = []

    async def send_bytes(self, data: bytes) -> None:
        self.items.append(data)
        self.times.append(time.monotonic())

    async def send_text(self, text: str) -> None:
        self.items.append(text if text == CLEAR else json.loads(text))
        self.times.append(time.monotonic())

    def frames(self) -> list[bytes]:
        return [item for item in self.items if isinstance(item, bytes)]

    def notifies_after(self) -> dict[str, int]:
        """Each notify's mark -> the frames on the wire before it."""
        seen, placed = 0, {}
        for item in self.items:
            if isinstance(item, bytes):
                seen += 1
            elif isinstance(item, dict) and item.get("action") == "notify":
                placed[item["payload"]["mark"]] = seen
        return placed


def deltas(seconds: float, seed: int) -> list[bytes]:
    """Model audio cut as the Realtime API might: pieces of 1 to 300 ms, odd sizes included."""
    rng = random.Random(seed)
    audio = speech_like(seconds, MODEL_RATE, seed=seed).tobytes()
    pieces, at = [], 0
    while at < len(audio):
        size = rng.randint(48, 48 * 300) // 2 * 2
        pieces.append(audio[at : at + size])
        at += size
    return pieces


async def settle(wire: Wire, count: int) -> None:
    for _ in range(500):
        if len(wire.items) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(wire.items)} items on the wire, expected {count}")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_frames_are_exact_and_each_notify_follows_the_frame_its_audio_ends_in(
    seed: int,
) -> None:
    wire = Wire()
    outbound = VonageOutbound(wire.send_bytes, wire.send_text, lead_ms=1e9)  # no pacing here
    outbound.start()
    pieces = deltas(0.9, seed)
    expected_frames: list[bytes] = []
    offline = Downlink()
    targets: dict[str, int] = {}
    given = 0
    for index, piece in enumerate(pieces):
        outbound.audio(piece)
        outbound.mark(str(index))
        expected_frames += offline.push(piece)
        given += len(piece) // 2
        # The last sample of this piece, at 16 kHz, lies in frame number ceil(n / 320).
        samples_16k = (given * CARRIER_RATE + MODEL_RATE - 1) // MODEL_RATE
        targets[str(index)] = (samples_16k + FRAME_SAMPLES - 1) // FRAME_SAMPLES
    outbound.end()
    expected_frames += offline.end()
    await settle(wire, len(expected_frames) + len(pieces))
    await outbound.aclose()
    assert wire.frames() == expected_frames  # bit-exact, whatever the chunking
    assert all(len(frame) == FRAME_BYTES for frame in wire.frames())
    assert wire.notifies_after() == targets
    assert outbound.unsent_ms == 0


async def test_a_mark_with_no_new_audio_is_sent_at_once() -> None:
    wire = Wire()
    outbound = VonageOutbound(wire.send_bytes, wire.send_text, lead_ms=1e9)
    outbound.start()
    outbound.mark("idle")
    await settle(wire, 1)
    outbound.audio(bytes(48 * 100))
    outbound.end()
    outbound.mark("after-end")
    await settle(wire, 1 + 5 + 1)
    await outbound.aclose()
    assert wire.notifies_after() == {"idle": 0, "after-end": 5}


async def test_pacing_never_runs_further_ahead_than_the_lead() -> None:
    wire = Wire()
    outbound = VonageOutbound(wire.send_bytes, wire.send_text, lead_ms=100, tick_ms=40)
    outbound.start()
    outbound.audio(speech_like(0.6, MODEL_RATE, seed=4).tobytes())
    outbound.end()
    await settle(wire, 30)
    await outbound.aclose()
    start = wire.times[0]
    for sent, at in enumerate(wire.times, start=1):
        ahead_ms = sent * 20 - (at - start) * 1000
        assert ahead_ms <= 100 + 20 + 1e-6  # the frame that reaches the lead included
    # It cannot finish sooner than the audio lasts minus the lead (it may only be later).
    assert wire.times[-1] - start >= (600 - 100 - 20) / 1000


async def test_clear_goes_out_at_once_and_nothing_queued_follows_it() -> None:
    wire = Wire()
    outbound = VonageOutbound(wire.send_bytes, wire.send_text, lead_ms=60, tick_ms=40)
    outbound.start()
    outbound.audio(speech_like(1.0, MODEL_RATE, seed=5).tobytes())
    outbound.mark("unheard")
    await settle(wire, 3)
    dropped = await outbound.clear()
    sent_before = len(wire.frames())
    await asyncio.sleep(0.15)  # the pacer would have sent more by now
    assert wire.items[-1] == CLEAR
    assert len(wire.frames()) == sent_before
    assert dropped > 0 and sent_before + dropped <= 50
    assert "unheard" not in wire.notifies_after()
    assert outbound.unsent_ms == 0 and outbound.downlink.pending_ms == 0
    # The next answer starts clean: its own frames and notify, none of the old audio.
    outbound.audio(bytes(48 * 40))
    outbound.mark("next")
    outbound.end()
    await settle(wire, len(wire.items) + 3)
    await outbound.aclose()
    assert wire.frames()[sent_before:] == [bytes(FRAME_BYTES)] * 2
    assert wire.notifies_after()["next"] == sent_before + 2


# -- inbound ------------------------------------------------------------------------------------


class Sink:
    """Records what the reader hands on (where the bridge will be)."""

    def __init__(self) -> None:
        self.audio: list[str] = []
        self.marks: list[str] = []
        self.digits: list[str] = []

    async def caller_audio(self, audio_b64: str) -> None:
        self.audio.append(audio_b64)

    def caller_mark(self, name: str) -> None:
        self.marks.append(name)

    async def caller_dtmf(self, digit: str) -> None:
        self.digits.append(digit)


def socket_of(messages: list[str | bytes]) -> Callable[[], Awaitable[str | bytes | None]]:
    queue = list(messages)

    async def receive() -> str | bytes | None:
        return queue.pop(0) if queue else None

    return receive


CONNECTED = json.dumps(
    {
        "event": "websocket:connected",
        "content-type": "audio/l16;rate=16000",
        "call_uuid": "u-1",
        "conversation_uuid": "CON-1",
    }
)


async def test_reader_takes_vonages_greeting_and_headers() -> None:
    reader = VonageStreamReader(socket_of(["garbage", CONNECTED]))
    connected = await reader.wait_connected()
    assert connected is not None and connected.content_type == "audio/l16;rate=16000"
    assert connected.headers == {"call_uuid": "u-1", "conversation_uuid": "CON-1"}
    assert reader.bad_messages == 1


async def test_reader_refuses_audio_it_did_not_ask_for() -> None:
    narrowband = json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=8000"})
    assert await VonageStreamReader(socket_of([narrowband])).wait_connected() is None
    assert await VonageStreamReader(socket_of([])).wait_connected() is None


async def test_reader_resamples_every_frame_and_passes_notifies_and_keys_on() -> None:
    caller = speech_like(0.5, CARRIER_RATE, seed=7).tobytes()
    frames = [caller[i : i + FRAME_BYTES] for i in range(0, len(caller), FRAME_BYTES)]
    messages: list[str | bytes] = [CONNECTED, *frames[:10]]
    messages += [json.dumps({"event": "websocket:notify", "payload": {"mark": "7"}})]
    messages += [json.dumps({"event": "websocket:dtmf", "digit": "*", "duration": 260})]
    messages += [*frames[10:], json.dumps({"event": "websocket:cleared"}), "{", b"\x00" * 10]
    reader = VonageStreamReader(socket_of(messages))
    sink = Sink()
    assert await reader.wait_connected() is not None
    await reader.run(sink)
    offline = Uplink()
    expected = b"".join(offline.push(frame) for frame in [*frames, b"\x00" * 10])
    assert b"".join(base64.b64decode(a) for a in sink.audio) == expected  # every frame, bit-exact
    assert sink.marks == ["7"] and sink.digits == ["*"]
    assert reader.frames == len(frames) + 1 and reader.odd_frames == 1
    assert reader.cleared == 1 and reader.bad_messages == 1


async def test_a_socket_that_goes_away_stops_the_pacer_without_an_error_escaping() -> None:
    async def gone(_: bytes) -> None:
        raise ConnectionError("socket closed")

    wire = Wire()
    outbound = VonageOutbound(gone, wire.send_text)
    task = outbound.start()
    outbound.audio(bytes(48 * 100))
    outbound.end()
    await asyncio.wait_for(task, 5)
    assert isinstance(outbound.pacer.error, ConnectionError)
    await outbound.aclose()
