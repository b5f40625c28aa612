"""Files that a platform fetches from us by URL (LINE plays a voice reply from an HTTPS URL).

The bytes live in the database beside their expiry, so any instance behind a load balancer can
serve ``GET /media/{token}``; the token names the file and its expiry and is signed with the
service's signing key (HMAC-SHA256), so a URL cannot be guessed, altered or kept alive past
its 15 minutes. Expired rows are purged by the worker's housekeeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import async_sessionmaker

from languagebuddy.logs import get_logger
from languagebuddy.store import hosted

log = get_logger(__name__)

TTL_SECONDS = 15 * 60
_PURPOSE = b"lb-hosted-media:"


class MediaTokenInvalid(Exception):
    """The token was not made by us (tampered, truncated, another key): answer 403."""


class MediaGone(Exception):
    """The token is ours but its file has expired or been purged: answer 410."""


class MediaHost:
    """Stores files for download by URL and serves them back to whoever holds the URL."""

    def __init__(
        self,
        sessions: async_sessionmaker,
        public_base_url: str,
        *,
        key: str = "",
        ttl_seconds: int = TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._base = public_base_url.rstrip("/")
        self.key = key  # the service's signing key, set once it is known (start-up)
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    async def host(self, data: bytes, mime: str) -> str:
        """Store ``data`` and return its public URL, good for ``ttl_seconds``."""
        media_id = secrets.token_urlsafe(18)
        expires = int(self._clock()) + self.ttl_seconds
        async with self._sessions.begin() as session:
            await hosted.put(session, media_id, data, mime, float(expires))
        return f"{self._base}/media/{self.token(media_id, expires)}"

    def token(self, media_id: str, expires: int) -> str:
        return f"{media_id}.{expires}.{self._signature(media_id, expires)}"

    def _signature(self, media_id: str, expires: int) -> str:
        if not self.key:
            raise RuntimeError("the signing key is not set")
        message = _PURPOSE + f"{media_id}.{expires}".encode()
        digest = hmac.new(self.key.encode(), message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def verify(self, token: str) -> tuple[str, int]:
        """(media id, expiry) of a token we signed; raises :class:`MediaTokenInvalid`."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[0]:
            raise MediaTokenInvalid("malformed media token")
        media_id, expires_text, signature = parts
        expected = self._signature(media_id, int(expires_text))
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise MediaTokenInvalid("bad media token signature")
        return media_id, int(expires_text)

    async def open(self, token: str) -> tuple[bytes, str, float]:
        """(bytes, MIME type, seconds left) for a valid, live token."""
        media_id, expires = self.verify(token)
        now = self._clock()
        if expires <= now:
            raise MediaGone("media URL expired")
        async with self._sessions() as session:
            found = await hosted.get_live(session, media_id, now)
        if found is None:
            raise MediaGone("media no longer stored")
        data, mime = found
        return data, mime, expires - now

    async def purge(self) -> int:
        """Delete expired files; returns how many."""
        async with self._sessions.begin() as session:
            purged = await hosted.purge_expired(session, self._clock())
        if purged:
            log.info("hosted media purged", files=purged)
        return purged
