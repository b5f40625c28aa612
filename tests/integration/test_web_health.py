"""Health, readiness and metrics of the running service."""

from __future__ import annotations

import httpx

from languagebuddy.config import load_settings
from languagebuddy.store.schema import head_revision
from tests.service import running_service


def test_health_ready_and_metrics(sqlite_url: str) -> None:
    settings = load_settings(database_url=sqlite_url)
    with running_service(settings, run_worker=False) as service:
        assert httpx.get(f"{service.base_url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{service.base_url}/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == "ok"
        metrics = httpx.get(f"{service.base_url}/metrics").text
        assert 'lb_inbox_depth{status="pending"} 0.0' in metrics
        assert "lb_stage_seconds" in metrics


def test_readyz_is_not_ready_on_a_schema_it_cannot_use(sqlite_url: str) -> None:
    """Another deploy migrated past this code (or someone dropped the schema): stop taking
    traffic and say why."""
    import sqlite3

    settings = load_settings(database_url=sqlite_url)
    with running_service(settings, run_worker=False) as service:
        head = head_revision()
        assert httpx.get(f"{service.base_url}/readyz").json()["schema"] == head
        path = sqlite_url.removeprefix("sqlite+aiosqlite:///")
        with sqlite3.connect(path) as db:
            db.execute("UPDATE alembic_version SET version_num = '9999'")
        ready = httpx.get(f"{service.base_url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["schema"] == {"current": "9999", "needed": head}
        assert "upgrade LanguageBuddy" in ready.json()["detail"]


def test_signing_key_is_generated_once_and_kept(sqlite_url: str) -> None:
    import asyncio

    from languagebuddy.services import start_services

    async def key() -> str:
        services = await start_services(load_settings(database_url=sqlite_url))
        try:
            return services.signing_key
        finally:
            await services.aclose()

    first, second = asyncio.run(key()), asyncio.run(key())
    assert first == second and len(first) >= 32
