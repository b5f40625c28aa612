"""`languagebuddy doctor`: check what the service needs and say how to fix what is missing.

It only looks: it never creates the SQLite file, never migrates, and probes the model with
one tiny completion (``GET /v1/models`` is not served by every OpenAI-compatible server, and
proves nothing about the model we will call).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from languagebuddy.config import Settings

REQUIRED_DECODERS = ("opus", "aac", "amrnb", "mp3")
REQUIRED_ENCODERS = ("libopus", "aac", "flac")
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


# What the live probes of a provider return: (name, ok, detail).
LiveCheck = tuple[str, bool, str]


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "FAIL" | "off" (optional and not configured)
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def check_codecs() -> Check:
    """PyAV must carry the codecs the platforms send and the ones we answer with."""
    try:
        import av
    except ImportError as exc:
        return Check("codecs", "FAIL", f"PyAV is not importable ({exc}); reinstall: pip install av")
    missing = []
    for name in REQUIRED_DECODERS:
        try:
            av.codec.Codec(name, "r")
        except Exception:
            missing.append(f"decoder {name}")
    for name in REQUIRED_ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception:
            missing.append(f"encoder {name}")
    if missing:
        detail = "PyAV lacks " + ", ".join(missing) + "; install the PyPI wheel"
        return Check("codecs", "FAIL", detail)
    return Check("codecs", "ok", f"PyAV {av.__version__}: Opus, AAC, AMR, MP3")


async def check_database(settings: Settings) -> Check:
    from languagebuddy.startup import (
        CONNECT_TIMEOUT_SECONDS,
        StartupError,
        check_sqlite_folder,
        database_label,
        explain_database_error,
        sqlite_path,
    )
    from languagebuddy.store.db import make_engine
    from languagebuddy.store.schema import head_revision, schema_state

    label = database_label(settings.database_url)
    try:
        check_sqlite_folder(settings.database_url)
    except StartupError as exc:
        return Check("database", "FAIL", str(exc))
    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        if settings.migrate_on_start:
            detail = f"{label} does not exist yet; `serve` creates it at start"
            return Check("database", "ok", detail)
        detail = f"{label} does not exist: run `languagebuddy db upgrade`"
        return Check("database", "FAIL", detail)
    connect_args = {} if settings.is_sqlite else {"timeout": CONNECT_TIMEOUT_SECONDS}
    engine = make_engine(settings.database_url, pool_size=1, **connect_args)
    try:
        async with engine.connect() as conn:
            state = await schema_state(conn)
    except Exception as exc:
        return Check("database", "FAIL", explain_database_error(exc, settings.database_url))
    finally:
        await engine.dispose()
    if state.usable:
        return Check("database", "ok", f"{label}, schema revision {state.current} (the latest)")
    if settings.migrate_on_start and not state.newer:
        was = f"at revision {state.current}" if state.current else "empty"
        detail = f"{label} is {was}; `serve` migrates it to {head_revision()} at start"
        return Check("database", "ok", detail)
    return Check("database", "FAIL", f"{label}: {state.problem()}")


async def probe_model(settings: Settings, model: str, name: str) -> Check:
    """One completion of at most one token: proves the base URL, the key and the model."""
    import openai

    from languagebuddy.services import make_openai_client

    if not settings.openai_api_key:
        return Check(name, "FAIL", "OPENAI_API_KEY is not set: the tutor cannot answer")
    base = settings.openai_base_url or DEFAULT_OPENAI_BASE_URL
    client = make_openai_client(settings).with_options(max_retries=0, timeout=15)
    started = time.perf_counter()
    try:
        await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "ping"}],
            max_completion_tokens=1,
        )
    except openai.APIStatusError as exc:
        status = exc.status_code
        if status in (401, 403):
            return Check(name, "FAIL", f"{base} refused the key ({status}): check OPENAI_API_KEY")
        if status == 404:
            return Check(
                name,
                "FAIL",
                f"{base} has no model {model!r} (404): check the model name or OPENAI_BASE_URL",
            )
        if status == 429:
            return Check(name, "ok", f"{model} at {base}: key accepted, rate limited right now")
        if status < 500:  # the request itself was refused, but routing, key and model work
            return Check(name, "ok", f"{model} at {base} answered {status}: key accepted")
        return Check(name, "FAIL", f"{base} answered {status}: the provider is failing")
    except openai.APIConnectionError as exc:
        cause = type(exc.__cause__).__name__ if exc.__cause__ else type(exc).__name__
        return Check(name, "FAIL", f"cannot reach {base} ({cause}): check OPENAI_BASE_URL")
    finally:
        await client.close()
    elapsed = time.perf_counter() - started
    return Check(name, "ok", f"{model} answered at {base} in {elapsed:.1f} s")


async def check_models(settings: Settings) -> list[Check]:
    checks = [await probe_model(settings, settings.chat_model, "model")]
    if settings.vision_model != settings.chat_model and settings.openai_api_key:
        checks.append(await probe_model(settings, settings.vision_model, "vision-model"))
    return checks


async def check_vonage(settings: Settings) -> list[LiveCheck]:
    """When Vonage is configured: the key loads, webhooks can be verified, and Vonage accepts
    the application's JWT."""
    if not settings.vonage_enabled:
        return []
    from languagebuddy.calls.vonage import VonageControl
    from languagebuddy.config import ConfigError
    from languagebuddy.errors import DeliveryError

    checks: list[LiveCheck] = []
    if not settings.vonage_signature_secret:
        checks.append(
            (
                "vonage",
                False,
                "VONAGE_SIGNATURE_SECRET is not set: every answer and event webhook would be"
                " refused (Dashboard > API settings > Signature secret)",
            )
        )
    try:
        control = VonageControl(settings)
    except ConfigError as exc:
        return [*checks, ("vonage", False, str(exc))]
    try:
        await control.probe()
    except DeliveryError as exc:
        hint = (
            "VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY_PATH must be the same application's"
            if exc.code in ("401", "403")
            else "check VONAGE_API_BASE_URL and the network"
        )
        checks.append(("vonage", False, f"{exc}; {hint}"))
    else:
        checks.append(("vonage", True, "application JWT accepted by the Voice API"))
    finally:
        await control.aclose()
    return checks


async def check_integrations(settings: Settings) -> list[Check]:
    """Live checks of the configured channels and of Vonage; Telnyx by configuration (its
    public key is checked when the service starts)."""
    from languagebuddy.channels.setup import check_channels, integrations

    live = {name: (ok, detail) for name, ok, detail in await check_channels(settings)}
    checks: list[Check] = []
    for spec in integrations(settings):
        if not spec.enabled:
            checks.append(Check(spec.name, "off", f"not configured ({spec.hint})"))
        elif spec.name == "vonage":
            for name, ok, detail in await check_vonage(settings):
                checks.append(Check(name, "ok" if ok else "FAIL", detail))
        elif spec.name in live:
            ok, detail = live[spec.name]
            checks.append(Check(spec.name, "ok" if ok else "FAIL", detail))
        elif spec.hint:
            checks.append(Check(spec.name, "FAIL", f"configured, but {spec.hint}"))
        else:
            checks.append(Check(spec.name, "ok", "configured"))
    if not any((settings.whatsapp_enabled, settings.telegram_enabled, settings.line_enabled)):
        checks.append(
            Check(
                "channels",
                "FAIL",
                "no channel configured: set TELEGRAM_BOT_TOKEN, WHATSAPP_* or LINE_*"
                " (see .env.example)",
            )
        )
    return checks


def format_checks(checks: list[Check]) -> list[str]:
    """One line per check, status and name in aligned columns."""
    status_width = max(len(c.status) for c in checks)
    name_width = max(len(c.name) for c in checks)
    return [
        f"{c.status:<{status_width}}  {c.name:<{name_width}}  {c.detail}".rstrip() for c in checks
    ]


async def run_doctor(settings: Settings, echo: Callable[[str], None] = print) -> bool:
    """Print one line per check; True when nothing failed."""
    checks = [Check("configuration", "ok", "settings are valid")]
    checks.append(await check_database(settings))
    checks.append(check_codecs())
    checks.extend(await check_models(settings))
    checks.extend(await check_integrations(settings))
    for line in format_checks(checks):
        echo(line)
    return not any(c.failed for c in checks)
