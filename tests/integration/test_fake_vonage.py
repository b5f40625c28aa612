"""The fake Vonage against a small application built from ``calls/vonage.py``
(``vonage_app.py``): the answer and event webhooks, the media socket both ways at real time,
notify and clear, DTMF, the legs' events, a socket that cannot connect, an NCCO Vonage would
refuse."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.websockets import WebSocket

from tests.fakes.vonage import BYTES_PER_MS, FRAME_BYTES, FakeVonage
from tests.integration.vonage_app import (  # noqa: F401 - the fixtures are used by name
    Application,
    Leg,
    app_fixture,
    audio,
    fresh_fixture,
    vonage_fixture,
    wait,
)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_call_answers_connects_and_streams_at_real_time(
    vonage: FakeVonage, app: Application, method: str
) -> None:
    call = vonage.dial("+34600111222", method=method)  # type: ignore[arg-type]
    assert call.answer_status == 200 and call.ncco_problems == []
    caller = call.wait_connected()
    leg = app.legs[call.uuid]
    wait(lambda: leg.first is not None)
    assert leg.first == {
        "event": "websocket:connected",
        "content-type": "audio/l16;rate=16000",
        "call_uuid": call.uuid,
        "conversation_uuid": call.conversation_uuid,
    }
    assert leg.handshake["call_uuid"] == call.uuid  # the NCCO headers in the upgrade too
    call.say(0.3)
    wait(lambda: len(leg.frames) >= 30)
    call.hang_up()
    assert leg.done.wait(5)
    assert all(len(frame) == FRAME_BYTES for frame in leg.frames)
    assert b"".join(leg.frames) == bytes(caller.sent_audio)  # every frame, in order, intact
    assert caller.speech_sent_at[0] > 0
    assert call.event_statuses("phone") == ["started", "ringing", "answered", "completed"]
    assert call.event_statuses("websocket") == ["started", "answered", "completed"]
    assert all(event["http_status"] in (200, 204) for event in call.events)
    completed = next(e for e in call.events if e["leg"] == "phone" and e["status"] == "completed")
    completed = completed["payload"]
    assert completed["duration"].isdigit() and completed["from"] == "34600111222"
    ended = [e for e in app.events if e is not None and e.call_ended and e.uuid == call.uuid]
    assert len(ended) == 1 and ended[0].duration_seconds is not None


def test_notify_comes_back_once_the_audio_before_it_has_played(
    vonage: FakeVonage, app: Application
) -> None:
    async def script(socket: WebSocket, leg: Leg) -> None:
        for frame in audio(600):  # a burst, far ahead of real time
            await socket.send_bytes(frame)
        await socket.send_text(json.dumps({"action": "notify", "payload": {"mark": "a"}}))
        await leg.until("websocket:notify")
        await socket.close()

    app.script = script
    call = vonage.dial("+34600111223")
    caller = call.wait_connected()
    assert app.legs[call.uuid].done.wait(10)
    assert app.legs[call.uuid].texts[0] == {"event": "websocket:notify", "payload": {"mark": "a"}}
    assert caller.notifies[0]["played"] == 600 * BYTES_PER_MS  # all of it, no less
    assert caller.playout.underruns == 0
    assert caller.playout.max_buffered_ms > 500
    call.wait_ended()
    assert call.event_statuses("websocket")[-1] == "disconnected"  # the application closed it
    assert call.event_statuses("phone")[-1] == "completed"
    assert caller.closed_by == "app"


@pytest.mark.parametrize("policy", ["drop", "fire"])
def test_clear_drops_unplayed_audio_and_is_acknowledged(
    vonage: FakeVonage, app: Application, policy: str
) -> None:
    async def script(socket: WebSocket, leg: Leg) -> None:
        for frame in audio(2000):
            await socket.send_bytes(frame)
        await socket.send_text(json.dumps({"action": "notify", "payload": {"mark": "before"}}))
        await asyncio.sleep(0.2)
        await socket.send_text(json.dumps({"action": "clear"}))
        await leg.until("websocket:cleared")
        await socket.send_text(json.dumps({"action": "notify", "payload": {"mark": "after"}}))
        await leg.until("websocket:notify", count=1 if policy == "drop" else 2)
        await socket.close()

    vonage.notify_on_clear = policy  # type: ignore[assignment]
    app.script = script
    call = vonage.dial("+34600111224")
    caller = call.wait_connected()
    leg = app.legs[call.uuid]
    assert leg.done.wait(10)
    clear = caller.clears[0]
    assert clear["dropped"] > 0 and clear["played"] + clear["dropped"] == 2000 * BYTES_PER_MS
    marks = [t["payload"]["mark"] for t in leg.texts if t.get("event") == "websocket:notify"]
    # Nothing was queued after the clear, so "after" comes back at once; "before" lost its
    # audio and, depending on the policy, never comes back or comes back at the clear.
    assert marks == (["after"] if policy == "drop" else ["before", "after"])


def test_audio_sent_slower_than_real_time_underruns(vonage: FakeVonage, app: Application) -> None:
    async def script(socket: WebSocket, leg: Leg) -> None:
        for frame in audio(200):
            await socket.send_bytes(frame)
            await asyncio.sleep(0.04)  # 20 ms of audio every 40 ms
        await socket.close()

    app.script = script
    call = vonage.dial("+34600111225")
    caller = call.wait_connected()
    assert app.legs[call.uuid].done.wait(10)
    assert caller.playout.underruns >= 3
    assert caller.frames_received == 10 and caller.bad_frames == []


def test_frames_of_the_wrong_size_are_recorded(vonage: FakeVonage, app: Application) -> None:
    async def script(socket: WebSocket, leg: Leg) -> None:
        await socket.send_bytes(bytes(FRAME_BYTES))
        await socket.send_bytes(bytes(100))
        await socket.send_text(json.dumps({"action": "play"}))
        await socket.send_text(json.dumps({"action": "notify", "payload": {"m": 1}}))
        await leg.until("websocket:notify")
        await socket.close()

    app.script = script
    call = vonage.dial("+34600111226")
    caller = call.wait_connected()
    assert app.legs[call.uuid].done.wait(10)
    assert caller.bad_frames == [100]
    assert caller.unknown == [{"action": "play"}]


def test_dtmf_reaches_the_socket(vonage: FakeVonage, app: Application) -> None:
    call = vonage.dial("+34600111227")
    call.wait_connected()
    leg = app.legs[call.uuid]
    call.press("5")
    call.press("#")
    wait(lambda: len([t for t in leg.texts if t.get("event") == "websocket:dtmf"]) == 2)
    dtmf = [t for t in leg.texts if t.get("event") == "websocket:dtmf"]
    assert dtmf == [
        {"event": "websocket:dtmf", "digit": "5", "duration": 260},
        {"event": "websocket:dtmf", "digit": "#", "duration": 260},
    ]
    call.hang_up()


def test_a_socket_that_cannot_connect_follows_the_fallback_ncco(
    vonage: FakeVonage, app: Application
) -> None:
    app.socket_uri = "ws://127.0.0.1:9/media"  # the discard port: nothing listens
    call = vonage.dial("+34600111228")
    call.wait_ended()
    assert call.stream_error is not None
    assert call.event_statuses("websocket") == ["started", "failed"]
    assert call.talks[0]["text"] == "Sorry, the buddy cannot talk right now."
    assert call.event_statuses("phone")[-1] == "completed"


def test_an_ncco_vonage_would_refuse_fails_the_call(vonage: FakeVonage, app: Application) -> None:
    def wrong_rate(ncco: list[dict[str, Any]]) -> None:
        ncco[0]["endpoint"][0]["content-type"] = "audio/l16;rate=24000"

    app.ncco_edit = wrong_rate
    call = vonage.dial("+34600111229")
    call.wait_ended()
    assert any("content-type" in problem for problem in call.ncco_problems)
    assert call.caller is None
    assert call.event_statuses("phone")[-1] == "failed"
