"""Settings: the only place environment variables are read.

Every name here is fixed by shared/CONTRACT.md (plus a few ``LB_*`` tunables of our own).
A missing or malformed value fails at start with one line naming the variable.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CEFR_LEVELS = ("A1", "A2", "B1", "B2", "C1", "C2")


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable and the fix."""


class Settings(BaseSettings):
    """Validated configuration. Channels and call providers are enabled by their credentials."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    database_url: Annotated[str, Field(validation_alias=_env("DATABASE_URL"))] = (
        "sqlite+aiosqlite:///./languagebuddy.db"
    )
    public_base_url: Annotated[str, Field(validation_alias=_env("PUBLIC_BASE_URL"))] = (
        "http://localhost:8000"
    )
    signing_key: Annotated[str | None, Field(validation_alias=_env("LB_SIGNING_KEY"))] = None

    openai_api_key: Annotated[str | None, Field(validation_alias=_env("OPENAI_API_KEY"))] = None
    openai_base_url: Annotated[str | None, Field(validation_alias=_env("OPENAI_BASE_URL"))] = None
    chat_model: Annotated[str, Field(validation_alias=_env("LB_CHAT_MODEL"))] = "gpt-4o"
    vision_model: Annotated[str, Field(validation_alias=_env("LB_VISION_MODEL"))] = "gpt-4o"
    stt_model: Annotated[str, Field(validation_alias=_env("LB_STT_MODEL"))] = "whisper-1"
    tts_model: Annotated[str, Field(validation_alias=_env("LB_TTS_MODEL"))] = "gpt-4o-mini-tts"
    tts_voice: Annotated[str, Field(validation_alias=_env("LB_TTS_VOICE"))] = "alloy"
    realtime_model: Annotated[str, Field(validation_alias=_env("LB_REALTIME_MODEL"))] = (
        "gpt-realtime"
    )
    realtime_voice: Annotated[str, Field(validation_alias=_env("LB_REALTIME_VOICE"))] = "alloy"

    whatsapp_access_token: Annotated[
        str | None, Field(validation_alias=_env("WHATSAPP_ACCESS_TOKEN"))
    ] = None
    whatsapp_phone_number_id: Annotated[
        str | None, Field(validation_alias=_env("WHATSAPP_PHONE_NUMBER_ID"))
    ] = None
    whatsapp_app_secret: Annotated[
        str | None, Field(validation_alias=_env("WHATSAPP_APP_SECRET"))
    ] = None
    whatsapp_verify_token: Annotated[
        str | None, Field(validation_alias=_env("WHATSAPP_VERIFY_TOKEN"))
    ] = None
    whatsapp_api_base_url: Annotated[str, Field(validation_alias=_env("WHATSAPP_API_BASE_URL"))] = (
        "https://graph.facebook.com/v23.0"
    )

    telegram_bot_token: Annotated[
        str | None, Field(validation_alias=_env("TELEGRAM_BOT_TOKEN"))
    ] = None
    telegram_webhook_secret: Annotated[
        str | None, Field(validation_alias=_env("TELEGRAM_WEBHOOK_SECRET"))
    ] = None
    telegram_api_base_url: Annotated[str, Field(validation_alias=_env("TELEGRAM_API_BASE_URL"))] = (
        "https://api.telegram.org"
    )

    line_channel_access_token: Annotated[
        str | None, Field(validation_alias=_env("LINE_CHANNEL_ACCESS_TOKEN"))
    ] = None
    line_channel_secret: Annotated[
        str | None, Field(validation_alias=_env("LINE_CHANNEL_SECRET"))
    ] = None
    line_api_base_url: Annotated[str, Field(validation_alias=_env("LINE_API_BASE_URL"))] = (
        "https://api.line.me"
    )
    line_data_api_base_url: Annotated[
        str, Field(validation_alias=_env("LINE_DATA_API_BASE_URL"))
    ] = "https://api-data.line.me"

    telnyx_api_key: Annotated[str | None, Field(validation_alias=_env("TELNYX_API_KEY"))] = None
    telnyx_public_key: Annotated[str | None, Field(validation_alias=_env("TELNYX_PUBLIC_KEY"))] = (
        None
    )
    telnyx_api_base_url: Annotated[str, Field(validation_alias=_env("TELNYX_API_BASE_URL"))] = (
        "https://api.telnyx.com/v2"
    )

    vonage_application_id: Annotated[
        str | None, Field(validation_alias=_env("VONAGE_APPLICATION_ID"))
    ] = None
    vonage_private_key_path: Annotated[
        str | None, Field(validation_alias=_env("VONAGE_PRIVATE_KEY_PATH"))
    ] = None
    vonage_signature_secret: Annotated[
        str | None, Field(validation_alias=_env("VONAGE_SIGNATURE_SECRET"))
    ] = None
    vonage_api_base_url: Annotated[str, Field(validation_alias=_env("VONAGE_API_BASE_URL"))] = (
        "https://api.nexmo.com"
    )

    # Tunables of our own (not part of the contract's fixed names, all optional).
    # Where `serve` listens (--host / --port win). Localhost by default: a fresh clone is not
    # reachable from the network until the operator says so (0.0.0.0 in a container).
    serve_host: Annotated[str, Field(min_length=1, validation_alias=_env("LB_HOST"))] = "127.0.0.1"
    serve_port: Annotated[int, Field(ge=1, le=65535, validation_alias=_env("LB_PORT"))] = 8000
    # Bring the schema to this version's revision at start (under a lock, so replicas starting
    # together are safe). Off: refuse to start until `languagebuddy db upgrade` has run.
    migrate_on_start: Annotated[bool, Field(validation_alias=_env("LB_MIGRATE_ON_START"))] = True
    log_level: Annotated[str, Field(validation_alias=_env("LB_LOG_LEVEL"))] = "info"
    # Events handled at once per worker process. Handling is mostly waiting (the model, the
    # platforms), so the default is high; None picks it per backend (see concurrency()).
    worker_concurrency: Annotated[
        int | None, Field(ge=1, le=256, validation_alias=_env("LB_WORKER_CONCURRENCY"))
    ] = None
    # PostgreSQL connections a `serve` keeps (as many again may open under a burst), shared by
    # its processes with --workers N, so that N does not multiply what the server must allow.
    db_pool_size: Annotated[int, Field(ge=1, le=500, validation_alias=_env("LB_DB_POOL_SIZE"))] = 20
    lease_seconds: Annotated[
        float, Field(gt=0, le=3600, validation_alias=_env("LB_LEASE_SECONDS"))
    ] = 60.0
    max_attempts: Annotated[int, Field(ge=1, le=100, validation_alias=_env("LB_MAX_ATTEMPTS"))] = 8
    retry_base_seconds: Annotated[
        float, Field(gt=0, le=3600, validation_alias=_env("LB_RETRY_BASE_SECONDS"))
    ] = 2.0
    openai_timeout_seconds: Annotated[
        float, Field(gt=0, le=600, validation_alias=_env("LB_OPENAI_TIMEOUT"))
    ] = 60.0
    openai_max_retries: Annotated[
        int, Field(ge=0, le=10, validation_alias=_env("LB_OPENAI_MAX_RETRIES"))
    ] = 3
    memory_turns: Annotated[int, Field(ge=2, le=200, validation_alias=_env("LB_MEMORY_TURNS"))] = 16
    image_max_side: Annotated[
        int, Field(ge=256, le=8192, validation_alias=_env("LB_IMAGE_MAX_SIDE"))
    ] = 2048
    # The vision model's own rule: it scales an image to fit 2048 px and then its short side to
    # 768 px, so anything larger is bytes it throws away. 0 turns the short-side rule off.
    image_max_short_side: Annotated[
        int, Field(ge=0, le=8192, validation_alias=_env("LB_IMAGE_MAX_SHORT_SIDE"))
    ] = 768
    # Photos sent together (an album, or a burst of photos from one learner) get one lesson:
    # the first is held this long for the rest, and at most this many go to the vision model.
    photo_set_window_seconds: Annotated[
        float, Field(ge=0, le=30, validation_alias=_env("LB_PHOTO_SET_WINDOW_SECONDS"))
    ] = 1.5
    photo_set_max: Annotated[int, Field(ge=1, le=10, validation_alias=_env("LB_PHOTO_SET_MAX"))] = 4
    # Media a platform only points at (LINE "external" content) is fetched over https from a
    # public host. Hosts listed here (host or host:port, comma-separated) may also be reached
    # over plain http or at a private address: for a self-hosted content server. Empty: none.
    external_media_http_hosts: Annotated[
        str, Field(validation_alias=_env("LB_EXTERNAL_MEDIA_HTTP_HOSTS"))
    ] = ""
    inbox_retention_days: Annotated[
        float, Field(ge=8, le=3650, validation_alias=_env("LB_INBOX_RETENTION_DAYS"))
    ] = 30.0
    voice_max_seconds: Annotated[
        float, Field(ge=5, le=1800, validation_alias=_env("LB_VOICE_MAX_SECONDS"))
    ] = 300.0

    # Phone calls (Telnyx, Vonage): the call's lifecycle and its Realtime session.
    call_max_seconds: Annotated[
        float, Field(gt=0, le=4 * 3600, validation_alias=_env("LB_CALL_MAX_SECONDS"))
    ] = 900.0
    call_silence_seconds: Annotated[
        float, Field(gt=0, le=3600, validation_alias=_env("LB_CALL_SILENCE_SECONDS"))
    ] = 45.0
    call_goodbye_seconds: Annotated[
        float, Field(gt=0, le=120, validation_alias=_env("LB_CALL_GOODBYE_SECONDS"))
    ] = 12.0
    call_token_ttl_seconds: Annotated[
        float, Field(gt=0, le=3600, validation_alias=_env("LB_CALL_TOKEN_TTL_SECONDS"))
    ] = 120.0
    # OpenAI ends a Realtime session after 60 minutes: renew (conversation replayed) before.
    realtime_renew_seconds: Annotated[
        float, Field(gt=0, le=3600, validation_alias=_env("LB_REALTIME_RENEW_SECONDS"))
    ] = 3300.0
    realtime_transcribe_model: Annotated[
        str, Field(validation_alias=_env("LB_REALTIME_TRANSCRIBE_MODEL"))
    ] = "gpt-4o-mini-transcribe"
    realtime_connect_timeout: Annotated[
        float, Field(gt=0, le=120, validation_alias=_env("LB_REALTIME_CONNECT_TIMEOUT"))
    ] = 10.0

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("openai_api_key", "openai_base_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`OPENAI_API_KEY=` as in .env.example means "not set", not an empty key."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("openai_base_url")
    @classmethod
    def _openai_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                "must be an http(s) URL with a host, such as https://api.openai.com/v1"
            )
        if parsed.query or parsed.fragment:
            raise ValueError("must not carry a query or fragment, e.g. https://api.openai.com/v1")
        return value.strip().rstrip("/")

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://buddy.example.com")
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value.lower()

    @field_validator("telnyx_public_key")
    @classmethod
    def _ed25519_key(cls, value: str | None) -> str | None:
        import base64
        import binascii

        if value is None:
            return None
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError("must be the base64 ed25519 public key from Mission Control")
        return value.strip()

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _telegram_secret(cls, value: str | None) -> str | None:
        allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
        if value is not None and not (1 <= len(value) <= 256 and set(value) <= allowed):
            raise ValueError("must be 1-256 characters of A-Z a-z 0-9 _ -")
        return value

    @field_validator("external_media_http_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        hosts = [h.strip().lower() for h in value.split(",") if h.strip()]
        for host in hosts:
            if "/" in host or "@" in host or " " in host:
                raise ValueError(f"{host!r} is not a host or host:port")
        return ",".join(hosts)

    @property
    def external_http_hosts(self) -> frozenset[str]:
        """LB_EXTERNAL_MEDIA_HTTP_HOSTS as a set of ``host`` / ``host:port``."""
        return frozenset(h for h in self.external_media_http_hosts.split(",") if h)

    @property
    def concurrency(self) -> int:
        """LB_WORKER_CONCURRENCY, else 64 on PostgreSQL (its pool of 20 + 20 connections serves
        them: each holds one only for short transactions, never across a model call) and 16 on
        SQLite, which serialises writers."""
        if self.worker_concurrency is not None:
            return self.worker_concurrency
        return 16 if self.is_sqlite else 64

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def whatsapp_enabled(self) -> bool:
        return bool(self.whatsapp_access_token and self.whatsapp_phone_number_id)

    @property
    def telegram_enabled(self) -> bool:
        return bool(self.telegram_bot_token)

    @property
    def line_enabled(self) -> bool:
        return bool(self.line_channel_access_token and self.line_channel_secret)

    @property
    def telnyx_enabled(self) -> bool:
        return bool(self.telnyx_api_key)

    @property
    def vonage_enabled(self) -> bool:
        return bool(self.vonage_application_id)


def _field_env_name(settings_cls: type[Settings], field: str) -> str:
    info = settings_cls.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field.upper()


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings, turning a validation error into one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else "?"
        name = _field_env_name(Settings, field) if field in Settings.model_fields else field
        reason = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise ConfigError(f"{name}: {reason} (set {name} in the environment or .env)") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
