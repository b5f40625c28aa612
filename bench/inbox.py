"""Inbox throughput: inbound events persisted and acknowledged per second (issue 2, item 8).

A webhook is answered only after ``Inbox.put`` has committed the event, so put throughput and
latency bound how fast the service can acknowledge platforms. This measures, per backend and
concurrency, how many puts per second commit and their p50/p99 latency (pool wait, insert and
commit included), then how fast a few workers drain the inbox with claim + done.

    .venv/bin/python bench/inbox.py                      # SQLite and PostgreSQL, c = 1, 16, 64
    .venv/bin/python bench/inbox.py --events 5000 --backends postgres

PostgreSQL runs in a scratch database ``lb_bench_<random>`` (created here, dropped at the end)
on the server of ``LB_BENCH_POSTGRES_URL`` / ``LB_TEST_POSTGRES_URL``; SQLite in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import string
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_POSTGRES_URL,
    Column,
    format_table,
    percentile,
    postgres_reachable,
    postgres_settings,
    print_table,
    sample_sentence,
    save_results,
    scratch_postgres,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from languagebuddy.events import InboundEvent, Kind
from languagebuddy.inbox.queue import Inbox
from languagebuddy.store.db import DEFAULT_POOL_SIZE, make_engine
from languagebuddy.store.models import Base, InboxItem

NAME = "inbox"
TARGET_EVENTS_PER_S = 1_000
TARGET_P99_MS = 20.0
CHANNELS = ("whatsapp", "telegram", "line")  # what make_events produces
USERS = 500  # distinct learners: enough that per-learner ordering rarely blocks a claim

COLUMNS = [
    Column("backend", "backend", width=8),
    Column("op", "operation", width=14),
    Column("concurrency", "conc", width=4),
    Column("pool", "pool", width=4),
    Column("events", "events", ",", width=6),
    Column("seconds", "seconds", ".2f", width=7),
    Column("events_per_s", "events/s", ",.0f", width=8),
    Column("p50_ms", "p50 ms", ".2f", width=7),
    Column("p99_ms", "p99 ms", ".2f", width=7),
    Column("max_ms", "max ms", ".1f", width=7),
]


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    pool_size: int


# --------------------------------------------------------------------------- realistic events


def _token(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choices(alphabet, k=n))


def make_events(count: int, run: str, seed: int = 8) -> list[InboundEvent]:
    """A mix like production traffic: mostly WhatsApp texts, then Telegram photos, LINE voice
    notes and WhatsApp delivery receipts, from ``USERS`` learners, with real-sized ids."""
    rng = random.Random(seed)
    phones = [f"+34{rng.randint(600_000_000, 699_999_999)}" for _ in range(USERS)]
    line_ids = ["U" + _token(rng, 32, "0123456789abcdef") for _ in range(USERS)]
    events: list[InboundEvent] = []
    for i in range(count):
        u = rng.randrange(USERS)
        roll = rng.random()
        now = time.time()
        if roll < 0.70:
            events.append(
                InboundEvent(
                    channel="whatsapp",
                    event_id=f"wamid.HBgL{phones[u][1:]}FQIAEhgg{run}{i:08d}{_token(rng, 12)}",
                    user_id=phones[u][1:],
                    kind=Kind.TEXT,
                    text=sample_sentence(rng),
                    message_id=f"wamid.{_token(rng, 40)}",
                    phone_e164=phones[u],
                    display_name=f"Learner {u}",
                    received_at=now,
                )
            )
        elif roll < 0.85:
            events.append(
                InboundEvent(
                    channel="telegram",
                    event_id=f"{run}-{i}",
                    user_id=str(100_000_000 + u),
                    kind=Kind.IMAGE,
                    caption=sample_sentence(rng) if rng.random() < 0.5 else None,
                    media_id="AgACAgIAAxkBAAI" + _token(rng, 60),
                    media_mime="image/jpeg",
                    media_size=rng.randint(40_000, 3_000_000),
                    message_id=str(rng.randint(1, 10**6)),
                    language_hint="es",
                    display_name=f"Learner {u}",
                    received_at=now,
                    extra={"width": 1280, "height": 960},
                )
            )
        elif roll < 0.95:
            events.append(
                InboundEvent(
                    channel="line",
                    event_id=f"01J{run.upper()}{i:010d}{_token(rng, 8)}",
                    user_id=line_ids[u],
                    kind=Kind.VOICE,
                    media_id=str(rng.randint(10**17, 10**18)),
                    media_mime="audio/m4a",
                    media_duration_s=round(rng.uniform(1, 60), 1),
                    reply_token=_token(rng, 32, "0123456789abcdef"),
                    received_at=now,
                )
            )
        else:
            events.append(
                InboundEvent(
                    channel="whatsapp",
                    event_id=f"status.{run}{i:08d}",
                    user_id=phones[u][1:],
                    kind=Kind.STATUS,
                    status=rng.choice(["sent", "delivered", "read"]),
                    message_id=f"wamid.{_token(rng, 40)}",
                    received_at=now,
                )
            )
    return events


# --------------------------------------------------------------------------- measurements


async def reset_schema(engine: AsyncEngine) -> None:
    """An empty inbox for every run, so runs do not slow each other down with old rows."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)


async def count_rows(engine: AsyncEngine, status: str | None = None) -> int:
    stmt = select(func.count()).select_from(InboxItem)
    if status is not None:
        stmt = stmt.where(InboxItem.status == status)
    async with engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def warm_up(inbox: Inbox, concurrency: int) -> int:
    """Open the pool's connections and prepare statements, as in a running server."""
    events = make_events(max(2 * concurrency, 20), run=f"warm{uuid.uuid4().hex[:6]}", seed=1)
    await _puts(inbox, events, concurrency)
    return len(events)


async def _puts(
    inbox: Inbox, events: Sequence[InboundEvent], concurrency: int
) -> tuple[float, list[float]]:
    """``concurrency`` tasks share one stream of events, each put awaited before the next, like
    that many webhook requests in flight. Returns wall seconds and per-put latencies."""
    stream: Iterator[InboundEvent] = iter(events)
    latencies: list[float] = []
    lost: list[str] = []

    async def client() -> None:
        for event in stream:
            start = time.perf_counter()
            new = await inbox.put(event)
            latencies.append(time.perf_counter() - start)
            if not new:
                lost.append(event.dedupe_key)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    if lost:
        raise RuntimeError(f"{len(lost)} fresh events were taken for duplicates: {lost[:3]}")
    return wall, latencies


async def bench_put(backend: Backend, concurrency: int, count: int) -> dict[str, Any]:
    engine = make_engine(backend.url, pool_size=backend.pool_size)
    try:
        await reset_schema(engine)
        inbox = Inbox(engine)
        warm = await warm_up(inbox, concurrency)
        events = make_events(count, run=uuid.uuid4().hex[:8])
        wall, latencies = await _puts(inbox, events, concurrency)
        stored = await count_rows(engine)
        if stored != warm + count:
            raise RuntimeError(f"expected {warm + count} rows, found {stored}")
    finally:
        await engine.dispose()
    return _row(backend, "put", concurrency, count, wall, latencies)


async def bench_drain(backend: Backend, workers: int, count: int) -> dict[str, Any]:
    """Put ``count`` events, then ``workers`` tasks claim + done until none is left."""
    engine = make_engine(backend.url, pool_size=backend.pool_size)
    try:
        await reset_schema(engine)
        inbox = Inbox(engine)
        await _puts(inbox, make_events(count, run=uuid.uuid4().hex[:8]), min(workers, 16))
        latencies: list[float] = []
        finished = 0

        async def worker(n: int) -> None:
            nonlocal finished
            owner = f"bench-{n}"
            while finished < count:
                start = time.perf_counter()
                item = await inbox.claim(owner, lease_seconds=60, channels=CHANNELS)
                if item is None:
                    # Everything left is held by other workers, or blocked behind an older
                    # event of the same learner that another worker is finishing.
                    await asyncio.sleep(0.001)
                    continue
                if not await inbox.done(item):
                    raise RuntimeError(f"lost the lease on {item.id}")
                latencies.append(time.perf_counter() - start)
                finished += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(workers)))
        wall = time.perf_counter() - start
        done = await count_rows(engine, "done")
        if done != count:
            raise RuntimeError(f"expected {count} done, found {done}")
    finally:
        await engine.dispose()
    return _row(backend, "claim+done", workers, count, wall, latencies)


async def bench_rate(backend: Backend, rate: float, count: int) -> dict[str, Any]:
    """Open loop: events arrive at a fixed ``rate`` whether or not earlier puts have finished,
    as webhooks do. This is the honest test of "N events/s with p99 under X ms"; a closed
    loop of c clients only measures c / throughput (Little's law).

    Latency counts from each event's scheduled arrival, so a stalled loop cannot hide its
    delay (no coordinated omission). The concurrency column is the most puts in flight.
    """
    engine = make_engine(backend.url, pool_size=backend.pool_size)
    try:
        await reset_schema(engine)
        inbox = Inbox(engine)
        await warm_up(inbox, 16)
        events = make_events(count, run=uuid.uuid4().hex[:8])
        latencies: list[float] = []
        in_flight = peak = 0

        async def arrive(event: InboundEvent, due: float) -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                if not await inbox.put(event):
                    raise RuntimeError(f"fresh event taken for a duplicate: {event.dedupe_key}")
            finally:
                in_flight -= 1
            latencies.append(time.perf_counter() - due)

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        for i, event in enumerate(events):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(arrive(event, due)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    finally:
        await engine.dispose()
    return _row(backend, f"put @{rate:,.0f}/s", peak, count, wall, latencies)


def _row(
    backend: Backend, op: str, concurrency: int, count: int, wall: float, latencies: list[float]
) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    return {
        "backend": backend.name,
        "op": op,
        "concurrency": concurrency,
        "pool": backend.pool_size if backend.name == "postgres" else None,
        "events": count,
        "seconds": wall,
        "events_per_s": count / wall if wall else float("nan"),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
    }


# --------------------------------------------------------------------------- main


async def run_backend(backend: Backend, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for concurrency in args.concurrency:
        count = min(args.events, args.events_c1) if concurrency == 1 else args.events
        row = await bench_put(backend, concurrency, count)
        if rows:
            print(_table_line(row), flush=True)
        else:
            print_table([row], COLUMNS)
        rows.append(row)
    if args.rate > 0:
        row = await bench_rate(backend, args.rate, args.events)
        print(_table_line(row), flush=True)
        rows.append(row)
    if args.drain_workers > 0:
        row = await bench_drain(backend, args.drain_workers, min(args.events, args.drain_events))
        print(_table_line(row), flush=True)
        rows.append(row)
    return rows


def _table_line(row: dict[str, Any]) -> str:
    """One row under the header already printed, so results appear as runs finish."""
    return format_table([row], COLUMNS).splitlines()[-1]


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    """PostgreSQL against the target (>= 1,000 events/s with p99 put latency < 20 ms)."""
    lines = [
        f"target: PostgreSQL >= {TARGET_EVENTS_PER_S:,} events/s with p99 put < "
        f"{TARGET_P99_MS:.0f} ms"
    ]
    for row in rows:
        if row["backend"] != "postgres" or not row["op"].startswith("put"):
            continue
        if row["op"] == "put" and row["concurrency"] == 1:
            continue  # one client at a time: a latency figure, not a load test
        ok = (
            row["events_per_s"] >= TARGET_EVENTS_PER_S * 0.98  # an open loop ends with a tail
            and row["p99_ms"] < TARGET_P99_MS
        )
        if row["op"] == "put":
            what = f"closed loop c={row['concurrency']}"
            floor = row["concurrency"] / row["events_per_s"] * 1000
            note = f"  (mean latency >= c/throughput = {floor:.1f} ms)"
        else:
            what = f"open loop {row['op'][4:]} offered"
            note = f"  (peak {row['concurrency']} in flight)"
        lines.append(
            f"  {what:28} {row['events_per_s']:>7,.0f} events/s  p99 {row['p99_ms']:6.1f} ms  "
            f"{'MET' if ok else 'missed'}{note}"
        )
    return lines if len(lines) > 1 else []


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="events per run (default 3000)")
    parser.add_argument(
        "--events-c1", type=int, default=1000, help="events for concurrency 1 (default 1000)"
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgres",
        help="comma-separated: sqlite, postgres (default both)",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 16, 64],
        help="comma-separated put concurrencies (default 1,16,64)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=DEFAULT_POOL_SIZE,
        help="PostgreSQL pool_size for make_engine (max_overflow is the same; default "
        f"{DEFAULT_POOL_SIZE}, as the service uses)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=TARGET_EVENTS_PER_S,
        help="open-loop arrival rate in events/s, --events of them (default 1000; 0 skips)",
    )
    parser.add_argument("--drain-workers", type=int, default=8, help="0 skips the drain run")
    parser.add_argument("--drain-events", type=int, default=2000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    notes: dict[str, Any] = {"loadavg_at_start": list(os.getloadavg())}
    if "sqlite" in args.backends:
        with tempfile.TemporaryDirectory(prefix="lb_bench_") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'inbox.db'}"
            notes["sqlite"] = {"journal_mode": "WAL", "synchronous": "NORMAL"}
            rows += await run_backend(Backend("sqlite", url, args.pool_size), args)
    if "postgres" in args.backends:
        problem = await postgres_reachable(args.postgres_url)
        if problem:
            print(f"PostgreSQL skipped: {problem}", file=sys.stderr)
            notes["postgres"] = {"skipped": problem}
        else:
            async with scratch_postgres(args.postgres_url) as url:
                notes["postgres"] = await postgres_settings(
                    url, ["synchronous_commit", "fsync", "max_connections", "shared_buffers"]
                )
                if rows:
                    print()
                rows += await run_backend(Backend("postgres", url, args.pool_size), args)
    lines = verdict(rows)
    if lines:
        print()
        print("\n".join(lines))
    if not args.no_save:
        path = save_results(
            NAME,
            {
                "parameters": {
                    k: v for k, v in vars(args).items() if k not in ("postgres_url", "no_save")
                },
                "servers": notes,
                "target": {"events_per_s": TARGET_EVENTS_PER_S, "p99_ms": TARGET_P99_MS},
                "verdict": lines,
                "rows": rows,
            },
        )
        print(
            f"\nsaved {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
