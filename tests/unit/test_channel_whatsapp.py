"""WhatsApp channel against the protocol-faithful fake: verify, parse, send, typing, media."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from languagebuddy.channels.base import BadPayload, DeliveryError, MediaLimits, VerificationError
from languagebuddy.channels.http import MediaTooLarge, RetryPolicy
from languagebuddy.channels.whatsapp import WhatsAppChannel
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent, Kind, OutboundPart
from tests.fakes.whatsapp import (
    FakeWhatsApp,
    meta_json,
    sign_whatsapp,
    whatsapp_audio_webhook,
    whatsapp_envelope,
    whatsapp_image_webhook,
    whatsapp_message,
    whatsapp_messages_webhook,
    whatsapp_status_webhook,
    whatsapp_text_webhook,
    whatsapp_unsupported_webhook,
)

FAST = RetryPolicy(attempts=3, max_wait=2.0, base_delay=0.01)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWhatsApp]:
    with FakeWhatsApp() as server:
        yield server


@pytest.fixture
def settings(fake: FakeWhatsApp) -> Settings:
    fake.faults.clear()
    fake.closed_windows.clear()
    return Settings(_env_file=None, **fake.settings())  # type: ignore[call-arg]


@pytest.fixture
async def channel(settings: Settings) -> WhatsAppChannel:
    ch = WhatsAppChannel(settings, retry=FAST)
    yield ch  # type: ignore[misc]
    await ch.aclose()


def event(user_id: str = "5511987654321", **kw: object) -> InboundEvent:
    fields: dict[str, object] = {
        "channel": "whatsapp",
        "event_id": "wamid.in",
        "user_id": user_id,
        "kind": Kind.TEXT,
        "message_id": "wamid.in",
        **kw,
    }
    return InboundEvent(**fields)  # type: ignore[arg-type]


# --- verification -------------------------------------------------------------------------


def test_verify_accepts_meta_signature_on_raw_escaped_bytes(channel: WhatsAppChannel) -> None:
    body = whatsapp_text_webhook("¡Hola, ça va? 你好 / 😀")
    assert b"\\u00a1" in body and b"\\/" in body  # Meta's escaping, signed as sent
    channel.verify({"X-Hub-Signature-256": sign_whatsapp(body, "fake-app-secret")}, body)
    reserialised = json.dumps(json.loads(body)).encode()
    with pytest.raises(VerificationError):
        channel.verify(
            {"x-hub-signature-256": sign_whatsapp(body, "fake-app-secret")}, reserialised
        )


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 403),
        ({"X-Hub-Signature-256": "garbage"}, 403),
        ({"X-Hub-Signature-256": sign_whatsapp(b"{}", "other-secret")}, 403),
    ],
)
def test_verify_refuses(channel: WhatsAppChannel, headers: dict[str, str], status: int) -> None:
    with pytest.raises(VerificationError) as info:
        channel.verify(headers, b"{}")
    assert info.value.status_code == status


def test_verify_without_app_secret_refuses_everything(fake: FakeWhatsApp) -> None:
    settings = Settings(_env_file=None, **{**fake.settings(), "whatsapp_app_secret": None})  # type: ignore[arg-type]
    ch = WhatsAppChannel(settings)
    with pytest.raises(VerificationError) as info:
        ch.verify({"X-Hub-Signature-256": sign_whatsapp(b"{}", "")}, b"{}")
    assert info.value.status_code == 403


def test_hub_challenge(channel: WhatsAppChannel) -> None:
    good = {
        "hub.mode": "subscribe",
        "hub.verify_token": "fake-verify-token",
        "hub.challenge": "1158201444",
    }
    assert channel.hub_challenge(good) == "1158201444"
    assert channel.hub_challenge({**good, "hub.verify_token": "nope"}) is None
    assert channel.hub_challenge({**good, "hub.mode": "unsubscribe"}) is None
    assert channel.hub_challenge({"hub.mode": "subscribe", "hub.challenge": "1"}) is None


# --- parsing ------------------------------------------------------------------------------


def test_parse_text(channel: WhatsAppChannel) -> None:
    [ev] = channel.parse(whatsapp_text_webhook("Olá, tudo bem?", message_id="wamid.A1"))
    assert (ev.kind, ev.text, ev.event_id, ev.message_id) == (
        Kind.TEXT,
        "Olá, tudo bem?",
        "wamid.A1",
        "wamid.A1",
    )
    assert (ev.user_id, ev.phone_e164, ev.display_name) == (
        "5511987654321",
        "+5511987654321",
        "Ana",
    )
    assert ev.dedupe_key == "whatsapp:wamid.A1"


def test_parse_bsuid_when_wa_id_absent(channel: WhatsAppChannel) -> None:
    body = whatsapp_text_webhook("hi", wa_id=None, bsuid="BR.1a2b3c4d5e", name="Mia")
    [ev] = channel.parse(body)
    assert (ev.user_id, ev.phone_e164, ev.display_name) == ("BR.1a2b3c4d5e", None, "Mia")


def test_parse_prefers_wa_id_when_both_present(channel: WhatsAppChannel) -> None:
    [ev] = channel.parse(whatsapp_text_webhook("hi", bsuid="BR.xyz"))
    assert ev.user_id == "5511987654321"


def test_parse_media_and_unsupported(channel: WhatsAppChannel) -> None:
    [img] = channel.parse(whatsapp_image_webhook("111", caption="my desk"))
    assert (img.kind, img.media_id, img.media_mime, img.caption) == (
        Kind.IMAGE,
        "111",
        "image/jpeg",
        "my desk",
    )
    [voice] = channel.parse(whatsapp_audio_webhook("222"))
    assert (voice.kind, voice.media_id, voice.extra["voice"]) == (Kind.VOICE, "222", True)
    assert voice.media_mime == "audio/ogg; codecs=opus"
    for kind in ("sticker", "video", "location"):
        [ev] = channel.parse(whatsapp_unsupported_webhook(kind))
        assert (ev.kind, ev.unsupported_type) == (Kind.UNSUPPORTED, kind)
    [doc] = channel.parse(
        whatsapp_messages_webhook(
            [whatsapp_message("document", {"id": "9", "mime_type": "image/png"})]
        )
    )
    assert doc.kind is Kind.IMAGE


def test_parse_several_messages_and_statuses(channel: WhatsAppChannel) -> None:
    messages = [whatsapp_message("text", {"body": str(n)}) for n in range(3)]
    events = channel.parse(whatsapp_messages_webhook(messages))
    assert [e.text for e in events] == ["0", "1", "2"]
    [status] = channel.parse(whatsapp_status_webhook("wamid.OUT", "failed", error_code=131047))
    assert (status.kind, status.event_id, status.status) == (
        Kind.STATUS,
        "status:wamid.OUT:failed",
        "failed",
    )
    assert status.message_id == "wamid.OUT" and status.status_error.startswith("131047")


def test_parse_ignores_other_fields(channel: WhatsAppChannel) -> None:
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "account_update", "value": {}}]}],
    }
    assert channel.parse(meta_json(body)) == []
    assert channel.parse(meta_json(whatsapp_envelope({}))) == []


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"entry": 3}', b'{"entry": [{"changes": [1]}]}', b"\xff\xfe"],
)
def test_parse_malformed(channel: WhatsAppChannel, body: bytes) -> None:
    with pytest.raises(BadPayload):
        channel.parse(body)


# --- sending ------------------------------------------------------------------------------


async def test_send_text(channel: WhatsAppChannel, fake: FakeWhatsApp) -> None:
    fake.server.clear()
    ids = await channel.send(event(), [OutboundPart(text="Muito bem!")], idempotency_key="k1")
    assert len(ids) == 1 and ids[0].startswith("wamid.")
    [request] = fake.server.recorded("/messages", "POST")
    assert request.headers["authorization"] == "Bearer EAAG-fake-access-token"
    assert request.json() == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "5511987654321",
        "type": "text",
        "text": {"preview_url": False, "body": "Muito bem!"},
    }


async def test_send_to_bsuid_uses_recipient(channel: WhatsAppChannel, fake: FakeWhatsApp) -> None:
    fake.server.clear()
    await channel.send(event("BR.1a2b3c"), [OutboundPart(text="hi")], idempotency_key="k")
    body = fake.server.recorded("/messages")[0].json()
    assert body["recipient"] == "BR.1a2b3c" and "to" not in body


async def test_send_splits_over_limit(channel: WhatsAppChannel, fake: FakeWhatsApp) -> None:
    fake.server.clear()
    text = "Uma frase curta. " * 400
    await channel.send(event("5511000000001"), [OutboundPart(text=text)], idempotency_key="k")
    sent = fake.texts_to("5511000000001")
    assert len(sent) == 2 and all(len(t) <= 4096 for t in sent)


async def test_send_retries_429_then_succeeds(channel: WhatsAppChannel, fake: FakeWhatsApp) -> None:
    fake.server.clear()
    fake.fail_next(429, retry_after=0.05)
    fake.fail_next(503)
    ids = await channel.send(event(), [OutboundPart(text="ok")], idempotency_key="k")
    assert len(ids) == 1
    assert len(fake.server.recorded("/messages", "POST")) == 3


async def test_send_long_retry_after_is_left_to_the_inbox(
    channel: WhatsAppChannel, fake: FakeWhatsApp
) -> None:
    fake.fail_next(429, retry_after=30)
    with pytest.raises(DeliveryError) as info:
        await channel.send(event(), [OutboundPart(text="x")], idempotency_key="k")
    assert info.value.retryable and info.value.retry_after == 30 and info.value.code == "130429"


async def test_send_persistent_5xx_is_retryable(
    channel: WhatsAppChannel, fake: FakeWhatsApp
) -> None:
    fake.fail_next(500, count=3)
    with pytest.raises(DeliveryError) as info:
        await channel.send(event(), [OutboundPart(text="x")], idempotency_key="k")
    assert info.value.retryable


@pytest.mark.parametrize("code", [131047, 131026, 100])
async def test_send_permanent_errors(
    channel: WhatsAppChannel, fake: FakeWhatsApp, code: int
) -> None:
    fake.server.clear()
    fake.permanent_error_next(code)
    with pytest.raises(DeliveryError) as info:
        await channel.send(event(), [OutboundPart(text="x")], idempotency_key="k")
    assert (info.value.retryable, info.value.code) == (False, str(code))
    assert len(fake.server.recorded("/messages", "POST")) == 1


async def test_send_bad_token(fake: FakeWhatsApp) -> None:
    settings = Settings(_env_file=None, **{**fake.settings(), "whatsapp_access_token": "wrong"})  # type: ignore[arg-type]
    ch = WhatsAppChannel(settings, retry=FAST)
    with pytest.raises(DeliveryError) as info:
        await ch.send(event(), [OutboundPart(text="x")], idempotency_key="k")
    await ch.aclose()
    assert (info.value.retryable, info.value.code) == (False, "190")


async def test_send_reports_delivered_parts(channel: WhatsAppChannel, fake: FakeWhatsApp) -> None:
    fake.permanent_error_next(131047, after=1)
    parts = [OutboundPart(text="one"), OutboundPart(text="two"), OutboundPart(text="three")]
    with pytest.raises(DeliveryError) as info:
        await channel.send(event(), parts, idempotency_key="k")
    assert len(info.value.delivered) == 1 and info.value.delivered[0].startswith("wamid.")
    assert info.value.code == "131047"


async def test_send_voice_uploads_then_sends_audio(
    channel: WhatsAppChannel, fake: FakeWhatsApp
) -> None:
    fake.server.clear()
    part = OutboundPart(kind="voice", audio=b"OggS fake opus", audio_mime="audio/ogg", duration_s=2)
    [message_id] = await channel.send(event(), [part], idempotency_key="k")
    assert message_id.startswith("wamid.")
    [upload] = fake.server.recorded("/media", "POST")
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert b"OggS fake opus" in upload.body
    body = fake.server.recorded("/messages", "POST")[-1].json()
    assert body["type"] == "audio" and body["audio"]["id"] in fake.uploads


# --- typing and media ---------------------------------------------------------------------


async def test_typing_marks_read_with_indicator(
    channel: WhatsAppChannel, fake: FakeWhatsApp
) -> None:
    fake.read_receipts.clear()
    await channel.typing(event(message_id="wamid.HBgN1"))
    assert fake.read_receipts[-1] == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.HBgN1",
        "typing_indicator": {"type": "text"},
    }


async def test_typing_never_raises(fake: FakeWhatsApp) -> None:
    settings = Settings(
        _env_file=None, **{**fake.settings(), "whatsapp_api_base_url": "http://127.0.0.1:9/v23.0"}
    )  # type: ignore[arg-type]
    ch = WhatsAppChannel(settings)
    await ch.typing(event(message_id="wamid.x"))
    await ch.aclose()


async def test_download_two_steps(channel: WhatsAppChannel, fake: FakeWhatsApp) -> None:
    media_id = fake.add_media(b"\x89PNG fake", "image/png")
    fake.server.clear()
    media = await channel.download(event(kind=Kind.IMAGE, media_id=media_id))
    assert (media.data, media.mime_type) == (b"\x89PNG fake", "image/png")
    info, blob = fake.server.recorded("", "GET")
    assert info.path.endswith(f"/{media_id}") and blob.path == "/whatsapp_business/attachments/"
    assert blob.headers["authorization"] == "Bearer EAAG-fake-access-token"


async def test_download_too_large(fake: FakeWhatsApp, settings: Settings) -> None:
    media_id = fake.add_media(b"x" * 2048, "image/jpeg")
    ch = WhatsAppChannel(settings, media_limits=MediaLimits(1024, 1024))
    with pytest.raises(MediaTooLarge) as info:
        await ch.download(event(kind=Kind.IMAGE, media_id=media_id))
    await ch.aclose()
    assert (info.value.retryable, info.value.code) == (False, "too_large")


async def test_download_unknown_media(channel: WhatsAppChannel) -> None:
    with pytest.raises(DeliveryError) as info:
        await channel.download(event(kind=Kind.IMAGE, media_id="404404"))
    assert (info.value.retryable, info.value.code) == (False, "100")


async def test_check(channel: WhatsAppChannel) -> None:
    ok, detail = await channel.check()
    assert ok and "+1 555-000-1111" in detail
