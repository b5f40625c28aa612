"""Hosted media rows: files platforms fetch from us by URL, with their expiry."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from languagebuddy.store.models import HostedMedia


async def put(
    session: AsyncSession, media_id: str, data: bytes, mime: str, expires_at: float
) -> None:
    session.add(HostedMedia(id=media_id, data=data, mime=mime, expires_at=expires_at))


async def get_live(session: AsyncSession, media_id: str, now: float) -> tuple[bytes, str] | None:
    """The bytes and type of a file that has not expired, else None."""
    row = await session.execute(
        select(HostedMedia.data, HostedMedia.mime).where(
            HostedMedia.id == media_id, HostedMedia.expires_at > now
        )
    )
    found = row.first()
    return (found.data, found.mime) if found is not None else None


async def purge_expired(session: AsyncSession, now: float) -> int:
    result = await session.execute(delete(HostedMedia).where(HostedMedia.expires_at <= now))
    return result.rowcount or 0
