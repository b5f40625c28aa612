"""The process's long-lived objects and how they are wired: database engine, inbox, channels,
the OpenAI client, and the worker that runs the message pipeline over them.

Built once from settings and shared by the web app, the `worker` process and the CLI. This is
the only module that knows every layer; the layers below it (inbox, channels, tutor, pipeline)
get their collaborators from here instead of building each other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI, DefaultAioHttpClient
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from languagebuddy.channels.base import Channel
from languagebuddy.config import ConfigError, Settings
from languagebuddy.inbox.queue import Inbox
from languagebuddy.inbox.worker import Worker, WorkerOptions
from languagebuddy.media.hosting import MediaHost
from languagebuddy.store.db import make_engine, make_sessionmaker

MEDIA_PURGE_SECONDS = 300.0  # hosted files live 15 minutes; their rows go within 5 more


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker
    inbox: Inbox
    # None without OPENAI_API_KEY: a `serve --no-worker` takes webhooks without the model.
    openai: AsyncOpenAI | None = None
    media_host: MediaHost | None = None
    channels: dict[str, Channel] = field(default_factory=dict)
    signing_key: str = ""
    # Phone calls (issue 14): the call service and each enabled provider (web routes use them).
    calls: Any = None
    call_providers: dict[str, Any] = field(default_factory=dict)
    # Names this process's NOTIFYs, so its own LISTEN skips them (see inbox/notify.py).
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    async def aclose(self) -> None:
        if self.calls is not None:
            await self.calls.aclose()
        for channel in self.channels.values():
            await channel.aclose()
        if self.openai is not None:
            await self.openai.close()
        await self.engine.dispose()


MISSING_KEY = (
    "OPENAI_API_KEY is not set: the tutor needs it to answer (set it in the environment or .env)"
)


def make_openai_client(settings: Settings) -> AsyncOpenAI:
    """The official SDK client. Its own retries honour Retry-After on 429 and 5xx. It runs on
    the SDK's aiohttp transport: about a third of the default one's CPU per request, on a path
    taken for every message. Never with a placeholder key: that only turns "no key" into a 401
    and an apology seconds later."""
    if not settings.openai_api_key:
        raise ConfigError(MISSING_KEY)
    return AsyncOpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        timeout=settings.openai_timeout_seconds,
        max_retries=settings.openai_max_retries,
        http_client=DefaultAioHttpClient(timeout=settings.openai_timeout_seconds),
    )


def build_services(settings: Settings, *, with_channels: bool = True) -> Services:
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    sessions = make_sessionmaker(engine)
    services = Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        inbox=Inbox(engine),
        openai=make_openai_client(settings) if settings.openai_api_key else None,
        media_host=MediaHost(sessions, settings.public_base_url),
    )
    if with_channels:
        from languagebuddy.channels.registry import build_channels

        services.channels = build_channels(settings, host_media=services.media_host.host)
    return services


def build_calls(services: Services) -> None:
    """The call service over the tutor, and the enabled call providers; needs the signing
    key, so it is built once that is known."""
    from languagebuddy.calls.service import CallService
    from languagebuddy.tutor.agent import Tutor

    settings = services.settings
    if settings.telnyx_enabled:
        from languagebuddy.calls.telnyx import build_telnyx

        services.call_providers["telnyx"] = build_telnyx(settings)
    if settings.vonage_enabled:
        from languagebuddy.calls.vonage import build_vonage

        services.call_providers["vonage"] = build_vonage(settings)
    services.calls = CallService(
        settings=settings,
        sessions=services.sessions,
        inbox=services.inbox,
        openai=services.openai,
        tutor=Tutor(settings, services.sessions, services.openai),
        signing_key=services.signing_key,
        recap_channels=sorted(services.channels),
        controls={name: p.control for name, p in services.call_providers.items()},
    )


async def start_services(
    settings: Settings, *, with_channels: bool = True, with_calls: bool = True
) -> Services:
    """Check the database and its schema (migrating it when ``LB_MIGRATE_ON_START`` allows),
    then build the services; ``with_calls`` adds the signing key and the call service (the
    terminal chat needs neither). Raises ``StartupError`` with the one line to print."""
    from languagebuddy.startup import check_database

    await check_database(settings, migrate=True)
    services = build_services(settings, with_channels=with_channels)
    if with_calls:
        from languagebuddy.store.keys import ensure_signing_key

        try:
            services.signing_key = await ensure_signing_key(services.sessions, settings.signing_key)
            if services.media_host is not None:  # signs the URLs of hosted voice notes
                services.media_host.key = services.signing_key
            if services.openai is not None:  # calls talk to the model; `serve` refuses without
                build_calls(services)
        except BaseException:
            await services.aclose()
            raise
    return services


def build_worker(
    services: Services, channels: list[str] | None = None, *, learner: str | None = None
) -> Worker:
    """A worker whose handler is the message pipeline over these services' tutor and channels;
    ``learner`` (an order key, ``channel:user``) limits it to that learner's events."""
    from languagebuddy.pipeline import MessagePipeline
    from languagebuddy.tutor.agent import Tutor

    if services.openai is None:
        raise ConfigError(MISSING_KEY)
    settings = services.settings
    tutor = Tutor(settings, services.sessions, services.openai)
    pipeline = MessagePipeline(services, tutor)
    options = WorkerOptions(
        concurrency=settings.concurrency,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        retry_base_seconds=settings.retry_base_seconds,
    )
    served = channels if channels is not None else sorted(services.channels)
    return Worker(services.inbox, pipeline, served, options, order_key=learner)


def wake_on_notification(worker: Worker) -> Callable[[], None]:
    """A notification stands for one event or a burst (at most one per 50 ms): one idle slot
    looks, and each slot that finds an item wakes the next (``fan_out``). Waking every slot
    instead sent 64 claims at once through a pool of 40 connections for each notification, and
    the learner's own pipeline waited behind them (~80 ms per message)."""
    return lambda: worker.wake(1, fan_out=True)


async def run_worker(services: Services, stop: asyncio.Event) -> None:
    """The worker and, beside it, the hourly purge of old finished events and (PostgreSQL)
    the LISTEN that wakes it for events stored by other processes."""
    from languagebuddy.inbox.housekeeping import keep_tidy, repeat_until

    settings = services.settings
    worker = build_worker(services)
    helpers = [
        asyncio.create_task(keep_tidy(services.inbox, settings.inbox_retention_days, stop)),
        asyncio.create_task(
            repeat_until(stop, MEDIA_PURGE_SECONDS, services.media_host.purge, "media purge")
        ),
    ]
    if not settings.is_sqlite:
        from languagebuddy.inbox.notify import wake_on_notify

        listen = wake_on_notify(
            settings.database_url,
            wake_on_notification(worker),
            stop,
            ignore=services.instance_id,  # its own puts woke this worker in process
        )
        helpers.append(asyncio.create_task(listen))
    try:
        await worker.run(stop)
    finally:
        for task in helpers:
            task.cancel()
        for task in helpers:
            with suppress(asyncio.CancelledError):
                await task
