"""The durable inbox on real SQLite and PostgreSQL: dedupe, leases, ordering, retries."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from languagebuddy.channels.base import DeliveryError
from languagebuddy.events import InboundEvent, Kind
from languagebuddy.inbox.queue import DEAD, DONE, PENDING, Claimed, Inbox
from languagebuddy.inbox.worker import Worker, WorkerOptions
from languagebuddy.store.models import InboxItem

CHANNELS = ["telegram"]


def event(n: int, user: str = "u1", channel: str = "telegram") -> InboundEvent:
    return InboundEvent(
        channel=channel, event_id=str(n), user_id=user, kind=Kind.TEXT, text=f"m{n}"
    )


async def rows(engine: AsyncEngine) -> list[InboxItem]:
    inbox = Inbox(engine)
    async with inbox.sessions() as session:
        return list((await session.execute(select(InboxItem).order_by(InboxItem.id))).scalars())


async def test_put_deduplicates_sequential_and_concurrent(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    assert await inbox.put(event(1)) is True
    assert await inbox.put(event(1)) is False
    results = await asyncio.gather(*(inbox.put(event(2)) for _ in range(10)))
    assert results.count(True) == 1
    assert [r.dedupe_key for r in await rows(engine)] == ["telegram:1", "telegram:2"]


async def test_put_many_stores_a_whole_body_and_counts_new(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    assert await inbox.put_many([event(1), event(2), event(3)]) == 3
    assert await inbox.put_many([event(2), event(3), event(4)]) == 1
    assert len(await rows(engine)) == 4


async def test_put_many_keeps_body_order_and_dedupes_within_a_body(engine: AsyncEngine) -> None:
    """One learner's events of one body are handled in the order the platform listed them, and
    the same event twice in one body (Meta does repeat) is stored once."""
    inbox = Inbox(engine)
    body = [event(n) for n in (7, 3, 9, 3, 5)]
    assert await inbox.put_many(body) == 4
    stored = await rows(engine)
    assert [r.dedupe_key for r in stored] == [f"telegram:{n}" for n in (7, 3, 9, 5)]
    assert [InboundEvent.model_validate(r.payload).text for r in stored] == ["m7", "m3", "m9", "m5"]


async def test_claim_respects_channels_and_done(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    await inbox.put(event(1, channel="line"))
    assert await inbox.claim("w1", 30, ["telegram"]) is None
    item = await inbox.claim("w1", 30, ["line"])
    assert item is not None and item.event.text == "m1" and item.attempts == 1
    assert await inbox.claim("w2", 30, ["line"]) is None  # leased
    assert await inbox.done(item) is True
    assert (await rows(engine))[0].status == DONE


async def test_a_claim_for_one_learner_and_their_unfinished_items(engine: AsyncEngine) -> None:
    """The terminal chat claims only its learner's events, counts what a failed run left
    and can drop it (a live worker's item is left alone)."""
    inbox = Inbox(engine)
    await inbox.put_many([event(1, user="a"), event(2, user="b"), event(3, user="b")])
    item = await inbox.claim("w1", 30, CHANNELS, order_key="telegram:b")
    assert item is not None and item.event.user_id == "b"
    assert await inbox.claim("w1", 30, CHANNELS, order_key="telegram:b") is None  # in order
    assert (await inbox.unfinished("telegram:b"), await inbox.unfinished("telegram:a")) == (2, 1)
    assert await inbox.drop_unfinished("telegram:b", "dropped by the learner") == 1  # item 3
    assert await inbox.done(item)
    statuses = {r.dedupe_key: (r.status, r.last_error) for r in await rows(engine)}
    assert statuses["telegram:3"] == (DEAD, "dropped by the learner")
    assert statuses["telegram:1"] == (PENDING, None)


async def test_one_learner_in_order_never_two_at_once(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    await inbox.put(event(1, user="a"))
    await inbox.put(event(2, user="a"))
    await inbox.put(event(3, user="b"))
    first = await inbox.claim("w1", 30, CHANNELS)
    second = await inbox.claim("w2", 30, CHANNELS)
    assert first is not None and second is not None
    assert (first.event.event_id, second.event.event_id) == ("1", "3")
    assert await inbox.claim("w3", 30, CHANNELS) is None  # a's second waits for a's first
    await inbox.done(first)
    third = await inbox.claim("w3", 30, CHANNELS)
    assert third is not None and third.event.event_id == "2"


async def test_expired_lease_is_reclaimed_and_old_owner_loses_it(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    await inbox.put(event(1))
    dead_worker = await inbox.claim("dead", 0.2, CHANNELS)
    assert dead_worker is not None
    assert await inbox.claim("alive", 30, CHANNELS) is None
    await asyncio.sleep(0.3)
    taken = await inbox.claim("alive", 30, CHANNELS)
    assert taken is not None and taken.id == dead_worker.id and taken.attempts == 2
    assert await inbox.done(dead_worker) is False  # the late worker cannot finish it
    assert await inbox.done(taken) is True


async def test_retry_backoff_then_dead_letter_with_reason(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    await inbox.put(event(1))
    item = await inbox.claim("w", 30, CHANNELS)
    assert item is not None
    status = await inbox.fail(item, "boom", retryable=True, max_attempts=2, base_delay=0.2)
    assert status == PENDING
    assert await inbox.claim("w", 30, CHANNELS) is None  # backing off
    await asyncio.sleep(0.35)
    again = await inbox.claim("w", 30, CHANNELS)
    assert again is not None and again.attempts == 2
    status = await inbox.fail(again, "boom twice", retryable=True, max_attempts=2, base_delay=0.2)
    assert status == DEAD
    stored = (await rows(engine))[0]
    assert stored.status == DEAD and stored.last_error == "boom twice"


async def test_permanent_failure_is_dead_at_once_and_unblocks_the_learner(
    engine: AsyncEngine,
) -> None:
    inbox = Inbox(engine)
    await inbox.put(event(1))
    await inbox.put(event(2))
    item = await inbox.claim("w", 30, CHANNELS)
    assert item is not None
    status = await inbox.fail(item, "blocked", retryable=False, max_attempts=8, base_delay=1)
    assert status == DEAD
    nxt = await inbox.claim("w", 30, CHANNELS)
    assert nxt is not None and nxt.event.event_id == "2"


async def test_retry_after_is_honoured(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    await inbox.put(event(1))
    item = await inbox.claim("w", 30, CHANNELS)
    assert item is not None
    before = time.time()
    await inbox.fail(item, "429", retryable=True, max_attempts=5, base_delay=0.01, retry_after=30)
    assert (await rows(engine))[0].available_at >= before + 29


async def test_workers_keep_per_learner_order_under_concurrency(engine: AsyncEngine) -> None:
    """Eight concurrent slots, five learners, random handling times: each learner's events are
    handled in arrival order and never two of one learner at the same time."""
    inbox = Inbox(engine)
    learners = [f"learner{n}" for n in range(5)]
    expected: dict[str, list[str]] = {name: [] for name in learners}
    counter = 0
    for _ in range(8):
        for name in learners:
            counter += 1
            await inbox.put(event(counter, user=name))
            expected[name].append(str(counter))
    seen: dict[str, list[str]] = {name: [] for name in learners}
    active: set[str] = set()
    overlaps: list[str] = []

    all_seen = asyncio.Event()

    async def handler(item: Claimed) -> None:
        user = item.event.user_id
        if user in active:
            overlaps.append(user)
        active.add(user)
        await asyncio.sleep(random.uniform(0, 0.01))
        seen[user].append(item.event.event_id)
        active.discard(user)
        if sum(map(len, seen.values())) >= counter:
            all_seen.set()

    worker = Worker(inbox, handler, CHANNELS, WorkerOptions(concurrency=8, lease_seconds=30))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_seen.wait(), timeout=30)
    stop.set()
    await task
    assert overlaps == []
    assert seen == expected


async def test_worker_classifies_failures(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    await inbox.put(event(1, user="a"))
    await inbox.put(event(2, user="b"))

    async def handler(item: Claimed) -> None:
        if item.event.user_id == "a":
            raise DeliveryError("bot was blocked by the user", retryable=False, code="403")
        raise DeliveryError("Too Many Requests", retryable=True, code="429", retry_after=60)

    worker = Worker(inbox, handler, CHANNELS, WorkerOptions(concurrency=1))
    assert await worker.run_until_idle() == 2
    a, b = await rows(engine)
    assert a.status == DEAD and "403" in (a.last_error or "")
    assert b.status == PENDING and b.available_at > time.time() + 50


async def test_put_recovers_after_postgres_drops_its_connections(postgres_url: str) -> None:
    """Without pre-ping, a pooled connection the server killed fails one put (the webhook
    answers 503 and the platform redelivers); the pool then reconnects and nothing doubles."""
    from sqlalchemy import text

    from languagebuddy.errors import StorageUnavailable
    from languagebuddy.store.db import create_all, make_engine
    from tests.conftest import _reset_postgres

    await _reset_postgres(postgres_url)
    engine = make_engine(postgres_url)
    await create_all(engine)
    try:
        inbox = Inbox(engine)
        assert await inbox.put(event(1))
        killer = make_engine(postgres_url)
        async with killer.begin() as conn:
            killed = await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            assert killed.all()
        await killer.dispose()
        outcomes = []
        for _ in range(3):  # the platform's redeliveries
            try:
                outcomes.append(await inbox.put(event(2)))
                break
            except StorageUnavailable:
                outcomes.append("refused")
        assert outcomes[-1] is True and len(outcomes) <= 2
        assert await inbox.put(event(2)) is False
        assert [r.dedupe_key for r in await rows(engine)] == ["telegram:1", "telegram:2"]
    finally:
        await engine.dispose()


async def stop_once_started(worker: Worker, started: asyncio.Event) -> None:
    """Run ``worker`` until its handler has begun, then stop it as a shutdown would."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(task, timeout=10)


async def test_stopping_worker_finishes_the_item_in_hand(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    await inbox.put(event(1))
    started, handled = asyncio.Event(), []

    async def handler(item: Claimed) -> None:
        started.set()
        await asyncio.sleep(0.3)
        handled.append(item.id)

    worker = Worker(inbox, handler, CHANNELS, WorkerOptions(concurrency=2, drain_seconds=10))
    await stop_once_started(worker, started)
    [item] = await rows(engine)
    assert handled == [item.id] and item.status == DONE


async def test_stopping_worker_releases_what_it_cannot_finish(engine: AsyncEngine) -> None:
    inbox = Inbox(engine)
    await inbox.put(event(1))
    started = asyncio.Event()

    async def stuck(item: Claimed) -> None:
        started.set()
        await asyncio.Event().wait()

    worker = Worker(inbox, stuck, CHANNELS, WorkerOptions(drain_seconds=0.2, lease_seconds=300))
    await stop_once_started(worker, started)
    [item] = await rows(engine)
    assert (item.status, item.attempts, item.lease_owner) == (PENDING, 0, None)
    # Claimable again at once, not after the 300 s lease.
    again = await inbox.claim("next-worker", 30, CHANNELS)
    assert again is not None and again.id == item.id and again.attempts == 1


async def test_purge_keeps_what_a_redelivery_could_still_need(engine: AsyncEngine) -> None:
    from sqlalchemy import update

    from languagebuddy.inbox.housekeeping import DAY, purge_once
    from languagebuddy.store.models import OutboxPart

    inbox = Inbox(engine)
    for n in range(1, 5):
        await inbox.put(event(n, user=f"u{n}"))
    for n in range(1, 4):
        item = await inbox.claim("w", 30, CHANNELS)
        assert item is not None
        if n == 2:
            await inbox.fail(item, "blocked", retryable=False, max_attempts=1, base_delay=1)
        else:
            await inbox.done(item)
    async with inbox.sessions.begin() as session:
        session.add(OutboxPart(inbox_item_id=1, seq=0, kind="text", body="old reply"))
        old = time.time() - 31 * DAY
        await session.execute(
            update(InboxItem).where(InboxItem.id.in_((1, 2))).values(finished_at=old)
        )
    # 1 (done) and 2 (dead) finished 31 days ago; 3 finished now; 4 is still pending.
    assert await purge_once(inbox, retention_days=30) == 2
    assert [(r.id, r.status) for r in await rows(engine)] == [(3, DONE), (4, PENDING)]
    async with inbox.sessions() as session:
        assert (await session.execute(select(OutboxPart))).scalars().all() == []
    assert await inbox.put(event(3, user="u3")) is False  # a recent key still dedupes
    assert await purge_once(inbox, retention_days=30) == 0


async def test_a_put_in_one_process_wakes_workers_in_another(postgres_url: str) -> None:
    """PostgreSQL: the storing process NOTIFYs beside its transactions; a LISTENing worker
    process is woken at once rather than at its next poll, and reconnects if dropped."""
    from sqlalchemy import text

    from languagebuddy.inbox.notify import Notifier, wake_on_notify
    from languagebuddy.store.db import create_all, make_engine
    from tests.conftest import _reset_postgres

    await _reset_postgres(postgres_url)
    engine = make_engine(postgres_url)  # the webhook process
    await create_all(engine)
    inbox = Inbox(engine)
    notifier = Notifier(engine)
    inbox.on_put(notifier.poke)
    woken: list[int] = []
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(notifier.run(stop)),
        asyncio.create_task(
            wake_on_notify(postgres_url, lambda: woken.append(1), stop, retry_seconds=0.2)
        ),
    ]
    numbers = iter(range(10_000))

    async def put_until_woken() -> None:
        before = len(woken)
        for _ in range(50):  # until the listener is (re)connected
            await inbox.put(event(next(numbers)))
            await asyncio.sleep(0.1)
            if len(woken) > before:
                return
        raise AssertionError("no notification reached the listener")

    try:
        await put_until_woken()
        seen = len(woken)
        assert await inbox.put(event(next(numbers)))
        for _ in range(50):
            if len(woken) > seen:
                break
            await asyncio.sleep(0.02)
        assert len(woken) == seen + 1  # one put, one wake-up
        burst = await asyncio.gather(*(inbox.put(event(next(numbers))) for _ in range(20)))
        assert all(burst)
        await asyncio.sleep(0.3)
        assert seen + 1 <= len(woken) <= seen + 8  # coalesced: a few notifications, not 20
        seen = len(woken)
        assert not await inbox.put(event(0))  # a duplicate stores nothing and wakes no one
        await asyncio.sleep(0.3)
        assert len(woken) == seen
        # The server drops the listening connection: the listener reconnects by itself.
        async with engine.begin() as conn:
            dropped = await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
            assert dropped.all() == [(True,)]
        await put_until_woken()
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
        await engine.dispose()


async def test_a_listener_skips_its_own_process_notifications(postgres_url: str) -> None:
    """The storing process woke its own worker in process: its LISTEN ignores the NOTIFYs it
    sent itself (payload = its instance id) and hears those of every other process."""
    from languagebuddy.inbox.notify import Notifier, wake_on_notify
    from languagebuddy.store.db import create_all, make_engine
    from tests.conftest import _reset_postgres

    await _reset_postgres(postgres_url)
    engine = make_engine(postgres_url)
    await create_all(engine)
    ours, theirs = Notifier(engine, sender="me"), Notifier(engine, sender="another")
    woken: list[int] = []
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(ours.run(stop)),
        asyncio.create_task(theirs.run(stop)),
        asyncio.create_task(
            wake_on_notify(postgres_url, lambda: woken.append(1), stop, ignore="me")
        ),
    ]
    try:
        for _ in range(50):  # until the listener is connected: another process's poke lands
            theirs.poke()
            await asyncio.sleep(0.1)
            if woken:
                break
        assert woken
        heard = len(woken)
        for _ in range(5):
            ours.poke()
            await asyncio.sleep(0.1)
        assert len(woken) == heard  # its own: never
        theirs.poke()
        for _ in range(50):
            if len(woken) > heard:
                break
            await asyncio.sleep(0.02)
        assert len(woken) == heard + 1
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        await engine.dispose()


async def test_a_notified_worker_starts_before_its_next_poll(postgres_url: str) -> None:
    """The wiring ``run_worker`` uses: a worker whose slots have backed off to long polls
    handles an event stored by another process as soon as the notification arrives."""
    from languagebuddy.inbox.notify import Notifier, wake_on_notify
    from languagebuddy.services import wake_on_notification
    from languagebuddy.store.db import create_all, make_engine
    from tests.conftest import _reset_postgres

    await _reset_postgres(postgres_url)
    webhook_engine, worker_engine = make_engine(postgres_url), make_engine(postgres_url)
    await create_all(webhook_engine)
    producer, consumer = Inbox(webhook_engine), Inbox(worker_engine)
    notifier = Notifier(webhook_engine)
    producer.on_put(notifier.poke)
    handled = asyncio.Event()

    async def handler(item: Claimed) -> None:
        handled.set()

    worker = Worker(consumer, handler, CHANNELS, WorkerOptions(concurrency=2, idle_poll_seconds=60))
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(notifier.run(stop)),
        asyncio.create_task(wake_on_notify(postgres_url, wake_on_notification(worker), stop)),
        asyncio.create_task(worker.run(stop)),
    ]
    try:
        # Idle slots back off 0.05, 0.1, … 0.8 s (1.55 s in all), then wait 1.6 s: at 2 s the
        # next poll is more than a second away.
        await asyncio.sleep(2.0)
        started = time.monotonic()
        await producer.put(event(1))
        await asyncio.wait_for(handled.wait(), timeout=10)
        assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        await webhook_engine.dispose()
        await worker_engine.dispose()
