"""Structured logging: JSON lines when not on a TTY, readable console output otherwise.

Never log message text, media bytes, tokens or full phone numbers at info level: use
``redact_phone`` for numbers and keep payloads out of events.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=numeric, force=True)
    # httpx2 is the HTTP client of newer openai SDKs; alembic.runtime.plugins chats at INFO.
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "openai",
        "aiosqlite",
        "asyncio",
        "alembic.runtime",
    ):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


def redact_phone(value: str | None) -> str | None:
    """'+5511987654321' -> '+55…4321': enough to tell learners apart in logs, not to call them."""
    if not value:
        return value
    return f"{value[:3]}…{value[-4:]}" if len(value) > 7 else "…"


def redact_id(value: str | None) -> str | None:
    """Shorten an opaque platform id for logs."""
    if not value:
        return value
    return value if len(value) <= 8 else f"{value[:4]}…{value[-4:]}"
