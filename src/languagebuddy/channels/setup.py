"""Operator helpers: what to paste into each platform console, Telegram's setWebhook, and the
live credential checks that `languagebuddy doctor` prints."""

from __future__ import annotations

from languagebuddy.config import Settings

# Messages, their edits (handled before the buddy answers) and reactions (feedback on its
# messages; Telegram sends those only when asked for by name, and in groups only to admins).
TELEGRAM_ALLOWED_UPDATES = ["message", "edited_message", "message_reaction"]


def _ws(url: str) -> str:
    return (
        "wss://" + url.removeprefix("https://")
        if url.startswith("https://")
        else ("ws://" + url.removeprefix("http://"))
    )


def describe_webhooks(settings: Settings) -> str:
    """Every URL a platform must know, with the console settings that go with it."""
    base = settings.public_base_url
    lines: list[str] = [f"Public base URL: {base}"]
    if not base.startswith("https://"):
        lines.append(
            "  WARNING: platforms only call https URLs; set PUBLIC_BASE_URL to your https address"
        )

    def state(enabled: bool) -> str:
        return "enabled" if enabled else "not configured"

    lines += [
        "",
        f"WhatsApp Cloud API ({state(settings.whatsapp_enabled)})",
        "  Meta app > WhatsApp > Configuration > Webhook",
        f"  Callback URL:  {base}/webhooks/whatsapp",
        f"  Verify token:  {settings.whatsapp_verify_token or '<set WHATSAPP_VERIFY_TOKEN>'}",
        "  Webhook fields: subscribe to 'messages'",
    ]
    if not settings.whatsapp_app_secret:
        lines.append("  WARNING: WHATSAPP_APP_SECRET is not set; every delivery will be refused")
    lines += [
        "",
        f"Telegram Bot API ({state(settings.telegram_enabled)})",
        f"  Webhook URL:   {base}/webhooks/telegram",
        f"  allowed_updates: {TELEGRAM_ALLOWED_UPDATES}",
        "  Secret token:  TELEGRAM_WEBHOOK_SECRET (sent back in X-Telegram-Bot-Api-Secret-Token)",
        "  Register with: languagebuddy webhooks --register telegram",
    ]
    if settings.telegram_enabled and not settings.telegram_webhook_secret:
        lines.append(
            "  WARNING: TELEGRAM_WEBHOOK_SECRET is not set; every delivery will be refused"
        )
    lines += [
        "",
        f"LINE Messaging API ({state(settings.line_enabled)})",
        "  LINE Developers console > Messaging API",
        f"  Webhook URL:   {base}/webhooks/line  (press Verify)",
        "  Use webhook:   on;  Webhook redelivery: on (recommended)",
        "  LINE Official Account Manager: turn auto-reply and greeting messages off",
        "",
        f"Telnyx Call Control ({state(settings.telnyx_enabled)})",
        f"  Webhook URL:   {base}/calls/telnyx/webhook",
        f"  Media stream:  {_ws(base)}/calls/telnyx/media-stream (set per call by the server)",
        "",
        f"Vonage Voice ({state(settings.vonage_enabled)})",
        f"  Answer URL:    {base}/calls/vonage/answer",
        f"  Event URL:     {base}/calls/vonage/events",
        f"  Media stream:  {_ws(base)}/calls/vonage/media-stream (set per call by the server)",
    ]
    return "\n".join(lines)


async def register_telegram(settings: Settings) -> str:
    """Call setWebhook with our URL and secret; returns Telegram's answer or raises."""
    if not settings.telegram_enabled:
        raise RuntimeError("TELEGRAM_BOT_TOKEN is not set")
    if not settings.telegram_webhook_secret:
        raise RuntimeError(
            "TELEGRAM_WEBHOOK_SECRET is not set: choose 1-256 characters of A-Z a-z 0-9 _ -"
        )
    from languagebuddy.channels.telegram import TelegramChannel

    channel = TelegramChannel(settings)
    try:
        description = await channel.set_webhook(
            f"{settings.public_base_url}/webhooks/telegram",
            allowed_updates=TELEGRAM_ALLOWED_UPDATES,
        )
    except Exception as exc:
        raise RuntimeError(f"setWebhook failed: {exc}") from exc
    finally:
        await channel.aclose()
    return description


async def check_channels(settings: Settings) -> list[tuple[str, bool, str]]:
    """(channel, ok, detail) for every messaging channel; a channel that is not configured is
    reported ok with a hint, since every channel is optional."""
    from languagebuddy.channels.line import LineChannel
    from languagebuddy.channels.telegram import TelegramChannel
    from languagebuddy.channels.whatsapp import WhatsAppChannel

    results: list[tuple[str, bool, str]] = []
    specs = [
        (
            "whatsapp",
            settings.whatsapp_enabled,
            WhatsAppChannel,
            "not configured (set WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID)",
            [
                ("WHATSAPP_APP_SECRET", settings.whatsapp_app_secret),
                ("WHATSAPP_VERIFY_TOKEN", settings.whatsapp_verify_token),
            ],
        ),
        (
            "telegram",
            settings.telegram_enabled,
            TelegramChannel,
            "not configured (set TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET)",
            [("TELEGRAM_WEBHOOK_SECRET", settings.telegram_webhook_secret)],
        ),
        (
            "line",
            settings.line_enabled,
            LineChannel,
            "not configured (set LINE_CHANNEL_ACCESS_TOKEN and LINE_CHANNEL_SECRET)",
            [],
        ),
    ]
    for name, enabled, cls, hint, required in specs:
        if not enabled:
            results.append((name, True, hint))
            continue
        missing = [var for var, value in required if not value]
        channel = cls(settings)
        try:
            ok, detail = await channel.check()
        finally:
            await channel.aclose()
        if missing:
            ok, detail = False, f"{detail}; missing {', '.join(missing)} (webhooks are refused)"
        results.append((name, ok, detail))
    return results
