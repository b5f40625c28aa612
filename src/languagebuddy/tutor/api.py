"""What the worker hands the tutor and what it gets back. Channel-neutral by design: the tutor
never learns which platform a message came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from languagebuddy.events import Kind
from languagebuddy.media.types import PreparedImage


@dataclass(frozen=True)
class TutorInput:
    """One learner turn. ``problem`` names input we could not use (bad image, corrupt audio),
    for which the tutor answers with a friendly explanation in the learner's language."""

    kind: Kind
    text: str | None = None  # typed text, or a voice note's transcript
    caption: str | None = None
    image: PreparedImage | None = None
    problem: str | None = None  # e.g. image_too_large, image_not_an_image, audio_corrupt
    unsupported_type: str | None = None
    language_hint: str | None = None
    call_id: int | None = None  # for Kind.CALL_RECAP: the finished call to recap


@dataclass
class TutorReply:
    text: str
    voice: bool = False  # the learner prefers voice replies
    erased: bool = False  # /forget-me: the learner no longer exists, store nothing
    inbound_memory: str | None = None  # what the log keeps for the learner's turn
    modality: str = "text"  # text | command | image | voice | unsupported | call_recap
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds, as the pipeline's
