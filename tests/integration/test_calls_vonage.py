"""Phone calls end to end through Vonage: the fake Vonage asks the real service's answer URL,
follows its NCCO onto the media WebSocket, and the call runs on the same bridge, agent and
memory as a Telnyx call, with L16 16 kHz resampled to and from the model's 24 kHz PCM."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest
import soxr

from tests.audio_quality import steady
from tests.calls import (
    CallStack,
    assistant_items,
    call_service,
    first_session,
    onboarded,
    whatsapp_learner,
)
from tests.fakes.vonage import BYTES_PER_MS, FakeCall, FakeVonage


@dataclass
class VonageStack(CallStack):
    vonage: FakeVonage

    def call_row(self, call: FakeCall, timeout: float = 10.0) -> dict:
        return self.finished_call("vonage", call.uuid, timeout)


def vonage_stack(tmp: Path, **overrides: object) -> Iterator[VonageStack]:
    with FakeVonage() as vonage, call_service(tmp, vonage.settings(), **overrides) as parts:
        vonage.answer_url = f"{parts[0].base_url}/calls/vonage/answer"
        vonage.event_url = f"{parts[0].base_url}/calls/vonage/events"
        yield VonageStack(*parts, vonage)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VonageStack]:
    yield from vonage_stack(tmp_path_factory.mktemp("vonage-calls"))


@pytest.fixture(autouse=True)
def _reset(stack: VonageStack) -> None:
    stack.ai.reset()


_numbers = iter(range(10_000, 99_999))


def number() -> str:
    return f"+4477009{next(_numbers):05d}"


def heard_ms(caller) -> float:  # type: ignore[no-untyped-def]
    return caller.played_bytes / BYTES_PER_MS


def floats(pcm: bytes | bytearray) -> np.ndarray:
    return np.frombuffer(bytes(pcm), "<i2").astype(np.float32) / 32768


def resampled(signal: np.ndarray, rate: int, to: int) -> np.ndarray:
    return soxr.resample(signal, rate, to, quality="HQ")


def _below_7khz(signal: np.ndarray, rate: int) -> np.ndarray:
    """The band a 16 kHz call carries through resampling (the filters roll off above ~7.2
    kHz, by design): what is above it is not compared."""
    spectrum = np.fft.rfft(signal.astype(np.float64))
    spectrum[np.fft.rfftfreq(len(signal), 1 / rate) > 7_000] = 0
    return np.fft.irfft(spectrum, len(signal))


def snr_db(reference: np.ndarray, got: np.ndarray, rate: int) -> float:
    """``got`` against ``reference`` (floats at ``rate``) where they overlap, below 7 kHz,
    aligned on the loudest half second of ``reference`` by normalised cross-correlation.
    Compare at the rate whose sample grid both share: the model's 24 kHz stream starts on
    any of its samples, which at 16 kHz can fall between two (a fractional delay, an error
    growing with frequency that no whole-sample lag removes)."""
    size = rate // 2
    energy = np.convolve(reference**2, np.ones(size), mode="valid")
    start = int(np.argmax(energy[:: size // 20])) * (size // 20)
    window = reference[start : start + size]
    correlation = np.correlate(got, window, mode="valid")
    norms = np.sqrt(np.convolve(got**2, np.ones(size), mode="valid")) + 1e-9
    offset = int(np.argmax(correlation / norms)) - start  # got[offset + i] ~ reference[i]
    first = max(0, -offset)
    n = min(len(reference), len(got) - offset) - first
    ref = _below_7khz(steady(reference[first : first + n], rate), rate)
    out = _below_7khz(steady(got[first + offset : first + offset + n], rate), rate)
    error = out - ref
    return float(10 * np.log10(np.sum(ref**2) / np.sum(error**2)))


def test_answer_ncco_greeting_and_audio_both_ways(stack: VonageStack) -> None:
    realtime = stack.ai.realtime
    realtime.respond("¡Hola! Soy LanguageBuddy. ¿Qué idioma quieres practicar?", audio_ms=1500)
    call = stack.vonage.dial(number())
    caller = call.wait_connected()
    assert call.ncco_problems == []
    (connect,) = call.ncco
    assert connect["eventType"] == "synchronous"
    assert connect["eventUrl"] == [f"{stack.service.base_url}/calls/vonage/events"]
    endpoint = connect["endpoint"][0]
    assert endpoint["content-type"] == "audio/l16;rate=16000"
    assert endpoint["uri"].startswith(
        f"ws://127.0.0.1:{stack.service.port}/calls/vonage/media-stream?token="
    )
    assert endpoint["headers"]["call_uuid"] == call.uuid
    assert len(json.dumps(endpoint["headers"], separators=(",", ":"))) <= 512
    session = first_session(stack)
    update = realtime.wait_for(lambda: session.of_type("session.update"))[0]["session"]
    assert update["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert update["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    greeting = realtime.wait_for(lambda: session.responses and session.responses[0])
    assert "greet" in greeting["instructions"].lower()
    item = realtime.wait_for(lambda: (assistant_items(session) or [None])[0])
    # The greeting, resampled to 16 kHz, is what the caller heard, in exact 640-byte frames.
    realtime.wait_for(lambda: item.sent_ms >= 1500 and heard_ms(caller) >= 1500)
    heard = floats(caller.received)
    assert snr_db(resampled(floats(item.audio), 24_000, 16_000), heard, 16_000) > 50  # ~82 dB
    assert caller.bad_frames == [] and caller.frames_received >= 75
    # The caller's voice reaches the model at 24 kHz, sample for sample what was said.
    call.say(1.0)
    realtime.wait_for(lambda: len(session.audio_in) >= 2.5 * 24_000 * 2)
    call.hang_up()
    said = resampled(floats(caller.sent_audio), 16_000, 24_000)
    assert snr_db(floats(session.audio_in), said, 24_000) > 50  # ~73 dB
    row = stack.call_row(call)
    assert row["status"] == "ended" and row["provider"] == "vonage"
    assert row["audio_in_seconds"] > 1.0 and row["audio_out_seconds"] >= 1.5
    # The phone leg's ``completed`` event names the billed duration; it is the record's.
    stack.wait_row(
        "SELECT hangup_cause FROM calls WHERE provider_call_id = ? AND hangup_cause IS NOT NULL",
        call.uuid,
    )
    completed = next(e for e in call.events if e["status"] == "completed" and e["leg"] == "phone")
    duration = stack.query("SELECT duration_s FROM calls WHERE provider_call_id = ?", call.uuid)
    assert duration == [(float(completed["payload"]["duration"]),)]


def test_the_whatsapp_learner_is_greeted_by_name(stack: VonageStack) -> None:
    phone = number()
    learner_id = whatsapp_learner(stack, phone, name="Ana")
    onboarded(stack, learner_id)
    call = stack.vonage.dial(phone)
    call.wait_connected()
    realtime = stack.ai.realtime
    session = first_session(stack)
    update = realtime.wait_for(lambda: session.of_type("session.update"))[0]["session"]
    assert "Ana" in update["instructions"]
    assert update["audio"]["input"]["transcription"]["language"] == "es"
    greeting = realtime.wait_for(lambda: session.responses and session.responses[0])
    assert "Ana" in greeting["instructions"]
    call.hang_up()
    assert stack.call_row(call)["learner_id"] == learner_id


def test_barge_in_clears_first_and_truncates_at_what_was_heard(stack: VonageStack) -> None:
    realtime = stack.ai.realtime
    realtime.respond("Una frase muy larga para que el llamante la interrumpa.", audio_ms=5000)
    realtime.respond("Vale, te escucho.", audio_ms=800)
    call = stack.vonage.dial(number())
    caller = call.wait_connected()
    session = first_session(stack)
    realtime.wait_for(lambda: heard_ms(caller) >= 1200)
    call.say(1.2)
    clear = realtime.wait_for(lambda: caller.clears and caller.clears[0])
    truncation = realtime.wait_for(lambda: session.truncations and session.truncations[0])
    heard = clear["played"] / BYTES_PER_MS
    assert abs(truncation["audio_end_ms"] - heard) <= 80, (truncation, heard)
    # Nothing of the interrupted answer was sent after the clear, and little was queued.
    clear_at = clear["at"]
    assert not [m for m in caller.messages if m["at"] > clear_at and m.get("action") == "notify"]
    assert clear["dropped"] / BYTES_PER_MS <= 200  # what sat in the caller's buffer
    realtime.wait_for(lambda: len(assistant_items(session)) >= 2, timeout=10)
    second = assistant_items(session)[1]
    realtime.wait_for(lambda: second.sent_ms >= 800)
    realtime.wait_for(lambda: caller.played_bytes >= clear["played"] + 700 * BYTES_PER_MS)
    assert not session.errors_sent
    assert caller.bad_frames == []
    call.hang_up()
    stack.call_row(call)


def test_dtmf_star_repeats_slowly_and_hash_ends_the_call(stack: VonageStack) -> None:
    realtime = stack.ai.realtime
    realtime.respond("Hola. ¿Cómo te llamas?", audio_ms=700)
    call = stack.vonage.dial(number())
    caller = call.wait_connected()
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
    hangups = [r for r in call.rest if r["action"] == "hangup"]
    assert len(hangups) == 1
    assert hangups[0]["host"] == "region"  # the call's region_url, from the answer webhook
    # Hung up once the goodbye had been heard (all of it, within a frame or two).
    bye = assistant_items(session)[-1]
    assert caller.played_bytes >= caller.playout.queued - 60 * BYTES_PER_MS
    assert heard_ms(caller) > bye.sent_ms
    assert stack.call_row(call)["end_reason"] == "dtmf"


def test_end_call_tool_says_goodbye_then_hangs_up(stack: VonageStack) -> None:
    realtime = stack.ai.realtime
    realtime.respond("Hola, ¿practicamos?", audio_ms=600)
    realtime.respond("", tool_calls=[("end_call", {})])
    realtime.respond("¡Adiós, hasta mañana!", audio_ms=900)
    call = stack.vonage.dial(number())
    caller = call.wait_connected()
    session = first_session(stack)
    realtime.wait_for(lambda: heard_ms(caller) >= 600)
    call.say(0.6)
    call.wait_ended(timeout=15)
    bye = assistant_items(session)[-1]
    assert bye.transcript.startswith("¡Adiós")
    assert [r["action"] for r in call.rest] == ["hangup"]
    assert stack.call_row(call)["end_reason"] == "end_call"


def test_signed_webhooks_only(stack: VonageStack) -> None:
    """A forged, stale or tampered answer or event is refused (401) and changes nothing."""
    base = stack.service.base_url
    fields = {"uuid": "forged-call", "from": "447700900111", "to": "447700900000"}
    answer = f"{base}/calls/vonage/answer?{urlencode(fields)}"
    vonage = stack.vonage
    assert httpx.get(answer).status_code == 401
    assert (
        httpx.get(
            answer, headers=vonage.sign(b"", secret="another-secret-of-the-right-length-0123")
        ).status_code
        == 401
    )
    stale = vonage.sign(b"", issued_at=time.time() - 600)
    assert httpx.get(answer, headers=stale).status_code == 401
    event = json.dumps({**fields, "status": "completed", "conversation_uuid": "CON-x"}).encode()
    events = f"{base}/calls/vonage/events"
    tampered = event.replace(b"completed", b"answered!")
    headers = {"content-type": "application/json", **vonage.sign(event)}
    assert httpx.post(events, content=tampered, headers=headers).status_code == 401
    unhashed = {"content-type": "application/json", **vonage.sign(event, hash_body=False)}
    assert httpx.post(events, content=event, headers=unhashed).status_code == 401
    assert stack.query("SELECT COUNT(*) FROM calls WHERE provider_call_id = 'forged-call'") == [
        (0,)
    ]


def test_a_repeated_answer_webhook_gets_the_same_ncco(stack: VonageStack) -> None:
    """Vonage asks again when an answer was lost on the way: same call, same token."""
    fields = {
        "uuid": "repeat-call-1",
        "conversation_uuid": "CON-repeat-1",
        "from": "447700900222",
        "to": "447700900000",
    }
    url = f"{stack.service.base_url}/calls/vonage/answer?{urlencode(fields)}"
    first = httpx.get(url, headers=stack.vonage.sign(b""))
    second = httpx.get(url, headers=stack.vonage.sign(b""))
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert stack.query("SELECT COUNT(*) FROM calls WHERE provider_call_id = 'repeat-call-1'") == [
        (1,)
    ]


def test_a_socket_that_never_connected_gets_an_apology_ncco(stack: VonageStack) -> None:
    """Our socket leg reports ``failed`` (synchronous connect): the event's answer is a talk
    NCCO, so the caller hears an apology instead of silence."""
    fields = {"uuid": "fail-call-1", "from": "447700900333", "to": "447700900000"}
    url = f"{stack.service.base_url}/calls/vonage/answer?{urlencode(fields)}"
    ncco = httpx.get(url, headers=stack.vonage.sign(b"")).json()
    headers = ncco[0]["endpoint"][0]["headers"]
    body = json.dumps(
        {
            "from": "447700900333",
            "to": ncco[0]["endpoint"][0]["uri"],
            "uuid": "socket-leg-1",
            "conversation_uuid": "CON-fail-1",
            "status": "failed",
            "direction": "outbound",
            "headers": headers,
        }
    ).encode()
    answer = httpx.post(
        f"{stack.service.base_url}/calls/vonage/events",
        content=body,
        headers={"content-type": "application/json", **stack.vonage.sign(body)},
    )
    assert answer.status_code == 200
    (talk,) = answer.json()
    assert talk["action"] == "talk" and talk["text"] and talk["language"] == "en-US"
    # Any other status of the socket leg needs nothing from us.
    body = body.replace(b'"failed"', b'"answered"')
    quiet = httpx.post(
        f"{stack.service.base_url}/calls/vonage/events",
        content=body,
        headers={"content-type": "application/json", **stack.vonage.sign(body)},
    )
    assert quiet.status_code == 204 and quiet.content == b""


def test_stream_refuses_missing_tampered_expired_and_used_tokens(stack: VonageStack) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from languagebuddy.calls import tokens

    call = stack.vonage.dial(number())
    call.wait_connected()
    good = call.websocket["uri"]
    base = good.split("?")[0]
    expired = tokens.issue(
        stack.services.signing_key,
        call_id=1,
        learner_id=1,
        provider="vonage",
        nonce="n",
        ttl_seconds=-1,
    )
    telnyx_token = tokens.issue(
        stack.services.signing_key,
        call_id=1,
        learner_id=1,
        provider="telnyx",
        nonce="n",
        ttl_seconds=60,
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
        urls = [base, f"{base}?token={tampered}", f"{base}?token={expired}"]
        urls += [f"{base}?token={telnyx_token}", good]
        return [await status(u) for u in urls]

    assert asyncio.run(all_of()) == [403] * 5
    call.hang_up()


def test_caller_hang_up_closes_everything_within_a_second(stack: VonageStack) -> None:
    call = stack.vonage.dial(number())
    call.wait_connected()
    session = first_session(stack)
    realtime = stack.ai.realtime
    realtime.wait_for(lambda: session.appends >= 10)
    call.hang_up()
    call.wait_ended()
    closed = realtime.wait_for(lambda: session.closed_at, timeout=5)
    assert call.ended_at is not None
    assert closed - call.ended_at < 1.0
    realtime.wait_for(lambda: not stack.services.calls.live, timeout=5)


def test_realtime_drop_reconnects_once_with_the_context(stack: VonageStack) -> None:
    realtime = stack.ai.realtime
    realtime.hear("Me llamo Ana y me gusta el fútbol.")
    realtime.respond("Hola, ¿qué tal?", audio_ms=500)
    realtime.respond("¡Qué bien, el fútbol!", audio_ms=500)
    realtime.drop_sessions_after(3.0)
    call = stack.vonage.dial(number())
    caller = call.wait_connected()
    session = first_session(stack)
    realtime.wait_for(lambda: heard_ms(caller) >= 500)
    call.say(0.8)
    realtime.wait_for(lambda: len(assistant_items(session)) >= 2)
    second = realtime.wait_for(
        lambda: len(realtime.sessions) >= 2 and realtime.sessions[1], timeout=10
    )
    replayed = realtime.wait_for(lambda: second.of_type("conversation.item.create"))
    texts = [p["text"] for e in replayed for p in e["item"]["content"]]
    assert "Me llamo Ana y me gusta el fútbol." in texts and "Hola, ¿qué tal?" in texts
    realtime.wait_for(lambda: any(i.sent_ms > 0 for i in assistant_items(second)))
    assert not [r for r in call.rest if r["action"] == "hangup"]
    call.hang_up()
    assert stack.call_row(call)["usage"]


def test_realtime_unreachable_vonage_apologises_and_hangs_up(stack: VonageStack) -> None:
    realtime = stack.ai.realtime
    realtime.drop_sessions_after(1.0)
    call = stack.vonage.dial(number())
    call.wait_connected()
    first_session(stack)
    realtime.refuse_connects(5)
    call.wait_ended(timeout=15)
    assert [r["action"] for r in call.rest] == ["talk", "hangup"]
    talk = call.rest[0]
    assert talk["body"]["text"] and talk["body"]["language"] == "en-US"
    assert talk["host"] == "region"
    assert stack.call_row(call)["end_reason"] == "model_unavailable"


def test_the_call_is_in_memory_and_the_recap_is_sent_once(stack: VonageStack) -> None:
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
    call = stack.vonage.dial(phone)
    caller = call.wait_connected()
    session = first_session(stack)
    realtime.wait_for(lambda: heard_ms(caller) >= 500)
    call.say(0.8)
    realtime.wait_for(
        lambda: len(assistant_items(session)) >= 2 and assistant_items(session)[1].sent_ms >= 500
    )
    time.sleep(0.6)
    call.hang_up()
    row = stack.call_row(call)
    assert row["input_tokens"] > 0 and row["duration_s"] is not None
    turns = stack.query(
        "SELECT direction, text FROM turns WHERE learner_id = ? AND modality = 'call' ORDER BY id",
        learner_id,
    )
    assert ("in", "Ayer fui al mercado.") in turns
    assert ("out", "Hola Lucía, ¿qué hiciste ayer?") in turns
    assert stack.query(
        "SELECT term FROM vocabulary WHERE learner_id = ? AND term = 'el mercado'", learner_id
    ) == [("el mercado",)]
    wa_id = phone.lstrip("+")
    deadline = time.time() + 10
    while not any("el mercado" in t for t in stack.wa.texts_to(wa_id)):
        assert time.time() < deadline, stack.wa.texts_to(wa_id)
        time.sleep(0.05)
    time.sleep(0.5)
    assert len([t for t in stack.wa.texts_to(wa_id) if "el mercado" in t]) == 1


def test_no_task_or_socket_outlives_many_calls(stack: VonageStack) -> None:
    loop = stack.service.loop
    assert loop is not None

    async def count() -> int:
        return len(asyncio.all_tasks())

    before = asyncio.run_coroutine_threadsafe(count(), loop).result(5)
    calls = [stack.vonage.dial(number()) for _ in range(8)]
    for call in calls:
        call.wait_connected()
    realtime = stack.ai.realtime
    realtime.wait_for(lambda: realtime.active >= 8)
    for call in calls:
        call.hang_up()
    for call in calls:
        stack.call_row(call)
    realtime.wait_for(lambda: not stack.services.calls.live and realtime.active == 0, timeout=10)
    deadline = time.time() + 5
    while asyncio.run_coroutine_threadsafe(count(), loop).result(5) > before:
        assert time.time() < deadline, "tasks left behind by finished calls"
        time.sleep(0.1)
