"""Signed, expiring, single-use stream tokens: the only way into a call's media WebSocket.

The provider connects to the stream URL we gave it when answering; the token in that URL says
which call and which learner the socket belongs to, signed with the service's signing key
(HMAC-SHA256) so it cannot be forged or edited, and expiring so a leaked URL soon goes stale.
Single use is enforced in the database (``store.calls.claim_stream`` against the token's
nonce), not here, so that it holds across every process of a deployment.

Format: ``base64url(json claims) "." base64url(hmac)``. The claims are short on purpose: the
token travels in a URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass


class TokenRefused(Exception):
    """The token is missing, malformed, tampered with or expired (the reason says which)."""


@dataclass(frozen=True)
class StreamClaims:
    call_id: int
    learner_id: int
    provider: str
    nonce: str
    expires_at: float
    # Where the call's REST commands go when the provider named a host for it (Vonage's
    # ``region_url``): the instance that serves the socket may not have seen the answer.
    region_url: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: str, body: str) -> bytes:
    # A key of its own per purpose: a hosted-media URL signature can never pass as a token.
    return hmac.new(key.encode(), b"stream-token|" + body.encode(), hashlib.sha256).digest()


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


def issue(
    key: str,
    *,
    call_id: int,
    learner_id: int,
    provider: str,
    nonce: str,
    ttl_seconds: float,
    region_url: str | None = None,
    now: float | None = None,
) -> str:
    """A token for one call's stream, valid for ``ttl_seconds``."""
    expires = int((now if now is not None else time.time()) + ttl_seconds)
    claims: dict[str, object] = {
        "c": call_id,
        "l": learner_id,
        "p": provider,
        "n": nonce,
        "e": expires,
    }
    if region_url:
        claims["r"] = region_url
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{body}.{_b64(_mac(key, body))}"


def verify(key: str, token: str | None, *, provider: str, now: float | None = None) -> StreamClaims:
    """The token's claims if its signature, provider and expiry check out; else TokenRefused."""
    if not token:
        raise TokenRefused("missing token")
    body, dot, signature = token.partition(".")
    if not dot or not body or not signature:
        raise TokenRefused("malformed token")
    try:
        given = _unb64(signature)
    except ValueError:
        raise TokenRefused("malformed token") from None
    if not hmac.compare_digest(given, _mac(key, body)):
        raise TokenRefused("bad signature")
    try:
        claims = json.loads(_unb64(body))
        parsed = StreamClaims(
            call_id=int(claims["c"]),
            learner_id=int(claims["l"]),
            provider=str(claims["p"]),
            nonce=str(claims["n"]),
            expires_at=float(claims["e"]),
            region_url=str(claims["r"]) if claims.get("r") else None,
        )
    except (ValueError, KeyError, TypeError):
        raise TokenRefused("malformed claims") from None
    if parsed.provider != provider:
        raise TokenRefused("token is for another provider")
    if (now if now is not None else time.time()) > parsed.expires_at:
        raise TokenRefused("expired token")
    return parsed
