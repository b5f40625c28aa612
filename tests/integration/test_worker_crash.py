"""A worker killed with SIGKILL mid-event loses nothing and duplicates nothing.

Real processes: the webhook is accepted by the running service, a `languagebuddy worker`
subprocess takes the event and is killed while the (fake) model is thinking; a second worker
takes the item over when the lease expires and the learner gets exactly one reply.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from languagebuddy.config import load_settings
from languagebuddy.events import InboundEvent, Kind
from languagebuddy.inbox.queue import Inbox
from languagebuddy.services import build_services, build_worker
from languagebuddy.store.migrate import upgrade
from languagebuddy.store.models import InboxItem, OutboxPart, Turn
from tests.fakes.openai import FakeOpenAI
from tests.fakes.telegram import FakeTelegram, telegram_text_update
from tests.service import running_service

CHAT_ID = 555000111


def _env(fake_ai: FakeOpenAI, telegram: FakeTelegram, db_url: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": db_url,
        "OPENAI_BASE_URL": fake_ai.base_url,
        "OPENAI_API_KEY": fake_ai.api_key,
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_WEBHOOK_SECRET": telegram.webhook_secret,
        "TELEGRAM_API_BASE_URL": telegram.base_url,
        "LB_LEASE_SECONDS": "2",
        "LB_WORKER_CONCURRENCY": "2",
    }


def _worker(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "languagebuddy.cli", "worker"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _state(db_url: str) -> tuple[list[InboxItem], list[Turn]]:
    services = build_services(load_settings(database_url=db_url), with_channels=False)
    try:
        async with services.sessions() as session:
            items = list((await session.execute(select(InboxItem))).scalars())
            turns = list((await session.execute(select(Turn).order_by(Turn.id))).scalars())
        return items, turns
    finally:
        await services.aclose()


def test_sigkill_mid_event_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}"
    with FakeOpenAI() as fake_ai, FakeTelegram() as telegram:
        fake_ai.slow(30.0, text="Primera respuesta que nunca llega.")
        fake_ai.reply("¡Hola Kenji! ¿Practicamos español?")
        env = _env(fake_ai, telegram, db_url)
        settings = load_settings(**{k.lower(): v for k, v in env.items() if k != "PATH"})
        with running_service(settings, run_worker=False) as service:
            accepted = httpx.post(
                f"{service.base_url}/webhooks/telegram",
                content=telegram_text_update("Hola, quiero practicar", chat_id=CHAT_ID),
                headers=telegram.headers(),
            )
            assert accepted.status_code == 200

        first = _worker(env, tmp_path)
        try:
            deadline = time.time() + 30
            while not fake_ai.requests() and time.time() < deadline:
                time.sleep(0.05)
            assert fake_ai.requests(), "the first worker never asked the model"
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()

        second = _worker(env, tmp_path)
        try:
            telegram.server.wait_for("/sendMessage", count=1, timeout=30)
            time.sleep(1.5)  # room for a duplicate to show up, were there one
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)

    assert telegram.texts_to(CHAT_ID) == ["¡Hola Kenji! ¿Practicamos español?"]
    items, turns = asyncio.run(_state(db_url))
    assert [(i.status, i.attempts) for i in items] == [("done", 2)]
    assert [(t.direction, t.text) for t in turns] == [
        ("in", "Hola, quiero practicar"),
        ("out", "¡Hola Kenji! ¿Practicamos español?"),
    ]


async def test_reclaimed_item_with_a_stored_reply_resends_without_asking_the_model(
    tmp_path: Path,
) -> None:
    """The crash window after the reply was stored: the outbox is delivered, the model is not
    called again, and parts already sent are not sent twice."""
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}"
    with FakeOpenAI() as fake_ai, FakeTelegram() as telegram:
        env = _env(fake_ai, telegram, db_url)
        settings = load_settings(**{k.lower(): v for k, v in env.items() if k != "PATH"})
        await upgrade(db_url)
        services = build_services(settings)
        try:
            inbox = Inbox(services.engine)
            event = InboundEvent(
                channel="telegram",
                event_id="77",
                user_id=str(CHAT_ID),
                kind=Kind.TEXT,
                text="hola",
                message_id="42",
            )
            await inbox.put(event)
            async with services.sessions.begin() as session:
                item_id = (await session.execute(select(InboxItem.id))).scalar_one()
                session.add_all(
                    [
                        OutboxPart(
                            inbox_item_id=item_id, seq=0, kind="text", body="uno", sent_at=1.0
                        ),
                        OutboxPart(inbox_item_id=item_id, seq=1, kind="text", body="dos"),
                    ]
                )
            worker = build_worker(services)
            assert await worker.run_until_idle() == 1
        finally:
            await services.aclose()
    assert telegram.texts_to(CHAT_ID) == ["dos"]
    assert fake_ai.requests() == []
