"""End to end through the real service: signed webhook -> inbox -> worker -> tutor (fake
OpenAI) -> reply at the fake platform, including platform faults."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from languagebuddy.channels.line import retry_key
from languagebuddy.config import load_settings
from tests.fakes.line import FakeLine, line_headers, line_text_webhook
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import FakeServer
from tests.fakes.telegram import FakeTelegram, telegram_text_update
from tests.fakes.whatsapp import FakeWhatsApp, whatsapp_headers, whatsapp_text_webhook
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


def test_whatsapp_message_gets_a_reply(stack: Stack) -> None:
    wa_id = "5511900000001"
    stack.ai.reply("Olá! Vamos praticar?")
    body = whatsapp_text_webhook("Oi, quero praticar", wa_id=wa_id, message_id="wamid.E2E1")
    assert stack.post("whatsapp", body, whatsapp_headers(body, stack.wa.app_secret)) == 200
    stack.wait_status("whatsapp:wamid.E2E1", "done")
    assert stack.wa.texts_to(wa_id) == ["Olá! Vamos praticar?"]
    assert any(r["message_id"] == "wamid.E2E1" for r in stack.wa.read_receipts)


def test_triple_delivery_one_reply(stack: Stack) -> None:
    wa_id = "5511900000002"
    body = whatsapp_text_webhook("Again and again", wa_id=wa_id, message_id="wamid.E2E2")
    headers = whatsapp_headers(body, stack.wa.app_secret)
    assert [stack.post("whatsapp", body, headers) for _ in range(3)] == [200, 200, 200]
    stack.wait_status("whatsapp:wamid.E2E2", "done")
    assert stack.post("whatsapp", body, headers) == 200  # after processing, still one reply
    time.sleep(0.5)
    assert len(stack.wa.texts_to(wa_id)) == 1


def test_telegram_429_then_success(stack: Stack) -> None:
    stack.tg.fail_next(429, retry_after=5, count=1)  # too long for an in-call retry
    stack.ai.reply("Hello Kenji!")
    body = telegram_text_update("Hello", update_id=610001, chat_id=61001)
    assert stack.post("telegram", body, stack.tg.headers()) == 200
    stack.wait_status("telegram:610001", "done", timeout=20)
    assert stack.tg.texts_to(61001) == ["Hello Kenji!"]
    sends = [r for r in stack.tg.server.recorded("/sendMessage") if r.json()["chat_id"] == 61001]
    assert len(sends) == 2  # the 429, then the retry from the inbox


def test_permanent_error_is_dead_lettered(stack: Stack) -> None:
    wa_id = "5511900000003"
    stack.wa.closed_windows.add(wa_id)
    try:
        body = whatsapp_text_webhook("late", wa_id=wa_id, message_id="wamid.E2E3")
        assert stack.post("whatsapp", body, whatsapp_headers(body, stack.wa.app_secret)) == 200
        error = stack.wait_status("whatsapp:wamid.E2E3", "dead")
    finally:
        stack.wa.closed_windows.discard(wa_id)
    assert error and "131047" in error
    assert stack.wa.texts_to(wa_id) == []


def test_long_reply_is_split(stack: Stack) -> None:
    long_text = " ".join(f"Sentence number {n} is here." for n in range(400))  # ~11k chars
    stack.ai.reply(long_text)
    body = telegram_text_update("Tell me a story", update_id=610002, chat_id=61002)
    assert stack.post("telegram", body, stack.tg.headers()) == 200
    stack.wait_status("telegram:610002", "done")
    parts = stack.tg.texts_to(61002)
    assert len(parts) == 3 and all(len(p) <= 4096 for p in parts)
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
