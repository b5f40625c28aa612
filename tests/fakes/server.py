"""A real HTTP + WebSocket server on 127.0.0.1 for a fake platform, run in a background thread.

Each fake (OpenAI, WhatsApp, Telegram, LINE, …) is a Starlette app; this class serves it with
uvicorn on a free port and records every HTTP request it received, so tests and benchmarks can
check exactly what the product sent over the wire.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class _Recorder:
    """ASGI middleware that keeps a copy of each HTTP request before the app sees it."""

    def __init__(self, app: ASGIApp, sink: list[RecordedRequest], lock: threading.Lock) -> None:
        self.app = app
        self.sink = sink
        self.lock = lock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
        )
        with self.lock:
            self.sink.append(record)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class FakeServer:
    """Serve an ASGI app on 127.0.0.1:<free port> until ``stop()``."""

    def __init__(self, app: ASGIApp, *, lifespan: str = "off", port: int = 0) -> None:
        self._lifespan = lifespan
        self._wanted_port = port  # 0: any free port
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._app = _Recorder(app, self.requests, self._lock)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # asyncio sets TCP_NODELAY only on IPPROTO_TCP sockets; set it here too so accepted
        # connections inherit it. Without it a small response waits ~40 ms for a delayed ACK,
        # time a real platform would not add and a benchmark would charge to the product.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", self._wanted_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            lifespan=self._lifespan,
            access_log=False,
            ws_ping_interval=None,
            ws_per_message_deflate=False,  # as `languagebuddy serve` runs
        )
        self._server = uvicorn.Server(config)
        server = self._server

        async def serve() -> None:
            self.loop = asyncio.get_running_loop()  # tests may inspect the server's tasks
            await server.serve(sockets=[sock])

        self._thread = threading.Thread(
            target=lambda: asyncio.run(serve()),
            name=f"fake-{type(self).__name__}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.time() + 30
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def recorded(self, path_contains: str = "", method: str | None = None) -> list[RecordedRequest]:
        """Requests whose path contains the text (and of the method, when given), in order."""
        with self._lock:
            return [
                r
                for r in self.requests
                if path_contains in r.path and (method is None or r.method == method)
            ]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def wait_for(
        self, path_contains: str, count: int = 1, timeout: float = 10.0, method: str | None = None
    ) -> list[RecordedRequest]:
        """Block until at least ``count`` matching requests arrived; raise on timeout."""
        deadline = time.time() + timeout
        while True:
            found = self.recorded(path_contains, method)
            if len(found) >= count:
                return found
            if time.time() > deadline:
                raise AssertionError(
                    f"expected {count} request(s) to {path_contains!r}, got {len(found)}"
                )
            time.sleep(0.02)
