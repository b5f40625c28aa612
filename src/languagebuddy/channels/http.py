"""What the three platform clients share: one httpx client each, bounded in-call retries,
size-limited downloads and the headers/helpers that verification needs.

Each channel supplies a ``classify`` function that turns a non-2xx response into a
``DeliveryError``; this module decides whether to retry it now (short Retry-After) or hand it
to the inbox, which retries later with backoff.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx

from languagebuddy.channels.base import MAX_MEDIA_BYTES as MAX_MEDIA_BYTES  # the channels' limit
from languagebuddy.channels.base import DeliveryError
from languagebuddy.logs import get_logger
from languagebuddy.metrics import PLATFORM_CALLS

log = get_logger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)


class MediaTooLarge(DeliveryError):
    """The learner's file exceeds what we download (a permanent, learner-facing problem)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"media larger than {limit // (1024 * 1024)} MB", retryable=False, code="too_large"
        )


@dataclass(frozen=True)
class RetryPolicy:
    """In-call retries: a few quick ones for 429/5xx; longer waits are the inbox's job."""

    attempts: int = 3
    max_wait: float = 2.0
    base_delay: float = 0.25


def make_client(
    base_url: str, *, headers: Mapping[str, str] | None = None, timeout: httpx.Timeout | None = None
) -> httpx.AsyncClient:
    """One pooled client per platform, pointed at its (possibly self-hosted) base URL."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers=dict(headers or {}),
        timeout=timeout or DEFAULT_TIMEOUT,
        follow_redirects=False,
    )


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that also works on a plain dict."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


async def call(
    channel: str,
    method: str,
    send: Callable[[], Awaitable[httpx.Response]],
    classify: Callable[[httpx.Response], DeliveryError | None],
    *,
    policy: RetryPolicy,
) -> httpx.Response:
    """Run ``send`` until it succeeds, retrying retryable failures that ask for a short wait.

    ``classify`` returns None for a response that counts as success. A connection that could
    not be opened is retried too (nothing was sent); a timeout after sending is not, because
    the platform may already have delivered the message.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            response = await send()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            error = DeliveryError(
                f"{channel} {method}: cannot connect ({type(exc).__name__})",
                retryable=True,
                code="network",
            )
        except httpx.HTTPError as exc:
            PLATFORM_CALLS.labels(channel, method, "network").inc()
            raise DeliveryError(
                f"{channel} {method}: {type(exc).__name__}", retryable=True, code="network"
            ) from exc
        else:
            error = classify(response)
            if error is None:
                PLATFORM_CALLS.labels(channel, method, "ok").inc()
                return response
        wait = error.retry_after if error.retry_after is not None else _backoff(policy, attempt)
        if not error.retryable or attempt >= policy.attempts or wait > policy.max_wait:
            PLATFORM_CALLS.labels(
                channel, method, "retryable" if error.retryable else "error"
            ).inc()
            log.warning(
                "platform call failed",
                channel=channel,
                method=method,
                code=error.code,
                retryable=error.retryable,
                attempt=attempt,
            )
            raise error
        PLATFORM_CALLS.labels(channel, method, "retry").inc()
        await asyncio.sleep(wait)


def _backoff(policy: RetryPolicy, attempt: int) -> float:
    return policy.base_delay * (2 ** (attempt - 1))


def status_error(
    channel: str,
    response: httpx.Response,
    *,
    code: str | None,
    message: str,
    retry_after: float | None = None,
) -> DeliveryError:
    """The common rule: 429 and 5xx are retryable, any other failure is permanent."""
    retryable = response.status_code == 429 or response.status_code >= 500
    if retry_after is None:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    return DeliveryError(
        f"{channel}: HTTP {response.status_code}: {message[:200]}",
        retryable=retryable,
        code=code or str(response.status_code),
        retry_after=retry_after if retryable else None,
    )


async def download_limited(
    client: httpx.AsyncClient,
    url: str,
    *,
    channel: str,
    limit: int,
    classify: Callable[[httpx.Response], DeliveryError | None],
    headers: Mapping[str, str] | None = None,
) -> tuple[bytes, str | None]:
    """GET ``url`` into memory, refusing (``MediaTooLarge``) as soon as it passes ``limit``."""
    try:
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                error = classify(response)
                if error is None and response.status_code >= 300:
                    error = status_error(channel, response, code=None, message="download failed")
                if error is not None:
                    PLATFORM_CALLS.labels(channel, "download", "error").inc()
                    raise error
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise MediaTooLarge(limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise MediaTooLarge(limit)
                chunks.append(chunk)
            mime = response.headers.get("content-type")
    except httpx.HTTPError as exc:
        PLATFORM_CALLS.labels(channel, "download", "network").inc()
        raise DeliveryError(
            f"{channel} download: {type(exc).__name__}", retryable=True, code="network"
        ) from exc
    PLATFORM_CALLS.labels(channel, "download", "ok").inc()
    return b"".join(chunks), mime.split(";")[0].strip() if mime else None
