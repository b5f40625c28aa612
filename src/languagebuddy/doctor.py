"""`languagebuddy doctor`: check what the service needs and say how to fix what is missing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from languagebuddy.config import Settings

Check = tuple[str, bool, str]

REQUIRED_DECODERS = ("opus", "aac", "amrnb", "mp3")
REQUIRED_ENCODERS = ("libopus", "aac")


def check_codecs() -> Check:
    """PyAV must carry the codecs the platforms send and the ones we answer with."""
    try:
        import av
    except ImportError as exc:
        return ("codecs", False, f"PyAV is not importable ({exc}); reinstall: pip install av")
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
        return ("codecs", False, "PyAV lacks " + ", ".join(missing) + "; install the PyPI wheel")
    return ("codecs", True, f"PyAV {av.__version__}: Opus, AAC, AMR, MP3")


async def check_database(settings: Settings) -> Check:
    from sqlalchemy import text

    from languagebuddy.store.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            try:
                version = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
            except Exception:
                version = None
    except Exception as exc:
        return ("database", False, f"cannot connect ({type(exc).__name__}); check DATABASE_URL")
    finally:
        await engine.dispose()
    if version is None:
        return ("database", False, "schema not created: run `languagebuddy db upgrade`")
    return ("database", True, f"{engine.dialect.name}, schema revision {version}")


async def check_openai(settings: Settings) -> Check:
    if not settings.openai_api_key:
        return ("openai", False, "OPENAI_API_KEY is not set: the tutor cannot answer")
    from languagebuddy.services import make_openai_client

    client = make_openai_client(settings).with_options(max_retries=0, timeout=10)
    try:
        await client.models.retrieve(settings.chat_model)
    except Exception as exc:
        return ("openai", False, f"{type(exc).__name__}: check OPENAI_API_KEY / OPENAI_BASE_URL")
    finally:
        await client.close()
    return ("openai", True, f"key accepted, model {settings.chat_model} available")


async def check_vonage(settings: Settings) -> list[Check]:
    """When Vonage is configured: the key loads, webhooks can be verified, and Vonage accepts
    the application's JWT."""
    if not settings.vonage_enabled:
        return []
    from languagebuddy.calls.vonage import VonageControl
    from languagebuddy.config import ConfigError
    from languagebuddy.errors import DeliveryError

    checks: list[Check] = []
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


async def _channel_checks(settings: Settings) -> list[Check]:
    from languagebuddy.channels.setup import check_channels

    return await check_channels(settings)


async def run_doctor(settings: Settings, echo: Callable[[str], None] = print) -> bool:
    """Print one line per check; True when nothing failed."""
    checks: list[Check] = [("configuration", True, "settings are valid")]
    checks.append(await check_database(settings))
    checks.append(check_codecs())
    probes: list[Callable[[Settings], Awaitable[Check | list[Check]]]] = [
        check_openai,
        _channel_checks,
        check_vonage,
    ]
    for probe in probes:
        result = await probe(settings)
        checks.extend(result if isinstance(result, list) else [result])
    if not any((settings.whatsapp_enabled, settings.telegram_enabled, settings.line_enabled)):
        checks.append(
            (
                "channels",
                False,
                "no channel configured: set TELEGRAM_BOT_TOKEN, WHATSAPP_* or LINE_*"
                " (see .env.example)",
            )
        )
    for name, ok, detail in checks:
        echo(f"{'ok ' if ok else 'FAIL'} {name:<14} {detail}")
    return all(ok for _, ok, _ in checks)
