"""The process's long-lived objects, built once from settings and shared by the web app,
the worker and the CLI: database engine, inbox, channels, tutor and the OpenAI client."""

from __future__ import annotations

from dataclasses import dataclass, field

from openai import AsyncOpenAI
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from languagebuddy.channels.base import Channel
from languagebuddy.config import Settings
from languagebuddy.inbox.queue import Inbox
from languagebuddy.store.db import make_engine, make_sessionmaker


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker
    inbox: Inbox
    openai: AsyncOpenAI
    channels: dict[str, Channel] = field(default_factory=dict)
    signing_key: str = ""

    async def aclose(self) -> None:
        for channel in self.channels.values():
            await channel.aclose()
        await self.openai.close()
        await self.engine.dispose()


def make_openai_client(settings: Settings) -> AsyncOpenAI:
    """The official SDK client. Its own retries honour Retry-After on 429 and 5xx."""
    return AsyncOpenAI(
        api_key=settings.openai_api_key or "missing-openai-api-key",
        base_url=settings.openai_base_url,
        timeout=settings.openai_timeout_seconds,
        max_retries=settings.openai_max_retries,
    )


def build_services(settings: Settings, *, with_channels: bool = True) -> Services:
    engine = make_engine(settings.database_url)
    services = Services(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        inbox=Inbox(engine),
        openai=make_openai_client(settings),
    )
    if with_channels:
        from languagebuddy.channels.registry import build_channels

        services.channels = build_channels(settings)
    return services
