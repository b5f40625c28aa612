"""Telegram channel against the protocol-faithful fake: secret, updates, sendMessage, files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from languagebuddy.channels.base import BadPayload, DeliveryError, MediaLimits, VerificationError
from languagebuddy.channels.http import MediaTooLarge, RetryPolicy
from languagebuddy.channels.setup import check_channels, register_telegram
from languagebuddy.channels.telegram import TelegramChannel
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent, Kind, OutboundPart
from tests.fakes.telegram import (
    FakeTelegram,
    telegram_body,
    telegram_photo_update,
    telegram_text_update,
    telegram_update,
    telegram_voice_update,
)

FAST = RetryPolicy(attempts=3, max_wait=2.0, base_delay=0.01)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
def settings(fake: FakeTelegram) -> Settings:
    fake.faults.clear()
    fake.blocked.clear()
    fake.server.clear()
    return Settings(_env_file=None, public_base_url="https://buddy.example.com", **fake.settings())  # type: ignore[call-arg]


@pytest.fixture
async def channel(settings: Settings) -> AsyncIterator[TelegramChannel]:
    ch = TelegramChannel(settings, retry=FAST)
    yield ch
    await ch.aclose()


def event(chat_id: str = "123456789", **kw: object) -> InboundEvent:
    fields: dict[str, object] = {
        "channel": "telegram",
        "event_id": "1",
        "user_id": chat_id,
        "kind": Kind.TEXT,
        "message_id": "42",
        **kw,
    }
    return InboundEvent(**fields)  # type: ignore[arg-type]


def test_verify(channel: TelegramChannel, fake: FakeTelegram) -> None:
    channel.verify(fake.headers(), b"{}")
    with pytest.raises(VerificationError) as missing:
        channel.verify({}, b"{}")
    assert missing.value.status_code == 401
    with pytest.raises(VerificationError) as wrong:
        channel.verify({"X-Telegram-Bot-Api-Secret-Token": "guess"}, b"{}")
    assert wrong.value.status_code == 403


def test_verify_without_secret_refuses(fake: FakeTelegram) -> None:
    settings = Settings(_env_file=None, **{**fake.settings(), "telegram_webhook_secret": None})  # type: ignore[arg-type]
    with pytest.raises(VerificationError):
        TelegramChannel(settings).verify({"X-Telegram-Bot-Api-Secret-Token": ""}, b"{}")


def test_parse_text(channel: TelegramChannel) -> None:
    [ev] = channel.parse(
        telegram_text_update("こんにちは", update_id=777, chat_id=55, first_name="Kenji")
    )
    assert (ev.kind, ev.text, ev.event_id, ev.user_id) == (Kind.TEXT, "こんにちは", "777", "55")
    assert (ev.language_hint, ev.display_name, ev.message_id) == ("ja", "Kenji", "42")
    assert ev.dedupe_key == "telegram:777"


def test_parse_photo_picks_largest_within_limit(channel: TelegramChannel) -> None:
    [ev] = channel.parse(telegram_photo_update(["small", "medium", "large"], caption="cat"))
    assert (ev.kind, ev.media_id, ev.caption) == (Kind.IMAGE, "large", "cat")
    sizes = [
        {"file_id": "ok", "file_size": 5_000_000, "width": 1280, "height": 960},
        {"file_id": "huge", "file_size": 30_000_000, "width": 9000, "height": 9000},
    ]
    [ev] = channel.parse(telegram_body(telegram_update({"photo": sizes})))
    assert ev.media_id == "ok"


def test_parse_voice_audio_document(channel: TelegramChannel) -> None:
    [voice] = channel.parse(telegram_voice_update("AwAC1", duration=4))
    assert (voice.kind, voice.media_id, voice.media_duration_s, voice.media_mime) == (
        Kind.VOICE,
        "AwAC1",
        4.0,
        "audio/ogg",
    )
    audio = {
        "file_id": "A2",
        "duration": 30,
        "mime_type": "audio/mpeg",
        "file_name": "a.mp3",
        "file_size": 9,
    }
    [ev] = channel.parse(telegram_body(telegram_update({"audio": audio})))
    assert ev.kind is Kind.VOICE
    doc = {"file_id": "D1", "file_name": "x.png", "mime_type": "image/png", "file_size": 10}
    [ev] = channel.parse(telegram_body(telegram_update({"document": doc})))
    assert (ev.kind, ev.media_id, ev.media_mime) == (Kind.IMAGE, "D1", "image/png")
    pdf = {"file_id": "D2", "file_name": "x.pdf", "mime_type": "application/pdf"}
    [ev] = channel.parse(telegram_body(telegram_update({"document": pdf})))
    assert (ev.kind, ev.unsupported_type) == (Kind.UNSUPPORTED, "document")


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"sticker": {"file_id": "s", "emoji": "😀"}}, "sticker"),
        ({"video": {"file_id": "v", "duration": 3}}, "video"),
        ({"video_note": {"file_id": "v", "length": 240, "duration": 3}}, "video_note"),
        ({"location": {"latitude": 35.6, "longitude": 139.7}}, "location"),
        ({"contact": {"phone_number": "+81", "first_name": "A"}}, "contact"),
        (
            {"animation": {"file_id": "g"}, "document": {"file_id": "g", "mime_type": "video/mp4"}},
            "animation",
        ),
    ],
)
def test_parse_unsupported(channel: TelegramChannel, fields: dict, kind: str) -> None:
    [ev] = channel.parse(telegram_body(telegram_update(fields)))
    assert (ev.kind, ev.unsupported_type) == (Kind.UNSUPPORTED, kind)


def test_parse_ignores_other_updates(channel: TelegramChannel) -> None:
    callback = {"id": "4382", "from": {"id": 7, "is_bot": False, "first_name": "A"}, "data": "x"}
    assert channel.parse(json.dumps({"update_id": 5, "callback_query": callback}).encode()) == []
    assert channel.parse(telegram_body(telegram_update({"new_chat_title": "x"}))) == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[1]",
        b'{"message": {}}',
        b'{"update_id": 1, "message": {"text": "no chat"}}',
        b'{"update_id": 1, "message": 5}',
    ],
)
def test_parse_malformed(channel: TelegramChannel, body: bytes) -> None:
    with pytest.raises(BadPayload):
        channel.parse(body)


async def test_send_plain_text(channel: TelegramChannel, fake: FakeTelegram) -> None:
    text = "Use *bold* and _this_ [link](x) - 1.5!"
    [mid] = await channel.send(event(), [OutboundPart(text=text)], idempotency_key="k")
    assert mid.isdigit()
    [request] = fake.server.recorded("/sendMessage")
    assert request.path == f"/bot{fake.token}/sendMessage"
    assert request.json() == {"chat_id": 123456789, "text": text}


async def test_send_splits(channel: TelegramChannel, fake: FakeTelegram) -> None:
    await channel.send(event("777"), [OutboundPart(text="Frase. " * 1200)], idempotency_key="k")
    sent = fake.texts_to("777")
    assert len(sent) == 3 and all(len(t) <= 4096 for t in sent)


async def test_send_429_retry_after_then_success(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    fake.fail_next(429, retry_after=1)
    [mid] = await channel.send(event(), [OutboundPart(text="hi")], idempotency_key="k")
    assert mid and len(fake.server.recorded("/sendMessage")) == 2


async def test_send_429_long_wait_is_retryable(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    fake.fail_next(429, retry_after=7)
    with pytest.raises(DeliveryError) as info:
        await channel.send(event(), [OutboundPart(text="hi")], idempotency_key="k")
    assert (info.value.retryable, info.value.retry_after, info.value.code) == (True, 7.0, "429")


async def test_send_blocked_is_permanent(channel: TelegramChannel, fake: FakeTelegram) -> None:
    fake.blocked.add("999")
    with pytest.raises(DeliveryError) as info:
        await channel.send(event("999"), [OutboundPart(text="hi")], idempotency_key="k")
    assert (info.value.retryable, info.value.code) == (False, "403")
    assert "blocked" in str(info.value)


async def test_send_wrong_token(fake: FakeTelegram) -> None:
    settings = Settings(_env_file=None, **{**fake.settings(), "telegram_bot_token": "1:wrong"})  # type: ignore[arg-type]
    ch = TelegramChannel(settings, retry=FAST)
    with pytest.raises(DeliveryError) as info:
        await ch.send(event(), [OutboundPart(text="hi")], idempotency_key="k")
    await ch.aclose()
    assert (info.value.retryable, info.value.code) == (False, "404")


async def test_send_partial_failure_reports_delivered(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    fake.faults.add(
        500,
        {"ok": False, "error_code": 500, "description": "Internal"},
        count=3,
        path_contains="/sendMessage",
        after=1,
    )
    with pytest.raises(DeliveryError) as info:
        await channel.send(
            event(), [OutboundPart(text="a"), OutboundPart(text="b")], idempotency_key="k"
        )
    assert info.value.retryable and len(info.value.delivered) == 1


async def test_send_voice_multipart(channel: TelegramChannel, fake: FakeTelegram) -> None:
    part = OutboundPart(kind="voice", audio=b"OggS voice", audio_mime="audio/ogg", duration_s=3.4)
    [mid] = await channel.send(event(), [part], idempotency_key="k")
    assert mid.isdigit()
    [request] = fake.server.recorded("/sendVoice")
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert b"OggS voice" in request.body and b'name="duration"' in request.body


async def test_typing(channel: TelegramChannel, fake: FakeTelegram) -> None:
    await channel.typing(event())
    assert fake.actions[-1] == {"chat_id": 123456789, "action": "typing"}
    fake.blocked.add("123456789")
    await channel.typing(event())  # best effort: a 403 is swallowed


async def test_download(channel: TelegramChannel, fake: FakeTelegram) -> None:
    file_id = fake.add_file(b"OggS learner voice", "audio/ogg")
    media = await channel.download(event(kind=Kind.VOICE, media_id=file_id, media_mime="audio/ogg"))
    assert media.data == b"OggS learner voice" and media.mime_type == "audio/ogg"
    get_file, blob = fake.server.recorded("/getFile")[-1], fake.server.recorded("/file/bot")[-1]
    assert get_file.json() == {"file_id": file_id}
    assert blob.path.startswith(f"/file/bot{fake.token}/voice/")


async def test_download_limits(
    channel: TelegramChannel, fake: FakeTelegram, settings: Settings
) -> None:
    with pytest.raises(MediaTooLarge):
        await channel.download(event(kind=Kind.IMAGE, media_id="x", media_size=21 * 1024 * 1024))
    file_id = fake.add_file(b"x" * 4096, "image/jpeg", kind="photos")
    small = TelegramChannel(settings, media_limits=MediaLimits(1000, 1000))
    with pytest.raises(MediaTooLarge):
        await small.download(event(kind=Kind.IMAGE, media_id=file_id))
    await small.aclose()
    with pytest.raises(DeliveryError) as info:
        await channel.download(event(kind=Kind.IMAGE, media_id="unknown"))
    assert (info.value.retryable, info.value.code) == (False, "400")


async def test_register_and_check(settings: Settings, fake: FakeTelegram) -> None:
    description = await register_telegram(settings)
    assert description == "Webhook was set"
    assert fake.webhook == {
        "url": "https://buddy.example.com/webhooks/telegram",
        "secret_token": "fake-telegram-secret",
        "allowed_updates": ["message", "edited_message", "message_reaction"],
        "drop_pending_updates": False,
    }
    results = dict((name, (ok, detail)) for name, ok, detail in await check_channels(settings))
    assert results["telegram"] == (True, "bot @languagebuddy_test_bot")
    assert results["whatsapp"][0] and "not configured" in results["whatsapp"][1]
