"""LINE channel against the protocol-faithful fake: signature, events, reply/push, content."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from languagebuddy.channels.base import BadPayload, DeliveryError, MediaLimits, VerificationError
from languagebuddy.channels.http import MediaTooLarge, RetryPolicy
from languagebuddy.channels.line import LineChannel, retry_key
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent, Kind, OutboundPart
from languagebuddy.metrics import PLATFORM_CALLS
from tests.fakes.line import (
    FakeLine,
    line_audio_webhook,
    line_body,
    line_event,
    line_image_webhook,
    line_text_webhook,
    sign_line,
)

FAST = RetryPolicy(attempts=3, max_wait=2.0, base_delay=0.01)
USER = "U4af4980629a1b2c3d4e5f6a7b8c9d0e1"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLine]:
    with FakeLine() as server:
        yield server


@pytest.fixture
def settings(fake: FakeLine) -> Settings:
    fake.faults.clear()
    fake.server.clear()
    return Settings(_env_file=None, **fake.settings())  # type: ignore[call-arg]


@pytest.fixture
async def channel(settings: Settings) -> AsyncIterator[LineChannel]:
    ch = LineChannel(settings, retry=FAST)
    yield ch
    await ch.aclose()


def event(reply_token: str | None = None, **kw: object) -> InboundEvent:
    fields: dict[str, object] = {
        "channel": "line",
        "event_id": "01JX",
        "user_id": USER,
        "kind": Kind.TEXT,
        "message_id": "4687",
        "reply_token": reply_token,
        **kw,
    }
    return InboundEvent(**fields)  # type: ignore[arg-type]


def test_verify(channel: LineChannel) -> None:
    body = line_text_webhook("こんにちは")
    channel.verify({"X-Line-Signature": sign_line(body, "fake-line-channel-secret")}, body)
    with pytest.raises(VerificationError) as missing:
        channel.verify({}, body)
    assert missing.value.status_code == 401
    with pytest.raises(VerificationError) as wrong:
        channel.verify({"x-line-signature": sign_line(body, "other")}, body)
    assert wrong.value.status_code == 403
    with pytest.raises(VerificationError):
        channel.verify(
            {"x-line-signature": sign_line(body, "fake-line-channel-secret")}, body + b" "
        )


def test_parse_text_image_audio(channel: LineChannel) -> None:
    [ev] = channel.parse(
        line_text_webhook("こんにちは", webhook_event_id="01JABC", reply_token="rt1")
    )
    assert (ev.kind, ev.text, ev.event_id, ev.user_id, ev.reply_token) == (
        Kind.TEXT,
        "こんにちは",
        "01JABC",
        USER,
        "rt1",
    )
    assert abs(ev.received_at - time.time()) < 5
    [img] = channel.parse(line_image_webhook("468789577898262530"))
    assert (img.kind, img.media_id) == (Kind.IMAGE, "468789577898262530")
    [voice] = channel.parse(line_audio_webhook("4687", duration_ms=2500))
    assert (voice.kind, voice.media_id, voice.media_duration_s) == (Kind.VOICE, "4687", 2.5)


def test_parse_unsupported_and_ignored(channel: LineChannel) -> None:
    events = [
        line_event({"id": "1", "type": "sticker", "packageId": "1", "stickerId": "1"}),
        line_event({"id": "2", "type": "location", "latitude": 35.6, "longitude": 139.7}),
        line_event(None, kind="follow"),
        line_event(None, kind="unfollow", reply_token=None),
        {**line_event({"id": "3", "type": "text", "text": "x"}), "mode": "standby"},
        line_event({"id": "4", "type": "text", "text": "y"}, user_id=""),  # no one to answer
    ]
    parsed = channel.parse(line_body(events))
    assert [(e.kind, e.unsupported_type) for e in parsed] == [
        (Kind.UNSUPPORTED, "sticker"),
        (Kind.UNSUPPORTED, "location"),
    ]


def test_parse_console_verification(channel: LineChannel) -> None:
    assert channel.parse(b'{"destination":"U0","events":[]}') == []


@pytest.mark.parametrize(
    "body", [b"", b"[]", b'{"events": {}}', b'{"events": [1]}', b'{"events":[{"type":"message"}]}']
)
def test_parse_malformed(channel: LineChannel, body: bytes) -> None:
    with pytest.raises(BadPayload):
        channel.parse(body)


def test_retry_key_is_deterministic_uuid() -> None:
    key = retry_key("inbox-7-0")
    assert uuid.UUID(key).version == 5
    assert key == retry_key("inbox-7-0") != retry_key("inbox-7-1")
    assert retry_key("inbox-7-0", 1) not in (key, retry_key("inbox-7-1"))


async def test_send_uses_fresh_reply_token(channel: LineChannel, fake: FakeLine) -> None:
    token = fake.issue_reply_token(USER)
    ids = await channel.send(event(token), [OutboundPart(text="はい!")], idempotency_key="k")
    assert len(ids) == 1
    [reply] = fake.server.recorded("/message/reply")
    assert reply.json() == {"replyToken": token, "messages": [{"type": "text", "text": "はい!"}]}
    assert reply.headers["authorization"] == "Bearer fake-line-channel-access-token"
    assert not fake.server.recorded("/message/push")


async def test_send_pushes_when_token_is_old(channel: LineChannel, fake: FakeLine) -> None:
    token = fake.issue_reply_token(USER)
    await channel.send(
        event(token, received_at=time.time() - 55),
        [OutboundPart(text="x")],
        idempotency_key="inbox-1-0",
    )
    assert not fake.server.recorded("/message/reply")
    [push] = fake.server.recorded("/message/push")
    assert push.json() == {"to": USER, "messages": [{"type": "text", "text": "x"}]}
    assert push.headers["x-line-retry-key"] == retry_key("inbox-1-0")


async def test_send_falls_back_to_push_on_invalid_token(
    channel: LineChannel, fake: FakeLine
) -> None:
    token = fake.issue_reply_token(USER)
    fake.expire_reply_token(token)
    ids = await channel.send(event(token), [OutboundPart(text="x")], idempotency_key="inbox-2-0")
    assert len(ids) == 1
    assert len(fake.server.recorded("/message/reply")) == 1
    assert len(fake.server.recorded("/message/push")) == 1


async def test_send_batches_of_five_and_split(channel: LineChannel, fake: FakeLine) -> None:
    token = fake.issue_reply_token(USER)
    parts = [OutboundPart(text=f"part {n}.") for n in range(6)] + [
        OutboundPart(text="Long. " * 1000)
    ]
    ids = await channel.send(event(token), parts, idempotency_key="inbox-3-0")
    assert len(ids) == 7
    [reply] = fake.server.recorded("/message/reply")
    [push] = fake.server.recorded("/message/push")
    assert len(reply.json()["messages"]) == 5
    assert [m["text"][:6] for m in push.json()["messages"]][:1] == ["part 5"]
    assert len(push.json()["messages"]) == 3  # part 5 + the long part split in two
    assert push.headers["x-line-retry-key"] == retry_key("inbox-3-0", 1)
    assert "," in ids[6]


async def test_push_retry_after_500_is_deduplicated_by_retry_key(
    channel: LineChannel, fake: FakeLine
) -> None:
    # A send retried with the same idempotency key (its first answer lost) goes out once.
    await channel.send(event(), [OutboundPart(text="once")], idempotency_key="inbox-4-0")
    ids = await channel.send(event(), [OutboundPart(text="once")], idempotency_key="inbox-4-0")
    assert len(ids) == 1
    assert fake.texts_to(USER).count("once") == 1
    assert [r.headers["x-line-retry-key"] for r in fake.server.recorded("/message/push")] == [
        retry_key("inbox-4-0")
    ] * 2


async def test_send_429_then_success(channel: LineChannel, fake: FakeLine) -> None:
    fake.fail_next(429, retry_after=0.05, path_contains="/push")
    ids = await channel.send(event(), [OutboundPart(text="x")], idempotency_key="inbox-5-0")
    assert len(ids) == 1 and len(fake.server.recorded("/message/push")) == 2


async def test_send_errors(channel: LineChannel, fake: FakeLine) -> None:
    fake.fail_next(429, retry_after=60, path_contains="/push")
    with pytest.raises(DeliveryError) as limited:
        await channel.send(event(), [OutboundPart(text="x")], idempotency_key="inbox-6-0")
    assert (limited.value.retryable, limited.value.retry_after) == (True, 60.0)
    fake.fail_next(400, path_contains="/push", message="The request body has 1 error(s)")
    with pytest.raises(DeliveryError) as bad:
        await channel.send(event(), [OutboundPart(text="x")], idempotency_key="inbox-6-1")
    assert (bad.value.retryable, bad.value.code) == (False, "400")


async def test_send_bad_token(fake: FakeLine) -> None:
    settings = Settings(_env_file=None, **{**fake.settings(), "line_channel_access_token": "nope"})  # type: ignore[arg-type]
    ch = LineChannel(settings, retry=FAST)
    with pytest.raises(DeliveryError) as info:
        await ch.send(event(), [OutboundPart(text="x")], idempotency_key="k")
    await ch.aclose()
    assert (info.value.retryable, info.value.code) == (False, "401")


async def test_voice_with_media_host(settings: Settings, fake: FakeLine) -> None:
    hosted: list[bytes] = []

    async def host(data: bytes, mime: str) -> str:
        hosted.append(data)
        return "https://buddy.example.com/media/tok123"

    ch = LineChannel(settings, host_media=host)
    part = OutboundPart(kind="voice", audio=b"m4a", audio_mime="audio/mp4", duration_s=2.5)
    await ch.send(event(), [part], idempotency_key="inbox-8-0")
    await ch.aclose()
    [push] = fake.server.recorded("/message/push")
    assert push.json()["messages"] == [
        {
            "type": "audio",
            "originalContentUrl": "https://buddy.example.com/media/tok123",
            "duration": 2500,
        }
    ]
    assert hosted == [b"m4a"]


async def test_typing_loading_animation(channel: LineChannel, fake: FakeLine) -> None:
    ok = PLATFORM_CALLS.labels("line", "loading", "ok")
    before = ok._value.get()
    await channel.typing(event())
    assert fake.loading[-1] == {"chatId": USER, "loadingSeconds": 20}
    assert ok._value.get() == before + 1  # LINE's 202 is a success here, not "content not ready"
    await channel.typing(event(extra={"chat_id": "C123"}))  # groups: no animation, no error


async def test_download_from_data_host(channel: LineChannel, fake: FakeLine) -> None:
    message_id = fake.add_content(b"\xff\xd8 jpeg", "image/jpeg")
    media = await channel.download(event(kind=Kind.IMAGE, media_id=message_id))
    assert (media.data, media.mime_type) == (b"\xff\xd8 jpeg", "image/jpeg")
    assert fake.server.recorded("/content")[-1].path == f"/data/v2/bot/message/{message_id}/content"


async def test_download_not_ready_too_large_missing(
    channel: LineChannel, fake: FakeLine, settings: Settings
) -> None:
    fake.transcoding.add("555")
    with pytest.raises(DeliveryError) as pending:
        await channel.download(event(kind=Kind.VOICE, media_id="555"))
    assert (pending.value.retryable, pending.value.code) == (True, "not_ready")
    big = fake.add_content(b"x" * 5000, "audio/x-m4a")
    small = LineChannel(settings, media_limits=MediaLimits(1000, 1000))
    with pytest.raises(MediaTooLarge):
        await small.download(event(kind=Kind.VOICE, media_id=big))
    await small.aclose()
    with pytest.raises(DeliveryError) as missing:
        await channel.download(event(kind=Kind.IMAGE, media_id="nope"))
    assert (missing.value.retryable, missing.value.code) == (False, "404")


async def test_check(channel: LineChannel) -> None:
    assert await channel.check() == (True, "bot @123abcde")
