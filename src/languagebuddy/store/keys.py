"""The signing key for stream tokens and hosted-media URLs: LB_SIGNING_KEY, or generated once
and kept in the database so that every process of a deployment shares it."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from languagebuddy.store.models import KeyValue

if TYPE_CHECKING:
    from languagebuddy.services import Services

KEY_NAME = "signing_key"


async def ensure_signing_key(services: Services) -> str:
    if services.settings.signing_key:
        return services.settings.signing_key
    async with services.sessions() as session:
        existing = await session.get(KeyValue, KEY_NAME)
        if existing is not None:
            return existing.value
        session.add(KeyValue(key=KEY_NAME, value=secrets.token_urlsafe(48)))
        try:
            await session.commit()
        except IntegrityError:  # another process generated it first
            await session.rollback()
    async with services.sessions() as session:
        stored = await session.get(KeyValue, KEY_NAME)
        assert stored is not None
        return stored.value
