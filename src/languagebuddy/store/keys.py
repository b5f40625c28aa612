"""The signing key for stream tokens and hosted-media URLs: LB_SIGNING_KEY, or generated once
and kept in the database so that every process of a deployment shares it."""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from languagebuddy.store.models import KeyValue

KEY_NAME = "signing_key"


async def ensure_signing_key(sessions: async_sessionmaker, configured: str | None) -> str:
    """The configured key, else the stored one, else a new one stored for every process."""
    if configured:
        return configured
    async with sessions() as session:
        existing = await session.get(KeyValue, KEY_NAME)
        if existing is not None:
            return existing.value
        session.add(KeyValue(key=KEY_NAME, value=secrets.token_urlsafe(48)))
        try:
            await session.commit()
        except IntegrityError:  # another process generated it first
            await session.rollback()
    async with sessions() as session:
        stored = await session.get(KeyValue, KEY_NAME)
        assert stored is not None
        return stored.value
