"""Media the service has checked and prepared, in memory only: what the media layer hands up.

Kept apart from the decoders so that the tutor and the pipeline can name these types without
importing Pillow or PyAV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
class PreparedAudio:
    """A learner's voice note, checked and ready for the speech-to-text model. In memory only.

    ``upload`` is the file the transcription endpoint gets: the learner's own bytes when the
    endpoint reads their format (smallest upload, nothing re-encoded), else a 16 kHz mono FLAC
    made in the same pass that checked the audio."""

    upload: bytes = field(repr=False)
    upload_name: str  # with the extension the endpoint identifies the format by
    upload_mime: str
    # From the stream, never the platform's claim: the decoded samples, or the exact length
    # the file states (Ogg granule, MP4 sample table) when decoding stopped once speech was
    # heard (the file itself is then the upload, so the model hears all of it).
    duration_s: float
    decoded_s: float  # how much of it was decoded to check it
    speech_s: float  # time above the silence threshold, in what was decoded
    peak_dbfs: float
    container: str
    codec: str
    sample_rate: int
    channels: int
    original_size: int
    sha256: str

    @property
    def meta(self) -> dict[str, Any]:
        """What may be logged and stored about the audio: never its bytes."""
        return {
            "container": self.container,
            "codec": self.codec,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "size": self.original_size,
            "duration_s": round(self.duration_s, 3),
            "decoded_s": round(self.decoded_s, 3),
            "speech_s": round(self.speech_s, 3),
            "peak_dbfs": round(self.peak_dbfs, 1),
            "sent_as": self.upload_name.rsplit(".", 1)[-1],
            "sent_size": len(self.upload),
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class EncodedAudio:
    """A voice reply, encoded for one platform (OGG/Opus or M4A/AAC)."""

    data: bytes = field(repr=False)
    mime: str
    extension: str
    duration_s: float
    sample_rate: int
    codec: str
