"""Every body of the corpus (tests/corpus) parses to exactly the events it lists."""

from __future__ import annotations

import json
from typing import Any

import pytest

from languagebuddy.channels.line import LineChannel
from languagebuddy.channels.telegram import TelegramChannel
from languagebuddy.channels.whatsapp import WhatsAppChannel
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent
from tests.corpus import Case, case_id
from tests.corpus import line as line_corpus
from tests.corpus import telegram as telegram_corpus
from tests.corpus import whatsapp as whatsapp_corpus
from tests.fakes.telegram import FakeTelegram
from tests.fakes.whatsapp import meta_json

CORPORA = {
    "whatsapp": whatsapp_corpus.CASES,
    "telegram": telegram_corpus.CASES,
    "line": line_corpus.CASES,
}
CONFIG = Settings(  # type: ignore[call-arg]
    _env_file=None,
    whatsapp_access_token="t",
    whatsapp_phone_number_id=whatsapp_corpus.PHONE_NUMBER_ID,
    whatsapp_app_secret="s",
    telegram_bot_token=FakeTelegram().token,
    telegram_webhook_secret="s",
    line_channel_access_token="t",
    line_channel_secret="s",
)
CHANNELS = {
    "whatsapp": WhatsAppChannel(CONFIG),
    "telegram": TelegramChannel(CONFIG),
    "line": LineChannel(CONFIG),
}


def serialise(platform: str, body: dict[str, Any]) -> bytes:
    """As the platform sends it: Meta escapes non-ASCII and '/', the others send UTF-8."""
    if platform == "whatsapp":
        return meta_json(body)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def matches(event: InboundEvent, expected: dict[str, Any]) -> list[str]:
    """The fields of ``expected`` that ``event`` gets wrong (``extra``: the keys listed)."""
    wrong = []
    for key, value in expected.items():
        actual = getattr(event, key)
        if key == "kind":
            actual = actual.value
        if key == "extra":
            actual = {k: actual.get(k) for k in value}
        if actual != value:
            wrong.append(f"{key}: {actual!r} != {value!r}")
    return wrong


def parse_case(platform: str, case: Case) -> list[InboundEvent]:
    channel = CHANNELS[platform]
    return [e for body in case.bodies for e in channel.parse(serialise(platform, body))]


CASES = [(platform, case) for platform, cases in CORPORA.items() for case in cases]


@pytest.mark.parametrize(("platform", "case"), CASES, ids=[f"{p}-{case_id(c)}" for p, c in CASES])
def test_corpus_body_parses_to_its_events(platform: str, case: Case) -> None:
    events = parse_case(platform, case)
    assert len(events) == len(case.events), [e.kind.value for e in events]
    for event, expected in zip(events, case.events, strict=True):
        assert matches(event, expected) == []
        assert event.channel == platform and event.event_id and event.user_id


@pytest.mark.parametrize("platform", sorted(CORPORA))
def test_corpus_is_large_and_covers_the_classes(platform: str) -> None:
    cases = CORPORA[platform]
    assert len(cases) >= 30
    assert len({c.name for c in cases}) == len(cases)
    kinds = {e["kind"] for c in cases for e in c.events}
    assert kinds >= {"text", "image", "voice", "unsupported", "edit"}
    assert kinds & {"reaction", "delete"}
    assert any(c.reply is None and not c.events for c in cases)  # non-message updates
    assert any(c.deliveries > 1 for c in cases)  # redeliveries
    assert any(any(e.get("chat_id") for e in c.events) for c in cases)  # groups
