"""Wires the worker to the message pipeline for a set of services (serve and `worker`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from languagebuddy.inbox.worker import Worker, WorkerOptions


def build_worker(services: Any, channels: list[str] | None = None) -> Worker:
    from languagebuddy.pipeline import MessagePipeline
    from languagebuddy.tutor.agent import Tutor

    settings = services.settings
    tutor = Tutor(settings, services.sessions, services.openai)
    pipeline = MessagePipeline(services, tutor, services.inbox)
    options = WorkerOptions(
        concurrency=settings.worker_concurrency,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        retry_base_seconds=settings.retry_base_seconds,
    )
    served = channels if channels is not None else sorted(services.channels)
    return Worker(services.inbox, pipeline, served, options)


def wake_every_slot(worker: Worker) -> Callable[[], None]:
    """A notification may stand for a burst of events: every idle slot looks (SKIP LOCKED keeps
    the race cheap on PostgreSQL)."""
    return lambda: worker.wake(worker.options.concurrency)


async def run_worker(services: Any, stop: asyncio.Event) -> None:
    """The worker and, beside it, the hourly purge of old finished events and (PostgreSQL)
    the LISTEN that wakes it for events stored by other processes."""
    from languagebuddy.inbox.housekeeping import keep_tidy

    settings = services.settings
    worker = build_worker(services)
    helpers = [asyncio.create_task(keep_tidy(services.inbox, settings.inbox_retention_days, stop))]
    if not settings.is_sqlite:
        from languagebuddy.inbox.notify import wake_on_notify

        listen = wake_on_notify(settings.database_url, wake_every_slot(worker), stop)
        helpers.append(asyncio.create_task(listen))
    try:
        await worker.run(stop)
    finally:
        for task in helpers:
            task.cancel()
        for task in helpers:
            with suppress(asyncio.CancelledError):
                await task
