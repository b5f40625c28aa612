"""The call path's pure parts: stream tokens, Telnyx webhook checks and parsing, the playout
clock, base64 sizes, the Telnyx serializer's ordering and the bridge's chunking and barge-in."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from languagebuddy.ai.realtime import PCMU, append_event, session_update
from languagebuddy.calls import tokens
from languagebuddy.calls.bridge import Bridge, PlayoutClock, b64_len
from languagebuddy.calls.telnyx import TelnyxWebhooks, command_id
from languagebuddy.calls.telnyx_serializer import TelnyxCarrier, TelnyxStreamReader
from languagebuddy.channels.base import VerificationError
from languagebuddy.tutor.calls import call_tools
from tests.fakes.telnyx import sign, webhook_body

KEY = "test-signing-key"


def test_token_round_trip_and_refusals() -> None:
    token = tokens.issue(
        KEY, call_id=7, learner_id=3, provider="telnyx", nonce="abc", ttl_seconds=60
    )
    claims = tokens.verify(KEY, token, provider="telnyx")
    assert (claims.call_id, claims.learner_id, claims.nonce) == (7, 3, "abc")
    with pytest.raises(tokens.TokenRefused, match="missing"):
        tokens.verify(KEY, None, provider="telnyx")
    with pytest.raises(tokens.TokenRefused, match="signature"):
        tokens.verify("another key", token, provider="telnyx")
    _body, _, mac = token.partition(".")
    forged = (
        base64.urlsafe_b64encode(
            json.dumps({"c": 8, "l": 3, "p": "telnyx", "n": "abc", "e": 2**40}).encode()
        )
        .decode()
        .rstrip("=")
    )
    with pytest.raises(tokens.TokenRefused, match="signature"):
        tokens.verify(KEY, f"{forged}.{mac}", provider="telnyx")
    with pytest.raises(tokens.TokenRefused, match="provider"):
        tokens.verify(KEY, token, provider="vonage")
    with pytest.raises(tokens.TokenRefused, match="expired"):
        tokens.verify(KEY, token, provider="telnyx", now=time.time() + 61)
    for junk in ("", "x", "x.", ".y", "a.b.c", "%%%.%%%"):
        with pytest.raises(tokens.TokenRefused):
            tokens.verify(KEY, junk, provider="telnyx")


@given(st.text(max_size=80))
def test_any_string_is_refused_or_valid(text: str) -> None:
    try:
        tokens.verify(KEY, text, provider="telnyx")
    except tokens.TokenRefused:
        return
    raise AssertionError("a random string verified")


def test_telnyx_webhook_verification() -> None:
    key = SigningKey.generate()
    webhooks = TelnyxWebhooks(base64.b64encode(bytes(key.verify_key)).decode())
    body = webhook_body("call.initiated", {"call_control_id": "v3:x", "from": "+34600111222"})
    webhooks.verify(sign(key, body), body)
    with pytest.raises(VerificationError):
        webhooks.verify(sign(key, body), body + b" ")
    with pytest.raises(VerificationError):
        webhooks.verify(sign(SigningKey.generate(), body), body)
    with pytest.raises(VerificationError, match="5-minute"):
        webhooks.verify(sign(key, body, int(time.time()) - 301), body)
    with pytest.raises(VerificationError, match="5-minute"):
        webhooks.verify(sign(key, body, int(time.time()) + 301), body)
    with pytest.raises(VerificationError):
        webhooks.verify({"telnyx-timestamp": "1"}, body)
    with pytest.raises(VerificationError, match="not set"):
        TelnyxWebhooks(None).verify(sign(key, body), body)
    event = webhooks.parse(body)
    assert event is not None and event.from_number == "+34600111222"
    assert (
        command_id("v3:x", "answer") == command_id("v3:x", "answer") != command_id("v3:y", "answer")
    )


def test_clock_counts_what_was_heard() -> None:
    clock = PlayoutClock()
    clock.sent(100, now=10.0)  # into an idle buffer: plays from now
    clock.sent(100, now=10.01)
    assert clock.played(10.05) == pytest.approx(50)
    assert clock.played(11.0) == 200  # never more than was sent
    clock.acknowledged(40, now=10.05)  # the carrier was a little behind
    assert clock.played(10.06) == pytest.approx(50)
    assert clock.cleared(10.06) == pytest.approx(50)
    assert clock.unplayed(12.0) == 0
    clock.sent(20, now=13.0)  # idle again: the new audio starts at 13.0, not before
    assert clock.played(13.01) == pytest.approx(60)


@given(st.binary(max_size=400))
def test_b64_len_without_decoding(data: bytes) -> None:
    assert b64_len(base64.b64encode(data).decode()) == len(data)


def test_append_event_is_valid_json_around_the_text() -> None:
    payload = base64.b64encode(bytes(range(160))).decode()
    assert json.loads(append_event(payload)) == {
        "type": "input_audio_buffer.append",
        "audio": payload,
    }


def test_session_update_and_tools_shapes() -> None:
    update = session_update(
        model="gpt-realtime",
        instructions="hi",
        voice="marin",
        audio_format=PCMU,
        transcription_model="gpt-4o-mini-transcribe",
        language="es",
        silence_ms=900,
        tools=call_tools(),
    )
    session = update["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["input"]["transcription"] == {
        "model": "gpt-4o-mini-transcribe",
        "language": "es",
    }
    names = {t["name"] for t in session["tools"]}
    assert {"end_call", "save_vocabulary", "set_level"} <= names
    assert all(t["type"] == "function" and "parameters" in t for t in session["tools"])


class _Socket:
    def __init__(self, messages: list[str]) -> None:
        self.incoming = list(messages)
        self.sent: list[str] = []

    async def receive(self) -> str | None:
        return self.incoming.pop(0) if self.incoming else None

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000) -> None: ...


class _Listener:
    def __init__(self) -> None:
        self.digits: list[str] = []

    async def on_model_event(self, kind: str, event: dict[str, Any]) -> None: ...

    async def on_speech_started(self) -> None: ...

    async def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)


class _Model:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)


def _media(seq: int, payload: bytes) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequence_number": str(seq),
            "stream_id": "s",
            "media": {
                "track": "inbound",
                "chunk": str(seq),
                "timestamp": "0",
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


async def test_reader_forwards_in_order_drops_late_and_malformed() -> None:
    frames = [bytes([n]) * 160 for n in range(5)]
    socket = _Socket(
        [
            json.dumps({"event": "connected", "version": "1.0.0"}),
            json.dumps(
                {
                    "event": "start",
                    "sequence_number": "1",
                    "stream_id": "s",
                    "start": {"call_control_id": "v3:x", "media_format": {"encoding": "PCMU"}},
                }
            ),
            _media(2, frames[0]),
            _media(4, frames[2]),
            _media(3, frames[1]),  # 3 arrives late
            "not json",
            json.dumps({"event": "media", "media": {"payload": '"}, {"x": 1'}}),
            json.dumps({"event": "dtmf", "sequence_number": "5", "dtmf": {"digit": "*"}}),
            _media(6, frames[3]),
            json.dumps({"event": "stop", "sequence_number": "7"}),
            _media(8, frames[4]),
        ]
    )
    reader = TelnyxStreamReader(socket)  # type: ignore[arg-type]
    assert (await reader.wait_start()).encoding == "PCMU"  # type: ignore[union-attr]
    listener = _Listener()
    bridge = Bridge(TelnyxCarrier(socket), listener, PCMU)  # type: ignore[arg-type]
    model = _Model()
    bridge.model = model  # type: ignore[assignment]
    await reader.run(bridge)
    forwarded = [base64.b64decode(json.loads(m)["audio"]) for m in model.sent]
    assert forwarded == [frames[0], frames[2], frames[3]]
    assert reader.late_frames == 1 and reader.bad_frames == 2 and reader.stopped
    assert listener.digits == ["*"]


async def test_bridge_coalesces_tiny_deltas_marks_and_barges_in() -> None:
    socket = _Socket([])
    bridge = Bridge(TelnyxCarrier(socket), _Listener(), PCMU)  # type: ignore[arg-type]
    model = _Model()
    bridge.model = model  # type: ignore[assignment]
    tiny = base64.b64encode(b"\x01" * 40).decode()  # 5 ms: below Telnyx's 20 ms minimum
    for _ in range(3):
        await bridge._audio_delta({"item_id": "a", "delta": tiny})
    assert socket.sent == []  # 15 ms held back
    await bridge._audio_delta({"item_id": "a", "delta": tiny})
    media = [json.loads(m) for m in socket.sent if '"media"' in m]
    assert [len(base64.b64decode(m["media"]["payload"])) for m in media] == [160]
    big = base64.b64encode(b"\x02" * 1600).decode()
    await bridge._audio_delta({"item_id": "a", "delta": big})
    assert socket.sent[-2].endswith(big + '"}}')  # forwarded as the very same text
    assert any('"mark"' in m for m in socket.sent)
    end_ms = await bridge.barge_in()
    assert socket.sent[-1] == '{"event":"clear"}'
    truncate = json.loads(model.sent[-1])
    assert truncate["type"] == "conversation.item.truncate" and truncate["audio_end_ms"] == end_ms
    assert 0 <= end_ms <= 220
    await bridge._audio_delta({"item_id": "a", "delta": big})  # in flight: dropped
    assert socket.sent[-1] == '{"event":"clear"}'
    assert await bridge.barge_in() is None  # nothing playing: nothing to clear
