"""Builds the enabled channels from settings (a channel is enabled by its credentials)."""

from __future__ import annotations

from languagebuddy.channels.base import Channel
from languagebuddy.config import Settings


def build_channels(settings: Settings) -> dict[str, Channel]:
    channels: dict[str, Channel] = {}
    return channels
