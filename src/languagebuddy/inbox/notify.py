"""Cross-process wake-up on PostgreSQL: an insert into the inbox NOTIFYs ``lb_inbox`` (a
statement trigger, so the webhook path pays no extra round trip), and each worker process LISTENs
and wakes a slot at once instead of waiting for its next poll. SQLite has no such thing: there a
worker in another process polls (up to ``idle_poll_seconds``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress

from languagebuddy.logs import get_logger

log = get_logger(__name__)

CHANNEL = "lb_inbox"

# Run by the migration (and by create_all for tests); idempotent.
CREATE_TRIGGER = [
    f"""CREATE OR REPLACE FUNCTION lb_inbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END $$""",
    "DROP TRIGGER IF EXISTS inbox_notify ON inbox",
    "CREATE TRIGGER inbox_notify AFTER INSERT ON inbox"
    " FOR EACH STATEMENT EXECUTE FUNCTION lb_inbox_notify()",
]
DROP_TRIGGER = [
    "DROP TRIGGER IF EXISTS inbox_notify ON inbox",
    "DROP FUNCTION IF EXISTS lb_inbox_notify()",
]


async def wake_on_notify(
    database_url: str, wake: Callable[[int], None], stop: asyncio.Event, retry_seconds: float = 5
) -> None:
    """Hold a LISTEN connection until ``stop``, calling ``wake(1)`` for each notification;
    reconnect after ``retry_seconds`` when the connection drops (polling covers the gap)."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    while not stop.is_set():
        try:
            await _listen(dsn, wake, stop)
        except Exception as exc:
            log.warning("inbox listen failed", error=type(exc).__name__)
        if not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=retry_seconds)


async def _listen(dsn: str, wake: Callable[[int], None], stop: asyncio.Event) -> None:
    """One connection's life: until ``stop`` or until the server drops it."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    lost = asyncio.Event()
    try:
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, lambda *_: wake(1))
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
    finally:
        with suppress(Exception):
            await conn.close(timeout=5)
