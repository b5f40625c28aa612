"""A third party's media host: where LINE's ``contentProvider.type = "external"`` points.

A plain HTTP server on 127.0.0.1 (as every fake); the product reaches it only through the URL
in the webhook and only because the test lists its ``host:port`` in
``LB_EXTERNAL_MEDIA_HTTP_HOSTS`` (off by default: production fetches https from public hosts).
It records every request, so a test can check that no platform token ever reached it, and can
redirect, omit Content-Length, or fail like a real CDN.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import FakeServer


@dataclass
class Hosted:
    data: bytes
    mime: str
    declare_length: bool = True
    redirect_to: str | None = None
    status: int = 200


class FakeContentHost:
    """``GET /media/{name}`` serves what ``add`` hosted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.files: dict[str, Hosted] = {}
        self.app = Starlette(routes=[Route("/media/{name}", self._get, methods=["GET"])])
        self.server = FakeServer(self.app)

    def start(self) -> FakeContentHost:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeContentHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def netloc(self) -> str:
        """``host:port``, as LB_EXTERNAL_MEDIA_HTTP_HOSTS lists it."""
        return f"127.0.0.1:{self.server.port}"

    def url(self, name: str) -> str:
        return f"{self.server.base_url}/media/{name}"

    def add(
        self,
        name: str,
        data: bytes,
        mime: str = "image/jpeg",
        *,
        declare_length: bool = True,
        redirect_to: str | None = None,
        status: int = 200,
    ) -> str:
        """Host bytes at ``url(name)``; returns that URL."""
        with self._lock:
            self.files[name] = Hosted(data, mime, declare_length, redirect_to, status)
        return self.url(name)

    def fetched(self, name: str) -> list[Any]:
        return self.server.recorded(f"/media/{name}", method="GET")

    async def _get(self, request: Request) -> Response:
        with self._lock:
            hosted = self.files.get(request.path_params["name"])
        if hosted is None:
            return Response(b"not found", status_code=404, media_type="text/plain")
        if hosted.redirect_to is not None:
            return Response(b"", status_code=302, headers={"Location": hosted.redirect_to})
        if hosted.status != 200:
            return Response(b"error", status_code=hosted.status, media_type="text/plain")
        if hosted.declare_length:
            return Response(hosted.data, media_type=hosted.mime)

        async def body() -> Any:  # chunked: no Content-Length, as some CDNs send
            for start in range(0, len(hosted.data), 64 * 1024):
                yield hosted.data[start : start + 64 * 1024]

        return StreamingResponse(body(), media_type=hosted.mime)
