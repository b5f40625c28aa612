"""What the three platform clients share: one httpx client each, bounded in-call retries,
size-limited downloads and the headers/helpers that verification needs.

Each channel supplies a ``classify`` function that turns a non-2xx response into a
``DeliveryError``; this module decides whether to retry it now (short Retry-After) or hand it
to the inbox, which retries later with backoff.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

import httpx

from languagebuddy.channels.base import DeliveryError
from languagebuddy.logs import get_logger
from languagebuddy.metrics import PLATFORM_CALLS

log = get_logger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)


class MediaTooLarge(DeliveryError):
    """The learner's file exceeds what we download (a permanent, learner-facing problem)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"media larger than {limit / (1024 * 1024):g} MB", retryable=False, code="too_large"
        )


def refuse_oversize(declared: object, limit: int) -> None:
    """Raise ``MediaTooLarge`` when the size the platform declares (an int, or a numeric
    string as Meta sends it) is over ``limit``: the file is refused without fetching it."""
    if isinstance(declared, bool):
        return
    if isinstance(declared, str) and declared.strip().isdigit():
        declared = int(declared)
    if isinstance(declared, int) and declared > limit:
        raise MediaTooLarge(limit)


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
                error = await _refusal(response, channel, classify, "download failed")
                if error is not None:
                    raise error
            return await _read_limited(response, limit, channel)
    except httpx.HTTPError as exc:
        raise _network_error(channel, exc) from exc


async def _refusal(
    response: httpx.Response,
    channel: str,
    classify: Callable[[httpx.Response], DeliveryError | None],
    message: str,
) -> DeliveryError | None:
    """The error a download's non-200 answer means (counted), or None for a 2xx to read."""
    await response.aread()
    error = classify(response)
    if error is None and response.status_code >= 300:
        error = status_error(channel, response, code=None, message=message)
    if error is not None:
        PLATFORM_CALLS.labels(channel, "download", "error").inc()
    return error


def _network_error(channel: str, exc: httpx.HTTPError) -> DeliveryError:
    PLATFORM_CALLS.labels(channel, "download", "network").inc()
    return DeliveryError(
        f"{channel} download: {type(exc).__name__}", retryable=True, code="network"
    )


async def _read_limited(
    response: httpx.Response, limit: int, channel: str
) -> tuple[bytes, str | None]:
    """The body of a 200, refused by its Content-Length before any of it is read, or as soon
    as the bytes that arrive pass ``limit``."""
    refuse_oversize(response.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise MediaTooLarge(limit)
        chunks.append(chunk)
    mime = response.headers.get("content-type")
    PLATFORM_CALLS.labels(channel, "download", "ok").inc()
    return b"".join(chunks), mime.split(";")[0].strip() if mime else None


# --- media a platform only points at (LINE's contentProvider "external") ---------------------

MAX_REDIRECTS = 3


class RefusedUrl(DeliveryError):
    """A media URL we will not fetch (not https, a private address, credentials in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"media URL refused: {reason}", retryable=False, code="refused_url")


def make_external_client() -> httpx.AsyncClient:
    """A client for third-party media hosts: no base URL, no default headers (so no platform
    token can ever reach them) and redirects checked one by one by ``download_external``."""
    return httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, follow_redirects=False)


def check_external_url(url: str, http_hosts: Collection[str] = ()) -> httpx.URL:
    """The URL, if it may be fetched: https to a public host. ``http_hosts`` (``host`` or
    ``host:port``, from LB_EXTERNAL_MEDIA_HTTP_HOSTS, empty by default) may also be reached over
    plain http and at private addresses, for a self-hosted content server."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise RefusedUrl("not a URL") from exc
    host = (parsed.host or "").lower()
    if not host:
        raise RefusedUrl("no host")
    if parsed.userinfo:
        raise RefusedUrl("credentials in the URL")
    listed = host in http_hosts or f"{host}:{parsed.port}" in http_hosts
    if parsed.scheme == "http" and listed:
        return parsed
    if parsed.scheme != "https":
        raise RefusedUrl(f"{parsed.scheme or 'no'} scheme, https only")
    if not listed and _private_host(host):
        raise RefusedUrl("a private or local address")
    return parsed


def _private_host(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name; what it resolves to is the resolver's business
    return not address.is_global


def _any_failure(response: httpx.Response) -> DeliveryError | None:
    return None  # a third party's errors: by HTTP status alone (``_refusal``)


async def download_external(
    client: httpx.AsyncClient,
    url: str,
    *,
    channel: str,
    limit: int,
    http_hosts: Collection[str] = (),
) -> tuple[bytes, str | None]:
    """GET a third party's media URL into memory with the same limits as a platform download.
    Every hop of a redirect is checked like the URL itself; no credentials are sent."""
    target = check_external_url(url, http_hosts)
    for _ in range(MAX_REDIRECTS + 1):
        try:
            async with client.stream("GET", target) as response:
                if response.is_redirect:
                    location = response.headers.get("location") or ""
                    target = check_external_url(str(target.join(location)), http_hosts)
                    continue
                if response.status_code != 200:
                    error = await _refusal(response, channel, _any_failure, "media unavailable")
                    if error is not None:
                        raise error
                return await _read_limited(response, limit, channel)
        except httpx.HTTPError as exc:
            raise _network_error(channel, exc) from exc
    raise RefusedUrl("too many redirects")
