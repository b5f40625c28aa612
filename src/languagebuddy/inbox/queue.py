"""The durable inbox: put (deduplicated), claim (leased, per-learner FIFO), done, fail.

Claiming is one ``UPDATE … WHERE id = (SELECT …) RETURNING`` statement. On PostgreSQL the
sub-select takes ``FOR UPDATE SKIP LOCKED`` so that many workers never wait on each other; SQLite
serialises writers itself. An item is claimable when it is pending and due, or processing with an
expired lease (its worker died). It is blocked while an older item of the same learner
(``order_key``) is unfinished, which keeps one learner's events in arrival order and never two
at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from languagebuddy.errors import StorageUnavailable
from languagebuddy.events import InboundEvent, Kind
from languagebuddy.store.models import InboxItem, OutboxPart

PENDING, PROCESSING, DONE, DEAD = "pending", "processing", "done", "dead"


@dataclass(frozen=True)
class Claimed:
    """An item a worker holds under lease."""

    id: int
    event: InboundEvent
    attempts: int
    apology_sent: bool
    owner: str


_CLAIM_SQL = """
UPDATE inbox SET status = 'processing', lease_owner = :owner, lease_until = :lease_until,
       attempts = attempts + 1
WHERE id = (
    SELECT i.id FROM inbox AS i
    WHERE ((i.status = 'pending' AND i.available_at <= :now)
           OR (i.status = 'processing' AND i.lease_until < :now))
      AND i.channel IN :channels
      {learner}
      AND NOT EXISTS (
          SELECT 1 FROM inbox AS j
          WHERE j.order_key = i.order_key AND j.id < i.id
            AND j.status IN ('pending', 'processing'))
    ORDER BY i.id
    LIMIT 1
    {lock}
)
  AND (status = 'pending' OR lease_until < :now)
RETURNING id, payload, attempts, apology_sent
"""

# PostgreSQL: every event of a webhook body in one statement, sent straight to asyncpg in
# autocommit. One round trip instead of BEGIN + INSERT per event + COMMIT through the ORM's
# greenlet bridge: the webhook's acknowledgement waits on exactly one durable commit.
_PG_PUT_SQL = """
INSERT INTO inbox (dedupe_key, order_key, channel, payload, status, attempts, created_at,
                   available_at, apology_sent, message_id)
SELECT k, o, c, p::json, 'pending', 0, $5, $5, false, m
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $6::text[])
     WITH ORDINALITY AS e(k, o, c, p, m, n)
ORDER BY n
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING id
"""


class Inbox:
    """Durable, deduplicated queue of inbound events."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._postgres = engine.dialect.name == "postgresql"
        # Claims and lease updates are single statements: on PostgreSQL they run in autocommit
        # (each is atomic by itself), which saves the BEGIN and COMMIT round trips of every
        # claim, renewal and done. SQLite keeps its explicit transactions.
        self._single = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self._postgres else None
        )
        lock = "FOR UPDATE SKIP LOCKED" if self._postgres else ""
        self._claim_sql = text(_CLAIM_SQL.format(lock=lock, learner="")).bindparams(
            bindparam("channels", expanding=True)
        )
        self._claim_learner_sql = text(
            _CLAIM_SQL.format(lock=lock, learner="AND i.order_key = :order_key")
        ).bindparams(bindparam("channels", expanding=True))
        self._listeners: list[Callable[[int], None]] = []
        # SQLite: built once; SQLAlchemy then reuses the compiled form on every webhook instead
        # of building an ORM insert per call.
        self._insert = (
            sqlite_insert(InboxItem.__table__)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(InboxItem.__table__.c.id)
        )

    def on_put(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(new)`` after ``new`` events are stored, so in-process workers wake
        at once (one idle slot per event)."""
        self._listeners.append(listener)

    async def put(self, event: InboundEvent) -> bool:
        """Store the event unless its dedupe key is known. True when it was new."""
        return await self.put_many([event]) == 1

    async def put_many(self, events: list[InboundEvent]) -> int:
        """Store the events of one webhook body in one transaction; returns how many were new.
        Raises ``StorageUnavailable`` when the database did not take them.

        The unique dedupe key decides newness inside the insert itself, so two concurrent
        deliveries of the same event can never both be accepted.
        """
        if not events:
            return 0
        new = await (self._put_postgres(events) if self._postgres else self._put_sqlite(events))
        if new:
            for listener in self._listeners:
                listener(new)
        return new

    async def _put_postgres(self, events: list[InboundEvent]) -> int:
        # A raw pooled connection: the ORM's Connection objects and greenlet hops cost about a
        # third of the CPU of a put, and this path runs for every webhook.
        conn = await self.engine.raw_connection()
        try:
            rows = await conn.driver_connection.fetch(  # type: ignore[union-attr]
                _PG_PUT_SQL,
                [event.dedupe_key for event in events],
                [event.order_key for event in events],
                [event.channel for event in events],
                [event.model_dump_json() for event in events],
                time.time(),
                [_subject(event) for event in events],
            )
        except BaseException as exc:
            # The pool cannot see the driver's errors: a connection the server dropped must
            # not be handed out again (the caller answers 503; the platform redelivers).
            conn.driver_connection.terminate()  # type: ignore[union-attr]
            with suppress(Exception):
                conn.invalidate()
            if isinstance(exc, Exception):
                raise StorageUnavailable(f"inbox put failed: {type(exc).__name__}") from exc
            raise
        finally:
            conn.close()
        return len(rows)

    async def _put_sqlite(self, events: list[InboundEvent]) -> int:
        try:
            return await self._insert_sqlite(events)
        except DBAPIError as exc:
            raise StorageUnavailable(f"inbox put failed: {type(exc).__name__}") from exc

    async def _insert_sqlite(self, events: list[InboundEvent]) -> int:
        new = 0
        now = time.time()
        async with self.engine.begin() as conn:
            for event in events:
                row = {
                    "dedupe_key": event.dedupe_key,
                    "order_key": event.order_key,
                    "channel": event.channel,
                    "payload": event.model_dump(mode="json"),
                    "status": PENDING,
                    "attempts": 0,
                    "created_at": now,
                    "available_at": now,
                    "apology_sent": False,
                    "message_id": _subject(event),
                }
                if (await conn.execute(self._insert, row)).first() is not None:
                    new += 1
        return new

    async def claim(
        self,
        owner: str,
        lease_seconds: float,
        channels: Collection[str],
        *,
        order_key: str | None = None,
    ) -> Claimed | None:
        """Take the next due item of one of ``channels`` under a lease, or None.

        A worker claims only the channels it can answer on (the terminal chat never takes a
        WhatsApp message, and the reverse); with ``order_key`` only that learner's items.
        """
        now = time.time()
        params: dict[str, Any] = {
            "owner": owner,
            "now": now,
            "lease_until": now + lease_seconds,
            "channels": list(channels),
        }
        statement = self._claim_sql
        if order_key is not None:
            statement = self._claim_learner_sql
            params["order_key"] = order_key
        async with self._statement() as conn:
            row = (await conn.execute(statement, params)).first()
        if row is None:
            return None
        payload = row.payload if isinstance(row.payload, dict) else _json_loads(row.payload)
        return Claimed(
            id=row.id,
            event=InboundEvent.model_validate(payload),
            attempts=row.attempts,
            apology_sent=bool(row.apology_sent),
            owner=owner,
        )

    async def extend(self, item: Claimed, lease_seconds: float) -> bool:
        """Renew the lease of a long-running item; False when it was lost to another worker."""
        return await self._update_owned(item, lease_until=time.time() + lease_seconds)

    async def done(self, item: Claimed) -> bool:
        return await self._update_owned(
            item, status=DONE, finished_at=time.time(), lease_owner=None, lease_until=None
        )

    async def release(self, item: Claimed) -> bool:
        """Give an unfinished item back (its worker is stopping): claimable again now, and
        the interrupted try does not count as an attempt."""
        return await self._update_owned(
            item,
            status=PENDING,
            available_at=time.time(),
            attempts=InboxItem.attempts - 1,
            lease_owner=None,
            lease_until=None,
        )

    async def mark_apology_sent(self, item: Claimed) -> None:
        await self._update_owned(item, apology_sent=True)

    async def fail(
        self,
        item: Claimed,
        reason: str,
        *,
        retryable: bool,
        max_attempts: int,
        base_delay: float,
        retry_after: float | None = None,
    ) -> str:
        """Schedule a retry with exponential backoff and jitter, or dead-letter the item.

        Returns the new status. A permanent error, or one more failure than ``max_attempts``
        allows, ends in ``dead`` with the reason kept.
        """
        if not retryable or item.attempts >= max_attempts:
            await self._update_owned(
                item,
                status=DEAD,
                last_error=reason[:2000],
                finished_at=time.time(),
                lease_owner=None,
                lease_until=None,
            )
            return DEAD
        delay = base_delay * (2 ** (item.attempts - 1)) * random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        await self._update_owned(
            item,
            status=PENDING,
            last_error=reason[:2000],
            available_at=time.time() + min(delay, 3600.0),
            lease_owner=None,
            lease_until=None,
        )
        return PENDING

    async def _update_owned(self, item: Claimed, **values: Any) -> bool:
        stmt = (
            update(InboxItem)
            .where(InboxItem.id == item.id, InboxItem.lease_owner == item.owner)
            .values(**values)
        )
        async with self._statement() as conn:
            result = await conn.execute(stmt)
        return result.rowcount == 1

    def _statement(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for one atomic statement (autocommit on PostgreSQL)."""
        return self._single.connect() if self._single is not None else self.engine.begin()

    async def purge_finished(self, before: float) -> int:
        """Delete done and dead items finished before ``before`` (with their outbox parts);
        returns how many. Their dedupe keys go with them, so ``before`` must lie beyond every
        platform's redelivery window."""
        finished = (InboxItem.status.in_((DONE, DEAD))) & (InboxItem.finished_at < before)
        async with self.engine.begin() as conn:
            old = select(InboxItem.id).where(finished).scalar_subquery()
            await conn.execute(delete(OutboxPart).where(OutboxPart.inbox_item_id.in_(old)))
            result = await conn.execute(delete(InboxItem).where(finished))
        return result.rowcount

    async def unfinished(self, order_key: str) -> int:
        """How many of one learner's items wait (pending, or held by a worker)."""
        async with self.engine.connect() as conn:
            result = await conn.execute(
                select(func.count())
                .select_from(InboxItem)
                .where(
                    InboxItem.order_key == order_key,
                    InboxItem.status.in_((PENDING, PROCESSING)),
                )
            )
            return int(result.scalar_one())

    async def drop_unfinished(self, order_key: str, reason: str) -> int:
        """Dead-letter one learner's waiting items with ``reason`` (the learner asked to skip
        them); items a live worker holds are left alone. Returns how many."""
        now = time.time()
        waiting = (InboxItem.status == PENDING) | (
            (InboxItem.status == PROCESSING) & (InboxItem.lease_until < now)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(InboxItem)
                .where(InboxItem.order_key == order_key, waiting)
                .values(
                    status=DEAD,
                    last_error=reason,
                    finished_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            )
        return result.rowcount

    # --- what follows an item: the rest of a photo set, an edit or deletion of its message ---

    async def following(self, item: Claimed, limit: int = 20) -> list[Queued]:
        """The learner's next waiting items after ``item``, oldest first. They cannot be
        claimed while ``item`` is in hand (one learner's items go one at a time), so what is
        seen here stays put until the holder takes it with ``take`` or lets it be."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(InboxItem.id, InboxItem.payload)
                .where(
                    InboxItem.order_key == item.event.order_key,
                    InboxItem.id > item.id,
                    InboxItem.status == PENDING,
                )
                .order_by(InboxItem.id)
                .limit(limit)
            )
            found = rows.all()
        return [Queued(row.id, InboundEvent.model_validate(_payload(row.payload))) for row in found]

    async def take(
        self, session: AsyncConnection | AsyncSession, item: Claimed, ids: Collection[int]
    ) -> None:
        """Mark ``ids`` (items from ``following``) done as part of ``item``, in the caller's
        transaction: with the reply they belong to, so that after a crash either both exist
        or neither (nothing answered twice, nothing lost). Raises ``LookupError`` if one was
        no longer waiting, which rolls the caller's transaction back."""
        if not ids:
            return
        result = await session.execute(
            update(InboxItem)
            .where(
                InboxItem.id.in_(list(ids)),
                InboxItem.order_key == item.event.order_key,
                InboxItem.status == PENDING,
            )
            .values(
                status=DONE,
                finished_at=time.time(),
                merged_into=item.id,
                lease_owner=None,
                lease_until=None,
            )
        )
        if result.rowcount != len(set(ids)):
            raise LookupError(f"inbox items {sorted(ids)} were not all waiting")

    async def redact(
        self, session: AsyncConnection | AsyncSession, channel: str, message_id: str
    ) -> list[int]:
        """Blank the text of every stored event about the learner's message ``message_id``
        (the message itself and its edits), in the caller's transaction. Returns the ids of the
        items that answered them (an item, or the one it was merged into)."""
        rows = await session.execute(
            select(InboxItem.id, InboxItem.payload, InboxItem.merged_into).where(
                InboxItem.channel == channel, InboxItem.message_id == message_id
            )
        )
        answered: list[int] = []
        for row in rows.all():
            payload = dict(_payload(row.payload))
            if payload.get("erased"):
                continue
            for key in ("text", "caption"):
                payload[key] = None
            payload["extra"] = {**(payload.get("extra") or {}), "redacted": True}
            await session.execute(
                update(InboxItem).where(InboxItem.id == row.id).values(payload=payload)
            )
            answered.append(row.merged_into or row.id)
        return answered

    async def depth(self) -> dict[str, int]:
        """Items per status, for /metrics and doctor."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(InboxItem.status, func.count()).group_by(InboxItem.status)
            )
            return {status: count for status, count in rows.all()}

    async def get(self, item_id: int) -> InboxItem | None:
        async with self.sessions() as session:
            return await session.get(InboxItem, item_id)


def _json_loads(value: Any) -> dict[str, Any]:
    import json

    return json.loads(value)


def _payload(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else _json_loads(value)


def _subject(event: InboundEvent) -> str | None:
    """The learner's message an event is about: an edit's or deletion's target, else itself."""
    if event.kind in (Kind.EDIT, Kind.DELETE):
        return event.target_message_id
    return event.message_id


@dataclass(frozen=True)
class Queued:
    """An item waiting in the inbox, as ``Inbox.following`` shows it."""

    id: int
    event: InboundEvent


__all__ = ["DEAD", "DONE", "PENDING", "PROCESSING", "Claimed", "Inbox", "Queued"]
