"""Run the real LanguageBuddy app (lifespan, worker and all) on 127.0.0.1 for a test."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from languagebuddy.config import Settings
from languagebuddy.web.app import create_app
from tests.fakes.server import FakeServer


@contextmanager
def running_service(
    settings: Settings, *, run_worker: bool = True, port: int = 0
) -> Iterator[FakeServer]:
    """The service as a real HTTP server; ``.base_url`` to call it, stopped on exit. ``port``
    (see ``free_port``) when the settings must name the service's own address."""
    app = create_app(settings, run_worker=run_worker)
    server = FakeServer(app, lifespan="on", port=port).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
