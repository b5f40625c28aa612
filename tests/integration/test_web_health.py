"""Health, readiness and metrics of the running service."""

from __future__ import annotations

import httpx

from languagebuddy.config import load_settings
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


def test_signing_key_is_generated_once_and_kept(sqlite_url: str) -> None:
    import asyncio

    from languagebuddy.web.app import start_services

    async def key() -> str:
        services = await start_services(load_settings(database_url=sqlite_url))
        try:
            return services.signing_key
        finally:
            await services.aclose()

    first, second = asyncio.run(key()), asyncio.run(key())
    assert first == second and len(first) >= 32
