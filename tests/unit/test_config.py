"""Settings: contract names, defaults, and one clear line for a bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from languagebuddy.config import ConfigError, load_settings


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///./languagebuddy.db"
    assert settings.whatsapp_api_base_url == "https://graph.facebook.com/v23.0"
    assert settings.telegram_api_base_url == "https://api.telegram.org"
    assert settings.line_data_api_base_url == "https://api-data.line.me"
    assert settings.telnyx_api_base_url == "https://api.telnyx.com/v2"
    assert (settings.chat_model, settings.stt_model, settings.tts_model) == (
        "gpt-4o",
        "whisper-1",
        "gpt-4o-mini-tts",
    )
    assert not settings.telegram_enabled


def test_environment_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("LB_CHAT_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://buddy.example.com/")
    settings = load_settings()
    assert settings.telegram_enabled
    assert settings.chat_model == "gpt-4o-mini"
    assert settings.public_base_url == "https://buddy.example.com"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://nope"),
        ("PUBLIC_BASE_URL", "buddy.example.com"),
        ("TELEGRAM_WEBHOOK_SECRET", "has spaces!"),
        ("LB_WORKER_CONCURRENCY", "many"),
        ("TELNYX_PUBLIC_KEY", "not-a-key"),
        ("TELNYX_PUBLIC_KEY", "c2hvcnQ="),  # base64, but not 32 bytes
        ("LB_CALL_MAX_SECONDS", "0"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"{name}: ")
    assert "\n" not in str(caught.value)


def test_cli_prints_one_line_and_exits_2_on_bad_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "languagebuddy.cli", "db", "upgrade"],
        env={"DATABASE_URL": "mysql://nope", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: DATABASE_URL: must start with sqlite+aiosqlite:// or "
        "postgresql+asyncpg:// (set DATABASE_URL in the environment or .env)"
    ]


def test_openai_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blank key (as .env.example ships it) is no key; the base URL must be a URL."""
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1/")
    settings = load_settings()
    assert settings.openai_api_key is None
    assert settings.openai_base_url == "http://127.0.0.1:8080/v1"
    for bad in ("api.openai.com/v1", "ftp://host/v1", "https:///v1", "https://h/v1?x=1"):
        monkeypatch.setenv("OPENAI_BASE_URL", bad)
        with pytest.raises(ConfigError, match=r"^OPENAI_BASE_URL: must"):
            load_settings()


def test_listen_address_defaults_to_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "somewhere")  # generic names some platforms set are not ours
    monkeypatch.setenv("PORT", "1")
    settings = load_settings()
    assert (settings.serve_host, settings.serve_port) == ("127.0.0.1", 8000)
    monkeypatch.setenv("LB_HOST", "0.0.0.0")
    monkeypatch.setenv("LB_PORT", "9000")
    assert (load_settings().serve_host, load_settings().serve_port) == ("0.0.0.0", 9000)
