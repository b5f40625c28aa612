"""Webhook routes of the messaging channels: size check, verify, parse, store, answer.

The route is thin on purpose: the channel verifies and parses, the inbox stores. A 2xx is sent
only after the events are durably stored, and the platform's redelivery does the rest; every
failure maps to a 4xx (or 503 when storage is down) — never a 500 that would hide the cause.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from languagebuddy.channels.base import BadPayload, VerificationError
from languagebuddy.logs import get_logger, redact_id
from languagebuddy.metrics import WEBHOOKS

log = get_logger(__name__)

router = APIRouter()

MAX_BODY_BYTES = 1024 * 1024


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused as soon as the declared or actual size passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadPayload("invalid Content-Length")
        if int(declared) > limit:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(channel: str, outcome: str, status: int, detail: str) -> Response:
    WEBHOOKS.labels(channel, outcome).inc()
    return JSONResponse({"status": outcome, "detail": detail}, status_code=status)


def _channel(request: Request, name: str) -> Any:
    services = getattr(request.app.state, "services", None)
    channels = getattr(services, "channels", None) or {}
    return channels.get(name)


async def _receive(request: Request, name: str) -> Response:
    channel = _channel(request, name)
    if channel is None:
        return _answer(name, "disabled", 404, "channel not configured")
    try:
        body = await _read_body(request)
    except _TooLarge:
        return _answer(name, "too_large", 413, "body larger than 1 MiB")
    except BadPayload as exc:
        return _answer(name, "invalid", 400, str(exc))
    except Exception:  # the client went away mid-body
        return _answer(name, "invalid", 400, "body could not be read")
    try:
        channel.verify(request.headers, body)
    except VerificationError as exc:
        log.warning("webhook refused", channel=name, reason=str(exc), status=exc.status_code)
        return _answer(name, "rejected", exc.status_code, "signature did not verify")
    try:
        events = channel.parse(body)
    except BadPayload as exc:
        return _answer(name, "invalid", 400, str(exc))
    except Exception as exc:  # a verified body of a shape we did not foresee
        log.warning("webhook unparseable", channel=name, error=type(exc).__name__)
        return _answer(name, "invalid", 400, "payload not understood")
    if not events:
        return _answer(name, "ignored", 200, "nothing to do")
    try:
        new = await request.app.state.services.inbox.put_many(events)
    except Exception:
        log.exception("inbox unavailable", channel=name)
        WEBHOOKS.labels(name, "unavailable").inc()
        return JSONResponse(
            {"status": "unavailable", "detail": "try again"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
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
    return JSONResponse({"status": "ok", "events": len(events), "new": new})


@router.get("/webhooks/whatsapp", include_in_schema=False)
async def whatsapp_subscribe(request: Request) -> Response:
    """Meta's subscription check: echo hub.challenge as plain text if the verify token matches."""
    channel = _channel(request, "whatsapp")
    if channel is None:
        return _answer("whatsapp", "disabled", 404, "channel not configured")
    challenge = channel.hub_challenge(request.query_params)
    if challenge is None:
        return _answer("whatsapp", "rejected", 403, "verify token mismatch")
    WEBHOOKS.labels("whatsapp", "subscribed").inc()
    return PlainTextResponse(challenge)


@router.post("/webhooks/whatsapp", include_in_schema=False)
async def whatsapp_webhook(request: Request) -> Response:
    return await _receive(request, "whatsapp")


@router.post("/webhooks/telegram", include_in_schema=False)
async def telegram_webhook(request: Request) -> Response:
    return await _receive(request, "telegram")


@router.post("/webhooks/line", include_in_schema=False)
async def line_webhook(request: Request) -> Response:
    return await _receive(request, "line")
