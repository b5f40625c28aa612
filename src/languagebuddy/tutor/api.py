"""What the worker hands the tutor and what it gets back. Channel-neutral by design: the tutor
never learns which platform a message came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from languagebuddy.events import Kind


@dataclass(frozen=True)
class PreparedImage:
    """A checked, downscaled JPEG ready for the vision model. In memory only."""

    jpeg: bytes = field(repr=False)
    width: int
    height: int
    original_width: int
    original_height: int
    original_format: str
    original_size: int
    sha256: str

    @property
    def meta(self) -> dict[str, Any]:
        """What may be logged and stored about the image: never its bytes."""
        return {
            "format": self.original_format,
            "size": self.original_size,
            "width": self.original_width,
            "height": self.original_height,
            "sent_width": self.width,
            "sent_height": self.height,
            "sent_size": len(self.jpeg),
            "sha256": self.sha256,
        }


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


@dataclass
class TutorReply:
    text: str
    voice: bool = False  # the learner prefers voice replies
    erased: bool = False  # /forget-me: the learner no longer exists, store nothing
    inbound_memory: str | None = None  # what the log keeps for the learner's turn
    modality: str = "text"  # text | command | image | voice | unsupported
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds, as the pipeline's


class ModelUnavailable(Exception):
    """The model stayed unavailable after retries; the event is kept and retried later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
