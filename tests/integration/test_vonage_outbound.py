"""The Vonage serializer on a real Vonage socket (the fake's caller, playing at real time):
what the caller hears is the model's audio resampled, in exact frames, paced without running
dry, each notify echoed once the audio before it has played, and a barge-in's clear stops it
where the caller was."""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np
from starlette.websockets import WebSocket

from languagebuddy.calls.vonage_serializer import VonageOutbound, VonageStreamReader
from languagebuddy.media.resample import CARRIER_RATE, FRAME_BYTES, MODEL_RATE, Downlink
from tests.audio_quality import speech_like, steady
from tests.fakes.vonage import BYTES_PER_MS, FakeCaller, FakeVonage
from tests.integration.vonage_app import (  # noqa: F401 - the fixtures are used by name
    Application,
    Leg,
    app_fixture,
    fresh_fixture,
    vonage_fixture,
)

# A wider lead than production's in this test: what is checked here is the mechanism, and a
# loaded machine must not make it flake. Underruns at the production lead are the benchmark's.
LEAD_MS = 200.0


async def until_played(caller: FakeCaller, nbytes: int, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while caller.playout.played() < nbytes:
        if loop.time() > deadline:
            raise AssertionError("the caller did not play the audio")
        await asyncio.sleep(0.005)


def model_answer(seconds: float, seed: int) -> list[bytes]:
    audio = speech_like(seconds, MODEL_RATE, seed=seed).tobytes()
    size = 48 * 70  # 70 ms deltas, sent all at once (the model runs ahead of real time)
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def test_the_caller_hears_the_model_in_exact_frames_with_notifies_where_they_belong(
    vonage: FakeVonage, app: Application
) -> None:
    pieces = model_answer(1.2, seed=11)
    offline = Downlink()
    expected = b"".join(frame for piece in pieces for frame in offline.push(piece))
    expected += b"".join(offline.end())
    marks: dict[str, int] = {}
    given = 0
    for index, piece in enumerate(pieces):
        given += len(piece) // 2
        samples_16k = (given * CARRIER_RATE + MODEL_RATE - 1) // MODEL_RATE
        frames = (samples_16k + FRAME_BYTES // 2 - 1) // (FRAME_BYTES // 2)
        marks[str(index)] = frames * FRAME_BYTES  # the notify follows the frame its audio ends in

    async def script(socket: WebSocket, leg: Leg) -> None:
        outbound = VonageOutbound(socket.send_bytes, socket.send_text, lead_ms=LEAD_MS)
        outbound.start()
        for index, piece in enumerate(pieces):
            outbound.audio(piece)
            outbound.mark(str(index))
        outbound.end()
        await leg.until("websocket:notify", count=len(pieces), within=15)
        await outbound.aclose()
        await socket.close()

    app.script = script
    call = vonage.dial("+34600222001")
    caller: FakeCaller = call.wait_connected()
    assert app.legs[call.uuid].done.wait(15)
    assert caller.bad_frames == []
    assert bytes(caller.received) == expected
    echoed = {n["payload"]["mark"]: n["position"] for n in caller.notifies}
    assert echoed == marks
    assert [n["payload"]["mark"] for n in caller.notifies] == [str(i) for i in range(len(pieces))]
    assert all(n["played"] >= n["position"] for n in caller.notifies)  # heard, then echoed
    assert caller.playout.underruns == 0
    # Never more than the lead ahead (by our clock; the caller's starts when the first frame
    # arrives, so a late first delivery shows as extra depth: the slack, far below a burst's).
    assert caller.playout.max_buffered_ms <= LEAD_MS + 20 + 100


def test_barge_in_clears_where_the_caller_is_and_the_next_answer_starts_clean(
    vonage: FakeVonage, app: Application
) -> None:
    heard_at_clear: list[int] = []

    async def script(socket: WebSocket, leg: Leg) -> None:
        outbound = VonageOutbound(socket.send_bytes, socket.send_text, lead_ms=LEAD_MS)
        outbound.start()
        for piece in model_answer(3.0, seed=12):
            outbound.audio(piece)
        outbound.mark("interrupted")
        caller = vonage.calls[leg.call_uuid].caller
        assert caller is not None
        await until_played(caller, 400 * BYTES_PER_MS)  # the caller speaks after 400 ms
        heard_at_clear.append(caller.playout.played())
        await outbound.clear()
        await leg.until("websocket:cleared")
        for piece in model_answer(0.3, seed=13):
            outbound.audio(piece)
        outbound.mark("next")
        outbound.end()
        await leg.until("websocket:notify")
        await outbound.aclose()
        await socket.close()

    app.script = script
    call = vonage.dial("+34600222002")
    caller = call.wait_connected()
    leg = app.legs[call.uuid]
    assert leg.done.wait(15)
    clear = caller.clears[0]
    # What was still in the caller's buffer is at most the lead: the rest never left us.
    assert clear["dropped"] <= (LEAD_MS + 20) * BYTES_PER_MS
    assert clear["played"] >= heard_at_clear[0]
    clear_at = next(m["at"] for m in caller.messages if m.get("action") == "clear")
    before = [offset for at, offset, _ in caller.frame_times if at <= clear_at]
    after = caller.frame_times[len(before) :]
    assert after, "the next answer reached the caller"
    # After the clear the caller hears only the next answer: 300 ms, exact frames.
    assert len(bytes(caller.received)) - after[0][1] == 15 * FRAME_BYTES
    notified = [t["payload"] for t in leg.texts if t.get("event") == "websocket:notify"]
    assert notified == [{"mark": "next"}]
    assert caller.bad_frames == []


class Echo:
    """Stands where the model will: what the caller says comes straight back (24 kHz)."""

    def __init__(self, outbound: VonageOutbound) -> None:
        self.outbound = outbound
        self.marks: list[str] = []
        self.digits: list[str] = []
        self.chunks = 0

    async def caller_audio(self, audio_b64: str) -> None:
        self.chunks += 1
        self.outbound.audio(base64.b64decode(audio_b64))
        if self.chunks % 10 == 0:
            self.outbound.mark(str(self.chunks))

    def caller_mark(self, name: str) -> None:
        self.marks.append(name)

    async def caller_dtmf(self, digit: str) -> None:
        self.digits.append(digit)


def test_the_callers_voice_goes_up_to_24khz_and_back_through_real_sockets(
    vonage: FakeVonage, app: Application
) -> None:
    echoes: list[Echo] = []

    async def script(socket: WebSocket, leg: Leg) -> None:
        async def receive() -> str | bytes | None:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            return message.get("bytes") if message.get("bytes") is not None else message["text"]

        reader = VonageStreamReader(receive)
        connected = await reader.wait_connected()
        assert connected is not None and connected.headers["call_uuid"] == leg.call_uuid
        outbound = VonageOutbound(socket.send_bytes, socket.send_text, lead_ms=LEAD_MS)
        outbound.start()
        echo = Echo(outbound)
        echoes.append(echo)
        try:
            await reader.run(echo)
        finally:
            await outbound.aclose()

    app.reads = False
    app.script = script
    call = vonage.dial("+34600222003")
    caller = call.wait_connected()
    call.say(0.6)
    call.press("#")
    deadline = time.monotonic() + 10
    while len(caller.received) < 1.2 * CARRIER_RATE * 2 or not caller.notifies:
        assert time.monotonic() < deadline, "the echo did not come back"
        time.sleep(0.02)
    call.hang_up()
    assert app.legs[call.uuid].done.wait(10)
    echo = echoes[0]
    assert echo.digits == ["#"]
    assert echo.marks == [n["payload"]["mark"] for n in caller.notifies]
    assert caller.bad_frames == []
    # What came back is what was said, sample for sample, once through 16k -> 24k -> 16k.
    sent = np.frombuffer(bytes(caller.sent_audio), "<i2")
    back = np.frombuffer(bytes(caller.received), "<i2")
    n = min(len(sent), len(back))
    said, heard = steady(sent[:n], CARRIER_RATE), steady(back[:n], CARRIER_RATE)
    error = heard.astype(np.float64) - said
    snr = 10 * np.log10(np.sum(said.astype(np.float64) ** 2) / np.sum(error**2))
    # About 51 dB measured: all the error is the hiss above the 7.2 kHz passband, dropped.
    assert snr > 40.0, snr
