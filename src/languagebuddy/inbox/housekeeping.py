"""Keeps the inbox from growing forever: finished events are deleted once they are older than
the retention (``LB_INBOX_RETENTION_DAYS``), which outlasts every platform's redelivery window,
so a dedupe key is never forgotten while a redelivery could still arrive."""

from __future__ import annotations

import asyncio
import time
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
    """Purge now and then every ``every_seconds`` until ``stop``; a failed purge waits for the
    next round (the database may be briefly away)."""
    while not stop.is_set():
        try:
            await purge_once(inbox, retention_days)
        except Exception:
            log.exception("inbox purge failed")
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_seconds)
