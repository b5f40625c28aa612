"""Webhook routes of the messaging channels: size check, verify, parse, store, answer.

The route is thin on purpose: the channel verifies and parses, the inbox stores. A 2xx is sent
only after the events are durably stored, and the platform's redelivery does the rest; every
failure maps to a 4xx (or 503 when storage is down) — never a 500 that would hide the cause.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from languagebuddy.channels.base import BadPayload, VerificationError
from languagebuddy.errors import StorageUnavailable
from languagebuddy.logs import get_logger, redact_id
from languagebuddy.metrics import WEBHOOKS

log = get_logger(__name__)

router = APIRouter()

MAX_BODY_BYTES = 1024 * 1024
_JSON = [(b"content-type", b"application/json")]


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    """The client went away before the body was complete."""


async def _read_body(scope: Scope, receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused as soon as the declared or actual size passes ``limit``."""
    declared = Headers(scope=scope).get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadPayload("invalid Content-Length")
        if int(declared) > limit:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _services(scope: Scope) -> Any:
    return getattr(scope["app"].state, "services", None)


def _channel(services: Any, name: str) -> Any:
    channels = getattr(services, "channels", None) or {}
    return channels.get(name)


class WebhookEndpoint:
    """``POST /webhooks/<channel>`` as a raw ASGI endpoint: size check, verify, parse, store,
    answer. The route is thin on purpose: the channel verifies and parses, the inbox stores.

    Raw ASGI because this is the hottest request path of the service: FastAPI's request handler
    (dependency solving, Request and Response objects) was about a fifth of the CPU of each
    webhook, for nothing a webhook uses (bench/webhooks.py measures it against a floor).
    """

    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, outcome, payload = await self._handle(scope, receive)
        if outcome != "ok":
            WEBHOOKS.labels(self.channel, outcome).inc()
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = [*_JSON, (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", b"5"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, str, dict[str, Any]]:
        """(HTTP status, outcome for the metric, JSON answer). Every failure maps to a 4xx, or
        503 when storage is down — never a 500 that would hide the cause."""
        name = self.channel
        services = _services(scope)
        channel = _channel(services, name)
        if channel is None:
            return 404, "disabled", {"status": "disabled", "detail": "channel not configured"}
        try:
            body = await _read_body(scope, receive)
        except _TooLarge:
            return 413, "too_large", {"status": "too_large", "detail": "body larger than 1 MiB"}
        except BadPayload as exc:
            return 400, "invalid", {"status": "invalid", "detail": str(exc)}
        except _Gone:
            return 400, "invalid", {"status": "invalid", "detail": "body could not be read"}
        try:
            channel.verify(Headers(scope=scope), body)
        except VerificationError as exc:
            log.warning("webhook refused", channel=name, reason=str(exc), status=exc.status_code)
            detail = {"status": "rejected", "detail": "signature did not verify"}
            return exc.status_code, "rejected", detail
        try:
            events = channel.parse(body)
        except BadPayload as exc:
            return 400, "invalid", {"status": "invalid", "detail": str(exc)}
        except Exception as exc:  # a verified body of a shape we did not foresee
            log.warning("webhook unparseable", channel=name, error=type(exc).__name__)
            return 400, "invalid", {"status": "invalid", "detail": "payload not understood"}
        if not events:
            return 200, "ignored", {"status": "ignored", "detail": "nothing to do"}
        try:
            new = await services.inbox.put_many(events)
        except StorageUnavailable as exc:
            cause = type(exc.__cause__).__name__ if exc.__cause__ else str(exc)
            log.warning("inbox unavailable", channel=name, cause=cause)
            return 503, "unavailable", {"status": "unavailable", "detail": "try again"}
        except Exception:  # a bug, not an outage: keep the traceback
            log.exception("inbox put failed", channel=name)
            return 503, "unavailable", {"status": "unavailable", "detail": "try again"}
        duplicates = len(events) - new
        if new:
            WEBHOOKS.labels(name, "accepted").inc()
        if duplicates:
            WEBHOOKS.labels(name, "duplicate").inc()
        log.info(
            "webhook stored",
            channel=name,
            events=len(events),
            new=new,
            kinds=sorted({e.kind.value for e in events}),
            first=redact_id(events[0].event_id),
        )
        return 200, "ok", {"status": "ok", "events": len(events), "new": new}


CHANNELS = ("whatsapp", "telegram", "line")
ENDPOINTS = {f"/webhooks/{name}": WebhookEndpoint(name) for name in CHANNELS}
for _path, _endpoint in ENDPOINTS.items():
    router.routes.append(Route(_path, _endpoint, methods=["POST"]))


class WebhookFastPath:
    """ASGI middleware that serves ``POST /webhooks/<channel>`` before FastAPI's exception
    middleware, exit stacks and router walk (about a tenth of a webhook's CPU, and the router
    walk grows with every route). The router keeps the same routes, for the 405 on other
    methods and for anyone reading the app's routes; ServerErrorMiddleware still wraps this.

    ``sockets``: the call media WebSockets, served the same way: every message a call sends
    would otherwise pass the exception middleware's ``send`` wrapper, ~90 a second per call
    (bench/calls.py --provider vonage: ~8 % of a call's CPU)."""

    def __init__(self, app: ASGIApp, *, sockets: dict[str, ASGIApp] | None = None) -> None:
        self.app = app
        self.sockets = sockets or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = ENDPOINTS.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        elif scope["type"] == "websocket":  # a call's media socket
            endpoint = self.sockets.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


@router.get("/webhooks/whatsapp", include_in_schema=False)
async def whatsapp_subscribe(request: Request) -> Response:
    """Meta's subscription check: echo hub.challenge as plain text if the verify token matches."""
    channel = _channel(_services(request.scope), "whatsapp")
    if channel is None:
        return _refuse("disabled", 404, "channel not configured")
    challenge = channel.hub_challenge(request.query_params)
    if challenge is None:
        return _refuse("rejected", 403, "verify token mismatch")
    WEBHOOKS.labels("whatsapp", "subscribed").inc()
    return PlainTextResponse(challenge)


def _refuse(outcome: str, status: int, detail: str) -> Response:
    WEBHOOKS.labels("whatsapp", outcome).inc()
    return JSONResponse({"status": outcome, "detail": detail}, status_code=status)
