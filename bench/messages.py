"""The message path under a school's load: learners writing on Telegram, each waiting for the
buddy's answer before writing again, through the real ``serve`` process on PostgreSQL.

Every message goes the whole way: a signed webhook -> the inbox -> the worker -> learner and
memory -> the tutor -> the fake model (a fixed latency, default 0.8 s) -> ``sendMessage`` at the
fake Telegram, where the reply's arrival time is taken. The fakes run in a process of their own
(``bench/peers.py``), the load generator in this one, so the service's CPU is its own.

Rows (one ``serve`` process, its defaults as deployed, the in-process worker on):
- N learners (10, 100, 300), each writing again ``--pause`` seconds (5) after the answer (people
  read and type), for ``--duration`` seconds;
- stress: 100 learners with no pause, 500 messages.
Per row: replies/s, reply latency (webhook sent -> reply at Telegram) p50/p99 beside the model's
latency, CPU ms of the service per message, RSS, and whether every message got exactly one
reply. In the same run the floor (``bench/floor_messages.py``: the same webhook and the same I/O
per message with raw asyncpg and one HTTP client) takes the same rows, alternating with ours.
Targets: our CPU per message at most 2x the floor's; with the pause, reply latency p99 within
the model's latency + 1 s at 100 and at 300 learners.

    .venv/bin/python bench/messages.py                       # all rows, ~5 min
    .venv/bin/python bench/messages.py --learners 100 --no-stress --no-floor
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from common import (
    DEFAULT_POSTGRES_URL,
    Column,
    ServeProcess,
    format_table,
    percentile,
    postgres_reachable,
    print_table,
    sample_sentence,
    save_results,
    scratch_postgres,
)
from webhooks import Connections, Delivery, Outcome

from languagebuddy.store.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.telegram import telegram_text_update  # noqa: E402

NAME = "messages"
TARGET_CPU_RATIO = 2.0
TARGET_EXTRA_LATENCY_S = 1.0  # p99 within the model's latency + this, with the pause
PAUSED_TARGET_LEARNERS = (100, 300)

COLUMNS = [
    Column("target", "target", width=6),
    Column("row", "row", width=16),
    Column("messages", "messages", ",", width=8),
    Column("replies_per_s", "replies/s", ".1f", width=9),
    Column("p50_s", "p50 s", ".2f", width=6),
    Column("p99_s", "p99 s", ".2f", width=6),
    Column("model_s", "model s", ".2f", width=7),
    Column("cpu_ms_per_msg", "CPU ms/msg", ".2f", width=10),
    Column("cpu_ratio", "x floor", ".2f", width=7),
    Column("srv_cpu", "srv%", ".0f", width=4),
    Column("rss_mb", "RSS MB", ".0f", width=6),
    Column("exactly_once", "1 reply each", width=12),
    Column("verdict", "target", width=6),
]


# --------------------------------------------------------------------------- the peers


class Peers:
    """``bench/peers.py`` in a child process: its addresses, and a queue of reply arrival
    times per chat, fed from its stdout."""

    def __init__(self, model_latency: float) -> None:
        self.model_latency = model_latency
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}
        self.replies: dict[str, asyncio.Queue[float]] = defaultdict(asyncio.Queue)
        self.reply_count: Counter[str] = Counter()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Peers:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bench" / "peers.py"),
            "--model-latency",
            str(self.model_latency),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        assert self.proc.stdout is not None
        first = await asyncio.wait_for(self.proc.stdout.readline(), timeout=60)
        if not first:
            raise RuntimeError("bench/peers.py exited before it was ready")
        self.info = json.loads(first)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            record = json.loads(line)
            self.reply_count[record["chat"]] += 1
            self.replies[record["chat"]].put_nowait(record["at"])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=15)
        except TimeoutError:
            self.proc.kill()
        if self._reader is not None:
            self._reader.cancel()


# --------------------------------------------------------------------------- the services


def service_env(database_url: str, peers: Peers, concurrency: int | None) -> dict[str, str]:
    telegram = peers.info["telegram"]
    extra = {"LB_WORKER_CONCURRENCY": str(concurrency)} if concurrency else {}
    return {
        **extra,
        "DATABASE_URL": database_url,
        "OPENAI_API_KEY": peers.info["openai_api_key"],
        "OPENAI_BASE_URL": peers.info["openai_base_url"],
        "TELEGRAM_BOT_TOKEN": telegram["telegram_bot_token"],
        "TELEGRAM_WEBHOOK_SECRET": telegram["telegram_webhook_secret"],
        "TELEGRAM_API_BASE_URL": telegram["telegram_api_base_url"],
    }


class FloorProcess(ServeProcess):
    """``bench/floor_messages.py`` on the same database and peers."""

    def __init__(self, workdir: Path, database_url: str, peers: Peers, concurrency: int) -> None:
        super().__init__(workdir, {}, worker=True)
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.peers = peers
        self.concurrency = concurrency

    def command(self) -> list[str]:
        telegram = self.peers.info["telegram"]
        return [
            sys.executable,
            str(ROOT / "bench" / "floor_messages.py"),
            *("--host", self.host, "--port", str(self.port), "--dsn", self.dsn),
            *("--openai", self.peers.info["openai_base_url"]),
            *("--openai-key", self.peers.info["openai_api_key"]),
            *("--telegram", telegram["telegram_api_base_url"]),
            *("--telegram-token", telegram["telegram_bot_token"]),
            *("--telegram-secret", telegram["telegram_webhook_secret"]),
            *("--concurrency", str(self.concurrency)),
        ]


# --------------------------------------------------------------------------- learners


@dataclass
class Scenario:
    name: str
    learners: int
    pause: float  # seconds between the answer and the next message
    duration: float | None = None  # stop sending after this, or
    messages: int | None = None  # after this many in all


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)  # seconds, webhook sent -> reply
    sent: int = 0
    lost: int = 0  # no reply within the timeout
    errors: Counter[str] = field(default_factory=Counter)


_update_ids = itertools.count(random.randint(10**8, 9 * 10**8) * 10)
_chat_ids = itertools.count(500_000_000 + random.randint(0, 10**6) * 1000)


async def run_learners(
    scenario: Scenario, peers: Peers, pool: Connections, authority: str, wait: float
) -> tuple[Results, float]:
    """Each learner: write, wait for the reply, pause, write again."""
    results = Results()
    headers = peers.info["telegram_headers"]
    rng = random.Random(7)
    start = time.perf_counter()
    stop_at = start + scenario.duration if scenario.duration else None
    budget = itertools.count()

    def may_send() -> bool:
        if stop_at is not None and time.perf_counter() >= stop_at:
            return False
        return scenario.messages is None or next(budget) < scenario.messages

    async def learner(chat: int) -> None:
        queue = peers.replies[str(chat)]
        await asyncio.sleep(rng.uniform(0, scenario.pause or 0.2))  # not all at once
        message_id = 0
        while may_send():
            message_id += 1
            body = telegram_text_update(
                sample_sentence(rng),
                update_id=next(_update_ids),
                chat_id=chat,
                first_name=f"Learner{chat % 1000}",
                language_code="es",
                message_id=message_id,
            )
            delivery = Delivery("/webhooks/telegram", body, headers).encoded(authority)
            outcome = Outcome()
            sent_at = time.time()
            results.sent += 1
            if not await pool.send(delivery, outcome):
                results.errors.update(outcome.errors)
                return
            try:
                replied_at = await asyncio.wait_for(queue.get(), timeout=wait)
            except TimeoutError:
                results.lost += 1
                return
            results.latencies.append(replied_at - sent_at)
            if scenario.pause:
                await asyncio.sleep(scenario.pause)

    chats = [next(_chat_ids) for _ in range(scenario.learners)]
    await asyncio.gather(*(learner(chat) for chat in chats))
    wall = time.perf_counter() - start
    await asyncio.sleep(1.0)  # a second reply would show up now
    extra = sum(peers.reply_count[str(c)] for c in chats) - len(results.latencies)
    if extra:
        results.errors["extra replies"] += extra
    return results, wall


class RssSampler:
    """Peak RSS of a process, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            await asyncio.sleep(0.2)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def run_row(
    label: str, service: ServeProcess, scenario: Scenario, peers: Peers, args: argparse.Namespace
) -> dict[str, Any]:
    proc = psutil.Process(service.pid)
    authority = f"{service.host}:{service.port}"
    async with Connections("raw", service.host, service.port, 200, args.timeout) as pool:
        before = proc.cpu_times()
        with RssSampler(service.pid) as rss:
            results, wall = await run_learners(scenario, peers, pool, authority, args.timeout)
        after = proc.cpu_times()
    cpu = (after.user + after.system) - (before.user + before.system)
    replies = len(results.latencies)
    row: dict[str, Any] = {
        "target": label,
        "row": scenario.name,
        "learners": scenario.learners,
        "pause_s": scenario.pause,
        "messages": results.sent,
        "replies": replies,
        "lost": results.lost,
        "errors": dict(results.errors),
        "seconds": wall,
        "replies_per_s": replies / wall if wall else float("nan"),
        "p50_s": percentile(results.latencies, 50),
        "p99_s": percentile(results.latencies, 99),
        "model_s": peers.model_latency,
        "srv_cpu": 100 * cpu / wall if wall else float("nan"),
        "cpu_ms_per_msg": 1000 * cpu / replies if replies else float("nan"),
        "rss_mb": rss.peak / 2**20,
        "exactly_once": "yes" if not results.errors and not results.lost else "NO",
    }
    if label == "ours" and scenario.pause and scenario.learners in PAUSED_TARGET_LEARNERS:
        met = row["p99_s"] <= peers.model_latency + TARGET_EXTRA_LATENCY_S
        row["verdict"] = "MET" if met and row["exactly_once"] == "yes" else "missed"
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    floors = {r["row"]: r for r in rows if r["target"] == "floor"}
    for row in rows:
        floor = floors.get(row["row"])
        if row["target"] == "ours" and floor and floor["cpu_ms_per_msg"]:
            row["floor_cpu_ms_per_msg"] = floor["cpu_ms_per_msg"]
            row["cpu_ratio"] = row["cpu_ms_per_msg"] / floor["cpu_ms_per_msg"]


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"targets: CPU per message at most {TARGET_CPU_RATIO:.0f}x the floor's; with the pause, "
        f"reply p99 within the model's latency + {TARGET_EXTRA_LATENCY_S:.0f} s at "
        f"{' and '.join(map(str, PAUSED_TARGET_LEARNERS))} learners"
    ]
    for row in rows:
        if row["target"] != "ours":
            continue
        parts = [f"  {row['row']:16}"]
        if "cpu_ratio" in row:
            ok = row["cpu_ratio"] <= TARGET_CPU_RATIO
            parts.append(
                f"CPU {row['cpu_ms_per_msg']:.1f} ms/msg = {row['cpu_ratio']:.2f}x the floor's "
                f"{row['floor_cpu_ms_per_msg']:.1f} ({'MET' if ok else 'missed'})"
            )
        if "verdict" in row:
            parts.append(
                f"p99 {row['p99_s']:.2f} s vs {row['model_s'] + TARGET_EXTRA_LATENCY_S:.2f} s "
                f"({row['verdict']})"
            )
        if row["exactly_once"] != "yes":
            parts.append(f"LOST {row['lost']}, errors {row['errors']}")
        lines.append("  ".join(parts))
    return lines


# --------------------------------------------------------------------------- main


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    chosen = [
        Scenario(f"{n} learners, {args.pause:g} s", n, args.pause, duration=args.duration)
        for n in args.learners
    ]
    if not args.no_stress:
        chosen.append(Scenario("stress 100, no pause", 100, 0.0, messages=500))
    return chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--learners", default="10,100,300", help="comma-separated learner counts (10,100,300)"
    )
    parser.add_argument("--pause", type=float, default=5.0, help="seconds after each answer")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per paused row")
    parser.add_argument("--model-latency", type=float, default=0.8, help="fake model, seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="a reply later is lost")
    parser.add_argument("--no-stress", action="store_true", help="skip the stress row")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor and ratios")
    parser.add_argument(
        "--floor-concurrency", type=int, default=64, help="the floor's claim loops (64)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="our LB_WORKER_CONCURRENCY (default: the service's own default)",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)
    args.learners = [int(x) for x in args.learners.split(",") if x.strip()]
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    problem = await postgres_reachable(args.postgres_url)
    if problem:
        print(f"PostgreSQL not reachable: {problem}", file=sys.stderr)
        return 2
    notes: dict[str, Any] = {"loadavg_at_start": list(os.getloadavg())}
    rows: list[dict[str, Any]] = []
    peers = await Peers(args.model_latency).start()
    try:
        # Each target has a database of its own: a worker claims whatever its inbox holds, so
        # sharing one would let the idle one answer the other's learners.
        async with (
            scratch_postgres(args.postgres_url) as ours_url,
            scratch_postgres(args.postgres_url) as floor_url,
        ):
            await upgrade(ours_url)
            await upgrade(floor_url)
            with tempfile.TemporaryDirectory(prefix="lb_bench_") as tmp:
                for name in ("ours", "floor"):
                    (Path(tmp) / name).mkdir()
                targets: list[tuple[str, ServeProcess]] = [
                    (
                        "ours",
                        ServeProcess(
                            Path(tmp) / "ours", service_env(ours_url, peers, args.concurrency)
                        ),
                    )
                ]
                if not args.no_floor:
                    floor = FloorProcess(
                        Path(tmp) / "floor", floor_url, peers, args.floor_concurrency
                    )
                    targets.append(("floor", floor))
                try:
                    for _, service in targets:
                        service.start()
                    header = False
                    for scenario in scenarios(args):
                        for label, service in targets:
                            row = await run_row(label, service, scenario, peers, args)
                            rows.append(row)
                            if not header:
                                print_table([row], COLUMNS)
                                header = True
                            else:
                                print(format_table([row], COLUMNS).splitlines()[-1], flush=True)
                            service.alive()
                finally:
                    for _, service in targets:
                        service.stop()
    finally:
        await peers.stop()
    add_ratios(rows)
    lines = verdict(rows)
    notes["loadavg_at_end"] = list(os.getloadavg())
    elapsed = time.perf_counter() - began
    print()
    print_table(rows, COLUMNS)
    print("\n".join(lines))
    print(
        f"\n{elapsed:.0f} s; load average {notes['loadavg_at_start'][0]:.2f} at start, "
        f"{notes['loadavg_at_end'][0]:.2f} at end ({os.cpu_count()} CPUs)"
    )
    if not args.no_save:
        path = save_results(
            NAME,
            {
                "parameters": {k: v for k, v in vars(args).items() if k != "postgres_url"},
                "notes": notes,
                "verdict": lines,
                "seconds": elapsed,
                "rows": rows,
            },
        )
        print(f"saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if all(r["exactly_once"] == "yes" for r in rows) else 1


def _run() -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


if __name__ == "__main__":
    sys.exit(_run())
