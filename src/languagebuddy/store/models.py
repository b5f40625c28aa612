"""The database schema: learners and their identities, the conversation log, vocabulary,
usage, the durable inbox and the outbox of reply parts.

Times that the inbox compares (available, lease) are epoch seconds as floats, so that SQLite and
PostgreSQL compare them the same way without time-zone surprises.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Learner(Base):
    """One person, whatever channel they use. Phone calls find them again by ``phone_e164``."""

    __tablename__ = "learners"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now, onupdate=now)
    display_name: Mapped[str | None] = mapped_column(String(200))
    phone_e164: Mapped[str | None] = mapped_column(String(20), unique=True)
    native_language: Mapped[str | None] = mapped_column(String(40))
    target_language: Mapped[str | None] = mapped_column(String(40))
    level: Mapped[str | None] = mapped_column(String(2))
    # auto: voice notes are answered with voice (and text), text with text; on: text is
    # answered with voice too; off: everything with text only (/voice on|off|auto).
    voice_mode: Mapped[str] = mapped_column(String(4), default="auto", server_default="auto")
    interface_language: Mapped[str | None] = mapped_column(String(40))
    summary: Mapped[str | None] = mapped_column(Text)
    summary_upto_turn_id: Mapped[int | None] = mapped_column(BigId)

    identities: Mapped[list[Identity]] = relationship(
        back_populates="learner", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def onboarded(self) -> bool:
        return bool(self.target_language and self.level)


class Identity(Base):
    """How a channel names a learner (WhatsApp wa_id or BSUID, Telegram chat id, LINE userId)."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("channel", "channel_user_id", name="uq_identity"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    learner_id: Mapped[int] = mapped_column(
        ForeignKey("learners.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(20))
    channel_user_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float, default=now)

    learner: Mapped[Learner] = relationship(back_populates="identities")


class Turn(Base):
    """One line of the conversation log, inbound or outbound, with its timings."""

    __tablename__ = "turns"
    __table_args__ = (Index("ix_turns_learner_id_id", "learner_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    learner_id: Mapped[int] = mapped_column(ForeignKey("learners.id", ondelete="CASCADE"))
    inbox_item_id: Mapped[int | None] = mapped_column(BigId, index=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    modality: Mapped[str] = mapped_column(String(12))  # text | image | voice | call | command
    channel: Mapped[str | None] = mapped_column(String(20))
    text: Mapped[str | None] = mapped_column(Text)
    transcript: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(200), index=True)
    status: Mapped[str | None] = mapped_column(String(20))  # sent | delivered | read | failed
    error_code: Mapped[str | None] = mapped_column(String(40))
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    media: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # size, dimensions, hash only
    # The learner's latest reaction to this (buddy's) turn, e.g. a thumbs-up on a correction.
    reaction: Mapped[str | None] = mapped_column(String(32))
    reaction_at: Mapped[float | None] = mapped_column(Float)
    # The learner deleted this (their) message: its text is gone from here and from the inbox.
    redacted_at: Mapped[float | None] = mapped_column(Float)


class SentMessage(Base):
    """A platform message id of one of the buddy's turns (a long reply is several messages),
    so that a reaction to it, or a reply to it, finds the turn it points at."""

    __tablename__ = "sent_messages"
    __table_args__ = (
        UniqueConstraint("channel", "chat_id", "provider_message_id", name="uq_sent_message"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(20))
    chat_id: Mapped[str] = mapped_column(String(200))  # ids are unique per chat on Telegram
    provider_message_id: Mapped[str] = mapped_column(String(200))
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class VocabularyItem(Base):
    __tablename__ = "vocabulary"
    __table_args__ = (UniqueConstraint("learner_id", "language", "term", name="uq_vocabulary"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    learner_id: Mapped[int] = mapped_column(
        ForeignKey("learners.id", ondelete="CASCADE"), index=True
    )
    language: Mapped[str] = mapped_column(String(40))
    term: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str | None] = mapped_column(Text)
    example: Mapped[str | None] = mapped_column(Text)
    times_seen: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now, onupdate=now)


class Usage(Base):
    """What a learner cost: tokens and audio seconds per model call."""

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    learner_id: Mapped[int | None] = mapped_column(
        ForeignKey("learners.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[float] = mapped_column(Float, default=now)
    kind: Mapped[str] = mapped_column(String(20))  # chat | vision | stt | tts | realtime
    model: Mapped[str] = mapped_column(String(80))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class InboxItem(Base):
    """A durably stored inbound event. ``dedupe_key`` makes a redelivery a no-op;
    ``order_key`` (channel + user) keeps one learner's events in arrival order."""

    __tablename__ = "inbox"
    __table_args__ = (
        Index("ix_inbox_order", "order_key", "id"),
        Index("ix_inbox_status_available", "status", "available_at"),
        Index("ix_inbox_message", "channel", "message_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(300), unique=True)
    order_key: Mapped[str] = mapped_column(String(250))
    channel: Mapped[str] = mapped_column(String(20))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    available_at: Mapped[float] = mapped_column(Float, default=now)
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_until: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)
    apology_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    # The learner's message the event is about (an edit or a deletion: the one it changes), so
    # that deleting a message finds every stored copy of its text.
    message_id: Mapped[str | None] = mapped_column(String(200))
    # Answered as part of another item (a photo of a set, an edit folded into its message).
    merged_into: Mapped[int | None] = mapped_column(BigId)


class OutboxPart(Base):
    """One part of a reply to an inbox item. Written with the reply, marked sent on delivery,
    so a reclaimed item resends only what was not delivered and never asks the model twice."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("inbox_item_id", "seq", name="uq_outbox_part"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inbox_item_id: Mapped[int] = mapped_column(
        ForeignKey("inbox.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    # text | voice | heard (the "You said: …" line sent before the reply to a voice note)
    kind: Mapped[str] = mapped_column(String(12))
    body: Mapped[str] = mapped_column(Text)  # a voice part's body is the text it speaks
    sent_at: Mapped[float | None] = mapped_column(Float)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    # A voice part's encoded note, stored before upload so that a crash or a platform error
    # never costs a second synthesis; dropped once the note is delivered.
    audio: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    audio_mime: Mapped[str | None] = mapped_column(String(60))
    duration_s: Mapped[float | None] = mapped_column(Float)
    # The platform's handle on the uploaded audio (a media id, a hosted URL) and until when
    # it is good, so that a failed send is retried without uploading again.
    media_ref: Mapped[str | None] = mapped_column(String(1000))
    media_ref_until: Mapped[float | None] = mapped_column(Float)
    # A heard part keeps what the transcription gave (text, unclear words, the audio's meta),
    # so that a reclaimed event never transcribes again.
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class HostedMedia(Base):
    """A file a platform fetches from us by URL (LINE voice replies): kept in the database so
    that any instance behind a load balancer can serve it, and deleted once expired."""

    __tablename__ = "hosted_media"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    mime: Mapped[str] = mapped_column(String(60))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class KeyValue(Base):
    """Small service state, e.g. the signing key generated on first start."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Call(Base):
    """One phone call, whatever the provider: who called, when, how it ended and what it cost.

    ``(provider, provider_call_id)`` is unique, so a redelivered "call started" webhook finds
    the row instead of answering twice. ``stream_nonce`` is the single-use part of the signed
    stream token: the media socket claims it once (``stream_claimed_at``), in the database, so
    a replayed token is refused by every instance of the service.
    """

    __tablename__ = "calls"
    __table_args__ = (UniqueConstraint("provider", "provider_call_id", name="uq_call_provider"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(20))  # telnyx | vonage
    provider_call_id: Mapped[str] = mapped_column(String(200))  # call_control_id, uuid
    provider_session_id: Mapped[str | None] = mapped_column(String(200))
    learner_id: Mapped[int | None] = mapped_column(
        ForeignKey("learners.id", ondelete="CASCADE"), index=True
    )
    from_e164: Mapped[str | None] = mapped_column(String(20))
    to_e164: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(12), default="ringing")  # ringing|live|ended
    created_at: Mapped[float] = mapped_column(Float, default=now)
    answered_at: Mapped[float | None] = mapped_column(Float)
    stream_nonce: Mapped[str | None] = mapped_column(String(64))
    stream_claimed_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)
    hangup_cause: Mapped[str | None] = mapped_column(String(40))
    hangup_source: Mapped[str | None] = mapped_column(String(20))
    end_reason: Mapped[str | None] = mapped_column(String(40))  # ours: end_call, max_length…
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    audio_in_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    audio_out_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # token details, sessions
    memory_saved_at: Mapped[float | None] = mapped_column(Float)
