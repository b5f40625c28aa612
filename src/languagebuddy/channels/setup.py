"""Operator helpers: what to paste into each platform console, Telegram's setWebhook, and the
live credential checks that `languagebuddy doctor` prints."""

from __future__ import annotations

from dataclasses import dataclass

from languagebuddy.config import Settings

# Messages, their edits (handled before the buddy answers) and reactions (feedback on its
# messages; Telegram sends those only when asked for by name, and in groups only to admins).
TELEGRAM_ALLOWED_UPDATES = ["message", "edited_message", "message_reaction"]


@dataclass(frozen=True)
class Integration:
    """A channel or call provider as configured: on or off, and what the operator should do."""

    name: str
    kind: str  # "channel" | "calls"
    enabled: bool
    path: str  # the webhook path the platform calls
    hint: str  # off: which variables turn it on; on: what is still missing ("" when nothing)


REFUSED = "every delivery will be refused"


def _integration(
    name: str,
    kind: str,
    enabled: bool,
    path: str,
    turn_on: str,
    also_needed: list[tuple[str, str | None, str]],
) -> Integration:
    """``also_needed``: (variable, its value, what goes wrong without it) once enabled."""
    if not enabled:
        return Integration(name, kind, False, path, f"set {turn_on}")
    missing = [f"{var} is not set; {why}" for var, value, why in also_needed if not value]
    return Integration(name, kind, True, path, "; ".join(missing))


def integrations(settings: Settings) -> list[Integration]:
    """Every channel and call provider, in a fixed order, with why it is off or incomplete."""
    s = settings
    return [
        _integration(
            "whatsapp",
            "channel",
            s.whatsapp_enabled,
            "/webhooks/whatsapp",
            "WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID",
            [
                ("WHATSAPP_APP_SECRET", s.whatsapp_app_secret, REFUSED),
                (
                    "WHATSAPP_VERIFY_TOKEN",
                    s.whatsapp_verify_token,
                    "Meta cannot verify the webhook",
                ),
            ],
        ),
        _integration(
            "telegram",
            "channel",
            s.telegram_enabled,
            "/webhooks/telegram",
            "TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET",
            [("TELEGRAM_WEBHOOK_SECRET", s.telegram_webhook_secret, REFUSED)],
        ),
        _integration(
            "line",
            "channel",
            s.line_enabled,
            "/webhooks/line",
            "LINE_CHANNEL_ACCESS_TOKEN and LINE_CHANNEL_SECRET",
            [],
        ),
        _integration(
            "telnyx",
            "calls",
            s.telnyx_enabled,
            "/calls/telnyx/webhook",
            "TELNYX_API_KEY and TELNYX_PUBLIC_KEY",
            [("TELNYX_PUBLIC_KEY", s.telnyx_public_key, REFUSED)],
        ),
        _integration(
            "vonage",
            "calls",
            s.vonage_enabled,
            "/calls/vonage/answer",
            "VONAGE_APPLICATION_ID, VONAGE_PRIVATE_KEY_PATH and VONAGE_SIGNATURE_SECRET",
            [("VONAGE_SIGNATURE_SECRET", s.vonage_signature_secret, REFUSED)],
        ),
    ]


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


class RegistrationError(RuntimeError):
    """setWebhook could not be called or was refused; the message is one line."""

    def __init__(self, message: str, *, config: bool = False) -> None:
        super().__init__(message)
        self.config = config  # True: a setting is missing (nothing was sent)


async def register_telegram(settings: Settings) -> str:
    """Call setWebhook with our URL and secret; returns Telegram's answer or raises
    ``RegistrationError``."""
    if not settings.telegram_enabled:
        raise RegistrationError(
            "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and set it in the "
            "environment or .env",
            config=True,
        )
    if not settings.telegram_webhook_secret:
        raise RegistrationError(
            "TELEGRAM_WEBHOOK_SECRET is not set: choose 1-256 characters of A-Z a-z 0-9 _ - "
            "and set it in the environment or .env",
            config=True,
        )
    if not settings.public_base_url.startswith("https://"):
        raise RegistrationError(
            f"PUBLIC_BASE_URL is {settings.public_base_url}: Telegram only calls https "
            "webhooks; set PUBLIC_BASE_URL to your https address",
            config=True,
        )
    from languagebuddy.channels.telegram import TelegramChannel

    channel = TelegramChannel(settings)
    try:
        description = await channel.set_webhook(
            f"{settings.public_base_url}/webhooks/telegram",
            allowed_updates=TELEGRAM_ALLOWED_UPDATES,
        )
    except Exception as exc:
        raise RegistrationError(f"setWebhook failed: {exc}") from exc
    finally:
        await channel.aclose()
    return description


async def check_channels(settings: Settings) -> list[tuple[str, bool, str]]:
    """(channel, ok, detail) for every messaging channel; a channel that is not configured is
    reported ok with a hint, since every channel is optional."""
    from languagebuddy.channels.line import LineChannel
    from languagebuddy.channels.telegram import TelegramChannel
    from languagebuddy.channels.whatsapp import WhatsAppChannel

    classes = {"whatsapp": WhatsAppChannel, "telegram": TelegramChannel, "line": LineChannel}
    results: list[tuple[str, bool, str]] = []
    for spec in integrations(settings):
        if spec.kind != "channel":
            continue
        if not spec.enabled:
            results.append((spec.name, True, f"not configured ({spec.hint})"))
            continue
        channel = classes[spec.name](settings)
        try:
            ok, detail = await channel.check()
        finally:
            await channel.aclose()
        if spec.hint:
            ok, detail = False, f"{detail}; {spec.hint}"
        results.append((spec.name, ok, detail))
    return results
