"""The error vocabulary every layer shares, in a module that imports nothing of ours.

The worker decides retry or dead letter from these types alone, so the queue never needs to know
about channels, models or the tutor: a platform call that failed (``DeliveryError``), a model that
stayed down (``ModelUnavailable``) or refused for good (``ModelRejected``), and an event that can
never succeed (``PermanentFailure``).
"""

from __future__ import annotations


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


class ModelUnavailable(Exception):
    """The model stayed unavailable after retries; the event is kept and retried later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelRejected(Exception):
    """The provider refused this request for good (400, 404, 422): retrying will not help."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class PermanentFailure(Exception):
    """The event can never succeed (e.g. its channel is not configured): dead-letter it now."""


class StorageUnavailable(Exception):
    """The database did not take a write (unreachable, or the connection dropped): nothing was
    stored, and the caller may try again (a webhook answers 503 so that the platform does)."""
