"""Channel-neutral events: what a webhook turns into, and what the worker hands the tutor.

An ``InboundEvent`` is stored in the inbox as JSON, so it holds only references to media
(platform ids), never the bytes.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Kind(StrEnum):
    # Turns: something the learner said, which gets an answer.
    TEXT = "text"
    IMAGE = "image"
    VOICE = "voice"
    UNSUPPORTED = "unsupported"
    # Put by the call service when a phone call ends: the pipeline answers it on the learner's
    # messaging channel with the call's recap (dedupe key per call: sent once).
    CALL_RECAP = "call_recap"
    # Not turns: never answered.
    STATUS = "status"  # a delivery receipt for something we sent
    REACTION = "reaction"  # an emoji on a message (``text``; None when taken back)
    DELETE = "delete"  # the learner deleted one of their messages
    EDIT = "edit"  # the learner edited one of their messages (new ``text`` / ``caption``)
    IDENTITY = "identity"  # the learner's account moved to ``new_user_id`` (a new number)

    @property
    def is_turn(self) -> bool:
        """Whether the buddy answers it (something the learner said, or a call's recap)."""
        return self in _TURNS


_TURNS = frozenset({Kind.TEXT, Kind.IMAGE, Kind.VOICE, Kind.UNSUPPORTED, Kind.CALL_RECAP})


class InboundEvent(BaseModel):
    """One thing a learner did on a platform, in the same shape for every channel."""

    channel: str
    event_id: str = Field(description="provider event id: the dedupe key within the channel")
    user_id: str = Field(description="the channel's stable id for the learner (chat / user id)")
    kind: Kind
    text: str | None = None
    caption: str | None = None
    media_id: str | None = None
    media_mime: str | None = None
    media_size: int | None = None
    media_duration_s: float | None = None
    unsupported_type: str | None = None
    message_id: str | None = Field(default=None, description="provider message id to reply to")
    reply_token: str | None = None  # LINE, single use, about a minute
    received_at: float = Field(default_factory=time.time)
    phone_e164: str | None = None
    display_name: str | None = None
    language_hint: str | None = None  # e.g. Telegram's language_code
    status: str | None = None  # for STATUS events: sent | delivered | read | failed
    status_error: str | None = None
    sent_at: float | None = Field(default=None, description="the platform's own time, epoch s")
    # Group conversations: the learner is the sender (``user_id``); the reply goes to the chat.
    chat_id: str | None = Field(
        default=None, description="the conversation to answer in, when it is not the learner's"
    )
    addressed: bool | None = Field(
        default=None,
        description="in a group: True when the message is certainly for the buddy (a mention "
        "of it, a reply to it); None when only the channel or the log can tell",
    )
    reply_to_message_id: str | None = None  # the message this one answers or quotes
    forwarded: bool = False  # the learner passed on someone else's message
    # REACTION, DELETE, EDIT: the message acted on; IDENTITY: the learner's new id.
    target_message_id: str | None = None
    new_user_id: str | None = None
    # Several photos sent at once share an album id (``album_size``: how many, when known).
    album_id: str | None = None
    album_index: int | None = None
    album_size: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)  # channel-private details

    @property
    def dedupe_key(self) -> str:
        return f"{self.channel}:{self.event_id}"

    @property
    def order_key(self) -> str:
        return f"{self.channel}:{self.user_id}"


class Media(BaseModel):
    """Downloaded learner media. Lives in memory only; never logged, never stored."""

    data: bytes = Field(repr=False)
    mime_type: str | None = None
    filename: str | None = None


class OutboundPart(BaseModel):
    """One thing to send back: a text, or a voice note (audio bytes produced in memory)."""

    kind: str = "text"  # text | voice
    text: str = ""
    audio: bytes | None = Field(default=None, repr=False)
    audio_mime: str | None = None
    duration_s: float | None = None
    # The platform's handle on audio already uploaded (Channel.upload_voice): sent instead of
    # the bytes.
    media_ref: str | None = None
    # A progress message before the reply itself ("You said: …"): a platform with one free
    # reply per message (LINE's reply token) keeps that for the reply.
    interim: bool = False
