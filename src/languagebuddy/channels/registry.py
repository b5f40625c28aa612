"""Builds the enabled channels from settings (a channel is enabled by its credentials)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from languagebuddy.channels.base import Channel
from languagebuddy.config import Settings

if TYPE_CHECKING:
    from languagebuddy.channels.line import HostMedia


def build_channels(
    settings: Settings, *, host_media: HostMedia | None = None
) -> dict[str, Channel]:
    """One instance per configured platform, keyed by its name (the inbox's ``channel``).
    ``host_media`` publishes a file at a URL, for platforms that fetch audio by URL (LINE)."""
    channels: dict[str, Channel] = {}
    if settings.whatsapp_enabled:
        from languagebuddy.channels.whatsapp import WhatsAppChannel

        channels["whatsapp"] = WhatsAppChannel(settings)
    if settings.telegram_enabled:
        from languagebuddy.channels.telegram import TelegramChannel

        channels["telegram"] = TelegramChannel(settings)
    if settings.line_enabled:
        from languagebuddy.channels.line import LineChannel

        channels["line"] = LineChannel(settings, host_media=host_media)
    return channels
