"""The corpus (tests/corpus) through the whole service: each body signed and posted as its
platform would, stored, claimed, answered through the fake OpenAI and delivered to the fake
platform. A case with a reply must get exactly that reply, where it belongs (the learner, the
group, its topic, quoting the learner); a silent one must produce no send and no model call."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from languagebuddy.channels.line import LineChannel
from languagebuddy.channels.telegram import TelegramChannel
from languagebuddy.channels.whatsapp import WhatsAppChannel
from languagebuddy.config import Settings, load_settings
from languagebuddy.tutor.phrases import PHRASES, phrase, problem_phrase
from tests.corpus import CONTENT_HOST, Case, case_id
from tests.corpus import line as line_corpus
from tests.corpus import telegram as telegram_corpus
from tests.corpus import whatsapp as whatsapp_corpus
from tests.fakes.content_host import FakeContentHost
from tests.fakes.line import FakeLine, line_headers
from tests.fakes.openai import FakeOpenAI, has_image, last_user_text
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = tmp_path_factory.mktemp("corpus") / "lb.db"
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
        )
        with running_service(config, run_worker=True) as service:
            yield Stack(service, config, db, wa, tg, line, ai, host)


def _jpeg(width: int = 900, height: int = 600) -> bytes:
    im = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((640, 480)).save(buf, "PNG")
    return buf.getvalue()


FILES = {"photo": (_jpeg(), "image/jpeg"), "png": (_png(), "image/png")}


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


def _subset(request: dict[str, Any], expected: dict[str, Any]) -> bool:
    return all(request.get(key) == value for key, value in expected.items())


def _wait_done(db: Path, keys: list[str], timeout: float = 20.0) -> None:
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


CASES = [
    (name, case)
    for name, cases in (
        ("whatsapp", whatsapp_corpus.CASES),
        ("telegram", telegram_corpus.CASES),
        ("line", line_corpus.CASES),
    )
    for case in cases
    if case.stack
]


@pytest.mark.parametrize(("platform", "case"), CASES, ids=[f"{p}-{case_id(c)}" for p, c in CASES])
def test_corpus_case_through_the_stack(stack: Stack, platform: str, case: Case) -> None:
    stack.ai.reset()
    driver = Platform(platform, stack)
    driver.host(case)
    keys = driver.dedupe_keys(case)
    mark = driver.mark()
    for body in case.bodies:
        raw, headers = driver.signed(body)
        for _ in range(case.deliveries):
            response = httpx.post(
                f"{stack.service.base_url}/webhooks/{platform}", content=raw, headers=headers
            )
            assert response.status_code == 200, response.text
    if keys:
        _wait_done(stack.db, keys)
    sent = driver.sends_since(mark)
    chats = stack.ai.chat_bodies()

    if case.reply is None:
        assert sent == [] and chats == []
        return
    reply = case.reply
    mine = [s for s in sent if _subset(s, reply.to)]
    assert len(mine) == 1, (reply.to, sent)
    text = mine[0]["_text"]
    if reply.phrase is not None:
        expected = (
            phrase(reply.phrase, reply.lang)
            if reply.phrase in PHRASES and not reply.phrase.startswith("image_")
            else problem_phrase(reply.phrase, reply.lang)
        )
        assert text == expected
        assert chats == []  # a fixed phrase: no model call
        return
    [request] = [c for c in chats if all(w in last_user_text(c) for w in reply.sees)]
    images = sum(
        1
        for message in request["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    )
    assert images == reply.images and has_image(request) == bool(reply.images)
    assert all(w in text for w in reply.sees if len(w) < 150)  # the fake quotes the learner


def test_external_content_is_fetched_from_its_url_without_the_line_token(stack: Stack) -> None:
    """After the corpus case: the content host saw the GET, and no Authorization header."""
    [case] = [c for c in line_corpus.CASES if c.name == "image_from_an_external_provider"]
    stack.ai.reset()
    driver = Platform("line", stack)
    driver.host(case)
    before = len(stack.host.fetched("original-6.jpg"))
    body = json.loads(json.dumps(case.bodies[0]).replace("01JDX006", "01JDY006"))
    body["events"][0]["replyToken"] = "fresh-token-for-the-external-check"
    raw, headers = driver.signed(body)
    assert httpx.post(f"{stack.service.base_url}/webhooks/line", content=raw, headers=headers)
    _wait_done(stack.db, driver.dedupe_keys(Case("x", (body,), ())))
    fetched = stack.host.fetched("original-6.jpg")[before:]
    assert len(fetched) == 1
    assert "authorization" not in fetched[0].headers
    assert stack.line.access_token not in json.dumps(fetched[0].headers)
    assert stack.host.fetched("preview-6.jpg") == []  # the original, not the preview
