"""The little a call needs of a media WebSocket, whoever serves it: text in, text or bytes
out, close. The web layer adapts its ASGI socket to this; the fakes and the benchmark's naive
relay never need to."""

from __future__ import annotations

from typing import Protocol


class MediaSocket(Protocol):
    async def receive(self) -> str | bytes | None:
        """The next message (text or binary), or None once the peer has gone."""

    async def send_text(self, text: str) -> None:
        """Send a text message; a socket that is gone raises ``SocketGone``."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000) -> None: ...


class SocketGone(Exception):
    """The carrier's socket is closed: nothing more can be sent on it."""
