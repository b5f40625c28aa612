"""Phone calls end to end through the real service: Telnyx (fake) rings, the service answers
and bridges the media stream to the Realtime API (fake), the caller talks and listens at real
time, and the call ends in the learner's memory with a recap on their messaging channel."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.calls import (
    CallStack,
    assistant_items,
    call_service,
    first_session,
    onboarded,
    whatsapp_learner,
)
from tests.fakes.telnyx import FakeCall, FakeTelnyx, webhook_body
from tests.fakes.whatsapp import whatsapp_headers, whatsapp_text_webhook


@dataclass
class TelnyxStack(CallStack):
    telnyx: FakeTelnyx

    def call_row(self, call: FakeCall, timeout: float = 10.0) -> dict:
        return self.finished_call("telnyx", call.call_control_id, timeout)


def _stack(tmp: Path, **overrides: object) -> Iterator[TelnyxStack]:
    with FakeTelnyx() as telnyx, call_service(tmp, telnyx.settings(), **overrides) as parts:
        telnyx.webhook_url = f"{parts[0].base_url}/calls/telnyx/webhook"
        yield TelnyxStack(*parts, telnyx)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TelnyxStack]:
    yield from _stack(tmp_path_factory.mktemp("calls"))


@pytest.fixture(autouse=True)
def _reset(stack: TelnyxStack) -> None:
    stack.ai.reset()


_numbers = iter(range(10_000, 99_999))


def number() -> str:
    return f"+3460{next(_numbers):07d}"


def test_answer_greet_and_audio_byte_identical_both_ways(stack: TelnyxStack) -> None:
    stack.ai.realtime.respond(
        "¡Hola! Soy LanguageBuddy. ¿Qué idioma quieres practicar?", audio_ms=1500
    )
    call = stack.telnyx.dial(number())
    caller = call.wait_streaming()
    answer = next(c for c in call.commands if c["action"] == "answer")["body"]
    assert answer["stream_track"] == "inbound_track"
    assert answer["stream_bidirectional_mode"] == "rtp"
    assert answer["stream_bidirectional_codec"] == "PCMU"
    assert answer["command_id"]
    assert answer["stream_url"].startswith(
        f"ws://127.0.0.1:{stack.service.port}/calls/telnyx/media-stream?token="
    )
    realtime = stack.ai.realtime
    session = first_session(stack)
    update = realtime.wait_for(lambda: session.of_type("session.update"))[0]["session"]
    assert update["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert update["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert update["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session.model == "gpt-realtime"
    greeting = realtime.wait_for(lambda: session.responses and session.responses[0])
    assert "greet" in greeting["instructions"].lower()
    item = realtime.wait_for(lambda: (assistant_items(session) or [None])[0])
    realtime.wait_for(lambda: item.sent_ms >= 1500 and len(caller.received) >= len(item.audio))
    # The model's bytes reach the caller untouched (only a final <20 ms piece may be padded).
    assert bytes(caller.received[: len(item.audio)]) == bytes(item.audio)
    realtime.wait_for(lambda: session.appends >= 25)
    call.hang_up()
    call.wait_ended()
    # Every byte the caller sent once the session was up reached the model unchanged and in
    # order (frames before the Realtime session opened are not queued for it).
    got = bytes(session.audio_in)
    sent = bytes(caller.sent_audio)
    assert len(got) >= 25 * 160
    start = sent.find(got[:320])
    assert start >= 0
    assert got == sent[start : start + len(got)]
    row = stack.call_row(call)
    assert row["status"] == "ended"
    assert row["hangup_cause"] == "normal_clearing"
    assert row["audio_in_seconds"] > 0.4 and row["audio_out_seconds"] >= 1.5


def test_same_learner_as_whatsapp_is_greeted_by_name(stack: TelnyxStack) -> None:
    phone = number()
    learner_id = whatsapp_learner(stack, phone, name="Ana")
    onboarded(stack, learner_id)
    call = stack.telnyx.dial(phone)
    call.wait_streaming()
    session = first_session(stack)
    realtime = stack.ai.realtime
    update = realtime.wait_for(lambda: session.of_type("session.update"))[0]["session"]
    assert "Ana" in update["instructions"]
    assert update["audio"]["input"]["transcription"]["language"] == "es"
    # A2: the model waits longer for a beginner to finish a sentence than the 500 ms default.
    assert update["audio"]["input"]["turn_detection"]["silence_duration_ms"] >= 1000
    greeting = realtime.wait_for(lambda: session.responses and session.responses[0])
    assert "Ana" in greeting["instructions"] and "Spanish" in greeting["instructions"]
    call.hang_up()
    row = stack.call_row(call)
    assert row["learner_id"] == learner_id


def test_barge_in_clears_first_and_truncates_at_what_was_heard(stack: TelnyxStack) -> None:
    realtime = stack.ai.realtime
    realtime.respond("Una frase muy larga para que el llamante la interrumpa.", audio_ms=5000)
    realtime.respond("Vale, te escucho.", audio_ms=800)
    call = stack.telnyx.dial(number())
    caller = call.wait_streaming()
    session = first_session(stack)
    realtime.wait_for(lambda: caller.played() >= 1200 * 8)  # 1.2 s of the greeting heard
    call.say(1.2)
    clear = realtime.wait_for(lambda: caller.clears and caller.clears[0])
    truncation = realtime.wait_for(lambda: session.truncations and session.truncations[0])
    heard_ms = clear["played"] / 8
    assert abs(truncation["audio_end_ms"] - heard_ms) <= 40, (truncation, heard_ms)
    assert clear["dropped"] > 0  # audio was still queued when the caller spoke
    # The interrupted response was cancelled by the server; the learner's turn gets an answer.
    realtime.wait_for(lambda: len(assistant_items(session)) >= 2, timeout=10)
    second = assistant_items(session)[1]
    realtime.wait_for(lambda: second.sent_ms >= 800)
    realtime.wait_for(lambda: bytes(second.audio[:800]) in bytes(caller.received))
    assert not session.errors_sent
    call.hang_up()
    stack.call_row(call)


def test_dtmf_star_repeats_slowly_and_hash_ends_the_call(stack: TelnyxStack) -> None:
    realtime = stack.ai.realtime
    realtime.respond("Hola. ¿Cómo te llamas?", audio_ms=700)
    call = stack.telnyx.dial(number())
    caller = call.wait_streaming()
    session = first_session(stack)
    realtime.wait_for(lambda: assistant_items(session) and not session.responding)
    call.press("*")
    again = realtime.wait_for(lambda: len(session.responses) >= 2 and session.responses[1])
    assert "¿Cómo te llamas?" in again["instructions"] and "slowly" in again["instructions"]
    realtime.wait_for(lambda: len(assistant_items(session)) >= 2 and not session.responding)
    call.press("#")
    goodbye = realtime.wait_for(lambda: len(session.responses) >= 3 and session.responses[2])
    assert goodbye["metadata"] == {"purpose": "goodbye"}
    call.wait_ended(timeout=15)
    assert call.actions().count("hangup") == 1
    bye = assistant_items(session)[-1]
    assert bytes(bye.audio) in bytes(caller.received)
    # Hung up only once the goodbye had been heard (all of it, within a frame or two).
    assert caller.played_at_stop is not None
    assert caller.played_at_stop >= caller.queued - 8 * 60
    assert stack.call_row(call)["end_reason"] == "dtmf"


def test_end_call_tool_says_goodbye_then_hangs_up(stack: TelnyxStack) -> None:
    realtime = stack.ai.realtime
    realtime.respond("Hola, ¿practicamos?", audio_ms=600)
    realtime.respond("", tool_calls=[("end_call", {})])
    realtime.respond("¡Adiós, hasta mañana!", audio_ms=900)
    call = stack.telnyx.dial(number())
    caller = call.wait_streaming()
    session = first_session(stack)
    realtime.wait_for(lambda: caller.played() >= 600 * 8)
    call.say(0.6)  # "ya me voy" -> the model calls end_call
    output = realtime.wait_for(
        lambda: [
            e
            for e in session.of_type("conversation.item.create")
            if e["item"]["type"] == "function_call_output"
        ]
    )[0]
    assert json.loads(output["item"]["output"]) == {"ok": True}
    call.wait_ended(timeout=15)
    bye = assistant_items(session)[-1]
    assert bye.transcript.startswith("¡Adiós")
    assert bytes(bye.audio) in bytes(caller.received)
    assert call.hangup_source == "callee"
    assert stack.call_row(call)["end_reason"] == "end_call"


def test_tools_save_vocabulary_and_set_level(stack: TelnyxStack) -> None:
    phone = number()
    learner_id = whatsapp_learner(stack, phone, name="Kenji")
    onboarded(stack, learner_id, level="A1")
    realtime = stack.ai.realtime
    realtime.respond("Hola Kenji.", audio_ms=500)
    realtime.respond(
        "",
        tool_calls=[
            ("save_vocabulary", {"items": [{"term": "la manzana", "meaning": "apple"}]}),
            ("set_level", {"level": "A2"}),
        ],
    )
    realtime.respond("Muy bien, la manzana.", audio_ms=500)
    call = stack.telnyx.dial(phone)
    caller = call.wait_streaming()
    session = first_session(stack)
    realtime.wait_for(lambda: caller.played() >= 500 * 8)
    call.say(0.6)
    realtime.wait_for(lambda: len(session.of_type("session.update")) >= 2)
    assert stack.query("SELECT level FROM learners WHERE id = ?", learner_id) == [("A2",)]
    assert stack.query("SELECT term, meaning FROM vocabulary WHERE learner_id = ?", learner_id) == [
        ("la manzana", "apple")
    ]
    outputs = [
        e["item"]["output"]
        for e in session.of_type("conversation.item.create")
        if e["item"]["type"] == "function_call_output"
    ]
    assert len(outputs) == 2 and all(json.loads(o)["ok"] for o in outputs)
    call.hang_up()
    stack.call_row(call)


def test_duplicate_webhooks_answer_once(stack: TelnyxStack) -> None:
    call = stack.telnyx.dial(number(), deliveries=3)
    call.wait_streaming()
    answers = [c for c in call.commands if c["action"] == "answer"]
    assert answers and len({a["body"]["command_id"] for a in answers}) == 1
    assert call.command_ids[answers[0]["body"]["command_id"]] == len(answers)
    # A redelivery once the call is live does not answer again.
    status = stack.telnyx.deliver(call, "call.initiated")
    assert status == 200
    assert [c["action"] for c in call.commands].count("answer") == len(answers)
    realtime = stack.ai.realtime
    time.sleep(0.3)
    assert len(realtime.sessions) == 1
    call.hang_up()
    rows = stack.query(
        "SELECT COUNT(*) FROM calls WHERE provider_call_id = ?", call.call_control_id
    )
    assert rows == [(1,)]


def test_bad_signature_and_old_timestamp_are_refused(stack: TelnyxStack) -> None:
    url = f"{stack.service.base_url}/calls/telnyx/webhook"
    payload = {
        "call_control_id": "v3:forged",
        "from": "+34600000001",
        "to": "+13125550100",
        "direction": "incoming",
        "state": "parked",
    }
    body = webhook_body("call.initiated", payload)
    forged = dict(stack.telnyx.headers(body))
    forged["telnyx-signature-ed25519"] = base64.b64encode(b"x" * 64).decode()
    assert httpx.post(url, content=body, headers=forged).status_code == 401
    stale = stack.telnyx.headers(body, timestamp=int(time.time()) - 301)
    assert httpx.post(url, content=body, headers=stale).status_code == 401
    tampered = stack.telnyx.headers(body)
    assert (
        httpx.post(
            url, content=body.replace(b"+34600000001", b"+34600000002"), headers=tampered
        ).status_code
        == 401
    )
    assert (
        httpx.post(url, content=body, headers={"content-type": "application/json"}).status_code
        == 401
    )
    assert stack.query("SELECT COUNT(*) FROM calls WHERE provider_call_id = 'v3:forged'") == [(0,)]


def test_stream_refuses_missing_tampered_expired_and_used_tokens(stack: TelnyxStack) -> None:
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from languagebuddy.calls import tokens

    call = stack.telnyx.dial(number())
    call.wait_streaming()
    good = call.stream_url
    assert good is not None
    base = good.split("?")[0]
    services = stack.service._app.app.state.services
    expired = tokens.issue(
        services.signing_key, call_id=1, learner_id=1, provider="telnyx", nonce="n", ttl_seconds=-1
    )
    token = good.split("token=")[1]
    body, _, mac = token.partition(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac

    async def status(url: str) -> int:
        try:
            async with connect(url, open_timeout=5):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def all_of() -> list[int]:
        return [
            await status(u)
            for u in (base, f"{base}?token={tampered}", f"{base}?token={expired}", good)
        ]

    assert asyncio.run(all_of()) == [403, 403, 403, 403]
    call.hang_up()


def test_caller_hang_up_closes_everything_within_a_second(stack: TelnyxStack) -> None:
    call = stack.telnyx.dial(number())
    call.wait_streaming()
    session = first_session(stack)
    realtime = stack.ai.realtime
    realtime.wait_for(lambda: session.appends >= 10)
    call.hang_up()
    call.wait_ended()
    closed = realtime.wait_for(lambda: session.closed_at, timeout=5)
    assert call.ended_at is not None
    assert closed - call.ended_at < 1.0
    services = stack.service._app.app.state.services
    realtime.wait_for(lambda: not services.calls.live, timeout=5)


def test_realtime_drop_reconnects_once_with_the_context(stack: TelnyxStack) -> None:
    realtime = stack.ai.realtime
    realtime.hear("Me llamo Ana y me gusta el fútbol.")
    realtime.respond("Hola, ¿qué tal?", audio_ms=500)
    realtime.respond("¡Qué bien, el fútbol!", audio_ms=500)
    realtime.drop_sessions_after(3.0)
    call = stack.telnyx.dial(number())
    caller = call.wait_streaming()
    session = first_session(stack)
    realtime.wait_for(lambda: caller.played() >= 500 * 8)
    call.say(0.8)
    realtime.wait_for(lambda: len(assistant_items(session)) >= 2)
    second = realtime.wait_for(
        lambda: len(realtime.sessions) >= 2 and realtime.sessions[1], timeout=10
    )
    replayed = realtime.wait_for(lambda: second.of_type("conversation.item.create"))
    texts = [p["text"] for e in replayed for p in e["item"]["content"]]
    assert "Me llamo Ana y me gusta el fútbol." in texts
    assert "Hola, ¿qué tal?" in texts
    back = realtime.wait_for(lambda: second.responses and second.responses[0])
    assert "back" in back["instructions"]
    realtime.wait_for(lambda: any(i.sent_ms > 0 for i in assistant_items(second)))
    assert "hangup" not in call.actions()
    call.hang_up()
    assert stack.call_row(call)["usage"]


def test_realtime_unreachable_after_a_drop_apologises_and_hangs_up(stack: TelnyxStack) -> None:
    realtime = stack.ai.realtime
    realtime.drop_sessions_after(1.0)
    call = stack.telnyx.dial(number())
    call.wait_streaming()
    first_session(stack)
    realtime.refuse_connects(5)
    call.wait_ended(timeout=15)
    speak = next(c for c in call.commands if c["action"] == "speak")["body"]
    assert speak["payload"] and speak["language"]
    assert call.actions()[-1] == "hangup"
    assert stack.call_row(call)["end_reason"] == "model_unavailable"


def test_the_call_is_in_memory_and_the_recap_is_sent_once(stack: TelnyxStack) -> None:
    phone = number()
    learner_id = whatsapp_learner(stack, phone, name="Lucía")
    onboarded(stack, learner_id)
    realtime = stack.ai.realtime
    realtime.hear("Ayer fui al mercado.")
    realtime.respond("Hola Lucía, ¿qué hiciste ayer?", audio_ms=500)
    realtime.respond(
        "",
        tool_calls=[("save_vocabulary", {"items": [{"term": "el mercado", "meaning": "market"}]})],
    )
    realtime.respond("¡Qué bien! El mercado es divertido.", audio_ms=500)
    call = stack.telnyx.dial(phone)
    caller = call.wait_streaming()
    session = first_session(stack)
    realtime.wait_for(lambda: caller.played() >= 500 * 8)
    call.say(0.8)
    realtime.wait_for(
        lambda: len(assistant_items(session)) >= 2 and assistant_items(session)[1].sent_ms >= 500
    )
    realtime.wait_for(lambda: session.of_type("response.create") and len(session.responses) >= 3)
    time.sleep(0.6)
    call.hang_up()
    row = stack.call_row(call)
    assert row["input_tokens"] > 0 and row["duration_s"] > 0
    turns = stack.query(
        "SELECT direction, text FROM turns WHERE learner_id = ? AND modality = 'call' ORDER BY id",
        learner_id,
    )
    assert ("in", "Ayer fui al mercado.") in turns
    assert ("out", "Hola Lucía, ¿qué hiciste ayer?") in turns
    wa_id = phone.lstrip("+")
    deadline = time.time() + 10
    while not any("el mercado" in t for t in stack.wa.texts_to(wa_id)):
        assert time.time() < deadline, stack.wa.texts_to(wa_id)
        time.sleep(0.05)
    time.sleep(0.5)
    recaps = [t for t in stack.wa.texts_to(wa_id) if "el mercado" in t]
    assert len(recaps) == 1 and "market" in recaps[0]
    # The chat afterwards knows what was said on the phone.
    stack.ai.reset()
    body = whatsapp_text_webhook("¿De qué hablamos?", wa_id=wa_id, name="Lucía")
    httpx.post(
        f"{stack.service.base_url}/webhooks/whatsapp",
        content=body,
        headers=whatsapp_headers(body, stack.wa.app_secret),
    )
    deadline = time.time() + 10
    while not stack.ai.chat_bodies():
        assert time.time() < deadline
        time.sleep(0.05)
    history = json.dumps(stack.ai.chat_bodies()[0]["messages"], ensure_ascii=False)
    assert "(phone call) Ayer fui al mercado." in history


def test_no_task_or_socket_outlives_many_calls(stack: TelnyxStack) -> None:
    import asyncio

    loop = stack.service.loop
    assert loop is not None

    async def count() -> int:
        return len(asyncio.all_tasks())

    before = asyncio.run_coroutine_threadsafe(count(), loop).result(5)
    calls = [stack.telnyx.dial(number()) for _ in range(8)]
    for call in calls:
        call.wait_streaming()
    realtime = stack.ai.realtime
    realtime.wait_for(lambda: realtime.active >= 8)
    for call in calls:
        call.hang_up()
    for call in calls:
        stack.call_row(call)
    services = stack.service._app.app.state.services
    realtime.wait_for(lambda: not services.calls.live and realtime.active == 0, timeout=10)
    deadline = time.time() + 5
    while asyncio.run_coroutine_threadsafe(count(), loop).result(5) > before:
        assert time.time() < deadline, "tasks left behind by finished calls"
        time.sleep(0.1)
