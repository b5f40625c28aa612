"""The photo path end to end, through each channel's fake and the real service.

Signed webhook -> inbox -> worker -> platform download (with the platform's auth) -> checks and
downscaling in memory -> the fake OpenAI's vision request (a ``data:image/jpeg;base64,`` part)
-> the lesson at the fake platform. Every image is a real file that Pillow generates: a textured
photo, a PNG sent as a document, a decompression bomb, a cut-off JPEG, an oversize file and a text
file that claims to be a JPEG. Bad images get the phrase for their problem in the learner's
language, without a model call, and the inbox item ends ``done``.

Also: what the conversation remembers of a photo (its description, never the image), that the
stored rows hold only the image's meta, and that nothing is written to a temporary directory
while a photo is processed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import os
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from languagebuddy.config import Settings, load_settings
from languagebuddy.media.images import (
    IMAGE_NOT_AN_IMAGE,
    IMAGE_TOO_LARGE,
    IMAGE_TOO_MANY_PIXELS,
    IMAGE_TRUNCATED,
)
from languagebuddy.tutor.phrases import PHRASES, problem_phrase
from tests.fakes.line import FakeLine, line_headers, line_image_webhook, line_text_webhook
from tests.fakes.line import new_event_id as new_line_event_id
from tests.fakes.openai import FakeOpenAI, has_image
from tests.fakes.server import FakeServer, RecordedRequest
from tests.fakes.telegram import FakeTelegram, telegram_body, telegram_text_update, telegram_update
from tests.fakes.whatsapp import (
    VERSION,
    FakeWhatsApp,
    new_wamid,
    whatsapp_headers,
    whatsapp_image_webhook,
    whatsapp_message,
    whatsapp_messages_webhook,
    whatsapp_text_webhook,
)
from tests.service import running_service

MAX_SIDE = 2048
MIB = 1024 * 1024
CAPTION = "¿Qué es esto?"
DESCRIPTION = "a red apple on a wooden table next to a cup of coffee"
DATA_URL_PREFIX = "data:image/jpeg;base64,"
META_KEYS = {
    "format",
    "size",
    "width",
    "height",
    "sent_width",
    "sent_height",
    "sent_size",
    "sha256",
}


# --------------------------------------------------------------------------- real images


def encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def photo(width: int, height: int, seed: int = 0, noise: int = 12) -> Image.Image:
    """Something that compresses like a photo: smooth gradients plus sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1
    ).astype(np.int16)
    if noise:
        base = base + rng.integers(-noise, noise, base.shape, dtype=np.int16)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def compressible_png_bomb(width: int, height: int) -> bytes:
    """A genuine, valid 1-bit PNG of ``width`` x ``height`` that is all black: a few KiB."""
    row = b"\x00" + bytes((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def padded(data: bytes, total: int) -> bytes:
    """A valid JPEG followed by junk up to ``total`` bytes: decoders ignore what follows EOI,
    so only a size check can refuse it."""
    return data + bytes(total - len(data))


@pytest.fixture(scope="module")
def real_photo() -> bytes:
    """A 3000x2000 (6 MP) textured JPEG, like a phone camera's."""
    return encode(photo(3000, 2000), "JPEG", quality=88)


@dataclass(frozen=True)
class BadFile:
    data: bytes
    mime: str
    filename: str
    code: str  # the ImageRejected code the learner's reply is for
    as_document: bool  # how a Telegram user would send it (a photo is always Telegram's JPEG)


@pytest.fixture(scope="module")
def bad_files() -> dict[str, BadFile]:
    small = encode(photo(1600, 1200, seed=3), "JPEG", quality=90)
    return {
        # Over the 20 MiB image limit, under the 25 MiB download limit.
        "too_large": BadFile(
            padded(small, 21 * MIB), "image/jpeg", "big.jpg", IMAGE_TOO_LARGE, True
        ),
        # Over the download limit too: may be refused before (or while) downloading.
        "too_large_to_download": BadFile(
            padded(small, 26 * MIB), "image/jpeg", "huge.jpg", IMAGE_TOO_LARGE, True
        ),
        # 48 MP in a few KiB; the limit is 40 MP.
        "bomb": BadFile(
            compressible_png_bomb(8000, 6000), "image/png", "bomb.png", IMAGE_TOO_MANY_PIXELS, True
        ),
        "truncated": BadFile(
            small[: len(small) // 2], "image/jpeg", "cut.jpg", IMAGE_TRUNCATED, False
        ),
        "fake_extension": BadFile(
            b"This is a text file that someone named holiday.jpg\n" * 40,
            "image/jpeg",
            "holiday.jpg",
            IMAGE_NOT_AN_IMAGE,
            True,
        ),
    }


def test_bad_files_are_what_they_claim(bad_files: dict[str, BadFile]) -> None:
    """Guards the inputs: each bad file is bad only in the way its case says."""
    big, huge = bad_files["too_large"].data, bad_files["too_large_to_download"].data
    assert 20 * MIB < len(big) < 25 * MIB < len(huge)
    for data in (big, huge):
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a whole, decodable JPEG: only its size is wrong
    with Image.open(io.BytesIO(bad_files["bomb"].data)) as im:
        assert im.format == "PNG" and im.size[0] * im.size[1] > 40_000_000
    assert len(bad_files["bomb"].data) < 100_000
    with Image.open(io.BytesIO(bad_files["truncated"].data)) as im:
        assert im.format == "JPEG"
        with pytest.raises(OSError):
            im.load()
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(io.BytesIO(bad_files["fake_extension"].data))


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    service: FakeServer
    config: Settings
    db: Path
    wa: FakeWhatsApp
    tg: FakeTelegram
    line: FakeLine
    ai: FakeOpenAI

    def post(self, channel: str, body: bytes, headers: dict[str, str]) -> None:
        response = httpx.post(
            f"{self.service.base_url}/webhooks/{channel}", content=body, headers=headers
        )
        assert response.status_code == 200, response.text

    def inbox(self, dedupe_key: str) -> tuple[str, str | None]:
        with sqlite3.connect(self.db) as conn:
            row = conn.execute(
                "SELECT status, last_error FROM inbox WHERE dedupe_key = ?", (dedupe_key,)
            ).fetchone()
        return row if row else ("missing", None)

    def wait_done(self, dedupe_key: str, timeout: float = 20.0) -> None:
        """Until the item is done; fails at once when it went dead."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, error = self.inbox(dedupe_key)
            if status == "done":
                return
            assert status != "dead", f"{dedupe_key} is dead: {error}"
            time.sleep(0.03)
        raise AssertionError(f"{dedupe_key} never got done: {self.inbox(dedupe_key)}")

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, args).fetchall()

    def learner_id(self, channel: str, user: str) -> int:
        [(learner_id,)] = self.query(
            "SELECT learner_id FROM identities WHERE channel = ? AND channel_user_id = ?",
            channel,
            user,
        )
        return learner_id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = tmp_path_factory.mktemp("vision-e2e") / "lb.db"
    with FakeWhatsApp() as wa, FakeTelegram() as tg, FakeLine() as line, FakeOpenAI() as ai:
        config = load_settings(
            database_url=f"sqlite+aiosqlite:///{db}",
            openai_api_key=ai.api_key,
            openai_base_url=ai.base_url,
            openai_max_retries=0,
            chat_model="gpt-chat-test",
            vision_model="gpt-vision-test",
            image_max_side=MAX_SIDE,
            photo_set_window_seconds=0.2,  # a WhatsApp photo waits this long for a burst
            retry_base_seconds=0.2,
            max_attempts=3,
            worker_concurrency=2,
            **wa.settings(),
            **tg.settings(),
            **line.settings(),
        )
        with running_service(config, run_worker=True) as service:
            yield Stack(service, config, db, wa, tg, line, ai)


@pytest.fixture(autouse=True)
def _reset(stack: Stack) -> None:
    for fake in (stack.wa, stack.tg, stack.line):
        fake.faults.clear()
        fake.server.clear()  # each test sees only the requests it caused
    stack.ai.reset()


# --------------------------------------------------------------------------- channel adapters


@dataclass
class Upload:
    """One image message as sent: its inbox dedupe key and the platform's reference."""

    key: str
    ref: str  # WhatsApp media id, Telegram file_id, LINE message id


_numbers = itertools.count(1)


class Adapter:
    """Registers media at one channel's fake and posts its signed webhooks."""

    name: str
    lang: str  # the learner's native language, saved through the tutor's tool
    captions = True

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.welcomed: set[str] = set()

    def new_user(self) -> str:
        raise NotImplementedError

    def post_text(self, user: str, text: str) -> str:
        raise NotImplementedError

    def post_image(
        self,
        user: str,
        data: bytes,
        *,
        mime: str = "image/jpeg",
        caption: str | None = None,
        filename: str = "photo.jpg",
        as_document: bool = False,
    ) -> Upload:
        raise NotImplementedError

    def texts_to(self, user: str) -> list[str]:
        raise NotImplementedError

    def replies(self, user: str) -> list[str]:
        """What the learner got (after the welcome, for a user made by :meth:`learner`)."""
        texts = self.texts_to(user)
        return texts[1:] if user in self.welcomed else texts

    def check_download(self, upload: Upload) -> None:
        """The bytes were fetched once, the platform's way, with the platform's auth."""
        raise NotImplementedError

    def fetched(self, upload: Upload) -> bool:
        """Whether the file's bytes were requested at all."""
        raise NotImplementedError

    def learner(self) -> str:
        """A new learner whose native language (``lang``) the tutor has saved."""
        user = self.new_user()
        welcome = f"Bem-vindo {user}!"
        self.stack.ai.reply_tools(("set_native_language", {"language": self.lang}), text=welcome)
        self.stack.wait_done(self.post_text(user, "Hola, quiero practicar"))
        assert self.texts_to(user) == [welcome]
        [(native,)] = self.stack.query(
            "SELECT native_language FROM learners WHERE id = ?",
            self.stack.learner_id(self.name, user),
        )
        assert native == self.lang
        self.stack.ai.reset()
        self.welcomed.add(user)
        return user


def _position(server: FakeServer, request: RecordedRequest) -> int:
    return next(n for n, r in enumerate(server.recorded()) if r is request)


class WhatsAppAdapter(Adapter):
    name, lang = "whatsapp", "pt"

    def new_user(self) -> str:
        return f"5511{next(_numbers):09d}"

    def _post(self, body: bytes) -> None:
        self.stack.post("whatsapp", body, whatsapp_headers(body, self.stack.wa.app_secret))

    def post_text(self, user: str, text: str) -> str:
        wamid = new_wamid()
        self._post(whatsapp_text_webhook(text, wa_id=user, message_id=wamid))
        return f"whatsapp:{wamid}"

    def post_image(
        self,
        user: str,
        data: bytes,
        *,
        mime: str = "image/jpeg",
        caption: str | None = None,
        filename: str = "photo.jpg",
        as_document: bool = False,
    ) -> Upload:
        media_id = self.stack.wa.add_media(data, mime)
        wamid = new_wamid()
        if as_document:
            content: dict[str, Any] = {
                "id": media_id,
                "mime_type": mime,
                "sha256": "bm90IGNoZWNrZWQ=",
                "filename": filename,
            }
            if caption is not None:
                content["caption"] = caption
            message = whatsapp_message("document", content, wa_id=user, message_id=wamid)
            body = whatsapp_messages_webhook([message], wa_id=user)
        else:
            body = whatsapp_image_webhook(
                media_id, caption=caption, mime=mime, wa_id=user, message_id=wamid
            )
        self._post(body)
        return Upload(f"whatsapp:{wamid}", media_id)

    def texts_to(self, user: str) -> list[str]:
        return self.stack.wa.texts_to(user)

    def _downloads(self, upload: Upload) -> list[RecordedRequest]:
        return [
            r
            for r in self.stack.wa.server.recorded("/whatsapp_business/attachments/", "GET")
            if f"mid={upload.ref}&" in r.query
        ]

    def check_download(self, upload: Upload) -> None:
        server, bearer = self.stack.wa.server, f"Bearer {self.stack.wa.access_token}"
        [info] = server.recorded(f"/{VERSION}/{upload.ref}", "GET")  # 1: the media URL
        [download] = self._downloads(upload)  # 2: the bytes, from that URL
        assert info.headers["authorization"] == bearer
        assert download.headers["authorization"] == bearer
        assert _position(server, info) < _position(server, download)

    def fetched(self, upload: Upload) -> bool:
        return bool(self._downloads(upload))


class TelegramAdapter(Adapter):
    name, lang = "telegram", "es"

    def new_user(self) -> str:
        return str(7_100_000 + next(_numbers))

    def _post(self, body: bytes) -> None:
        self.stack.post("telegram", body, self.stack.tg.headers())

    def post_text(self, user: str, text: str) -> str:
        update_id = 7_200_000 + next(_numbers)
        self._post(
            telegram_text_update(
                text, update_id=update_id, chat_id=int(user), language_code=self.lang
            )
        )
        return f"telegram:{update_id}"

    def post_fields(self, user: str, fields: dict[str, Any]) -> str:
        """Post a message with these fields (photo sizes, a document…); its dedupe key."""
        update_id = 7_200_000 + next(_numbers)
        update = telegram_update(
            fields, update_id=update_id, chat_id=int(user), language_code=self.lang
        )
        self._post(telegram_body(update))
        return f"telegram:{update_id}"

    def add_photo(self, data: bytes) -> dict[str, Any]:
        """Host one photo size; the PhotoSize object Telegram would list for it."""
        file_id = self.stack.tg.add_file(data, "image/jpeg", kind="photos")
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
        except Exception:
            width, height = 1280, 960
        return {
            "file_id": file_id,
            "file_unique_id": "AQAD" + secrets.token_urlsafe(6),
            "file_size": len(data),
            "width": width,
            "height": height,
        }

    def add_document(
        self, data: bytes, mime: str, filename: str, *, declare_size: bool = True
    ) -> dict[str, Any]:
        file_id = self.stack.tg.add_file(data, mime, kind="documents")
        document = {
            "file_name": filename,
            "mime_type": mime,
            "file_id": file_id,
            "file_unique_id": "AgAD" + secrets.token_urlsafe(6),
        }
        if declare_size:
            document["file_size"] = len(data)
        return document

    def post_image(
        self,
        user: str,
        data: bytes,
        *,
        mime: str = "image/jpeg",
        caption: str | None = None,
        filename: str = "photo.jpg",
        as_document: bool = False,
    ) -> Upload:
        fields: dict[str, Any]
        if as_document:
            document = self.add_document(data, mime, filename)
            fields, ref = {"document": document}, document["file_id"]
        else:
            # As Telegram lists a photo: a thumbnail first, then the full size.
            thumbnail = self.add_photo(encode(photo(320, 213, seed=9), "JPEG"))
            full = self.add_photo(data)
            fields, ref = {"photo": [thumbnail, full]}, full["file_id"]
        if caption is not None:
            fields["caption"] = caption
        return Upload(self.post_fields(user, fields), ref)

    def texts_to(self, user: str) -> list[str]:
        return self.stack.tg.texts_to(user)

    def get_file_ids(self) -> list[str]:
        path = f"/bot{self.stack.tg.token}/getFile"
        return [r.json()["file_id"] for r in self.stack.tg.server.recorded(path, "POST")]

    def _downloads(self, upload: Upload) -> list[RecordedRequest]:
        path = self.stack.tg.files[upload.ref][2]
        return self.stack.tg.server.recorded(f"/file/bot{self.stack.tg.token}/{path}", "GET")

    def check_download(self, upload: Upload) -> None:
        server = self.stack.tg.server
        [get_file] = [
            r
            for r in server.recorded(f"/bot{self.stack.tg.token}/getFile", "POST")
            if r.json() == {"file_id": upload.ref}
        ]
        assert self.get_file_ids() == [upload.ref]  # only the chosen size, never the thumbnail
        [download] = self._downloads(upload)
        assert _position(server, get_file) < _position(server, download)

    def fetched(self, upload: Upload) -> bool:
        return bool(self._downloads(upload))


class LineAdapter(Adapter):
    name, lang = "line", "ja"
    captions = False  # LINE image messages carry no text

    def new_user(self) -> str:
        return f"U{next(_numbers):032x}"

    def _post(self, body: bytes) -> None:
        self.stack.post("line", body, line_headers(body, self.stack.line.channel_secret))

    def post_text(self, user: str, text: str) -> str:
        event_id = new_line_event_id()
        token = self.stack.line.issue_reply_token(user)
        self._post(
            line_text_webhook(text, user_id=user, reply_token=token, webhook_event_id=event_id)
        )
        return f"line:{event_id}"

    def post_image(
        self,
        user: str,
        data: bytes,
        *,
        mime: str = "image/jpeg",
        caption: str | None = None,
        filename: str = "photo.jpg",
        as_document: bool = False,
    ) -> Upload:
        message_id = self.stack.line.add_content(data, mime)
        event_id = new_line_event_id()
        token = self.stack.line.issue_reply_token(user)
        self._post(
            line_image_webhook(
                message_id, user_id=user, reply_token=token, webhook_event_id=event_id
            )
        )
        return Upload(f"line:{event_id}", message_id)

    def texts_to(self, user: str) -> list[str]:
        return self.stack.line.texts_to(user)

    def check_download(self, upload: Upload) -> None:
        server = self.stack.line.server
        [download] = server.recorded(f"/data/v2/bot/message/{upload.ref}/content", "GET")
        assert download.headers["authorization"] == f"Bearer {self.stack.line.access_token}"
        assert server.recorded(f"/api/v2/bot/message/{upload.ref}") == []  # not the API host

    def fetched(self, upload: Upload) -> bool:
        return bool(self.stack.line.server.recorded(f"/data/v2/bot/message/{upload.ref}/"))


ADAPTERS = {"whatsapp": WhatsAppAdapter, "telegram": TelegramAdapter, "line": LineAdapter}


@pytest.fixture(params=list(ADAPTERS))
def channel(request: pytest.FixtureRequest, stack: Stack) -> Adapter:
    return ADAPTERS[request.param](stack)


@pytest.fixture
def telegram(stack: Stack) -> TelegramAdapter:
    return TelegramAdapter(stack)


# --------------------------------------------------------------------------- helpers


@dataclass
class VisionRequest:
    body: dict[str, Any]
    text: str
    url: str
    jpeg: bytes
    image: Image.Image = field(repr=False)


def vision_request(ai: FakeOpenAI) -> VisionRequest:
    """The one chat request that carried an image, decoded."""
    [body] = [b for b in ai.chat_bodies() if has_image(b)]
    content = body["messages"][-1]["content"]
    assert body["messages"][-1]["role"] == "user" and isinstance(content, list)
    [text] = [p["text"] for p in content if p["type"] == "text"]
    [url] = [p["image_url"]["url"] for p in content if p["type"] == "image_url"]
    assert url.startswith(DATA_URL_PREFIX)
    jpeg = base64.b64decode(url.removeprefix(DATA_URL_PREFIX), validate=True)
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return VisionRequest(body, text, url, jpeg, image)


def script_lesson(ai: FakeOpenAI, lesson: str) -> None:
    """Only a request with an image gets this answer (and records the photo's description)."""
    ai.reply_tools(("describe_image", {"description": DESCRIPTION}), text=lesson, when=has_image)


def send_photo(
    channel: Adapter, user: str, data: bytes, lesson: str, **options: Any
) -> tuple[Upload, VisionRequest]:
    """A photo turn that must end in ``lesson``; the decoded vision request."""
    script_lesson(channel.stack.ai, lesson)
    caption = CAPTION if channel.captions else None
    upload = channel.post_image(user, data, caption=caption, **options)
    channel.stack.wait_done(upload.key)
    assert channel.replies(user)[-1] == lesson
    return upload, vision_request(channel.stack.ai)


# --------------------------------------------------------------------------- 1. a real photo


def test_photo_becomes_a_lesson(stack: Stack, channel: Adapter, real_photo: bytes) -> None:
    user = channel.new_user()
    lesson = f"¡Es una manzana! 🍎 «la manzana» = the apple ({channel.name})"
    script_lesson(stack.ai, lesson)
    upload = channel.post_image(user, real_photo, caption=CAPTION if channel.captions else None)
    stack.wait_done(upload.key)

    assert channel.replies(user) == [lesson]  # to the right learner, once
    channel.check_download(upload)
    sent = vision_request(stack.ai)
    assert sent.body["model"] == stack.config.vision_model
    assert sent.image.format == "JPEG" and sent.image.mode == "RGB"
    assert max(sent.image.size) <= stack.config.image_max_side
    assert sent.image.size == (1152, 768)  # the model's rule: long <= 2048, short <= 768
    assert len(sent.jpeg) < len(real_photo) and sent.jpeg != real_photo  # re-encoded
    assert len(sent.jpeg) <= 20 * MIB
    if channel.captions:
        assert sent.text == CAPTION
    else:
        assert sent.text.strip() and CAPTION not in json.dumps(sent.body, ensure_ascii=False)
    # The texture made it through: the gradient runs dark (top left) to light (bottom right).
    rgb = sent.image.convert("RGB")
    top_left, bottom_right = rgb.getpixel((20, 20)), rgb.getpixel((1130, 748))
    assert sum(bottom_right) - sum(top_left) > 400


# --------------------------------------------------------------------------- 2. Telegram


def test_telegram_uses_the_largest_photo_size_within_the_bot_limit(
    stack: Stack, telegram: TelegramAdapter, real_photo: bytes
) -> None:
    user = telegram.new_user()
    thumbnail = telegram.add_photo(encode(photo(320, 213, seed=1), "JPEG"))
    medium = telegram.add_photo(encode(photo(1280, 853, seed=2), "JPEG", quality=90))
    # Listed last and largest, but declared over the 20 MB a bot may download.
    huge = telegram.add_photo(real_photo)
    huge.update(width=6000, height=4000, file_size=25 * MIB)
    lesson = "¡Qué bonita foto!"
    script_lesson(stack.ai, lesson)
    key = telegram.post_fields(user, {"photo": [thumbnail, medium, huge], "caption": CAPTION})
    stack.wait_done(key)

    assert telegram.replies(user) == [lesson]
    assert telegram.get_file_ids() == [medium["file_id"]]
    telegram.check_download(Upload(key, medium["file_id"]))
    sent = vision_request(stack.ai)
    assert sent.image.size == (1152, 768)  # the medium size (1280x853) at the 768 px rule
    assert sent.text == CAPTION


def test_telegram_image_sent_as_a_document_is_a_photo(
    stack: Stack, telegram: TelegramAdapter
) -> None:
    user = telegram.new_user()
    png = encode(photo(2400, 1600, seed=4, noise=0), "PNG")
    lesson = "¡Una imagen PNG muy nítida!"
    upload, sent = send_photo(
        telegram, user, png, lesson, mime="image/png", filename="screenshot.png", as_document=True
    )
    telegram.check_download(upload)
    assert sent.image.format == "JPEG" and sent.image.size == (1152, 768)
    assert sent.text == CAPTION
    [(media,)] = stack.query(
        "SELECT media FROM turns WHERE learner_id = ? AND direction = 'in' AND modality = 'image'",
        stack.learner_id("telegram", user),
    )
    meta = json.loads(media)
    assert meta["format"] == "PNG" and (meta["width"], meta["height"]) == (2400, 1600)


# --------------------------------------------------------------------------- 3. bad images


@pytest.mark.parametrize(
    "case", ["too_large", "too_large_to_download", "bomb", "truncated", "fake_extension"]
)
def test_bad_image_gets_the_friendly_reply(
    stack: Stack, channel: Adapter, bad_files: dict[str, BadFile], case: str
) -> None:
    bad = bad_files[case]
    user = channel.learner()
    expected = problem_phrase(bad.code, channel.lang)
    assert expected == PHRASES[bad.code][channel.lang] != PHRASES[bad.code]["en"]
    upload = channel.post_image(
        user,
        bad.data,
        mime=bad.mime,
        caption=CAPTION if channel.captions else None,
        filename=bad.filename,
        as_document=bad.as_document,
    )
    stack.wait_done(upload.key)  # done, not dead: the learner was answered

    assert channel.replies(user) == [expected]
    assert stack.ai.chat_bodies() == []  # no model call, let alone one with the image
    [(last_error,)] = stack.query("SELECT last_error FROM inbox WHERE dedupe_key = ?", upload.key)
    assert last_error is None

    # Still healthy: it answers probes and the learner's next message.
    assert httpx.get(f"{stack.service.base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{stack.service.base_url}/readyz").status_code == 200
    stack.ai.reply("Tudo bem, vamos continuar!")
    stack.wait_done(channel.post_text(user, "Ok, sem foto então"))
    assert channel.replies(user) == [expected, "Tudo bem, vamos continuar!"]


@pytest.mark.parametrize("name", ["whatsapp", "telegram"])
def test_declared_oversize_is_not_downloaded(
    stack: Stack, bad_files: dict[str, BadFile], name: str
) -> None:
    """WhatsApp's media URL lookup and Telegram's update both state the file size: a file over
    the download limit is refused without fetching its bytes."""
    channel = ADAPTERS[name](stack)
    user = channel.learner()
    bad = bad_files["too_large_to_download"]
    upload = channel.post_image(user, bad.data, mime=bad.mime, as_document=True)
    stack.wait_done(upload.key)
    assert channel.replies(user) == [problem_phrase(IMAGE_TOO_LARGE, channel.lang)]
    assert not channel.fetched(upload)


def test_telegram_undeclared_oversize_is_refused_by_get_file(
    stack: Stack, telegram: TelegramAdapter, bad_files: dict[str, BadFile]
) -> None:
    """A document without file_size: getFile says "file is too big" and nothing is fetched."""
    user = telegram.learner()
    document = telegram.add_document(
        bad_files["too_large"].data, "image/jpeg", "big.jpg", declare_size=False
    )
    key = telegram.post_fields(user, {"document": document})
    stack.wait_done(key)
    assert telegram.replies(user) == [problem_phrase(IMAGE_TOO_LARGE, telegram.lang)]
    assert telegram.get_file_ids() == [document["file_id"]]
    assert not telegram.fetched(Upload(key, document["file_id"]))


# --------------------------------------------------------------------------- 4. memory


def test_later_turn_remembers_the_description_not_the_image(
    stack: Stack, channel: Adapter, real_photo: bytes
) -> None:
    user = channel.new_user()
    lesson = "¡Es una manzana roja! Repite: «la manzana»."
    send_photo(channel, user, real_photo, lesson)
    stack.ai.reset()

    stack.ai.reply("Sí, es roja.")
    stack.wait_done(channel.post_text(user, "¿De qué color es?"))
    assert channel.replies(user)[-1] == "Sí, es roja."
    [body] = stack.ai.chat_bodies()
    assert body["model"] == stack.config.chat_model
    dumped = json.dumps(body, ensure_ascii=False)
    assert not has_image(body)
    assert "image_url" not in dumped and "base64" not in dumped and "data:image" not in dumped
    history = body["messages"][1:-1]
    remembered = [m["content"] for m in history if m["role"] == "user"]
    photo_turns = [c for c in remembered if DESCRIPTION in c]
    assert len(photo_turns) == 1 and isinstance(photo_turns[0], str)
    if channel.captions:
        assert CAPTION in photo_turns[0]
    assert {"role": "assistant", "content": lesson} in history
    assert body["messages"][-1] == {"role": "user", "content": "¿De qué color es?"}


# --------------------------------------------------------------------------- 5. no temp files

_WRITES: list[str] = []
_WATCHING = threading.Event()
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """While watching: any file opened for writing, or temp file/dir made, in any thread (the
    service and the fakes run in threads of this process). Python writing a module's bytecode
    cache is not the product's doing and is ignored."""
    if not _WATCHING.is_set():
        return
    if event == "open":
        path, mode, flags = args
        if "__pycache__" in str(path):
            return
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        ):
            _WRITES.append(f"open {path!r} {mode!r} {flags!r}")
    elif event in ("tempfile.mkstemp", "tempfile.mkdtemp", "os.mkdir", "os.rename"):
        _WRITES.append(f"{event} {args!r}")


sys.addaudithook(_audit)  # cannot be removed, so it is a no-op unless a test is watching


@dataclass
class TempWatch:
    dir: Path
    seen: set[str] = field(default_factory=set)

    def writes(self) -> list[str]:
        return list(_WRITES)


@contextmanager
def watching(private: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TempWatch]:
    """``private`` (empty) becomes ``tempfile.gettempdir()`` and ``$TMPDIR`` (so other processes
    using /tmp cannot disturb the watch) and is polled for any entry, and the audit hook records
    writes anywhere, until the block ends."""
    assert os.listdir(private) == []
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    assert tempfile.gettempdir() == str(private)
    watch = TempWatch(private)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            watch.seen.update(os.listdir(private))
            time.sleep(0.0005)

    poller = threading.Thread(target=poll, name="tempdir-poll", daemon=True)
    _WRITES.clear()
    _WATCHING.set()
    poller.start()
    try:
        yield watch
    finally:
        _WATCHING.clear()
        stop.set()
        poller.join(timeout=5)


@pytest.fixture
def private_tmp(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Path:
    """A fresh directory to watch; the test database lives in another one, outside it."""
    private = tmp_path_factory.mktemp("watched-tmp")
    assert private not in stack.db.parents
    return private


def test_the_write_watch_sees_other_threads(
    private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the guard: a temp file made in another thread is seen by both watches."""

    def make() -> None:
        with tempfile.NamedTemporaryFile() as handle:
            handle.write(b"x")
            handle.flush()
            time.sleep(0.05)

    with watching(private_tmp, monkeypatch) as watch:
        maker = threading.Thread(target=make)
        maker.start()
        maker.join()
    assert any(str(private_tmp) in w for w in watch.writes())
    assert watch.seen


def test_no_file_is_written_while_a_photo_is_processed(
    stack: Stack,
    channel: Adapter,
    real_photo: bytes,
    bad_files: dict[str, BadFile],
    private_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = channel.learner()
    lesson = "¡Muy bien, una foto sin archivos temporales!"
    bad = bad_files["truncated"]
    # From the webhook to the delivered reply, for a good photo and a cut-off one.
    with watching(private_tmp, monkeypatch) as watch:
        _, sent = send_photo(channel, user, real_photo, lesson)
        cut = channel.post_image(user, bad.data, mime=bad.mime, as_document=bad.as_document)
        stack.wait_done(cut.key)
    assert sent.image.size == (1152, 768)  # the photo really went through the pipeline
    assert channel.replies(user)[-1] == problem_phrase(IMAGE_TRUNCATED, channel.lang)
    assert watch.writes() == []
    assert watch.seen == set()
    assert os.listdir(private_tmp) == []


# --------------------------------------------------------------------------- 6. privacy


def test_stored_conversation_keeps_only_the_image_meta(
    stack: Stack, channel: Adapter, real_photo: bytes
) -> None:
    user = channel.new_user()
    lesson = "¡Una manzana! La palabra de hoy: «la manzana»."
    _, sent = send_photo(channel, user, real_photo, lesson)
    rows = stack.query(
        "SELECT direction, modality, text, transcript, media FROM turns "
        "WHERE learner_id = ? ORDER BY id",
        stack.learner_id(channel.name, user),
    )
    photo_turns = [r for r in rows if r[1] == "image"]
    assert len(photo_turns) == 1
    direction, _, text, transcript, media = photo_turns[0]
    assert direction == "in" and transcript is None
    assert text.startswith(f"[photo: {DESCRIPTION}]") and len(text) < 500
    meta = json.loads(media)
    assert set(meta) == META_KEYS
    assert all(isinstance(v, int | str) and len(str(v)) <= 64 for v in meta.values())
    assert meta["sha256"] == hashlib.sha256(real_photo).hexdigest()
    assert (meta["format"], meta["size"]) == ("JPEG", len(real_photo))
    assert (meta["width"], meta["height"]) == (3000, 2000)
    assert (meta["sent_width"], meta["sent_height"], meta["sent_size"]) == (
        1152,
        768,
        len(sent.jpeg),
    )
    assert [r[2] for r in rows if r[0] == "out"][-1] == lesson

    # Nowhere in the database (all tables, WAL included): no image bytes, no base64 of them.
    stored = b"".join(
        p.read_bytes() for p in stack.db.parent.iterdir() if p.name.startswith(stack.db.name)
    )
    assert DESCRIPTION.encode() in stored  # the scan does see what was written
    encoded = sent.url.removeprefix(DATA_URL_PREFIX).encode()
    for needle in (
        b"data:image",
        b";base64,",
        encoded[200:264],
        encoded[-64:],
        sent.jpeg[500:532],
        real_photo[5000:5032],
        base64.b64encode(real_photo)[3000:3064],
    ):
        assert needle not in stored
