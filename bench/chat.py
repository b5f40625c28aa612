"""`languagebuddy chat --message` from the shell to the printed reply, against a local fake
OpenAI (issue 12: "a one-shot chat --message answers in under 1 s wall time").

Each run is the real command in a new process on a SQLite database in a temp dir (created by
a first, unmeasured run, as a learner's second message finds it), so the figure is what a
learner waits: interpreter start, imports, the schema check, the inbox, the worker, the tutor,
one model call to the fake, the printed reply and the exit.

The floor, measured in the same run and interleaved with it (so both meet the same load), is a
process that only imports the third-party libraries this command cannot do without (the
OpenAI SDK and its aiohttp transport, SQLAlchemy + aiosqlite, typer, pydantic-settings,
structlog) and exits: what any Python CLI built on them pays before doing anything.

    .venv/bin/python bench/chat.py              # 15 runs each, ~1 min
    .venv/bin/python bench/chat.py --runs 30 --ref /path/to/other/src

``--ref SRC`` adds a row for another checkout's ``src`` folder run with this venv (e.g. a
``git archive`` of an older commit), to compare before and after in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Column, print_table, save_results

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the fakes live in tests/, which is not an installed package
    sys.path.insert(0, str(ROOT))

from tests.fakes.openai import FakeOpenAI  # noqa: E402

TARGET_MS = 1000.0
FLOOR_IMPORTS = (
    "openai, aiohttp, sqlalchemy.ext.asyncio, aiosqlite, typer, pydantic_settings, structlog"
)
FLOOR = f"import gc; gc.disable(); import {FLOOR_IMPORTS}; gc.freeze()"

COLUMNS = [
    Column("row", "command", width=28),
    Column("runs", "runs", "d"),
    Column("p50_ms", "p50 ms", ".0f"),
    Column("min_ms", "min ms", ".0f"),
    Column("max_ms", "max ms", ".0f"),
    Column("cpu_ms", "CPU ms p50", ".0f"),
    Column("ratio", "x floor", ".2f"),
    Column("over_floor_ms", "over floor ms", ".0f"),
]


def chat_command(src: Path) -> list[str]:
    """`languagebuddy chat` from the package in ``src`` (this venv's interpreter)."""
    code = f"import sys; sys.path.insert(0, {str(src)!r}); from languagebuddy.cli import app; app()"
    return [sys.executable, "-c", code, "chat", "--message", "Hola", "--user", "ana"]


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall ms, CPU ms of the child) of one run; raises if it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - started) * 1000
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[-6:]} failed:\n{stderr[-2000:]}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs per row (15)")
    parser.add_argument("--ref", type=Path, help="another checkout's src folder to compare")
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)

    rows: dict[str, list[str]] = {"chat --message (this tree)": chat_command(ROOT / "src")}
    if args.ref:
        rows[f"chat --message ({args.ref})"] = chat_command(args.ref.resolve())
    rows["floor (imports only)"] = [sys.executable, "-c", FLOOR]
    load_start = os.getloadavg()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
    with FakeOpenAI() as fake, tempfile.TemporaryDirectory(prefix="lb_bench_") as tmp:
        dirs = {name: Path(tmp) / str(n) for n, name in enumerate(rows)}
        for folder in dirs.values():
            folder.mkdir()
        for run in range(args.runs + 1):
            for name, command in rows.items():  # interleaved: every row meets the same load
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "OPENAI_API_KEY": fake.api_key,
                    "OPENAI_BASE_URL": fake.base_url,
                    "DATABASE_URL": f"sqlite+aiosqlite:///{dirs[name] / 'lb.db'}",
                }
                measured = timed(command, env, dirs[name])
                if run:  # the first run creates the database
                    samples[name].append(measured)
    floor = statistics.median(w for w, _ in samples["floor (imports only)"])
    table: list[dict[str, Any]] = []
    for name, values in samples.items():
        walls = [w for w, _ in values]
        p50 = statistics.median(walls)
        table.append(
            {
                "row": name,
                "runs": len(values),
                "p50_ms": p50,
                "min_ms": min(walls),
                "max_ms": max(walls),
                "cpu_ms": statistics.median(c for _, c in values),
                "ratio": p50 / floor,
                "over_floor_ms": p50 - floor,
            }
        )
    print_table(table, COLUMNS)
    ours = table[0]["p50_ms"]
    load_end = os.getloadavg()
    print(
        f"\ntarget: chat --message < {TARGET_MS:.0f} ms wall against a local fake: "
        f"{'met' if ours < TARGET_MS else 'NOT met'} (p50 {ours:.0f} ms); load average "
        f"{load_start[0]:.2f} at start, {load_end[0]:.2f} at end ({os.cpu_count()} CPUs)"
    )
    if not args.no_save:
        path = save_results(
            "chat",
            {
                "parameters": {"runs": args.runs, "ref": str(args.ref) if args.ref else None},
                "floor": FLOOR,
                "target_ms": TARGET_MS,
                "loadavg_at_end": list(load_end),
                "rows": table,
            },
        )
        print(f"saved {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
