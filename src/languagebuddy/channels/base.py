"""The Channel protocol: what every messaging platform offers the rest of the service.

Routes call ``verify`` and ``parse``; the worker calls ``typing``, ``download`` and ``send``.
A channel never knows about the tutor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from languagebuddy.errors import DeliveryError
from languagebuddy.events import InboundEvent, Kind, Media, OutboundPart

__all__ = [
    "OUR_AUDIO_BYTES",
    "OUR_IMAGE_BYTES",
    "BadPayload",
    "Channel",
    "DeliveryError",
    "MediaLimits",
    "MediaRef",
    "VerificationError",
    "VoiceFormat",
    "json_object",
]

MB = 1024 * 1024
# What the service can use, whatever a platform allows: the vision model takes images up to
# 20 MB, the transcription endpoint files up to 25 MB. A channel's limits are the lower of these
# and the platform's own.
OUR_IMAGE_BYTES = 20 * MB
OUR_AUDIO_BYTES = 25 * MB

# The container a channel's voice replies are encoded in: OGG/Opus renders as a voice note on
# WhatsApp and Telegram; LINE plays M4A (AAC).
VoiceFormat = Literal["ogg_opus", "m4a"]


@dataclass(frozen=True)
class MediaRef:
    """Audio uploaded to a platform ahead of its send (a media id, a URL the platform fetches)
    and until when the platform honours it."""

    ref: str
    expires_at: float | None = None


@dataclass(frozen=True)
class MediaLimits:
    """The largest learner file of each kind a channel downloads, in bytes (the platform's own
    limit, or ours where it is lower)."""

    image_bytes: int
    audio_bytes: int

    def for_kind(self, kind: Kind) -> int:
        """The limit that applies to an event's media (audio for voice, else image)."""
        return self.audio_bytes if kind is Kind.VOICE else self.image_bytes


class VerificationError(Exception):
    """The request's signature or secret did not verify (answer 401/403)."""

    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(message)
        self.status_code = status_code


class BadPayload(Exception):
    """The body verified but is not the platform's JSON (answer 400)."""


def json_object(body: bytes) -> dict[str, Any]:
    """The webhook body as a JSON object; every platform sends one, anything else is a 400."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPayload("body is not JSON") from exc
    if not isinstance(payload, dict):
        raise BadPayload("body is not a JSON object")
    return payload


@runtime_checkable
class Channel(Protocol):
    """What the pipeline needs of a platform. The attributes are facts about the platform that
    the pipeline plans with; the methods are the calls it makes."""

    name: str
    max_text_length: int
    # The typing indicator fades after this many seconds and is sent again while the buddy is
    # still working; None: one indicator lasts until the reply.
    typing_interval: float | None
    voice_format: VoiceFormat | None  # None: the channel cannot carry a voice reply
    media_limits: MediaLimits
    # True: one free reply per learner message, later messages are billed (LINE's reply
    # token); the pipeline then sends a reply's text and voice note together, in one send.
    single_reply: bool
    # True: photos sent together carry an album id (so a photo without one is alone and is
    # answered at once); False: a burst of photos is only recognised by waiting for it.
    marks_photo_sets: bool

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise VerificationError unless the raw body carries a valid signature/secret."""

    def parse(self, body: bytes) -> list[InboundEvent]:
        """Turn a verified body into events (possibly several, possibly none)."""

    async def addressed(self, event: InboundEvent) -> bool | None:
        """For a group message: settle what ``parse`` could not tell alone, such as a mention
        of the buddy by a name that only the platform's API knows. True: it is for the buddy;
        False: it is for someone else (a command for another bot); None: no opinion (the
        pipeline then looks for one of the buddy's commands or a reply to the buddy)."""

    async def typing(self, event: InboundEvent, *, voice: bool = False) -> None:
        """Show that the buddy is working (best effort: never raises); ``voice``: the reply
        being prepared is a voice note ("recording…" where the platform can say so)."""

    async def download(self, event: InboundEvent) -> Media:
        """Fetch the event's media into memory."""

    async def upload_voice(self, event: InboundEvent, part: OutboundPart) -> MediaRef | None:
        """Upload a voice part's audio ahead of sending it, where the platform sends audio by
        reference; None where the send itself carries the bytes."""

    async def send(
        self, event: InboundEvent, parts: list[OutboundPart], *, idempotency_key: str
    ) -> list[str]:
        """Deliver reply parts to the event's sender; return provider message ids."""

    async def aclose(self) -> None: ...
