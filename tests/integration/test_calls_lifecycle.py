"""A call's lifecycle limits, with the durations shortened through settings: silence timeout,
maximum length (each with a spoken goodbye before the hang-up) and the Realtime session
renewed, conversation replayed, before the provider's session cap."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_calls_telnyx import (
    CallStack,
    _stack,
    assistant_items,
    first_session,
    number,
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallStack]:
    yield from _stack(
        tmp_path_factory.mktemp("lifecycle"),
        call_max_seconds=5.0,
        call_silence_seconds=2.5,
        realtime_renew_seconds=1.5,
        call_goodbye_seconds=4.0,
    )


@pytest.fixture(autouse=True)
def _reset(stack: CallStack) -> None:
    stack.ai.reset()


def _goodbye_then_hangup(stack: CallStack, call, reason: str) -> None:  # type: ignore[no-untyped-def]
    call.wait_ended(timeout=15)
    assert call.actions().count("hangup") == 1
    goodbyes = [
        r
        for s in stack.ai.realtime.sessions
        for r in s.responses
        if (r.get("metadata") or {}).get("purpose") == "goodbye"
    ]
    assert len(goodbyes) == 1
    assert stack.call_row(call)["end_reason"] == reason


def test_silence_ends_the_call_with_a_goodbye(stack: CallStack) -> None:
    stack.ai.realtime.respond("Hola.", audio_ms=500)
    call = stack.telnyx.dial(number())
    call.wait_streaming()
    _goodbye_then_hangup(stack, call, "silence")


def test_maximum_length_ends_the_call_with_a_goodbye(stack: CallStack) -> None:
    stack.ai.realtime.respond("Un saludo largo que ocupa casi toda la llamada.", audio_ms=4500)
    call = stack.telnyx.dial(number())
    call.wait_streaming()
    _goodbye_then_hangup(stack, call, "max_length")


def test_session_is_renewed_with_the_conversation_replayed(stack: CallStack) -> None:
    realtime = stack.ai.realtime
    realtime.respond("Hola, ¿qué tal?", audio_ms=500)
    realtime.respond("Seguimos hablando.", audio_ms=500)
    call = stack.telnyx.dial(number())
    caller = call.wait_streaming()
    first = first_session(stack)
    second = realtime.wait_for(lambda: len(realtime.sessions) >= 2 and realtime.sessions[1])
    replayed = realtime.wait_for(lambda: second.of_type("conversation.item.create"))
    texts = [part["text"] for e in replayed for part in e["item"]["content"]]
    assert texts == ["Hola, ¿qué tal?"]
    assert second.of_type("session.update")[0]["session"]["instructions"]
    realtime.wait_for(lambda: first.closed_at)  # the old session is closed after the swap
    call.say(0.6)
    reply = realtime.wait_for(lambda: [i for i in assistant_items(second) if i.sent_ms >= 500])[0]
    realtime.wait_for(lambda: bytes(reply.audio) in bytes(caller.received))
    assert not second.responses[0].get("metadata")  # a renewal does not greet again
    call.hang_up()
    stack.call_row(call)
