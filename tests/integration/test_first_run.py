"""What a new user and an operator meet on a first run, through the real command in a
subprocess: every start-up failure is one line naming the setting and the fix (exit 2), and
a database is migrated once however many processes start together."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from languagebuddy.store.schema import head_revision
from tests.cli import run_cli, start_cli
from tests.conftest import _reset_postgres
from tests.fakes.openai import FakeOpenAI
from tests.fakes.telegram import FakeTelegram, telegram_text_update

KEY = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_startup_failures_are_one_line_and_exit_2(tmp_path: Path) -> None:
    nobody_listens = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test"
    refused_login = "postgresql+asyncpg://no_such_role@127.0.0.1:5432/test"
    missing_folder = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'lb.db'}"
    sqlite = f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port = str(taken.getsockname()[1])
    port = str(free_port())
    # (command, environment, exit code, words the one line must hold)
    cases = [
        (
            ["serve", "--no-worker", "--port", port],
            {"DATABASE_URL": nobody_listens},
            2,
            ["DATABASE_URL", "connection refused"],
        ),
        (["worker"], {"DATABASE_URL": nobody_listens, **KEY}, 2, ["DATABASE_URL", "refused"]),
        (
            ["chat", "--message", "hola"],
            {"DATABASE_URL": nobody_listens, **KEY},
            2,
            ["DATABASE_URL", "start PostgreSQL"],
        ),
        (["db", "upgrade"], {"DATABASE_URL": nobody_listens}, 2, ["DATABASE_URL", "refused"]),
        (
            ["serve", "--no-worker", "--port", port],
            {"DATABASE_URL": refused_login},
            2,
            ["DATABASE_URL", "refused the login", "no_such_role"],
        ),
        (
            ["chat", "--message", "hola"],
            {"DATABASE_URL": missing_folder, **KEY},
            2,
            ["DATABASE_URL", "does not exist", "mkdir -p"],
        ),
        (
            ["serve", "--no-worker", "--port", taken_port],
            {"DATABASE_URL": sqlite},
            2,
            ["already in use", "--port"],
        ),
        (["chat", "--message", "hola"], {"DATABASE_URL": sqlite}, 2, ["OPENAI_API_KEY"]),
        (
            ["chat", "--image", "nothere.jpg"],
            {"DATABASE_URL": sqlite, **KEY},
            2,
            ["--image", "nothere.jpg", "does not exist"],
        ),
        (["webhooks", "--register", "telegram"], {}, 2, ["TELEGRAM_BOT_TOKEN"]),
        (
            ["chat", "--message", "hola"],
            {"OPENAI_BASE_URL": "api.openai.com/v1"},
            2,
            ["OPENAI_BASE_URL", "https://"],
        ),
        (
            ["serve", "--no-worker", "--port", port],
            {"DATABASE_URL": sqlite, "LB_MIGRATE_ON_START": "false"},
            2,
            ["languagebuddy db upgrade", "LB_MIGRATE_ON_START"],
        ),
    ]
    # doctor reports instead of refusing: the same line, on its database row, and exit 1.
    cases.append((["doctor"], {"DATABASE_URL": nobody_listens}, 1, ["DATABASE_URL", "refused"]))
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(lambda c: run_cli(c[0], c[1], tmp_path, timeout=60), cases))
    finally:
        taken.close()
    for (args, _, code, words), result in zip(cases, results, strict=True):
        what = " ".join(args)
        lines = result.stderr.strip().splitlines()
        if args == ["doctor"]:
            assert result.returncode == 1 and "Traceback" not in result.stderr
            database = [line for line in result.stdout.splitlines() if " database " in line]
            assert database[0].startswith("FAIL") and all(w in database[0] for w in words)
            continue
        assert result.returncode == code, f"{what}: {result.returncode} {result.stderr}"
        assert len(lines) == 1 and "Traceback" not in result.stderr, f"{what}: {result.stderr}"
        assert all(word in lines[0] for word in words), f"{what}: {lines[0]}"
        assert result.stdout == "", f"{what}: {result.stdout}"
    # Nothing was created by the refusals: no stray SQLite file or folder.
    assert not (tmp_path / "missing").exists()
    assert not (tmp_path / "lb.db").exists()


def test_doctor_probes_the_model_and_never_creates_the_database(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        env = {
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}",
            "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.base_url,
        }
        result = run_cli(["doctor"], env, tmp_path)
        paths = [r.path for r in fake.server.recorded()]
    lines = result.stdout.splitlines()
    assert result.returncode == 1  # no channel configured
    assert "Traceback" not in result.stderr
    by_name = {line.split()[1]: line for line in lines}
    assert "does not exist yet" in by_name["database"]
    assert f"answered at {fake.base_url}" in by_name["model"]
    assert paths == ["/v1/chat/completions"]  # a one-token completion, never /v1/models
    # Aligned columns: every detail starts at the same offset.
    offsets = {len(line) - len(line.split(None, 2)[2]) for line in lines}
    assert len(offsets) == 1, lines
    assert not (tmp_path / "lb.db").exists()


async def _waiting_for_lock(url: str, count: int) -> None:
    """Until ``count`` sessions wait for an advisory lock on this database."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            if waiting >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"fewer than {count} processes waited for the migration lock")
    finally:
        await conn.close()


def test_processes_starting_together_migrate_once(postgres_url: str, tmp_path: Path) -> None:
    """Two `db upgrade`s on an empty PostgreSQL database, held at the migration lock until
    both wait for it, then let go at once: one creates the schema, the other finds it done."""
    import asyncpg

    from languagebuddy.store.migrate import MIGRATION_LOCK_KEY

    asyncio.run(_reset_postgres(postgres_url))
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")

    async def hold_lock() -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn)
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        return conn

    loop = asyncio.new_event_loop()
    holder = loop.run_until_complete(hold_lock())
    env = {"DATABASE_URL": postgres_url}
    procs = [
        start_cli(["db", "upgrade"], env, tmp_path, stderr=subprocess.DEVNULL) for _ in range(2)
    ]
    try:
        loop.run_until_complete(_waiting_for_lock(postgres_url, 2))
        loop.run_until_complete(holder.close())  # releases the lock
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        loop.close()
    assert [p.returncode for p in procs] == [0, 0], outputs
    said = sorted(o.strip().split(": ", 1)[1] for o in outputs)
    head = head_revision()
    assert said == [
        f"created the schema at revision {head}",
        f"the schema is already at revision {head}, the latest",
    ]


def test_serve_with_two_workers_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    """`serve --workers 2` on an empty database: migrated once by the parent, two processes
    each with their worker and NOTIFY listener, every message answered exactly once."""
    asyncio.run(_reset_postgres(postgres_url))
    port = free_port()
    with FakeOpenAI() as ai, FakeTelegram() as tg:
        env = {
            "DATABASE_URL": postgres_url,
            "OPENAI_API_KEY": ai.api_key,
            "OPENAI_BASE_URL": ai.base_url,
            "PUBLIC_BASE_URL": "https://buddy.example.com",
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_WEBHOOK_SECRET": tg.webhook_secret,
            "TELEGRAM_API_BASE_URL": tg.base_url,
            "LB_WORKER_CONCURRENCY": "2",
        }
        log_path = tmp_path / "serve.log"
        with log_path.open("w") as log:
            proc = start_cli(
                ["serve", "--workers", "2", "--port", str(port)], env, tmp_path, stdout=log
            )
        try:
            _wait_until(lambda: log_path.read_text().count('"process ready"') == 2, proc, log_path)
            chats = [80_000_000 + n for n in range(12)]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                assert client.get("/readyz").json()["status"] == "ready"
                for n, chat in enumerate(chats):
                    body = telegram_text_update(f"Hola {n}", chat_id=chat, update_id=5000 + n)
                    response = client.post("/webhooks/telegram", content=body, headers=tg.headers())
                    assert response.status_code == 200
            _wait_until(lambda: all(tg.texts_to(c) for c in chats), proc, log_path)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    assert proc.returncode == 0
    assert [len(tg.texts_to(c)) for c in chats] == [1] * len(chats)
    log = log_path.read_text()
    assert log.count('"schema migrated"') == 1  # by the parent, before the processes
    ready_pids = {
        line.split('"pid": ')[1].split(",")[0]
        for line in log.splitlines()
        if '"process ready"' in line
    }
    assert len(ready_pids) == 2
    assert log.count('"db_pool": 10') == 2  # the 20 connections of LB_DB_POOL_SIZE, shared
    assert f'"address": "http://127.0.0.1:{port}"' in log and '"processes": 2' in log
    assert '"channel enabled"' in log and '"https://buddy.example.com/webhooks/telegram"' in log
    assert '"channel off"' in log and "WHATSAPP_ACCESS_TOKEN" in log


def test_serve_without_a_model_key_starts_and_keeps_the_messages(tmp_path: Path) -> None:
    """The first `make run` on a fresh machine: no OPENAI_API_KEY. The service starts, says
    what is missing, and stores what arrives (answered once it runs with a key)."""
    port = free_port()
    db = tmp_path / "lb.db"
    with FakeTelegram() as tg:
        env = {
            "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_WEBHOOK_SECRET": tg.webhook_secret,
            "TELEGRAM_API_BASE_URL": tg.base_url,
        }
        log_path = tmp_path / "serve.log"
        with log_path.open("w") as log:
            proc = start_cli(["serve", "--port", str(port)], env, tmp_path, stdout=log)
        try:
            _wait_until(lambda: '"process ready"' in log_path.read_text(), proc, log_path)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                assert client.get("/readyz").json()["status"] == "ready"
                body = telegram_text_update("Hola", chat_id=70_000_001, update_id=9001)
                response = client.post("/webhooks/telegram", content=body, headers=tg.headers())
                assert response.status_code == 200
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    assert proc.returncode in (0, 130)  # uvicorn re-raises the Ctrl-C once it has shut down
    assert "OPENAI_API_KEY is not set: messages are stored but not answered" in log_path.read_text()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM inbox").fetchall() == [("pending",)]
    assert tg.texts_to(70_000_001) == []


def _wait_until(condition, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


async def test_doctor_says_what_the_model_probe_met(fake_openai: FakeOpenAI) -> None:
    from languagebuddy.config import Settings, load_settings
    from languagebuddy.doctor import probe_model

    def settings(key: str) -> Settings:
        return load_settings(openai_api_key=key, openai_base_url=fake_openai.base_url)

    wrong_key = await probe_model(settings("sk-wrong"), "gpt-4o", "model")
    assert wrong_key.failed and "refused the key (401): check OPENAI_API_KEY" in wrong_key.detail
    fake_openai.fail(404)
    unknown = await probe_model(settings(fake_openai.api_key), "gpt-nope", "model")
    assert unknown.failed and "has no model 'gpt-nope'" in unknown.detail
    fake_openai.fail(429)
    busy = await probe_model(settings(fake_openai.api_key), "gpt-4o", "model")
    assert not busy.failed and "rate limited" in busy.detail
