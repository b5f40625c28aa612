"""A call's lifecycle limits, with the durations shortened through settings: silence timeout,
maximum length (each with a spoken goodbye before the hang-up) and the Realtime session
renewed, conversation replayed, before the provider's session cap. The same code runs every
provider's calls, so each test runs through Telnyx and through Vonage."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.calls import assistant_items
from tests.integration import test_calls_telnyx as telnyx
from tests.integration import test_calls_vonage as vonage

LIMITS = {
    "call_max_seconds": 5.0,
    "call_silence_seconds": 2.5,
    "realtime_renew_seconds": 1.5,
    "call_goodbye_seconds": 4.0,
}


@dataclass
class Line:
    """One provider's stack, seen the same way by every test here."""

    provider: str
    stack: Any

    @property
    def realtime(self):  # type: ignore[no-untyped-def]
        return self.stack.ai.realtime

    def dial(self) -> tuple[Any, Any]:
        """A new call, connected: (the fake's call, its caller)."""
        if self.provider == "telnyx":
            call = self.stack.telnyx.dial(telnyx.number())
            return call, call.wait_streaming()
        call = self.stack.vonage.dial(vonage.number())
        return call, call.wait_connected()

    def hang_ups(self, call: Any) -> int:
        """How many hang-up commands the service sent the provider for this call."""
        if self.provider == "telnyx":
            return call.actions().count("hangup")
        return [r["action"] for r in call.rest].count("hangup")

    def heard(self, caller: Any, item: Any) -> bool:
        """The caller has received all of the model's ``item`` (the last it said)."""
        if self.provider == "telnyx":
            return bytes(item.audio) in bytes(caller.received)
        # Resampled, so not the same bytes: as much audio as the model said, all told.
        said = sum(i.sent_ms for s in self.realtime.sessions for i in assistant_items(s))
        return caller.frames_received * 20 >= said - 40


@pytest.fixture(scope="module", params=["telnyx", "vonage"])
def line(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Line]:
    tmp = tmp_path_factory.mktemp(f"lifecycle-{request.param}")
    make = telnyx._stack if request.param == "telnyx" else vonage.vonage_stack
    for stack in make(tmp, **LIMITS):  # set up, yield once, tear down
        yield Line(request.param, stack)


@pytest.fixture(autouse=True)
def _reset(line: Line) -> None:
    line.stack.ai.reset()


def _goodbye_then_hangup(line: Line, call: Any, reason: str) -> None:
    call.wait_ended(timeout=15)
    assert line.hang_ups(call) == 1
    goodbyes = [
        r
        for s in line.realtime.sessions
        for r in s.responses
        if (r.get("metadata") or {}).get("purpose") == "goodbye"
    ]
    assert len(goodbyes) == 1
    assert line.stack.call_row(call)["end_reason"] == reason


def test_silence_ends_the_call_with_a_goodbye(line: Line) -> None:
    line.realtime.respond("Hola.", audio_ms=500)
    call, _ = line.dial()
    _goodbye_then_hangup(line, call, "silence")


def test_maximum_length_ends_the_call_with_a_goodbye(line: Line) -> None:
    line.realtime.respond("Un saludo largo que ocupa casi toda la llamada.", audio_ms=4500)
    call, _ = line.dial()
    _goodbye_then_hangup(line, call, "max_length")


def test_session_is_renewed_with_the_conversation_replayed(line: Line) -> None:
    realtime = line.realtime
    realtime.respond("Hola, ¿qué tal?", audio_ms=500)
    realtime.respond("Seguimos hablando.", audio_ms=500)
    call, caller = line.dial()
    first = realtime.wait_for(lambda: realtime.sessions and realtime.sessions[0])
    second = realtime.wait_for(lambda: len(realtime.sessions) >= 2 and realtime.sessions[1])
    replayed = realtime.wait_for(lambda: second.of_type("conversation.item.create"))
    texts = [part["text"] for e in replayed for part in e["item"]["content"]]
    assert texts == ["Hola, ¿qué tal?"]
    assert second.of_type("session.update")[0]["session"]["instructions"]
    realtime.wait_for(lambda: first.closed_at)  # the old session is closed after the swap
    call.say(0.6)
    items = lambda: [i for i in assistant_items(second) if i.sent_ms >= 500]  # noqa: E731
    reply = realtime.wait_for(items)[0]
    realtime.wait_for(lambda: line.heard(caller, reply))
    assert not second.responses[0].get("metadata")  # a renewal does not greet again
    call.hang_up()
    line.stack.call_row(call)
