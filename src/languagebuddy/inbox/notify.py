"""Cross-process wake-up on PostgreSQL: the process that stores events NOTIFYs ``lb_inbox``,
and each worker process LISTENs and wakes a slot at once instead of waiting for its next poll.
SQLite has no such thing: there a worker in another process polls (up to ``idle_poll_seconds``).

The NOTIFY is sent beside the webhook path, never inside its transaction: PostgreSQL serialises
the commits of transactions that notify, which under load turned a 10 ms p99 acknowledgement
into hundreds of milliseconds (bench/webhooks.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from languagebuddy.logs import get_logger

log = get_logger(__name__)

CHANNEL = "lb_inbox"


class Notifier:
    """Coalesces "events were stored" into at most one NOTIFY per ``interval`` seconds: a
    worker elsewhere learns of new events within that, and a burst of webhooks costs a few
    notifications, not one each."""

    def __init__(self, engine: AsyncEngine, interval: float = 0.05, sender: str = "") -> None:
        self._engine = engine
        self._interval = interval
        self._pending = asyncio.Event()
        # The payload: a listener in the same process (which woke its worker when the events
        # were stored) knows the notification for its own and ignores it.
        self.sender = sender

    def poke(self, _new: int = 1) -> None:
        """An ``Inbox.on_put`` listener: cheap, never waits."""
        self._pending.set()

    async def run(self, stop: asyncio.Event, retry_seconds: float = 1.0) -> None:
        while not stop.is_set():
            await _first_of(self._pending.wait(), stop.wait())
            if stop.is_set():
                return
            self._pending.clear()
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        text("SELECT pg_notify(:channel, :sender)"),
                        {"channel": CHANNEL, "sender": self.sender},
                    )
            except Exception as exc:  # polling still finds the events
                log.warning("inbox notify failed", error=type(exc).__name__)
                pause = retry_seconds
            else:
                pause = self._interval
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)


async def wake_on_notify(
    database_url: str,
    wake: Callable[[], None],
    stop: asyncio.Event,
    retry_seconds: float = 5,
    *,
    ignore: str | None = None,
) -> None:
    """Hold a LISTEN connection until ``stop``, calling ``wake()`` for each notification (one
    may stand for several events) except those sent as ``ignore`` (this process's own);
    reconnect after ``retry_seconds`` when the connection drops (polling covers the gap)."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    while not stop.is_set():
        try:
            await _listen(dsn, wake, stop, ignore)
        except Exception as exc:
            log.warning("inbox listen failed", error=type(exc).__name__)
        if not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=retry_seconds)


async def _listen(
    dsn: str, wake: Callable[[], None], stop: asyncio.Event, ignore: str | None
) -> None:
    """One connection's life: until ``stop`` or until the server drops it."""
    import asyncpg

    def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        if ignore is None or payload != ignore:
            wake()

    conn = await asyncpg.connect(dsn, timeout=10)
    lost = asyncio.Event()
    try:
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, notified)
        await _first_of(stop.wait(), lost.wait())
    finally:
        with suppress(Exception):
            await conn.close(timeout=5)


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until one of ``waits`` is done; cancel the others."""
    tasks = [asyncio.create_task(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
