"""Run the real LanguageBuddy app (lifespan, worker and all) on 127.0.0.1 for a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from languagebuddy.config import Settings
from languagebuddy.web.app import create_app
from tests.fakes.server import FakeServer


@contextmanager
def running_service(settings: Settings, *, run_worker: bool = True) -> Iterator[FakeServer]:
    """The service as a real HTTP server; ``.base_url`` to call it, stopped on exit."""
    server = FakeServer(create_app(settings, run_worker=run_worker), lifespan="on").start()
    try:
        yield server
    finally:
        server.stop()
