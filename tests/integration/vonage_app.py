"""A small application of our own built from ``calls/vonage.py`` (verify, parse, NCCO) that
stands in for the service: it answers the fake Vonage's calls with a connect NCCO to its own
socket and runs a per-test script on that socket, so that the fake and the serializer are
tested on their own, without a bridge or a model. Shared by the tests of the fake and of the
outbound serializer (the product's routes are tested in test_calls_vonage.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from languagebuddy.calls.vonage import (
    WebhookVerifier,
    call_headers,
    connect_ncco,
    parse_answer,
    parse_event,
    talk_ncco,
)
from languagebuddy.channels.base import VerificationError
from tests.fakes.server import FakeServer
from tests.fakes.vonage import FRAME_BYTES, FakeVonage

Script = Callable[[WebSocket, "Leg"], Awaitable[None]]


@dataclass
class Leg:
    """What the application saw of one call's socket."""

    call_uuid: str
    handshake: dict[str, str] = field(default_factory=dict)
    first: dict[str, Any] | None = None
    frames: list[bytes] = field(default_factory=list)
    texts: list[dict[str, Any]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    async def until(self, event: str, count: int = 1, within: float = 10.0) -> dict[str, Any]:
        """The ``count``-th text message ``event`` once it has arrived."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = [text for text in self.texts if text.get("event") == event]
            if len(found) >= count:
                return found[count - 1]
            await asyncio.sleep(0.005)
        raise AssertionError(f"no {event} x{count} within {within} s; got {self.texts}")


class Application:
    """Answers calls with a connect NCCO to its own socket and runs a per-test script on it."""

    def __init__(self, vonage: FakeVonage) -> None:
        self.verifier = WebhookVerifier(vonage.signature_secret, vonage.application_id)
        self.refused: list[str] = []
        self.events: list[Any] = []
        self.legs: dict[str, Leg] = {}
        self.script: Script | None = None
        self.reads = True  # False: the script reads the socket itself
        self.socket_uri: str | None = None  # instead of our own socket (a failure test)
        self.ncco_edit: Callable[[list[dict[str, Any]]], None] | None = None
        self.server = FakeServer(
            Starlette(
                routes=[
                    Route("/answer", self.answer, methods=["GET", "POST"]),
                    Route("/events", self.event, methods=["POST"]),
                    WebSocketRoute("/media", self.media),
                ]
            )
        )

    async def _verified(self, request: Request) -> bytes | None:
        """The raw body of a webhook that verifies; None (and the refusal noted) otherwise."""
        body = await request.body()
        try:
            self.verifier.verify(request.headers, body)
        except VerificationError as exc:
            self.refused.append(str(exc))
            return None
        return body

    async def answer(self, request: Request) -> Response:
        body = await self._verified(request)
        if body is None:
            return Response(status_code=401)
        answer = parse_answer(request.query_params, body)
        self.legs[answer.uuid] = Leg(answer.uuid)
        uri = self.socket_uri or f"{self.server.ws_url}/media?call={answer.uuid}"
        ncco = connect_ncco(
            uri,
            f"{self.server.base_url}/events",
            call_headers(answer),
            caller=answer.from_number,
        )
        if self.ncco_edit is not None:
            self.ncco_edit(ncco)
        return JSONResponse(ncco)

    async def event(self, request: Request) -> Response:
        body = await self._verified(request)
        if body is None:
            return Response(status_code=401)
        event = parse_event(body)
        self.events.append(event)
        if event is not None and event.socket_failed:
            return JSONResponse(talk_ncco("Sorry, the buddy cannot talk right now.", "en"))
        return Response(status_code=204)

    async def media(self, socket: WebSocket) -> None:
        leg = self.legs[socket.query_params["call"]]
        leg.handshake = dict(socket.headers)
        await socket.accept()
        reader = asyncio.ensure_future(self._read(socket, leg) if self.reads else asyncio.sleep(0))
        try:
            if self.script is not None:
                await self.script(socket, leg)
            await reader
        finally:
            reader.cancel()
            leg.done.set()

    async def _read(self, socket: WebSocket, leg: Leg) -> None:
        try:
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    leg.frames.append(message["bytes"])
                elif message.get("text") is not None:
                    text = json.loads(message["text"])
                    if leg.first is None:
                        leg.first = text
                    else:
                        leg.texts.append(text)
        except (WebSocketDisconnect, RuntimeError):
            return


@pytest.fixture(scope="module", name="vonage")
def vonage_fixture() -> Iterator[FakeVonage]:
    with FakeVonage() as fake:
        yield fake


@pytest.fixture(scope="module", name="app")
def app_fixture(vonage: FakeVonage) -> Iterator[Application]:
    application = Application(vonage)
    with application.server:
        vonage.answer_url = f"{application.server.base_url}/answer"
        vonage.event_url = f"{application.server.base_url}/events"
        yield application


@pytest.fixture(autouse=True, name="fresh")
def fresh_fixture(app: Application, vonage: FakeVonage) -> Iterator[None]:
    """Import this (with the two above) into a test module to use the application."""
    app.script = None
    app.reads = True
    app.socket_uri = None
    app.ncco_edit = None
    vonage.notify_on_clear = "drop"
    yield
    assert app.refused == [], "every webhook the fake sent must verify"


def wait(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def audio(ms: int, value: int = 1000) -> list[bytes]:
    """``ms`` of a constant level as 640-byte frames."""
    frame = value.to_bytes(2, "little", signed=True) * (FRAME_BYTES // 2)
    return [frame] * (ms // 20)
