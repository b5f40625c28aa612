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
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from languagebuddy.ai.realtime import PCM24K, PCMU
from languagebuddy.calls.service import CallService, Redeemed
from languagebuddy.calls.socket import SocketGone
from languagebuddy.calls.telnyx_serializer import TelnyxCarrier, TelnyxStreamReader
from languagebuddy.calls.tokens import TokenRefused
from languagebuddy.channels.base import BadPayload, VerificationError
from languagebuddy.errors import DeliveryError, StorageUnavailable
from languagebuddy.logs import get_logger
from languagebuddy.metrics import WEBHOOKS
from languagebuddy.web.webhooks import _Gone, _read_body, _TooLarge

log = get_logger(__name__)

router = APIRouter()
START_TIMEOUT_SECONDS = 10.0
# A webhook that failed on these is answered 503: the provider delivers it again.
_RETRYABLE = (DeliveryError, StorageUnavailable, SQLAlchemyError, OSError)


def _answer(provider: str, outcome: str, status: int, detail: str) -> Response:
    WEBHOOKS.labels(provider, outcome).inc()
    return JSONResponse({"status": outcome, "detail": detail}, status_code=status)


async def _verified(request: Request, name: str) -> tuple[Any, bytes] | Response:
    """The enabled provider and the request's raw body once its signature verified; else
    the answer to give (404 when the provider is off, 401/403 on a bad signature)."""
    provider = request.app.state.services.call_providers.get(name)
    if provider is None:
        return _answer(name, "disabled", 404, f"{name} not configured")
    try:
        body = await _read_body(request.scope, request.receive)
    except _TooLarge:
        return _answer(name, "too_large", 413, "body larger than 1 MiB")
    except (_Gone, BadPayload):
        return _answer(name, "invalid", 400, "body could not be read")
    try:
        provider.webhooks.verify(request.headers, body)
    except VerificationError as exc:
        log.warning(f"{name}.webhook_refused", reason=str(exc))
        return _answer(name, "rejected", exc.status_code, "signature did not verify")
    return provider, body


def _try_again(name: str, what: str, exc: Exception) -> Response:
    """Storage or the provider's API failed: 503, and the provider asks again."""
    log.warning(f"{name}.webhook_failed", event=what, error=str(exc))
    WEBHOOKS.labels(name, "unavailable").inc()
    return JSONResponse(
        {"status": "unavailable", "detail": "try again"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


@router.post("/calls/telnyx/webhook", include_in_schema=False)
async def telnyx_webhook(request: Request) -> Response:
    verified = await _verified(request, "telnyx")
    if isinstance(verified, Response):
        return verified
    provider, body = verified
    try:
        event = provider.webhooks.parse(body)
    except BadPayload as exc:
        return _answer("telnyx", "invalid", 400, str(exc))
    if event is None:
        return _answer("telnyx", "ignored", 200, "no call event")
    try:
        done = await provider.handle(request.app.state.services.calls, event)
    except _RETRYABLE as exc:
        # Telnyx redelivers; a repeated answer carries the same command_id.
        return _try_again("telnyx", event.event_type, exc)
    return _answer("telnyx", done, 200, event.event_type)


@router.api_route("/calls/vonage/answer", methods=["GET", "POST"], include_in_schema=False)
async def vonage_answer(request: Request) -> Response:
    """Vonage asks what to do with an incoming call: an NCCO connecting it to our socket."""
    from languagebuddy.calls.vonage import parse_answer

    verified = await _verified(request, "vonage")
    if isinstance(verified, Response):
        return verified
    provider, body = verified
    try:
        answer = parse_answer(request.query_params, body)
    except BadPayload as exc:
        return _answer("vonage", "invalid", 400, str(exc))
    try:
        ncco = await provider.answer(request.app.state.services.calls, answer)
    except _RETRYABLE as exc:
        return _try_again("vonage", "answer", exc)  # Vonage then tries its fallback URL
    WEBHOOKS.labels("vonage", "answered" if ncco else "duplicate").inc()
    return JSONResponse(ncco)


@router.post("/calls/vonage/events", include_in_schema=False)
async def vonage_events(request: Request) -> Response:
    """Status changes of the call and of our socket leg. Answered with no body unless an
    NCCO should take over (our socket never connected)."""
    from languagebuddy.calls.vonage import parse_event

    verified = await _verified(request, "vonage")
    if isinstance(verified, Response):
        return verified
    provider, body = verified
    try:
        event = parse_event(body)
    except BadPayload as exc:
        return _answer("vonage", "invalid", 400, str(exc))
    if event is None:
        WEBHOOKS.labels("vonage", "ignored").inc()
        return Response(status_code=204)
    try:
        done, ncco = await provider.event(request.app.state.services.calls, event)
    except _RETRYABLE as exc:
        return _try_again("vonage", event.status, exc)
    WEBHOOKS.labels("vonage", done).inc()
    return JSONResponse(ncco) if ncco is not None else Response(status_code=204)


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


class _MediaStream:
    """A provider's media WebSocket: the token is checked and used up before the socket is
    accepted; then the provider's serializer runs the call through the shared bridge."""

    provider: str

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Any = scope["app"].state.services
        if (await receive())["type"] != "websocket.connect":
            return
        if self.provider not in services.call_providers:
            await _refuse(send, f"{self.provider} not configured")
            return
        try:
            redeemed = await services.calls.redeem(self.provider, _token(scope))
        except TokenRefused as exc:
            await _refuse(send, str(exc))
            return
        await send({"type": "websocket.accept"})
        socket = AsgiMediaSocket(receive, send)
        try:
            await self.serve(services.calls, redeemed, socket)
        finally:
            await socket.close()

    async def serve(self, calls: CallService, redeemed: Redeemed, socket: AsgiMediaSocket) -> None:
        raise NotImplementedError


class TelnyxMediaStream(_MediaStream):
    """``/calls/telnyx/media-stream``: JSON text both ways, PCMU passed through untouched."""

    provider = "telnyx"

    async def serve(self, calls: CallService, redeemed: Redeemed, socket: AsgiMediaSocket) -> None:
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
        await calls.run(redeemed, carrier=TelnyxCarrier(socket), stream=reader, audio_format=PCMU)


class VonageMediaStream(_MediaStream):
    """``/calls/vonage/media-stream``: L16 16 kHz binary frames, resampled to and from the
    model's 24 kHz PCM; the outbound pacer lives and dies with the call."""

    provider = "vonage"

    async def serve(self, calls: CallService, redeemed: Redeemed, socket: AsgiMediaSocket) -> None:
        from languagebuddy.calls.vonage_serializer import VonageCarrier, VonageStreamReader

        reader = VonageStreamReader(socket.receive)
        try:
            connected = await asyncio.wait_for(reader.wait_connected(), START_TIMEOUT_SECONDS)
        except TimeoutError:
            connected = None
        if connected is None:
            log.warning("call.stream_without_start", call=redeemed.call.call_id)
            return
        echoed = connected.headers.get("call_uuid")
        if echoed and echoed != redeemed.call.provider_call_id:
            log.warning("vonage.stream_headers_mismatch", call=redeemed.call.call_id)
        carrier = VonageCarrier(socket)
        carrier.start()
        try:
            await calls.run(redeemed, carrier=carrier, stream=reader, audio_format=PCM24K)
        finally:
            await carrier.aclose()


MEDIA_STREAMS = {
    "/calls/telnyx/media-stream": TelnyxMediaStream(),
    "/calls/vonage/media-stream": VonageMediaStream(),
}


def mount_call_routes(app: FastAPI) -> None:
    app.include_router(router)
    for path, endpoint in MEDIA_STREAMS.items():
        app.router.routes.append(WebSocketRoute(path, endpoint))
