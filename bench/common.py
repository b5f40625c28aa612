"""Helpers shared by the benchmarks in this folder: percentiles, a plain table, JSON results,
a throw-away PostgreSQL database, ``languagebuddy serve`` in a child process (``ServeProcess``)
and a Spanish sample vocabulary for learner messages (``SAMPLE_WORDS``, ``sample_sentence``).

Benchmarks are scripts (``.venv/bin/python bench/<name>.py``), so they import this module as
``common`` from their own folder. Results are JSON so that runs can be compared over time:
``bench/results/<name>-<UTC timestamp>.json`` plus ``<name>-latest.json``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from languagebuddy.config import Settings

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# The server the test suite uses (tests/conftest.py); the benchmark makes a database of its own
# there so it never touches anyone's data.
DEFAULT_POSTGRES_URL = os.environ.get(
    "LB_BENCH_POSTGRES_URL",
    os.environ.get("LB_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
)

# A learner's Spanish; ``sample_sentence`` draws 4 to 40 of its words for a message.
SAMPLE_TEXT = (
    "hola como estas hoy quiero practicar mi español por favor corrige esta frase ayer fui al "
    "mercado con mi hermana y compramos frutas verduras pan queso la semana que viene tengo un "
    "examen importante no entiendo el subjuntivo puedes explicarlo con ejemplos sencillos"
)
SAMPLE_WORDS = tuple(SAMPLE_TEXT.split())


def sample_sentence(rng: random.Random) -> str:
    """A message of 4 to 40 ``SAMPLE_WORDS``, capitalised, with a full stop."""
    return " ".join(rng.choice(SAMPLE_WORDS) for _ in range(rng.randint(4, 40))).capitalize() + "."


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation between closest ranks, the
    same definition as numpy's default, so numbers compare with other tools."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Column:
    """One table column: the row key, its heading, a format spec such as ``,.0f`` and a minimum
    width (so rows printed one at a time, as runs finish, line up under one header)."""

    key: str
    title: str
    fmt: str = ""
    width: int = 0


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A fixed-width text table: numbers right-aligned, everything else left-aligned."""

    def cell(row: dict[str, Any], col: Column) -> str:
        value = row.get(col.key)
        if value is None:
            return "-"
        if isinstance(value, float) and math.isnan(value):
            return "-"
        return format(value, col.fmt) if col.fmt else str(value)

    cells = [[cell(row, col) for col in columns] for row in rows]
    widths = [
        max([col.width, len(col.title), *(len(r[i]) for r in cells)])
        for i, col in enumerate(columns)
    ]
    numeric = [
        all(
            isinstance(row.get(col.key), int | float)
            for row in rows
            if row.get(col.key) is not None
        )
        for col in columns
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line([c.title for c in columns]), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> None:
    print(format_table(rows, columns), flush=True)


def environment() -> dict[str, Any]:
    """What a result depends on besides the code: machine, versions, commit."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        # Other work on the machine skews every number here; keep it beside them.
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    try:
        import sqlalchemy

        info["sqlalchemy"] = sqlalchemy.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def save_results(name: str, payload: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``<name>-<timestamp>.json`` and refresh ``<name>-latest.json``; returns the first."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    document = {
        "benchmark": name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(),
        **payload,
    }
    text = json.dumps(document, indent=2, sort_keys=False, default=str) + "\n"
    path = directory / f"{name}-{stamp}.json"
    path.write_text(text)
    (directory / f"{name}-latest.json").write_text(text)
    return path


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_postgres(admin_url: str = DEFAULT_POSTGRES_URL) -> AsyncIterator[str]:
    """A new, empty database ``lb_bench_<random>`` on ``admin_url``'s server, dropped on exit
    (also after a failure or Ctrl-C), so benchmarks never see or leave other rows."""
    name = f"lb_bench_{uuid.uuid4().hex[:10]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def postgres_reachable(admin_url: str = DEFAULT_POSTGRES_URL) -> str | None:
    """None when the server answers, else why not (so a benchmark can skip it and say so)."""
    try:
        await _admin(admin_url, "SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def postgres_settings(url: str, names: Sequence[str]) -> dict[str, str]:
    """Server settings that explain a result (``synchronous_commit``, ``fsync`` …)."""
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])", list(names)
        )
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return {"server_version": version, **{r["name"]: r["setting"] for r in rows}}


# --------------------------------------------------------------------------- the service


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def settings_env_names() -> set[str]:
    """Every environment variable ``languagebuddy.config.Settings`` reads (upper case)."""
    names: set[str] = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None) or [name]
        names.update(str(c).upper() for c in choices)
    return names


class ServeProcess:
    """``languagebuddy serve`` (uvicorn, as in production) in a child process on 127.0.0.1.

    Its environment is this process's without any variable ``Settings`` reads, so nobody's
    shell settings leak in, plus ``env``; ``PUBLIC_BASE_URL`` is the service's own address
    unless ``env`` sets it. The working directory is ``workdir`` (a temp dir, so the
    checkout's ``.env`` is not read) and stdout + stderr go to ``workdir/service.log``.
    ``worker=False`` runs it with ``--no-worker``; ``workers=N`` runs N server processes on
    the one port (``serve --workers N``; ``pid`` is then the parent's, ``pids()`` lists all
    of them for CPU accounting). ``start()`` returns once ``/readyz``
    answers 200; ``stop()`` sends SIGINT (uvicorn's graceful shutdown, lifespan included),
    then kills after 15 s. Also a context manager: start on entry, stop on exit.
    """

    def __init__(
        self, workdir: Path, env: dict[str, str], *, worker: bool = True, workers: int = 1
    ) -> None:
        self.workdir = workdir
        self.worker = worker
        self.workers = workers
        if workers > 1 and env.get("LB_LOG_LEVEL", "info").lower() not in ("info", "debug"):
            # Each server process logs "process ready" at info: that is how start() knows
            # all of them are up, not only the first one to answer /readyz.
            raise ValueError("workers > 1 needs LB_LOG_LEVEL info or debug")
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.base_url = f"http://{self.host}:{self.port}"
        self.log_path = workdir / "service.log"
        ignored = settings_env_names()
        self.env = {k: v for k, v in os.environ.items() if k.upper() not in ignored}
        self.env["PUBLIC_BASE_URL"] = self.base_url
        self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServeProcess:
        """Start it and wait until ``/readyz`` is 200; stop it and raise, with the end of its
        log, if it exits first or is not ready within ``timeout`` seconds."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def command(self) -> list[str]:
        """The child's command line (a benchmark's floor service overrides it)."""
        command = [sys.executable, "-c", "from languagebuddy.cli import app; app()", "serve"]
        if not self.worker:
            command.append("--no-worker")
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        return [*command, "--host", self.host, "--port", str(self.port)]

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, trust_env=False) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the service exited ({self.proc.returncode}) before it was ready:\n"
                        f"{self.log_tail()}"
                    )
                with suppress(httpx.HTTPError):
                    if client.get("/readyz", timeout=2).status_code == 200 and (
                        self.workers == 1 or self.ready_processes() >= self.workers
                    ):
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the service was not ready in {timeout:.0f} s:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def ready_processes(self) -> int:
        """How many server processes have logged that they are ready."""
        with suppress(OSError):
            return self.log_path.read_text(errors="replace").count('"process ready"')
        return 0

    def pids(self) -> list[int]:
        """The service's processes: the parent and, with ``workers > 1``, its server
        processes (found through /proc, so no extra dependency)."""
        pids = [self.pid]
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with suppress(OSError):
            pids += [int(p) for p in children.read_text().split()]
        return pids

    def alive(self) -> None:
        """Raise, with the end of its log, unless the service is still running."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the service died:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- process figures


def rss(pid: int) -> int:
    """Resident memory of ``pid``, bytes."""
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process, all its threads."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def reset_hwm(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of ``pid`` to its current RSS."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def vm_hwm(pid: int) -> int | None:
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None
