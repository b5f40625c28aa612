"""Webhooks acknowledged per second: signed deliveries answered 200 (durably stored) per channel.

A platform counts a webhook as delivered when it gets a 2xx, and the service answers only after
``Inbox.put_many`` has committed the event. This measures that whole path over real HTTP, per
backend (SQLite, PostgreSQL) and channel (WhatsApp, Telegram, LINE): read body, verify the
signature, parse, insert + commit, answer. Every request is a distinct, correctly signed event
(bodies and signatures built before timing with the fakes in ``tests/fakes``), so each one is a
new inbox row; after each run the rows are counted in the database.

The service runs as ``languagebuddy serve --no-worker`` (uvicorn, as in production) in its own
process, so the load generator does not share its GIL. The worker is off on purpose: this is
acknowledgement (= durable store), not processing, and nothing calls the platforms, so only
their credentials are set (API base URLs point at a closed port on 127.0.0.1).

Rows per backend and channel: a closed loop of 50 clients (throughput, p50/p99), and an open
loop at a fixed arrival rate (default 500/s) whose latency counts from each request's scheduled
send time, so a stalled server cannot hide its queueing (no coordinated omission). Target:
PostgreSQL acknowledges 500 webhooks/s with p99 < 50 ms. Every response must be 200 with one
new event, and the inbox must hold exactly as many rows as were acknowledged.

The load generator is one process holding one keep-alive HTTP/1.1 connection per client (50 in
the closed loop, up to ``--connections`` in the open loop). By default it writes requests
encoded before timing on raw asyncio streams (~0.1 ms CPU a request); ``--client httpx`` uses
one ``httpx.AsyncClient`` per connection instead (~1.2 ms a request: on a 2-core machine that
is CPU the service does not get). CPU columns, in % of one core over the timed run: ``gen``
this process, ``srv`` the service (and ``srv ms/req``, its CPU per acknowledged webhook: the
figure that caps one process whatever the noise), ``pg`` the PostgreSQL backends of the scratch
database alive at the start or end of the run, ``other`` the rest of the machine: other people's
jobs, PostgreSQL's background processes and backends that lived only during the run.

    .venv/bin/python bench/webhooks.py                    # both backends, three channels, ~2 min
    .venv/bin/python bench/webhooks.py --backends postgres --channels whatsapp --rate 300
    .venv/bin/python bench/webhooks.py --client httpx     # the generator most clients would use

PostgreSQL runs in a scratch database ``lb_bench_<random>`` (created and migrated here, dropped
at the end) on the server of ``LB_BENCH_POSTGRES_URL`` / ``LB_TEST_POSTGRES_URL``; SQLite in a
temp dir (``serve`` migrates it on start).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import os
import random
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import (
    DEFAULT_POSTGRES_URL,
    Column,
    ServeProcess,
    format_table,
    percentile,
    postgres_reachable,
    postgres_settings,
    print_table,
    sample_sentence,
    save_results,
    scratch_postgres,
)
from sqlalchemy import delete, func, select, text

from languagebuddy.store.db import make_engine
from languagebuddy.store.migrate import upgrade
from languagebuddy.store.models import InboxItem

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.fakes: the signing helpers and fake credentials

from tests.fakes.line import FakeLine, line_headers, line_text_webhook  # noqa: E402
from tests.fakes.telegram import FakeTelegram, telegram_text_update  # noqa: E402
from tests.fakes.whatsapp import FakeWhatsApp, whatsapp_headers, whatsapp_text_webhook  # noqa: E402

NAME = "webhooks"
TARGET_RATE = 500  # webhooks/s offered in the open loop
TARGET_P99_MS = 50.0
TARGET_CPU_RATIO = 2.0  # our CPU per webhook over the floor's (bench/floor_webhook.py)
CHANNELS = ("whatsapp", "telegram", "line")
USERS = 500  # distinct learners per channel
UNREACHABLE = "http://127.0.0.1:9"  # platform APIs: never called with the worker off

COLUMNS = [
    Column("backend", "backend", width=14),
    Column("channel", "channel", width=8),
    Column("load", "load", width=11),
    Column("sent", "sent", ",", width=5),
    Column("seconds", "seconds", ".2f", width=6),
    Column("acked_per_s", "acked/s", ",.0f", width=7),
    Column("p50_ms", "p50 ms", ".1f", width=6),
    Column("p99_ms", "p99 ms", ".1f", width=6),
    Column("max_ms", "max ms", ".0f", width=6),
    Column("errors", "errors", ",", width=6),
    Column("stored", "stored", ",", width=6),
    Column("gen_cpu", "gen%", ".0f", width=4),
    Column("srv_cpu", "srv%", ".0f", width=4),
    Column("srv_ms_per_req", "srv ms/req", ".2f", width=10),
    Column("cpu_ratio", "x floor", ".2f", width=7),
    Column("db_cpu", "pg%", ".0f", width=4),
    Column("other_cpu", "other%", ".0f", width=6),
    Column("target", "target", width=6),
]


# --------------------------------------------------------------------------- signed deliveries


@dataclass(frozen=True)
class Credentials:
    """The fakes' credentials: the service is configured with them, the bodies signed."""

    whatsapp: FakeWhatsApp = field(default_factory=FakeWhatsApp)
    telegram: FakeTelegram = field(default_factory=FakeTelegram)
    line: FakeLine = field(default_factory=FakeLine)

    def environment(self) -> dict[str, str]:
        """Environment variables for ``serve``: all three channels enabled."""
        settings: dict[str, Any] = {
            **self.whatsapp.settings(),
            **self.telegram.settings(),
            **self.line.settings(),
            "whatsapp_api_base_url": UNREACHABLE,
            "telegram_api_base_url": UNREACHABLE,
            "line_api_base_url": UNREACHABLE,
            "line_data_api_base_url": UNREACHABLE,
        }
        return {key.upper(): str(value) for key, value in settings.items()}


@dataclass(frozen=True)
class Delivery:
    path: str
    body: bytes
    headers: dict[str, str]
    wire: bytes = b""  # the whole HTTP/1.1 request, for --client raw

    def encoded(self, authority: str) -> Delivery:
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {authority}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        lines.append(f"Content-Length: {len(self.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return Delivery(self.path, self.body, self.headers, head + self.body)


_update_ids = itertools.count(random.randint(10**8, 9 * 10**8) * 10)


def make_deliveries(channel: str, count: int, creds: Credentials, seed: int = 8) -> list[Delivery]:
    """``count`` distinct text-message webhooks as the platform sends them, signed, from
    ``USERS`` learners; event ids are unique across the whole run."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:10]
    out: list[Delivery] = []
    if channel == "whatsapp":
        phones = [str(rng.randint(34_600_000_000, 34_699_999_999)) for _ in range(USERS)]
        secret = creds.whatsapp.app_secret
        for i in range(count):
            u = rng.randrange(USERS)
            body = whatsapp_text_webhook(
                sample_sentence(rng),
                wa_id=phones[u],
                name=f"Learner {u}",
                message_id=f"wamid.HBgL{phones[u]}FQIAEhgg{run}{i:08d}",
            )
            out.append(Delivery("/webhooks/whatsapp", body, whatsapp_headers(body, secret)))
    elif channel == "telegram":
        headers = creds.telegram.headers()
        for i in range(count):
            u = rng.randrange(USERS)
            body = telegram_text_update(
                sample_sentence(rng),
                update_id=next(_update_ids),
                chat_id=100_000_000 + u,
                first_name=f"Learner{u}",
                language_code="es",
                message_id=i + 1,
            )
            out.append(Delivery("/webhooks/telegram", body, headers))
    elif channel == "line":
        users = ["U" + "".join(rng.choices("0123456789abcdef", k=32)) for _ in range(USERS)]
        secret = creds.line.channel_secret
        for i in range(count):
            body = line_text_webhook(
                sample_sentence(rng),
                user_id=users[rng.randrange(USERS)],
                reply_token=secrets.token_hex(16),
                webhook_event_id=f"01J{run.upper()}{i:013d}",
            )
            out.append(Delivery("/webhooks/line", body, line_headers(body, secret)))
    else:  # pragma: no cover - parse_args refuses it
        raise ValueError(channel)
    return out


# --------------------------------------------------------------------------- the service


def service_environment(database_url: str, creds: Credentials, log_level: str) -> dict[str, str]:
    """Settings of ``serve --no-worker`` (see ``common.ServeProcess``)."""
    return {
        **creds.environment(),
        "DATABASE_URL": database_url,
        "PUBLIC_BASE_URL": "http://127.0.0.1",
        "LB_LOG_LEVEL": log_level,
        "OPENAI_BASE_URL": UNREACHABLE,
    }


class FloorProcess(ServeProcess):
    """``bench/floor_webhook.py``: the same work per webhook (body, signature, parse, one
    committed insert into the same table, 200) as a minimal ASGI app on the same uvicorn."""

    def __init__(self, workdir: Path, database_url: str, creds: Credentials) -> None:
        super().__init__(workdir, {}, worker=False)
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.creds = creds

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "bench" / "floor_webhook.py"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--dsn",
            self.dsn,
            "--whatsapp-secret",
            self.creds.whatsapp.app_secret,
            "--telegram-secret",
            self.creds.telegram.webhook_secret,
            "--line-secret",
            self.creds.line.channel_secret,
        ]


# --------------------------------------------------------------------------- CPU accounting


class CpuMeter:
    """CPU seconds of the generator (this process), the service, the PostgreSQL backends of
    the scratch database, and the whole machine, between ``start()`` and ``stop()``."""

    def __init__(self, service: ServeProcess, database: str | None) -> None:
        # Every process of the service (``serve --workers N``: the parent and its N servers).
        self.service = [psutil.Process(pid) for pid in service.pids()]
        self.database = database
        self._start: dict[str, float] = {}

    def _postgres(self) -> dict[int, float]:
        if self.database is None:
            return {}
        found: dict[int, float] = {}
        for proc in psutil.process_iter(["name"]):
            try:
                if not (proc.info["name"] or "").startswith("postgres"):
                    continue
                if self.database not in " ".join(proc.cmdline()):
                    continue
                times = proc.cpu_times()
                found[proc.pid] = times.user + times.system
            except (psutil.Error, OSError):
                continue
        return found

    def _sample(self) -> dict[str, Any]:
        own = psutil.Process().cpu_times()
        srv = sum((t.user + t.system for t in (p.cpu_times() for p in self.service)), 0.0)
        machine = psutil.cpu_times()
        idle = machine.idle + getattr(machine, "iowait", 0.0)
        return {
            "at": time.perf_counter(),
            "gen": own.user + own.system,
            "srv": srv,
            "pg": self._postgres(),
            "busy": sum(machine) - idle,
        }

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float | None]:
        end = self._sample()
        wall = end["at"] - self._start["at"]
        if wall <= 0:
            return {}
        gen = end["gen"] - self._start["gen"]
        srv = end["srv"] - self._start["srv"]
        pg = (
            sum(v - self._start["pg"].get(pid, 0.0) for pid, v in end["pg"].items())
            if self.database is not None
            else None
        )
        busy = end["busy"] - self._start["busy"]
        other = busy - gen - srv - (pg or 0.0)
        return {
            "gen_cpu": 100 * gen / wall,
            "srv_cpu": 100 * srv / wall,
            "db_cpu": 100 * pg / wall if pg is not None else None,
            "other_cpu": max(0.0, 100 * other / wall),
            "machine_busy_cpu": 100 * busy / wall,
        }


# --------------------------------------------------------------------------- load generation


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # of acknowledged requests, seconds
    lags: list[float] = field(default_factory=list)  # open loop: send start - schedule
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    sent: int = 0
    acked: int = 0
    wall: float = 0.0
    peak_in_flight: int = 0


class HttpxConnection:
    """One keep-alive connection: an ``httpx.AsyncClient`` limited to one connection.

    One client per connection because httpcore's pool scans every connection on each request
    and answer: with 50 connections in one pool the generator spent ~10 ms of CPU per request
    and was the bottleneck at ~100 requests/s.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.client = httpx.AsyncClient(
            base_url=f"http://{host}:{port}",
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=httpx.Timeout(timeout),
            trust_env=False,  # 127.0.0.1 only: no proxy from the environment
        )

    async def post(self, delivery: Delivery) -> tuple[int, bytes]:
        response = await self.client.post(
            delivery.path, content=delivery.body, headers=delivery.headers
        )
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self.client.aclose()


class RawConnection:
    """One keep-alive HTTP/1.1 connection on an asyncio stream, for ``--client raw``: writes
    the request bytes built before timing and reads status line, headers and Content-Length
    body. About a tenth of httpx's CPU per request, which matters when the generator shares
    two cores with the service and PostgreSQL."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, delivery: Delivery) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self.timeout):
                if self.reader is None or self.writer is None or self.reader.at_eof():
                    await self.aclose()  # the service closed an idle keep-alive connection
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.writer.write(delivery.wire)
                head = await self.reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length, close = 0, False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection":
                        close = value.strip().lower() == b"close"
                    elif name == b"transfer-encoding":
                        raise ValueError("chunked answer: not expected from this route")
                body = await self.reader.readexactly(length)
        except BaseException:
            await self.aclose()  # state unknown: never reuse it
            raise
        if close:
            await self.aclose()
        return status, body

    async def aclose(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


Connection = HttpxConnection | RawConnection


class Connections:
    """Up to ``size`` keep-alive connections to the service; a request takes an idle one (the
    most recently used first, so a new one is opened only when all are busy) or waits for one,
    and that wait counts in its latency."""

    def __init__(self, kind: str, host: str, port: int, size: int, timeout: float) -> None:
        cls = RawConnection if kind == "raw" else HttpxConnection
        self.all: list[Connection] = [cls(host, port, timeout) for _ in range(size)]
        self.idle: asyncio.LifoQueue[Connection] = asyncio.LifoQueue()
        for conn in reversed(self.all):
            self.idle.put_nowait(conn)

    async def send(self, delivery: Delivery, outcome: Outcome) -> bool:
        conn = await self.idle.get()
        try:
            return await _send(conn, delivery, outcome)
        finally:
            self.idle.put_nowait(conn)

    async def __aenter__(self) -> Connections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.aclose() for c in self.all), return_exceptions=True)


async def _send(conn: Connection, delivery: Delivery, outcome: Outcome) -> bool:
    """One POST; True when it was answered 200 with one new event (stored, not a duplicate)."""
    outcome.sent += 1
    try:
        status, content = await conn.post(delivery)
    except (httpx.TimeoutException, TimeoutError):
        outcome.errors["timeout"] += 1
        return False
    except (httpx.TransportError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        outcome.errors[type(exc).__name__] += 1
        return False
    if status != 200:
        outcome.errors[f"http {status}"] += 1
        return False
    if b'"new":1' not in content:
        outcome.errors["not new"] += 1
        return False
    outcome.acked += 1
    return True


async def closed_loop(
    pool: Connections, deliveries: Sequence[Delivery], concurrency: int, max_s: float
) -> Outcome:
    """``concurrency`` clients share one stream of deliveries, each waiting for its answer
    before sending the next; no new request after ``max_s`` seconds."""
    outcome = Outcome()
    stream: Iterator[Delivery] = iter(deliveries)
    start = time.perf_counter()
    deadline = start + max_s

    async def worker() -> None:
        for delivery in stream:
            if time.perf_counter() > deadline:
                outcome.errors["not sent (time limit)"] += 1
                continue
            t0 = time.perf_counter()
            if await pool.send(delivery, outcome):
                outcome.latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    outcome.wall = time.perf_counter() - start
    outcome.peak_in_flight = concurrency
    return outcome


async def open_loop(
    pool: Connections, deliveries: Sequence[Delivery], rate: float, drain_s: float
) -> Outcome:
    """Request ``i`` is sent at ``start + i / rate`` whatever happened to the earlier ones, as
    platforms deliver; latency counts from that scheduled time. Requests still unanswered
    ``drain_s`` seconds after the last was scheduled count as errors."""
    outcome = Outcome()
    in_flight = 0

    async def arrive(delivery: Delivery, due: float) -> None:
        nonlocal in_flight
        in_flight += 1
        outcome.peak_in_flight = max(outcome.peak_in_flight, in_flight)
        outcome.lags.append(time.perf_counter() - due)
        try:
            if await pool.send(delivery, outcome):
                outcome.latencies.append(time.perf_counter() - due)
        finally:
            in_flight -= 1

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for i, delivery in enumerate(deliveries):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(arrive(delivery, due)))
    _, pending = await asyncio.wait(tasks, timeout=drain_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        outcome.errors["unanswered (time limit)"] += len(pending)
    outcome.wall = time.perf_counter() - start
    return outcome


# --------------------------------------------------------------------------- one row


@dataclass
class Target:
    backend: str
    url: str  # for counting rows from this process
    service: ServeProcess
    meter: CpuMeter

    async def count(self) -> int:
        engine = make_engine(self.url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return int(
                    (await conn.execute(select(func.count()).select_from(InboxItem))).scalar_one()
                )
        finally:
            await engine.dispose()

    async def clear(self) -> None:
        """An empty inbox before each timed run, so runs compare (and counts are exact)."""
        engine = make_engine(self.url, pool_size=1)
        try:
            async with engine.begin() as conn:
                if self.backend.startswith("postgres"):
                    await conn.execute(text("TRUNCATE inbox CASCADE"))
                else:
                    await conn.execute(delete(InboxItem))
        finally:
            await engine.dispose()


async def run_row(
    target: Target,
    channel: str,
    mode: str,
    creds: Credentials,
    args: argparse.Namespace,
) -> dict[str, Any]:
    if mode == "closed":
        count, connections = args.requests, args.concurrency
        load = f"closed c={args.concurrency}"
    else:
        count, connections = round(args.rate * args.duration), args.connections
        load = f"open {args.rate:,.0f}/s"
    service = target.service
    warm = make_deliveries(channel, max(2 * args.concurrency, 100), creds, seed=1)
    deliveries = make_deliveries(channel, count, creds)
    if args.client == "raw":
        authority = f"{service.host}:{service.port}"
        warm = [d.encoded(authority) for d in warm]
        deliveries = [d.encoded(authority) for d in deliveries]
    async with Connections(
        args.client, service.host, service.port, connections, args.timeout
    ) as pool:
        # Open keep-alive connections and warm the service's pool and caches, then start empty.
        warmed = await closed_loop(pool, warm, min(args.concurrency, connections), 30)
        if warmed.acked != len(warm):
            raise RuntimeError(
                f"{target.backend}/{channel}: warm-up acknowledged {warmed.acked} of "
                f"{len(warm)} ({dict(warmed.errors)}); service log:\n{target.service.log_tail()}"
            )
        await target.clear()
        target.meter.start()
        if mode == "closed":
            outcome = await closed_loop(pool, deliveries, args.concurrency, args.max_seconds)
        else:
            outcome = await open_loop(pool, deliveries, args.rate, args.timeout + 5)
        cpu = target.meter.stop()
    if outcome.errors:
        await asyncio.sleep(1)  # let requests the client gave up on finish their commit
    stored = await target.count()
    return _row(target.backend, channel, mode, load, count, outcome, stored, cpu, args)


def _row(
    backend: str,
    channel: str,
    mode: str,
    load: str,
    planned: int,
    outcome: Outcome,
    stored: int,
    cpu: dict[str, float | None],
    args: argparse.Namespace,
) -> dict[str, Any]:
    ms = [x * 1000 for x in outcome.latencies]
    lag = [x * 1000 for x in outcome.lags]
    errors = sum(outcome.errors.values())
    row: dict[str, Any] = {
        "backend": backend,
        "channel": channel,
        "mode": mode,
        "load": load,
        "planned": planned,
        "sent": outcome.sent,
        "acked": outcome.acked,
        "seconds": outcome.wall,
        "acked_per_s": outcome.acked / outcome.wall if outcome.wall else float("nan"),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "errors": errors,
        "error_kinds": dict(outcome.errors),
        "stored": stored,
        # Every 200 must be a row and nothing else may be: exact when there were no errors.
        "stored_ok": stored == outcome.acked == planned,
        "peak_in_flight": outcome.peak_in_flight,
        **cpu,
    }
    srv = cpu.get("srv_cpu")
    if srv is not None and outcome.acked:
        # CPU of the service per acknowledged webhook: what caps one process, noise or not.
        row["srv_ms_per_req"] = srv * 10 * outcome.wall / outcome.acked
    if mode == "open":
        row["offered_per_s"] = args.rate
        row["send_lag_p99_ms"] = percentile(lag, 99)
        row["send_lag_max_ms"] = max(lag) if lag else float("nan")
        if ours_on_postgres(backend):
            # Below the target rate a row is a latency figure, not a test of the target.
            row["target"] = "n/a" if args.rate < TARGET_RATE else "MET" if met(row) else "missed"
    return row


def ours_on_postgres(backend: str) -> bool:
    """Our service on PostgreSQL: one process ("postgres") or ``serve --workers N``."""
    return backend == "postgres" or backend.startswith("postgres-w")


def met(row: dict[str, Any]) -> bool:
    return (
        row["acked_per_s"] >= row["offered_per_s"] * 0.98  # an open loop ends with a tail
        and row["p99_ms"] < TARGET_P99_MS
        and row["errors"] == 0
        and row["stored_ok"]
    )


def _table_line(row: dict[str, Any]) -> str:
    """One row under the header already printed, so results appear as runs finish."""
    return format_table([row], COLUMNS).splitlines()[-1]


# --------------------------------------------------------------------------- main


async def run_backend(
    backends: Sequence[str],
    database_url: str,
    database_name: str | None,
    creds: Credentials,
    args: argparse.Namespace,
    emit: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Rows for each channel and mode, one per backend label in turn: "sqlite" or "postgres" is
    our service, "postgres-floor" the floor on the same database. Both processes stay up and
    their rows alternate, so a machine that gets busier halfway hits both alike."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lb_bench_") as tmp:
        services: list[ServeProcess] = []
        targets: list[Target] = []
        try:
            for backend in backends:
                workdir = Path(tmp) / backend
                workdir.mkdir()
                if backend == "postgres-floor":
                    service: ServeProcess = FloorProcess(workdir, database_url, creds)
                else:
                    env = service_environment(database_url, creds, args.log_level)
                    workers = int(backend.rpartition("-w")[2]) if "-w" in backend else 1
                    service = ServeProcess(workdir, env, worker=False, workers=workers)
                services.append(service)
                service.start()  # blocks the loop until ready: nothing else runs yet
                meter = CpuMeter(service, database_name)
                targets.append(Target(backend, database_url, service, meter))
            for channel in args.channels:
                for mode in args.modes:
                    for target in targets:
                        row = await run_row(target, channel, mode, creds, args)
                        emit(row)
                        rows.append(row)
            for service in services:
                service.alive()
        finally:
            for service in services:
                service.stop()
    return rows


def add_floor_ratios(rows: list[dict[str, Any]]) -> None:
    """Our CPU per webhook over the floor's, row by row (same channel, same load)."""
    floors = {(r["channel"], r["load"]): r for r in rows if r["backend"] == "postgres-floor"}
    for row in rows:
        floor = floors.get((row["channel"], row["load"]))
        if not ours_on_postgres(row["backend"]) or floor is None:
            continue
        if row.get("srv_ms_per_req") and floor.get("srv_ms_per_req"):
            row["floor_ms_per_req"] = floor["srv_ms_per_req"]
            row["cpu_ratio"] = row["srv_ms_per_req"] / floor["srv_ms_per_req"]


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"target: PostgreSQL acknowledges {TARGET_RATE:,} webhooks/s with p99 < "
        f"{TARGET_P99_MS:.0f} ms (open loop, latency from the scheduled send)"
    ]
    for row in rows:
        problems = []
        if row["errors"]:
            problems.append(f"errors {row['error_kinds']}")
        if not row["stored_ok"]:
            problems.append(
                f"stored {row['stored']} rows for {row['acked']} acks of {row['planned']} planned"
            )
        if problems:
            lines.append(
                f"  ! {row['backend']}/{row['channel']} {row['load']}: " + "; ".join(problems)
            )
        if ours_on_postgres(row["backend"]) and "cpu_ratio" in row:
            lines.append(
                f"  {row['backend']:11} {row['channel']:9} {row['load']:12} "
                f"CPU {row['srv_ms_per_req']:.2f} ms per "
                f"webhook = {row['cpu_ratio']:.2f}x the floor's {row['floor_ms_per_req']:.2f} ms "
                f"({'MET' if row['cpu_ratio'] <= TARGET_CPU_RATIO else 'missed'}: at most "
                f"{TARGET_CPU_RATIO:.0f}x)"
            )
        if not ours_on_postgres(row["backend"]) or row["mode"] != "open":
            continue
        lines.append(
            f"  {row['backend']:11} {row['channel']:9} {row['load']:12} "
            f"{row['acked_per_s']:>6,.0f} acked/s  "
            f"p99 {row['p99_ms']:6.1f} ms  {row['target']:6}  (peak {row['peak_in_flight']} "
            f"in flight, generator send lag p99 {row['send_lag_p99_ms']:.1f} ms)"
        )
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres"
    )
    parser.add_argument(
        "--channels", default=",".join(CHANNELS), help="comma-separated: whatsapp, telegram, line"
    )
    parser.add_argument(
        "--modes", default="closed,open", help="comma-separated: closed, open (default both)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="closed-loop clients (default 50)"
    )
    parser.add_argument(
        "--requests", type=int, default=3000, help="closed-loop requests per row (default 3000)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=TARGET_RATE,
        help=f"open-loop arrival rate, webhooks/s (default {TARGET_RATE})",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="open-loop seconds per row (default 10)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=100,
        help="open loop: most keep-alive connections the generator opens (default 100); "
        "requests beyond wait for one, and that wait counts in their latency",
    )
    parser.add_argument(
        "--client",
        default="raw",
        choices=["raw", "httpx"],
        help="load generator: raw asyncio HTTP/1.1 with requests encoded before timing "
        "(default: ~0.1 ms CPU a request), or one httpx.AsyncClient per connection (~1.2 ms "
        "a request, which on 2 cores takes CPU from the service)",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="per-request timeout, seconds (default 10)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="closed loop: no new request after this many seconds (default 60)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the service's LB_LOG_LEVEL (default info, as deployed: one line per webhook)",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floor (bench/floor_webhook.py on the same PostgreSQL) and its ratios",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="PostgreSQL: also a row for `serve --workers N` (default 2; 1 for none)",
    )
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)

    def items(value: str, allowed: Sequence[str], what: str) -> list[str]:
        chosen = [x.strip() for x in value.split(",") if x.strip()]
        unknown = set(chosen) - set(allowed)
        if unknown or not chosen:
            parser.error(f"{what}: choose from {', '.join(allowed)}")
        return chosen

    args.backends = items(args.backends, ("sqlite", "postgres"), "--backends")
    args.channels = items(args.channels, CHANNELS, "--channels")
    args.modes = items(args.modes, ("closed", "open"), "--modes")
    for name in ("concurrency", "requests", "connections"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.rate <= 0 or args.duration <= 0 or args.rate * args.duration > 100_000:
        parser.error("--rate and --duration must be > 0, and at most 100,000 requests a row")
    if args.requests > 100_000:
        parser.error("--requests: at most 100,000")
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    creds = Credentials()
    rows: list[dict[str, Any]] = []
    notes: dict[str, Any] = {
        "loadavg_at_start": list(os.getloadavg()),
        "service": "languagebuddy serve --no-worker (uvicorn, own process), worker off",
        "generator": (
            f"httpx {httpx.__version__}, one AsyncClient per connection"
            if args.client == "httpx"
            else "raw asyncio HTTP/1.1, pre-encoded requests"
        )
        + f", one process, {type(asyncio.get_running_loop()).__module__} event loop",
    }
    header = False

    def emit(row: dict[str, Any]) -> None:
        nonlocal header
        if header:
            print(_table_line(row), flush=True)
        else:
            print_table([row], COLUMNS)
            header = True

    if "sqlite" in args.backends:
        with tempfile.TemporaryDirectory(prefix="lb_bench_") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'webhooks.db'}"
            notes["sqlite"] = {"journal_mode": "WAL", "synchronous": "NORMAL"}
            rows += await run_backend(["sqlite"], url, None, creds, args, emit)
    if "postgres" in args.backends:
        problem = await postgres_reachable(args.postgres_url)
        if problem:
            print(f"PostgreSQL skipped: {problem}", file=sys.stderr)
            notes["postgres"] = {"skipped": problem}
        else:
            async with scratch_postgres(args.postgres_url) as url:
                await upgrade(url)
                notes["postgres"] = await postgres_settings(
                    url, ["synchronous_commit", "fsync", "max_connections", "shared_buffers"]
                )
                notes["postgres"]["service_pool"] = "pool_size 10 + max_overflow 10 (make_engine)"
                name = url.rsplit("/", 1)[1]
                backends = ["postgres"] if args.no_floor else ["postgres", "postgres-floor"]
                rows += await run_backend(backends, url, name, creds, args, emit)
                if args.workers > 1:  # serve --workers N, once the others have stopped (all
                    # three pools at once would pass PostgreSQL's 100 connections)
                    backends = [f"postgres-w{args.workers}"]
                    rows += await run_backend(backends, url, name, creds, args, emit)
                add_floor_ratios(rows)
    lines = verdict(rows)
    elapsed = time.perf_counter() - began
    notes["loadavg_at_end"] = list(os.getloadavg())
    print()
    print("\n".join(lines))
    print(
        f"\n{elapsed:.0f} s; load average {notes['loadavg_at_start'][0]:.2f} at start, "
        f"{notes['loadavg_at_end'][0]:.2f} at end ({os.cpu_count()} CPUs)"
    )
    if not args.no_save:
        path = save_results(
            NAME,
            {
                "parameters": {
                    k: v for k, v in vars(args).items() if k not in ("postgres_url", "no_save")
                },
                "servers": notes,
                "target": {"rate_per_s": TARGET_RATE, "p99_ms": TARGET_P99_MS},
                "verdict": lines,
                "seconds": elapsed,
                "rows": rows,
            },
        )
        print(f"saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    failed = any(r["errors"] or not r["stored_ok"] for r in rows)
    return 1 if failed else 0


def _run() -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


if __name__ == "__main__":
    sys.exit(_run())
