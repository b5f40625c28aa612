"""The service with every messaging fake around it, and a driver per platform: host media,
sign bodies as the platform does, and read back what the platform was sent. Shared by the
corpus run (test_corpus_stack) and the traffic behaviour tests (test_channel_traffic)."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from languagebuddy.channels.line import LineChannel
from languagebuddy.channels.telegram import TelegramChannel
from languagebuddy.channels.whatsapp import WhatsAppChannel
from languagebuddy.config import Settings, load_settings
from tests.corpus import CONTENT_HOST, Case
from tests.corpus import whatsapp as whatsapp_corpus
from tests.fakes.content_host import FakeContentHost
from tests.fakes.line import FakeLine, line_headers
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import FakeServer
from tests.fakes.telegram import FakeTelegram
from tests.fakes.whatsapp import FakeWhatsApp, meta_json, whatsapp_headers
from tests.service import running_service

WINDOW = 0.3  # LB_PHOTO_SET_WINDOW_SECONDS here: a burst of photos is collected this long


@dataclass
class Stack:
    service: FakeServer
    config: Settings
    db: Path
    wa: FakeWhatsApp
    tg: FakeTelegram
    line: FakeLine
    ai: FakeOpenAI
    host: FakeContentHost


@contextmanager
def running_stack(workdir: Path, **overrides: Any) -> Iterator[Stack]:
    """The service (with its worker) on SQLite in ``workdir``, pointed at every fake."""
    db = workdir / "lb.db"
    with (
        FakeWhatsApp(phone_number_id=whatsapp_corpus.PHONE_NUMBER_ID) as wa,
        FakeTelegram() as tg,
        FakeLine() as line,
        FakeOpenAI() as ai,
        FakeContentHost() as host,
    ):
        config = load_settings(
            database_url=f"sqlite+aiosqlite:///{db}",
            openai_api_key=ai.api_key,
            openai_base_url=ai.base_url,
            openai_max_retries=0,
            retry_base_seconds=0.2,
            max_attempts=2,
            worker_concurrency=2,
            photo_set_window_seconds=WINDOW,
            external_media_http_hosts=host.netloc,  # plain http to this host only
            **wa.settings(),
            **tg.settings(),
            **line.settings(),
            **overrides,
        )
        with running_service(config, run_worker=True) as service:
            yield Stack(service, config, db, wa, tg, line, ai, host)


def jpeg(width: int = 900, height: int = 600) -> bytes:
    im = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def png() -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((640, 480)).save(buf, "PNG")
    return buf.getvalue()


FILES = {"photo": (jpeg(), "image/jpeg"), "png": (png(), "image/png")}


class Platform:
    """How the stack test drives one platform: host media, sign, and read what was sent."""

    def __init__(self, name: str, stack: Stack) -> None:
        self.name, self.stack = name, stack

    def host(self, case: Case) -> None:
        for media_id, kind in case.media.items():
            data, mime = FILES[kind]
            if self.name == "whatsapp":
                self.stack.wa.add_media(data, mime, media_id=media_id)
            elif self.name == "telegram":
                self.stack.tg.add_file(data, mime, kind="photos", file_id=media_id)
            else:
                self.stack.line.add_content(data, mime, message_id=media_id)
        for name, kind in case.external.items():
            self.stack.host.add(name, *FILES[kind])

    def signed(self, body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        if self.name == "whatsapp":
            raw = meta_json(body)
            return raw, whatsapp_headers(raw, self.stack.wa.app_secret)
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        if self.name == "telegram":
            return text.encode(), self.stack.tg.headers()
        raw = text.replace(CONTENT_HOST, self.stack.host.server.base_url).encode()
        for event in body.get("events", []):
            token, source = event.get("replyToken"), event.get("source", {})
            chat = source.get("groupId") or source.get("roomId") or source.get("userId")
            if token and chat and token not in self.stack.line.reply_tokens:
                self.stack.line.issue_reply_token(chat, token=token)
        return raw, line_headers(raw, self.stack.line.channel_secret)

    def dedupe_keys(self, case: Case) -> list[str]:
        channel = {"whatsapp": WhatsAppChannel, "telegram": TelegramChannel, "line": LineChannel}
        parser = channel[self.name](self.stack.config)
        return [e.dedupe_key for body in case.bodies for e in parser.parse(self.signed(body)[0])]

    def mark(self) -> tuple[int, ...]:
        """Where the fake's records stand now, for ``sends_since``."""
        if self.name == "whatsapp":
            return (len(self.stack.wa.sent),)
        if self.name == "telegram":
            return (len(self.stack.tg.sent),)
        return (len(self.stack.line.replies), len(self.stack.line.pushes))

    def sends_since(self, mark: tuple[int, ...]) -> list[dict[str, Any]]:
        """Every text message the platform accepted since ``mark``: request fields + ``_text``."""
        if self.name == "whatsapp":
            return [
                {**m, "_text": m["text"]["body"]}
                for m in self.stack.wa.sent[mark[0] :]
                if m["type"] == "text"
            ]
        if self.name == "telegram":
            return [{**m, "_text": m["text"]} for m in self.stack.tg.sent[mark[0] :] if "text" in m]
        calls = [*self.stack.line.replies[mark[0] :], *self.stack.line.pushes[mark[1] :]]
        return [
            {**call, "_text": message["text"], "_quote": message.get("quoteToken")}
            for call in calls
            for message in call["messages"]
            if message["type"] == "text"
        ]


def subset(request: dict[str, Any], expected: dict[str, Any]) -> bool:
    return all(request.get(key) == value for key, value in expected.items())


def wait_done(db: Path, keys: list[str], timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while True:
        with sqlite3.connect(db) as conn:
            marks = ",".join("?" * len(keys))
            rows = conn.execute(
                f"SELECT dedupe_key, status, last_error FROM inbox WHERE dedupe_key IN ({marks})",
                keys,
            ).fetchall()
        states = {key: (status, error) for key, status, error in rows}
        if len(states) == len(set(keys)) and all(s == "done" for s, _ in states.values()):
            return
        if any(s == "dead" for s, _ in states.values()) or time.time() > deadline:
            raise AssertionError(f"not all done: {states}")
        time.sleep(0.03)


def post(stack: Stack, platform: str, body: dict[str, Any], times: int = 1) -> list[str]:
    """Deliver ``body`` signed as the platform does; returns its events' dedupe keys."""
    driver = Platform(platform, stack)
    raw, headers = driver.signed(body)
    for _ in range(times):
        response = httpx.post(
            f"{stack.service.base_url}/webhooks/{platform}", content=raw, headers=headers
        )
        assert response.status_code == 200, response.text
    return driver.dedupe_keys(Case("posted", (body,), ()))


def query(stack: Stack, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(stack.db) as conn:
        return conn.execute(sql, params).fetchall()
