"""Call routes: the providers' webhooks and media WebSockets. Thin: verify, parse, hand over.

The media socket is served as a raw ASGI endpoint rather than through Starlette's
``WebSocket`` wrapper: a call exchanges ~100 messages a second, and the adapter below is the
whole of what the bridge needs (text in, text out, close). Its token is checked and used up
before the socket is accepted, so a bad one never gets past the handshake (HTTP 403).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from languagebuddy.ai.realtime import PCMU
from languagebuddy.calls.socket import SocketGone
from languagebuddy.calls.telnyx_serializer import TelnyxCarrier, TelnyxStreamReader
from languagebuddy.calls.tokens import TokenRefused
from languagebuddy.channels.base import BadPayload, VerificationError
from languagebuddy.errors import DeliveryError
from languagebuddy.logs import get_logger
from languagebuddy.metrics import WEBHOOKS
from languagebuddy.web.webhooks import _Gone, _read_body, _TooLarge

log = get_logger(__name__)

router = APIRouter()
START_TIMEOUT_SECONDS = 10.0


def _answer(provider: str, outcome: str, status: int, detail: str) -> Response:
    WEBHOOKS.labels(provider, outcome).inc()
    return JSONResponse({"status": outcome, "detail": detail}, status_code=status)


@router.post("/calls/telnyx/webhook", include_in_schema=False)
async def telnyx_webhook(request: Request) -> Response:
    services = request.app.state.services
    provider = services.call_providers.get("telnyx")
    if provider is None:
        return _answer("telnyx", "disabled", 404, "telnyx not configured")
    try:
        body = await _read_body(request.scope, request.receive)
    except _TooLarge:
        return _answer("telnyx", "too_large", 413, "body larger than 1 MiB")
    except (_Gone, BadPayload):
        return _answer("telnyx", "invalid", 400, "body could not be read")
    try:
        provider.webhooks.verify(request.headers, body)
    except VerificationError as exc:
        log.warning("telnyx.webhook_refused", reason=str(exc))
        return _answer("telnyx", "rejected", exc.status_code, "signature did not verify")
    try:
        event = provider.webhooks.parse(body)
    except BadPayload as exc:
        return _answer("telnyx", "invalid", 400, str(exc))
    if event is None:
        return _answer("telnyx", "ignored", 200, "no call event")
    try:
        done = await provider.handle(services.calls, event)
    except DeliveryError as exc:
        log.warning("telnyx.webhook_failed", event=event.event_type, error=str(exc))
        return JSONResponse(
            {"status": "unavailable", "detail": "try again"},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    return _answer("telnyx", done, 200, event.event_type)


class AsgiMediaSocket:
    """An accepted ASGI WebSocket as the call's ``MediaSocket``."""

    __slots__ = ("_receive", "_send", "closed")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.closed = False

    async def receive(self) -> str | bytes | None:
        if self.closed:
            return None
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            return text if text is not None else message.get("bytes")
        self.closed = True  # websocket.disconnect
        return None

    async def send_text(self, text: str) -> None:
        if self.closed:
            raise SocketGone
        try:
            await self._send({"type": "websocket.send", "text": text})
        except Exception as exc:  # the client went away under us
            self.closed = True
            raise SocketGone from exc

    async def send_bytes(self, data: bytes) -> None:
        if self.closed:
            raise SocketGone
        try:
            await self._send({"type": "websocket.send", "bytes": data})
        except Exception as exc:
            self.closed = True
            raise SocketGone from exc

    async def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        self.closed = True
        with suppress(Exception):  # already gone
            await self._send({"type": "websocket.close", "code": code})


def _token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


async def _refuse(send: Send, reason: str) -> None:
    """Close before accepting: the server answers the handshake with HTTP 403."""
    log.warning("call.stream_refused", reason=reason)
    await send({"type": "websocket.close", "code": 1008})


class TelnyxMediaStream:
    """``/calls/telnyx/media-stream``: Telnyx connects here with the token we gave it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Any = scope["app"].state.services
        if (await receive())["type"] != "websocket.connect":
            return
        if "telnyx" not in services.call_providers:
            await _refuse(send, "telnyx not configured")
            return
        try:
            redeemed = await services.calls.redeem("telnyx", _token(scope))
        except TokenRefused as exc:
            await _refuse(send, str(exc))
            return
        await send({"type": "websocket.accept"})
        socket = AsgiMediaSocket(receive, send)
        try:
            reader = TelnyxStreamReader(socket)
            try:
                start = await asyncio.wait_for(reader.wait_start(), START_TIMEOUT_SECONDS)
            except TimeoutError:
                start = None
            if start is None:
                log.warning("call.stream_without_start", call=redeemed.call.call_id)
                return
            if start.encoding and start.encoding.upper() != "PCMU":
                log.warning("call.stream_codec", call=redeemed.call.call_id, codec=start.encoding)
            await services.calls.run(
                redeemed, carrier=TelnyxCarrier(socket), stream=reader, audio_format=PCMU
            )
        finally:
            await socket.close()


def mount_call_routes(app: FastAPI) -> None:
    app.include_router(router)
    app.router.routes.append(WebSocketRoute("/calls/telnyx/media-stream", TelnyxMediaStream()))
