"""`languagebuddy chat`: the terminal learner. Each line becomes an inbox event of the console
channel and is handled by a worker that serves only that channel, so the terminal exercises the
same inbox, tutor and delivery path as WhatsApp, Telegram and LINE."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

from languagebuddy.channels.console import ConsoleChannel
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent, Kind
from languagebuddy.inbox.queue import DEAD, DONE
from languagebuddy.inbox.worker import Worker
from languagebuddy.services import Services, build_worker

WAIT_SECONDS = 300.0


def _event(
    learner_key: str, text: str | None, image: Path | None, voice: Path | None
) -> InboundEvent:
    kind, media = Kind.TEXT, None
    if image is not None:
        kind, media = Kind.IMAGE, image
    elif voice is not None:
        kind, media = Kind.VOICE, voice
    return InboundEvent(
        channel="console",
        event_id=uuid.uuid4().hex,
        user_id=learner_key,
        kind=kind,
        text=text if kind is Kind.TEXT else None,
        caption=text if kind is not Kind.TEXT else None,
        media_id=str(media.resolve()) if media else None,
    )


async def _handle_one(services: Services, worker: Worker, event: InboundEvent) -> int:
    """Put the event in the inbox and work until it is answered; 0 when done."""
    await services.inbox.put(event)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        await worker.run_until_idle()
        async with services.sessions() as session:
            from sqlalchemy import select

            from languagebuddy.store.models import InboxItem

            row = await session.execute(
                select(InboxItem.status, InboxItem.apology_sent, InboxItem.last_error).where(
                    InboxItem.dedupe_key == event.dedupe_key
                )
            )
            status, apologised, error = row.one()
        if status == DONE:
            return 0
        if status == DEAD:
            print(f"(could not answer: {error})", file=sys.stderr)
            return 1
        if apologised:
            print("(the buddy will answer this message next time)", file=sys.stderr)
            return 1
        await asyncio.sleep(0.2)
    print("(no answer in time; the message stays queued)", file=sys.stderr)
    return 1


async def run_chat(
    settings: Settings,
    learner_key: str,
    *,
    message: str | None,
    image: Path | None,
    voice: Path | None,
) -> int:
    from languagebuddy.web.app import start_services

    services = await start_services(settings)
    for channel in services.channels.values():
        await channel.aclose()
    services.channels = {"console": ConsoleChannel()}
    worker = build_worker(services, channels=["console"])
    try:
        if message is not None or image is not None or voice is not None:
            return await _handle_one(services, worker, _event(learner_key, message, image, voice))
        print("LanguageBuddy — type a message (/help for commands, Ctrl-D to quit)")
        while True:
            try:
                line = await asyncio.to_thread(input, "> ")
            except EOFError:
                print()
                return 0
            if line.strip():
                await _handle_one(services, worker, _event(learner_key, line, None, None))
    finally:
        await services.aclose()
