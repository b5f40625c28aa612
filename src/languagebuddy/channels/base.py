"""The Channel protocol: what every messaging platform offers the rest of the service.

Routes call ``verify`` and ``parse``; the worker calls ``typing``, ``download`` and ``send``.
A channel never knows about the tutor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from languagebuddy.events import InboundEvent, Media, OutboundPart


class DeliveryError(Exception):
    """A platform refused or failed a call. ``retryable`` decides retry or dead letter."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        code: str | None = None,
        retry_after: float | None = None,
        delivered: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.retry_after = retry_after
        # Provider ids of the parts that did go out before the failure, in order.
        self.delivered = delivered or []


class VerificationError(Exception):
    """The request's signature or secret did not verify (answer 401/403)."""

    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(message)
        self.status_code = status_code


class BadPayload(Exception):
    """The body verified but is not the platform's JSON (answer 400)."""


def json_object(body: bytes) -> dict[str, Any]:
    """The webhook body as a JSON object; every platform sends one, anything else is a 400."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPayload("body is not JSON") from exc
    if not isinstance(payload, dict):
        raise BadPayload("body is not a JSON object")
    return payload


@runtime_checkable
class Channel(Protocol):
    name: str
    max_text_length: int

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise VerificationError unless the raw body carries a valid signature/secret."""

    def parse(self, body: bytes) -> list[InboundEvent]:
        """Turn a verified body into events (possibly several, possibly none)."""

    async def typing(self, event: InboundEvent) -> None:
        """Show that the buddy is working (best effort: never raises)."""

    async def download(self, event: InboundEvent) -> Media:
        """Fetch the event's media into memory."""

    async def send(
        self, event: InboundEvent, parts: list[OutboundPart], *, idempotency_key: str
    ) -> list[str]:
        """Deliver reply parts to the event's sender; return provider message ids."""

    async def aclose(self) -> None: ...
