"""The terminal as a channel: `languagebuddy chat` goes through the same inbox, worker and tutor
as every platform; only delivery differs (printing instead of an API call)."""

from __future__ import annotations

import asyncio
import mimetypes
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from languagebuddy.channels.base import (
    OUR_AUDIO_BYTES,
    OUR_IMAGE_BYTES,
    BadPayload,
    DeliveryError,
    MediaLimits,
    MediaRef,
    VoiceFormat,
)
from languagebuddy.events import InboundEvent, Media, OutboundPart

_EXTENSIONS = {"audio/ogg": "ogg", "audio/mp4": "m4a", "audio/mpeg": "mp3"}


class ConsoleChannel:
    name = "console"
    max_text_length = 20_000
    typing_interval = None
    voice_format: VoiceFormat = "ogg_opus"  # saved to a file the console names
    single_reply = False
    media_limits = MediaLimits(image_bytes=OUR_IMAGE_BYTES, audio_bytes=OUR_AUDIO_BYTES)
    marks_photo_sets = True  # one file per command

    async def addressed(self, event: InboundEvent) -> bool | None:
        return True  # the terminal is a private chat

    def __init__(
        self, write: Callable[[str], None] = print, *, voice_dir: Path | None = None
    ) -> None:
        self._write = write
        self._voice_dir = voice_dir or Path.cwd()
        self.saved: list[Path] = []  # voice replies written, in order

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        raise BadPayload("the console channel has no webhook")

    def parse(self, body: bytes) -> list[InboundEvent]:
        raise BadPayload("the console channel has no webhook")

    async def typing(self, event: InboundEvent, *, voice: bool = False) -> None:
        return None

    async def upload_voice(self, event: InboundEvent, part: OutboundPart) -> MediaRef | None:
        return None

    async def download(self, event: InboundEvent) -> Media:
        """The learner's own file, named on the command line, read into memory."""
        path = Path(event.media_id or "")
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            reason = f"cannot read {path.name}: {exc.strerror}"
            raise DeliveryError(reason, retryable=False) from exc
        return Media(data=data, mime_type=mimetypes.guess_type(path.name)[0], filename=path.name)

    async def send(
        self, event: InboundEvent, parts: list[OutboundPart], *, idempotency_key: str
    ) -> list[str]:
        ids = []
        for part in parts:
            if part.kind == "voice" and part.audio:
                path = await self._save(part)
                self._write(f"(voice reply, {part.duration_s or 0:.1f} s: {path})")
            elif part.text:
                self._write(part.text)
            ids.append(f"console-{uuid.uuid4().hex[:12]}")
        return ids

    async def _save(self, part: OutboundPart) -> Path:
        """The terminal plays nothing: the note goes to a file named after the moment."""
        extension = _EXTENSIONS.get((part.audio_mime or "").split(";")[0].strip(), "bin")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self._voice_dir / f"languagebuddy-reply-{stamp}-{uuid.uuid4().hex[:6]}.{extension}"
        await asyncio.to_thread(path.write_bytes, part.audio or b"")
        self.saved.append(path)
        return path

    async def aclose(self) -> None:
        return None
