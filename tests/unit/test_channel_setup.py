"""Operator helpers: console instructions, registry, and doctor's live checks against fakes."""

from __future__ import annotations

from languagebuddy.channels.line import LineChannel
from languagebuddy.channels.registry import build_channels
from languagebuddy.channels.setup import check_channels, describe_webhooks
from languagebuddy.channels.telegram import TelegramChannel
from languagebuddy.channels.whatsapp import WhatsAppChannel
from languagebuddy.config import Settings
from tests.fakes.line import FakeLine
from tests.fakes.telegram import FakeTelegram
from tests.fakes.whatsapp import FakeWhatsApp


def config(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_describe_webhooks_lists_every_url() -> None:
    text = describe_webhooks(
        config(
            public_base_url="https://buddy.example.com/",
            whatsapp_access_token="t",
            whatsapp_phone_number_id="1",
            whatsapp_verify_token="my-verify-token",
        )
    )
    for expected in (
        "https://buddy.example.com/webhooks/whatsapp",
        "my-verify-token",
        "'messages'",
        "https://buddy.example.com/webhooks/telegram",
        "['message', 'edited_message', 'message_reaction']",
        "https://buddy.example.com/webhooks/line",
        "Use webhook",
        "https://buddy.example.com/calls/telnyx/webhook",
        "wss://buddy.example.com/calls/telnyx/media-stream",
        "https://buddy.example.com/calls/vonage/answer",
        "WHATSAPP_APP_SECRET is not set",
    ):
        assert expected in text
    assert "WARNING: platforms only call https" in describe_webhooks(config())


def test_registry_builds_enabled_channels_only() -> None:
    assert build_channels(config()) == {}
    channels = build_channels(
        config(
            whatsapp_access_token="t",
            whatsapp_phone_number_id="1",
            telegram_bot_token="1:x",
            line_channel_access_token="t",
            line_channel_secret="s",
        )
    )
    assert isinstance(channels["whatsapp"], WhatsAppChannel)
    assert isinstance(channels["telegram"], TelegramChannel)
    assert isinstance(channels["line"], LineChannel)
    assert build_channels(config(line_channel_access_token="t")) == {}


async def test_check_channels_against_fakes() -> None:
    with FakeWhatsApp() as wa, FakeTelegram() as tg, FakeLine() as line:
        good = config(**wa.settings(), **tg.settings(), **line.settings())
        assert await check_channels(good) == [
            ("whatsapp", True, "phone number +1 555-000-1111 (LanguageBuddy Test)"),
            ("telegram", True, "bot @languagebuddy_test_bot"),
            ("line", True, "bot @123abcde"),
        ]
        bad = config(
            **{**wa.settings(), "whatsapp_access_token": "expired", "whatsapp_app_secret": None},
            **{**tg.settings(), "telegram_bot_token": "1:wrong"},
            **{**line.settings(), "line_channel_access_token": "revoked"},
        )
        results = {name: (ok, detail) for name, ok, detail in await check_channels(bad)}
        assert not any(ok for ok, _ in results.values())
        assert "190" in results["whatsapp"][1] and "WHATSAPP_APP_SECRET" in results["whatsapp"][1]
        assert "TELEGRAM_BOT_TOKEN" in results["telegram"][1]
        assert "401" in results["line"][1]
