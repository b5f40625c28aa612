"""End to end through the real service: signed webhook -> inbox -> worker -> tutor (fake
OpenAI) -> reply at the fake platform, including platform faults."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from languagebuddy.channels.line import retry_key
from languagebuddy.config import load_settings
from languagebuddy.tutor.phrases import phrase, phrase_language
from tests.fakes.line import FakeLine, line_body, line_event, line_headers, line_text_webhook
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import FakeServer, RecordedRequest
from tests.fakes.telegram import (
    FakeTelegram,
    telegram_body,
    telegram_text_update,
    telegram_update,
)
from tests.fakes.whatsapp import (
    FakeWhatsApp,
    whatsapp_headers,
    whatsapp_status_webhook,
    whatsapp_text_webhook,
    whatsapp_unsupported_webhook,
)
from tests.service import running_service


@dataclass
class Stack:
    service: FakeServer
    db: Path
    wa: FakeWhatsApp
    tg: FakeTelegram
    line: FakeLine
    ai: FakeOpenAI

    def post(self, channel: str, body: bytes, headers: dict[str, str]) -> int:
        return httpx.post(
            f"{self.service.base_url}/webhooks/{channel}", content=body, headers=headers
        ).status_code

    def inbox(self, dedupe_key: str) -> tuple[str, str | None]:
        with sqlite3.connect(self.db) as conn:
            row = conn.execute(
                "SELECT status, last_error FROM inbox WHERE dedupe_key = ?", (dedupe_key,)
            ).fetchone()
        return row if row else ("missing", None)

    def wait_status(self, dedupe_key: str, *statuses: str, timeout: float = 15.0) -> str | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, error = self.inbox(dedupe_key)
            if status in statuses:
                return error
            time.sleep(0.05)
        raise AssertionError(f"{dedupe_key} never reached {statuses}: {self.inbox(dedupe_key)}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = tmp_path_factory.mktemp("e2e") / "lb.db"
    with FakeWhatsApp() as wa, FakeTelegram() as tg, FakeLine() as line, FakeOpenAI() as ai:
        config = load_settings(
            database_url=f"sqlite+aiosqlite:///{db}",
            openai_api_key=ai.api_key,
            openai_base_url=ai.base_url,
            openai_max_retries=0,
            retry_base_seconds=0.2,
            max_attempts=3,
            worker_concurrency=2,
            **wa.settings(),
            **tg.settings(),
            **line.settings(),
        )
        with running_service(config, run_worker=True) as service:
            yield Stack(service, db, wa, tg, line, ai)


@pytest.fixture(autouse=True)
def _reset(stack: Stack) -> None:
    for fake in (stack.wa, stack.tg, stack.line):
        fake.faults.clear()
    stack.ai.reset()


@dataclass
class Platform:
    """One channel as an end-to-end test drives it: a learner, a signed message from them, and
    what the platform's fake received back."""

    name: str
    max_length: int

    def learner(self, n: int) -> str:
        return {
            "whatsapp": f"55119{n:08d}",
            "telegram": str(70_000_000 + n),
            "line": f"U{n:032x}",
        }[self.name]

    def message(
        self, stack: Stack, user: str, text: str, event_id: str
    ) -> tuple[bytes, dict[str, str], str]:
        """(body, headers, dedupe key) of a signed text message, exactly as the platform sends."""
        if self.name == "whatsapp":
            body = whatsapp_text_webhook(text, wa_id=user, message_id=f"wamid.{event_id}")
            return body, whatsapp_headers(body, stack.wa.app_secret), f"whatsapp:wamid.{event_id}"
        if self.name == "telegram":
            update_id = int(event_id, 16) % 10**9
            body = telegram_text_update(text, update_id=update_id, chat_id=int(user))
            return body, stack.tg.headers(), f"telegram:{update_id}"
        token = stack.line.issue_reply_token(user)
        body = line_text_webhook(text, user_id=user, reply_token=token, webhook_event_id=event_id)
        return body, line_headers(body, stack.line.channel_secret), f"line:{event_id}"

    def texts_to(self, stack: Stack, user: str) -> list[str]:
        fake = {"whatsapp": stack.wa, "telegram": stack.tg, "line": stack.line}[self.name]
        return fake.texts_to(int(user) if self.name == "telegram" else user)

    def rate_limit_next(self, stack: Stack) -> None:
        """The next send answers 429 with the platform's own body and Retry-After."""
        if self.name == "whatsapp":
            stack.wa.fail_next(429, retry_after=1)
        elif self.name == "telegram":
            stack.tg.fail_next(429, retry_after=1)
        else:
            stack.line.fail_next(429, retry_after=1)

    def send_attempts(self, stack: Stack) -> int:
        """Message sends the fake received, refused ones included (not typing indicators)."""
        path = {"whatsapp": "/messages", "telegram": "/sendMessage", "line": "/v2/bot/message/"}
        fake = {"whatsapp": stack.wa, "telegram": stack.tg, "line": stack.line}[self.name]
        sends = fake.server.recorded(path[self.name], method="POST")
        return sum(1 for r in sends if r.json().get("status") != "read")

    def refuse_permanently(self, stack: Stack, user: str) -> str:
        """Make every send to ``user`` fail as the platform does for good; returns the code the
        dead letter must carry."""
        if self.name == "whatsapp":
            stack.wa.closed_windows.add(user)  # outside the 24-hour window
            return "131047"
        if self.name == "telegram":
            stack.tg.blocked.add(user)  # the learner blocked the bot
            return "403"
        stack.line.fail_next(400, count=10, message="The request body has 1 error(s)")
        return "400"

    def restore(self, stack: Stack, user: str) -> None:
        stack.wa.closed_windows.discard(user)
        stack.tg.blocked.discard(user)
        stack.line.faults.clear()


PLATFORMS = [Platform("whatsapp", 4096), Platform("telegram", 4096), Platform("line", 5000)]
learner_numbers = itertools.count(1)


def _new_id() -> str:
    return uuid.uuid4().hex[:20].upper()


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.name)
def test_text_message_gets_a_reply_to_its_sender(stack: Stack, platform: Platform) -> None:
    user = platform.learner(next(learner_numbers))
    stack.ai.reply("¡Hola! ¿Practicamos?")
    body, headers, key = platform.message(stack, user, "Hola, quiero practicar", _new_id())
    assert stack.post(platform.name, body, headers) == 200
    stack.wait_status(key, "done")
    assert platform.texts_to(stack, user) == ["¡Hola! ¿Practicamos?"]
    [request] = stack.ai.chat_bodies()
    assert "Hola, quiero practicar" in json.dumps(request["messages"], ensure_ascii=False)
    with sqlite3.connect(stack.db) as conn:
        (raw,) = conn.execute(
            "SELECT t.timings FROM turns t JOIN inbox i ON i.id = t.inbox_item_id"
            " WHERE i.dedupe_key = ? AND t.direction = 'in'",
            (key,),
        ).fetchone()
    timings = json.loads(raw)  # every stage in milliseconds; the model's share of the tutor's
    assert {"learner", "media", "tutor", "model"} <= timings.keys()
    assert 1 <= timings["model"] <= timings["tutor"] < 10_000  # a loopback model call: ms


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.name)
def test_triple_delivery_one_reply(stack: Stack, platform: Platform) -> None:
    user = platform.learner(next(learner_numbers))
    body, headers, key = platform.message(stack, user, "Again and again", _new_id())
    assert [stack.post(platform.name, body, headers) for _ in range(3)] == [200, 200, 200]
    stack.wait_status(key, "done")
    assert stack.post(platform.name, body, headers) == 200  # after processing, still one reply
    time.sleep(0.5)
    assert len(platform.texts_to(stack, user)) == 1
    assert len(stack.ai.chat_bodies()) == 1


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.name)
def test_rate_limited_then_delivered_once(stack: Stack, platform: Platform) -> None:
    user = platform.learner(next(learner_numbers))
    stack.ai.reply("Hello again!")
    platform.rate_limit_next(stack)
    before = platform.send_attempts(stack)
    body, headers, key = platform.message(stack, user, "Hello", _new_id())
    assert stack.post(platform.name, body, headers) == 200
    stack.wait_status(key, "done", timeout=20)
    assert platform.texts_to(stack, user) == ["Hello again!"]
    assert platform.send_attempts(stack) - before == 2  # the 429, then the retry
    assert len(stack.ai.chat_bodies()) == 1  # the retry resends, it does not ask again


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.name)
def test_permanent_error_is_dead_lettered(stack: Stack, platform: Platform) -> None:
    user = platform.learner(next(learner_numbers))
    code = platform.refuse_permanently(stack, user)
    try:
        body, headers, key = platform.message(stack, user, "late", _new_id())
        assert stack.post(platform.name, body, headers) == 200
        error = stack.wait_status(key, "dead")
        attempts = platform.send_attempts(stack)
        time.sleep(1.0)  # long enough for a retry loop to show itself
        assert platform.send_attempts(stack) == attempts
    finally:
        platform.restore(stack, user)
    assert error and code in error
    assert platform.texts_to(stack, user) == []


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.name)
def test_long_reply_is_split_on_sentences(stack: Stack, platform: Platform) -> None:
    user = platform.learner(next(learner_numbers))
    long_text = " ".join(f"Sentence number {n} is here." for n in range(400))  # ~11k chars
    stack.ai.reply(long_text)
    body, headers, key = platform.message(stack, user, "Tell me a story", _new_id())
    assert stack.post(platform.name, body, headers) == 200
    stack.wait_status(key, "done")
    parts = platform.texts_to(stack, user)
    assert len(parts) == 3 and all(len(p) <= platform.max_length for p in parts)
    assert all(p.endswith(".") for p in parts)
    assert " ".join(parts) == long_text


def test_line_reply_token_then_push(stack: Stack) -> None:
    user = "U" + "e" * 32
    token = stack.line.issue_reply_token(user)
    stack.ai.reply("やった!")
    body = line_text_webhook(
        "こんにちは", user_id=user, reply_token=token, webhook_event_id="01JE2E1"
    )
    assert stack.post("line", body, line_headers(body, stack.line.channel_secret)) == 200
    stack.wait_status("line:01JE2E1", "done")
    assert [r["replyToken"] for r in stack.line.replies if r["_user"] == user] == [token]
    # A second message whose token LINE already considers expired is pushed with a retry key.
    token2 = stack.line.issue_reply_token(user)
    stack.line.expire_reply_token(token2)
    stack.ai.reply("もう一度!")
    body = line_text_webhook(
        "もう一回", user_id=user, reply_token=token2, webhook_event_id="01JE2E2"
    )
    assert stack.post("line", body, line_headers(body, stack.line.channel_secret)) == 200
    stack.wait_status("line:01JE2E2", "done")
    [push] = [p for p in stack.line.pushes if p["to"] == user]
    assert push["messages"] == [{"type": "text", "text": "もう一度!"}]
    with sqlite3.connect(stack.db) as conn:
        item_id = conn.execute("SELECT id FROM inbox WHERE dedupe_key='line:01JE2E2'").fetchone()[0]
    assert push["_retry_key"] == retry_key(f"inbox-{item_id}-0")
    assert json.dumps(push)  # recorded as sent


def _unsupported(stack: Stack, platform: str, user: str, event_id: str) -> tuple[bytes, dict, str]:
    """A sticker from ``user``, signed as the platform sends it, with its dedupe key."""
    if platform == "whatsapp":
        body = whatsapp_unsupported_webhook("sticker", wa_id=user, message_id=f"wamid.{event_id}")
        return body, whatsapp_headers(body, stack.wa.app_secret), f"whatsapp:wamid.{event_id}"
    if platform == "telegram":
        update_id = int(event_id, 16) % 10**9
        sticker = {"file_id": "CAACAgIAAxk", "file_unique_id": "AgAD", "width": 512, "height": 512}
        update = telegram_update(
            {"sticker": {**sticker, "is_animated": False, "is_video": False, "type": "regular"}},
            update_id=update_id,
            chat_id=int(user),
            language_code="es",
        )
        return telegram_body(update), stack.tg.headers(), f"telegram:{update_id}"
    message = {"id": "4902", "type": "sticker", "packageId": "446", "stickerId": "1988"}
    event = line_event(message, user_id=user, reply_token=stack.line.issue_reply_token(user))
    body = line_body([{**event, "webhookEventId": event_id}])
    return body, line_headers(body, stack.line.channel_secret), f"line:{event_id}"


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.name)
def test_unsupported_message_says_what_the_buddy_understands(
    stack: Stack, platform: Platform
) -> None:
    user = platform.learner(next(learner_numbers))
    body, headers, key = _unsupported(stack, platform.name, user, _new_id())
    assert stack.post(platform.name, body, headers) == 200
    stack.wait_status(key, "done")
    [reply] = platform.texts_to(stack, user)
    # Only Telegram says the learner's language up front; a first-time WhatsApp or LINE
    # learner gets English until the profile knows better.
    interface = {"whatsapp": "en", "telegram": "es", "line": "en"}[platform.name]
    assert reply == phrase("unsupported", phrase_language(interface))
    assert stack.ai.chat_bodies() == []  # answered without the model


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.name)
def test_typing_indicator_before_the_reply(stack: Stack, platform: Platform) -> None:
    user = platform.learner(next(learner_numbers))
    stack.ai.slow(0.5, "Un momento… ¡listo!")
    body, headers, key = platform.message(stack, user, "¿Qué tal?", _new_id())
    assert stack.post(platform.name, body, headers) == 200
    stack.wait_status(key, "done")
    assert platform.texts_to(stack, user) == ["Un momento… ¡listo!"]
    if platform.name == "whatsapp":
        wamid = key.split(":", 1)[1]
        indicator = _first(stack.wa, "/messages", lambda b: b.get("message_id") == wamid)
        assert indicator.json()["typing_indicator"] == {"type": "text"}
        reply = _first(stack.wa, "/messages", lambda b: b.get("to") == user)
    elif platform.name == "telegram":
        indicator = _first(stack.tg, "/sendChatAction", lambda b: str(b["chat_id"]) == user)
        assert indicator.json()["action"] == "typing"
        reply = _first(stack.tg, "/sendMessage", lambda b: str(b["chat_id"]) == user)
    else:
        token = json.loads(body)["events"][0]["replyToken"]
        indicator = _first(stack.line, "/chat/loading/start", lambda b: b["chatId"] == user)
        assert 5 <= indicator.json()["loadingSeconds"] <= 60
        reply = _first(stack.line, "/message/reply", lambda b: b["replyToken"] == token)
    assert indicator.at < reply.at  # shown while the tutor was still thinking


def _first(fake: Any, path: str, match: Callable[[dict[str, Any]], bool]) -> RecordedRequest:
    """The first JSON request to ``path`` at ``fake`` whose body ``match``es."""
    return next(r for r in fake.server.recorded(path, method="POST") if match(r.json()))


def test_whatsapp_learner_phone_is_e164_and_status_callbacks_update_the_log(stack: Stack) -> None:
    wa_id = "5511955550123"
    stack.ai.reply("Tudo bem!")
    body = whatsapp_text_webhook("Oi", wa_id=wa_id, message_id="wamid.PHONE1")
    assert stack.post("whatsapp", body, whatsapp_headers(body, stack.wa.app_secret)) == 200
    stack.wait_status("whatsapp:wamid.PHONE1", "done")
    [sent] = [m for m in stack.wa.sent if m.get("to") == wa_id]
    with sqlite3.connect(stack.db) as conn:
        (phone,) = conn.execute(
            "SELECT l.phone_e164 FROM learners l JOIN identities i ON i.learner_id = l.id"
            " WHERE i.channel = 'whatsapp' AND i.channel_user_id = ?",
            (wa_id,),
        ).fetchone()
    assert phone == "+" + wa_id
    for status in ("delivered", "read"):
        body = whatsapp_status_webhook(sent["_id"], status, recipient_id=wa_id)
        assert stack.post("whatsapp", body, whatsapp_headers(body, stack.wa.app_secret)) == 200
        deadline = time.time() + 10
        while time.time() < deadline and _turn_status(stack, sent["_id"]) != status:
            time.sleep(0.05)
        assert _turn_status(stack, sent["_id"]) == status
    replies_before = len(stack.wa.sent)
    time.sleep(0.3)
    assert len(stack.wa.sent) == replies_before  # a status callback gets no reply


def _turn_status(stack: Stack, provider_message_id: str) -> str | None:
    with sqlite3.connect(stack.db) as conn:
        row = conn.execute(
            "SELECT status FROM turns WHERE provider_message_id = ?", (provider_message_id,)
        ).fetchone()
    return row[0] if row else None
