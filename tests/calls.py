"""What the end-to-end call tests share, whatever the provider: the service's database read
back, a learner who first wrote on WhatsApp, and the fake Realtime session of a call. Each
provider's stack (test_calls_telnyx, test_calls_vonage) adds its fake carrier."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from languagebuddy.config import load_settings
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import FakeServer
from tests.fakes.whatsapp import FakeWhatsApp, whatsapp_headers, whatsapp_text_webhook
from tests.service import free_port, running_service


@dataclass
class CallStack:
    """The running service (SQLite) with the fake OpenAI and WhatsApp around it."""

    service: FakeServer
    db: Path
    ai: FakeOpenAI
    wa: FakeWhatsApp

    @property
    def services(self) -> Any:
        return self.service._app.app.state.services

    def query(self, sql: str, *args: object) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, args).fetchall()

    def wait_row(self, sql: str, *args: object, timeout: float = 10.0) -> tuple:
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = self.query(sql, *args)
            if rows:
                return rows[0]
            time.sleep(0.05)
        raise AssertionError(f"no row for {sql} {args}")

    def finished_call(self, provider: str, provider_call_id: str, timeout: float = 10.0) -> dict:
        """The call's row once its memory is saved (the call is over on our side)."""
        deadline = time.time() + timeout
        while True:
            with sqlite3.connect(self.db) as conn:
                conn.row_factory = sqlite3.Row
                row = conn.execute(
                    "SELECT * FROM calls WHERE provider = ? AND provider_call_id = ?",
                    (provider, provider_call_id),
                ).fetchone()
            if row is not None and row["memory_saved_at"] is not None:
                return dict(row)
            if time.time() > deadline:
                raise AssertionError(f"call not finished: {dict(row) if row else None}")
            time.sleep(0.05)


@contextmanager
def call_service(
    tmp: Path, carrier: dict[str, Any], **overrides: object
) -> Iterator[tuple[FakeServer, Path, FakeOpenAI, FakeWhatsApp]]:
    """The service with its worker on a SQLite file in ``tmp``, configured for a fake carrier
    (``carrier``: its settings) beside the fake OpenAI and WhatsApp: (service, db, ai, wa)."""
    db = tmp / "lb.db"
    port = free_port()
    with FakeOpenAI() as ai, FakeWhatsApp() as wa:
        config = load_settings(
            database_url=f"sqlite+aiosqlite:///{db}",
            public_base_url=f"http://127.0.0.1:{port}",
            openai_api_key=ai.api_key,
            openai_base_url=ai.base_url,
            openai_max_retries=0,
            worker_concurrency=2,
            realtime_connect_timeout=5,
            **carrier,
            **wa.settings(),
            **overrides,
        )
        with running_service(config, run_worker=True, port=port) as service:
            yield service, db, ai, wa


def whatsapp_learner(stack: CallStack, phone: str, name: str = "Ana") -> int:
    """A learner who first wrote on WhatsApp from ``phone`` (and got an answer)."""
    wa_id = phone.lstrip("+")
    body = whatsapp_text_webhook("Hola, quiero practicar", wa_id=wa_id, name=name)
    response = httpx.post(
        f"{stack.service.base_url}/webhooks/whatsapp",
        content=body,
        headers=whatsapp_headers(body, stack.wa.app_secret),
    )
    assert response.status_code == 200
    deadline = time.time() + 10
    while not stack.wa.texts_to(wa_id):
        assert time.time() < deadline, "the WhatsApp message was never answered"
        time.sleep(0.05)
    return stack.wait_row("SELECT id FROM learners WHERE phone_e164 = ?", phone)[0]


def onboarded(stack: CallStack, learner_id: int, language: str = "es", level: str = "A2") -> None:
    with sqlite3.connect(stack.db) as conn:
        conn.execute(
            "UPDATE learners SET target_language = ?, level = ?, native_language = 'en' "
            "WHERE id = ?",
            (language, level, learner_id),
        )


def first_session(stack: CallStack):  # type: ignore[no-untyped-def]
    realtime = stack.ai.realtime
    return realtime.wait_for(lambda: realtime.sessions and realtime.sessions[0])


def assistant_items(session):  # type: ignore[no-untyped-def]
    return [i for i in list(session.items.values()) if i.role == "assistant"]
