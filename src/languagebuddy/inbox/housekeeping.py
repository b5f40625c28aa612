"""Keeps the inbox from growing forever: finished events are deleted once they are older than
the retention (``LB_INBOX_RETENTION_DAYS``), which outlasts every platform's redelivery window,
so a dedupe key is never forgotten while a redelivery could still arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress

from languagebuddy.inbox.queue import Inbox
from languagebuddy.logs import get_logger

log = get_logger(__name__)

DAY = 86_400.0


async def purge_once(inbox: Inbox, retention_days: float) -> int:
    purged = await inbox.purge_finished(before=time.time() - retention_days * DAY)
    if purged:
        log.info("inbox purged", items=purged, retention_days=retention_days)
    return purged


async def keep_tidy(
    inbox: Inbox, retention_days: float, stop: asyncio.Event, every_seconds: float = 3600.0
) -> None:
    """Purge now and then every ``every_seconds`` until ``stop``."""
    await repeat_until(
        stop, every_seconds, lambda: purge_once(inbox, retention_days), "inbox purge"
    )


async def repeat_until(
    stop: asyncio.Event,
    every_seconds: float,
    action: Callable[[], Awaitable[object]],
    name: str,
) -> None:
    """Run ``action`` now and then every ``every_seconds`` until ``stop``; a failed round waits
    for the next one (the database may be briefly away)."""
    while not stop.is_set():
        try:
            await action()
        except Exception:
            log.exception(f"{name} failed")
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_seconds)
