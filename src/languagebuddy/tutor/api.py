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
    # A voice note's words the speech model heard with low confidence: the tutor may give one
    # short pronunciation tip about them.
    unclear_words: tuple[str, ...] = ()
    # Photos sent together get one lesson: the first is ``image``, the rest come here, and
    # ``photos_left_out`` counts those of the set the model does not see (over the cap, unusable).
    more_images: tuple[PreparedImage, ...] = ()
    photos_left_out: int = 0
    forwarded: bool = False  # someone else's words the learner passed on: not theirs to correct
    replying_to: str | None = None  # the buddy's message the learner answers, when they quote it

    @property
    def images(self) -> tuple[PreparedImage, ...]:
        return ((self.image,) if self.image is not None else ()) + self.more_images

    call_id: int | None = None  # for Kind.CALL_RECAP: the finished call to recap


@dataclass
class TutorReply:
    text: str
    erased: bool = False  # /forget-me: the learner no longer exists, store nothing
    inbound_memory: str | None = None  # what the log keeps for the learner's turn
    modality: str = "text"  # text | command | image | voice | unsupported | call_recap
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds, as the pipeline's
