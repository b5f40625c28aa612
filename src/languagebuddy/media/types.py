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
