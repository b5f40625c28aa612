"""The webhook routes of the real app (uvicorn on 127.0.0.1), deliveries signed as the
platforms sign them, and the inbox table checked directly."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from languagebuddy.config import load_settings
from tests.fakes.line import FakeLine, line_body, line_event, line_headers, line_text_webhook
from tests.fakes.server import FakeServer
from tests.fakes.telegram import FakeTelegram, telegram_body, telegram_text_update, telegram_update
from tests.fakes.whatsapp import (
    FakeWhatsApp,
    sign_whatsapp,
    whatsapp_headers,
    whatsapp_message,
    whatsapp_messages_webhook,
    whatsapp_status_webhook,
    whatsapp_text_webhook,
)
from tests.service import running_service

MiB = 1024 * 1024


@dataclass
class Stack:
    service: FakeServer
    db: Path
    wa: FakeWhatsApp
    tg: FakeTelegram
    line: FakeLine

    def url(self, path: str) -> str:
        return f"{self.service.base_url}{path}"

    def rows(self) -> list[tuple[str, str, dict[str, Any]]]:
        with sqlite3.connect(self.db) as conn:
            found = conn.execute("SELECT dedupe_key, channel, payload FROM inbox ORDER BY id")
            return [(key, channel, json.loads(payload)) for key, channel, payload in found]

    def count(self) -> int:
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT count(*) FROM inbox").fetchone()[0]

    def signed(self, channel: str, body: bytes) -> dict[str, str]:
        if channel == "whatsapp":
            return whatsapp_headers(body, self.wa.app_secret)
        if channel == "telegram":
            return self.tg.headers()
        return line_headers(body, self.line.channel_secret)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = tmp_path_factory.mktemp("webhooks") / "lb.db"
    with FakeWhatsApp() as wa, FakeTelegram() as tg, FakeLine() as line:
        config = load_settings(
            database_url=f"sqlite+aiosqlite:///{db}",
            **wa.settings(),
            **tg.settings(),
            **line.settings(),
        )
        with running_service(config, run_worker=False) as service:
            yield Stack(service, db, wa, tg, line)


def post(
    stack: Stack, channel: str, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(stack.url(f"/webhooks/{channel}"), content=body, headers=headers or {})


# --- WhatsApp subscription ------------------------------------------------------------------


def test_whatsapp_hub_challenge(stack: Stack) -> None:
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": stack.wa.verify_token,
        "hub.challenge": "1158201444",
    }
    ok = httpx.get(stack.url("/webhooks/whatsapp"), params=params)
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert ok.headers["content-type"].startswith("text/plain")
    wrong = httpx.get(
        stack.url("/webhooks/whatsapp"), params={**params, "hub.verify_token": "guess"}
    )
    assert wrong.status_code == 403 and "1158201444" not in wrong.text
    assert httpx.get(stack.url("/webhooks/whatsapp")).status_code == 403


# --- accepted deliveries ----------------------------------------------------------------------


def test_whatsapp_signed_message_is_stored(stack: Stack) -> None:
    body = whatsapp_text_webhook("Olá! Ça va? / 😀", message_id="wamid.STORE1")
    response = post(stack, "whatsapp", body, stack.signed("whatsapp", body))
    assert response.status_code == 200
    [(_key, channel, payload)] = [r for r in stack.rows() if r[0] == "whatsapp:wamid.STORE1"]
    assert channel == "whatsapp"
    assert payload["text"] == "Olá! Ça va? / 😀" and payload["phone_e164"] == "+5511987654321"
    assert payload["kind"] == "text" and payload["user_id"] == "5511987654321"


def test_whatsapp_status_callback_is_stored_as_status(stack: Stack) -> None:
    body = whatsapp_status_webhook("wamid.OUT9", "read")
    assert post(stack, "whatsapp", body, stack.signed("whatsapp", body)).status_code == 200
    [row] = [r for r in stack.rows() if r[0] == "whatsapp:status:wamid.OUT9:read"]
    assert row[2]["kind"] == "status" and row[2]["status"] == "read"


def test_several_events_in_one_webhook(stack: Stack) -> None:
    messages = [
        whatsapp_message("text", {"body": f"m{n}"}, message_id=f"wamid.MULTI{n}") for n in range(3)
    ]
    body = whatsapp_messages_webhook(messages)
    response = post(stack, "whatsapp", body, stack.signed("whatsapp", body))
    assert response.status_code == 200 and response.json()["new"] == 3
    keys = {r[0] for r in stack.rows()}
    assert {f"whatsapp:wamid.MULTI{n}" for n in range(3)} <= keys


def test_telegram_signed_update_is_stored(stack: Stack) -> None:
    body = telegram_text_update("こんにちは", update_id=500001, chat_id=4242)
    assert post(stack, "telegram", body, stack.signed("telegram", body)).status_code == 200
    [row] = [r for r in stack.rows() if r[0] == "telegram:500001"]
    assert row[2]["user_id"] == "4242" and row[2]["language_hint"] == "ja"


def test_line_signed_event_is_stored_and_console_check_answers(stack: Stack) -> None:
    body = line_text_webhook("やあ", webhook_event_id="01JSTORED")
    assert post(stack, "line", body, stack.signed("line", body)).status_code == 200
    [row] = [r for r in stack.rows() if r[0] == "line:01JSTORED"]
    assert row[2]["reply_token"] and row[2]["text"] == "やあ"
    before = stack.count()
    empty = b'{"destination":"U0123456789abcdef0123456789abcdef","events":[]}'
    assert post(stack, "line", empty, stack.signed("line", empty)).status_code == 200
    follow = line_body([line_event(None, kind="follow")])
    assert post(stack, "line", follow, stack.signed("line", follow)).status_code == 200
    assert stack.count() == before


@pytest.mark.parametrize("channel", ["whatsapp", "telegram", "line"])
def test_triple_delivery_stores_once(stack: Stack, channel: str) -> None:
    body = {
        "whatsapp": lambda: whatsapp_text_webhook("again", message_id="wamid.TRIPLE"),
        "telegram": lambda: telegram_text_update("again", update_id=700007),
        "line": lambda: line_body(
            [
                line_event(
                    {"id": "1", "type": "text", "text": "x"},
                    webhook_event_id="01JTRIPLE",
                    redelivery=True,
                )
            ]
        ),
    }[channel]()
    headers = stack.signed(channel, body)

    async def deliver_concurrently() -> list[int]:
        async with httpx.AsyncClient() as client:
            url = stack.url(f"/webhooks/{channel}")
            sent = await asyncio.gather(
                *(client.post(url, content=body, headers=headers) for _ in range(3))
            )
            return [r.status_code for r in sent]

    before = stack.count()
    assert asyncio.run(deliver_concurrently()) == [200, 200, 200]
    assert post(stack, channel, body, headers).status_code == 200
    assert stack.count() == before + 1


# --- refused deliveries -----------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["whatsapp", "telegram", "line"])
def test_bad_or_missing_signature_is_refused_and_nothing_stored(stack: Stack, channel: str) -> None:
    body = {
        "whatsapp": whatsapp_text_webhook("forged", message_id="wamid.FORGED"),
        "telegram": telegram_text_update("forged", update_id=800008),
        "line": line_text_webhook("forged", webhook_event_id="01JFORGED"),
    }[channel]
    wrong = {
        "whatsapp": {"X-Hub-Signature-256": sign_whatsapp(body, "not-the-secret")},
        "telegram": {"X-Telegram-Bot-Api-Secret-Token": "not-the-secret"},
        "line": line_headers(body, "not-the-secret"),
    }[channel]
    before = stack.count()
    assert post(stack, channel, body).status_code == 401
    assert post(stack, channel, body, wrong).status_code == 403
    tampered = body.replace(b"forged", b"FORGED")
    assert post(stack, channel, tampered, stack.signed(channel, body)).status_code in (
        (200,) if channel == "telegram" else (403,)  # Telegram signs nothing but the secret
    )
    if channel != "telegram":
        assert stack.count() == before


@pytest.mark.parametrize("channel", ["whatsapp", "telegram", "line"])
def test_oversized_body_is_413(stack: Stack, channel: str) -> None:
    body = b'{"pad":"' + b"x" * MiB + b'"}'
    before = stack.count()
    assert post(stack, channel, body, stack.signed(channel, body)).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the actual size must be counted
        for _ in range(5):
            yield b"x" * (MiB // 4)

    streamed = httpx.post(
        stack.url(f"/webhooks/{channel}"), content=chunks(), headers=stack.signed(channel, body)
    )
    assert streamed.status_code == 413
    assert stack.count() == before


@pytest.mark.parametrize("channel", ["whatsapp", "telegram", "line"])
@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b"", b'{"entry": 5, "events": 5}'])
def test_malformed_but_signed_is_400(stack: Stack, channel: str, body: bytes) -> None:
    assert post(stack, channel, body, stack.signed(channel, body)).status_code == 400


def test_telegram_update_without_message_is_acknowledged(stack: Stack) -> None:
    sender = {"id": 7, "is_bot": False, "first_name": "A"}
    callback = {"id": "4382", "from": sender, "chat_instance": "-53", "data": "x"}
    body = telegram_body({"update_id": 900009, "callback_query": callback})
    before = stack.count()
    assert post(stack, "telegram", body, stack.signed("telegram", body)).status_code == 200
    assert stack.count() == before


def test_disabled_channels_answer_404(tmp_path: Path) -> None:
    config = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'none.db'}")
    with running_service(config, run_worker=False) as service:
        for channel in ("whatsapp", "telegram", "line"):
            assert (
                httpx.post(f"{service.base_url}/webhooks/{channel}", content=b"{}").status_code
                == 404
            )
        assert httpx.get(f"{service.base_url}/webhooks/whatsapp").status_code == 404


def test_webhook_metrics(stack: Stack) -> None:
    text = httpx.get(stack.url("/metrics")).text
    assert 'lb_webhooks_total{channel="whatsapp",outcome="accepted"}' in text


# --- arbitrary input never breaks a route -----------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
shaped = st.sampled_from(
    [
        lambda v: {"object": "whatsapp_business_account", "entry": v},
        lambda v: {
            "object": "whatsapp_business_account",
            "entry": [{"changes": [{"field": "messages", "value": v}]}],
        },
        lambda v: {
            "entry": [
                {"changes": [{"field": "messages", "value": {"messages": [v], "contacts": v}}]}
            ]
        },
        lambda v: {"update_id": 1, "message": v},
        lambda v: telegram_update({"text": v, "photo": v, "document": v}),
        lambda v: {"events": v},
        lambda v: {"events": [{"type": "message", "source": v, "message": v}]},
        lambda v: {"events": [line_event({"id": v, "type": "audio", "duration": v})]},
        lambda v: v,
    ]
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda shape, v: json.dumps(shape(v)).encode(), shaped, json_values),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(channel=st.sampled_from(["whatsapp", "telegram", "line"]), body=bodies, sign=st.booleans())
def test_arbitrary_bodies_never_5xx(stack: Stack, channel: str, body: bytes, sign: bool) -> None:
    before = stack.count()
    headers = (
        stack.signed(channel, body)
        if sign
        else {"X-Hub-Signature-256": "sha256=00", "X-Line-Signature": "AA=="}
    )
    response = post(stack, channel, body, headers)
    assert response.status_code < 500
    if sign:
        assert response.status_code in (200, 400)
    else:
        assert response.status_code in (401, 403)
    if response.status_code != 200:
        assert stack.count() == before


def test_concurrent_redeliveries_store_once_on_postgres(postgres_url: str) -> None:
    """The dedupe happens in the insert itself, so racing deliveries on PostgreSQL store one."""
    from sqlalchemy import text

    from languagebuddy.store.db import make_engine
    from languagebuddy.store.migrate import upgrade
    from tests.conftest import _reset_postgres

    async def prepare() -> None:
        await _reset_postgres(postgres_url)
        await upgrade(postgres_url)

    async def rows() -> list[str]:
        engine = make_engine(postgres_url)
        async with engine.connect() as conn:
            found = await conn.execute(text("SELECT dedupe_key FROM inbox"))
            keys = [row[0] for row in found]
        await engine.dispose()
        return keys

    asyncio.run(prepare())
    with FakeTelegram() as tg:
        config = load_settings(database_url=postgres_url, **tg.settings())
        with running_service(config, run_worker=False) as service:
            body = telegram_text_update("race", update_id=424242)

            async def deliver() -> list[int]:
                async with httpx.AsyncClient() as client:
                    url = f"{service.base_url}/webhooks/telegram"
                    sent = await asyncio.gather(
                        *(client.post(url, content=body, headers=tg.headers()) for _ in range(8))
                    )
                    return [r.status_code for r in sent]

            assert asyncio.run(deliver()) == [200] * 8
    assert asyncio.run(rows()) == ["telegram:424242"]
