"""`languagebuddy chat`: the terminal learner. Each line becomes an inbox event of the console
channel and is handled by a worker that serves only this learner's console events, so the
terminal exercises the same inbox, tutor and delivery path as WhatsApp, Telegram and LINE, and
a session never prints replies meant for another console learner.

Interactive mode keeps ``input()`` (line editing, history) on the main thread and runs the
services on an event loop in a second thread: Ctrl-C then interrupts whatever the main thread
waits for, a line or a reply, at once; an event cut off mid-answer is handed back to the inbox
and announced at the next start.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import threading
import uuid
from collections.abc import Coroutine
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from languagebuddy.channels.console import ConsoleChannel
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent, Kind
from languagebuddy.inbox.queue import DEAD, DONE, PENDING
from languagebuddy.inbox.worker import Worker
from languagebuddy.services import Services, build_worker, start_services

T = TypeVar("T")

WAIT_SECONDS = 300.0
HELP = """\
Type a message and press Enter; the buddy answers in the language you practise.
  /image PATH [caption]   send a photo
  /voice PATH             send a voice note (an audio file)
  /language es            the language you practise
  /level B1               your level, A1 to C2
  /voice on|off|auto      spoken replies always, never, or to voice notes (default)
  /reset                  forget the conversation, keep your profile
  /forget-me              erase everything stored about you
  /help                   this list
  /quit, Ctrl-D, Ctrl-C   leave"""


def note(text: str) -> None:
    """What the console says about itself (not the buddy's words): to stderr."""
    print(f"({text})", file=sys.stderr, flush=True)


def make_event(
    learner_key: str, text: str | None, image: Path | None = None, voice: Path | None = None
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


class ChatSession:
    """One learner at the terminal: the services, a worker for their console events only."""

    def __init__(self, services: Services, worker: Worker, learner_key: str) -> None:
        self.services = services
        self.worker = worker
        self.learner_key = learner_key
        self.order_key = f"console:{learner_key}"

    @classmethod
    async def open(cls, settings: Settings, learner_key: str) -> ChatSession:
        # No platform channels and no signing key: the terminal needs neither.
        services = await start_services(settings, with_channels=False, with_calls=False)
        try:
            services.channels = {"console": ConsoleChannel()}
            worker = build_worker(services, ["console"], learner=f"console:{learner_key}")
        except BaseException:
            await services.aclose()
            raise
        return cls(services, worker, learner_key)

    async def settle_earlier(self, *, drop: bool) -> int:
        """Messages of this learner a previous run left unanswered: announce them (they are
        answered before the new one) or, with ``drop``, dead-letter them. Returns how many."""
        inbox = self.services.inbox
        count = await inbox.unfinished(self.order_key)
        if not count:
            return 0
        plural = "s" if count != 1 else ""
        if drop:
            dropped = await inbox.drop_unfinished(
                self.order_key, "dropped by the learner (chat --drop-earlier)"
            )
            note(f"dropped {dropped} earlier message{'s' if dropped != 1 else ''}")
            return dropped
        note(f"answering {count} earlier message{plural} first")
        return count

    async def send(self, event: InboundEvent) -> int:
        """Put the event in the inbox and work until it is answered; 0 when done."""
        inbox = self.services.inbox
        await inbox.put(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        while True:
            await self.worker.run_until_idle()
            status, apologised, error = await self._status(event)
            if status == DONE:
                return 0
            if status == DEAD:
                note(f"could not answer: {error}")
                return 1
            if apologised or (status == PENDING and error):
                reason = f": {error}" if error else ""
                note(f"could not answer yet{reason}; the message is kept and answered next time")
                return 1
            # Untried and not claimable: an earlier message of this learner is in another
            # terminal's hands. Wait for it.
            if loop.time() > deadline:
                note("no answer in time; the message stays queued")
                return 1
            await asyncio.sleep(0.2)

    async def _status(self, event: InboundEvent) -> tuple[str, bool, str | None]:
        from sqlalchemy import select

        from languagebuddy.store.models import InboxItem

        async with self.services.engine.connect() as conn:
            row = await conn.execute(
                select(InboxItem.status, InboxItem.apology_sent, InboxItem.last_error).where(
                    InboxItem.dedupe_key == event.dedupe_key
                )
            )
            status, apologised, error = row.one()
        return status, bool(apologised), error

    async def aclose(self) -> None:
        await self.services.aclose()


# --------------------------------------------------------------------------- one shot


async def run_once(
    settings: Settings, learner_key: str, event: InboundEvent, *, drop_earlier: bool
) -> int:
    session = await ChatSession.open(settings, learner_key)
    try:
        await session.settle_earlier(drop=drop_earlier)
        return await session.send(event)
    finally:
        await session.aclose()


# --------------------------------------------------------------------------- interactive


@dataclass(frozen=True)
class Line:
    """What one typed line asks for."""

    action: str  # send | help | quit | error | nothing
    event_text: str | None = None
    image: Path | None = None
    voice: Path | None = None
    error: str = ""


def parse_line(line: str) -> Line:
    """The console's own commands; everything else (text and the learner commands such as
    /level B1) goes to the buddy as typed."""
    stripped = line.strip()
    if not stripped:
        return Line("nothing")
    head, _, rest = stripped.partition(" ")
    name = head.lower()
    if name in ("/help", "/?"):
        return Line("help")
    if name in ("/quit", "/exit"):
        return Line("quit")
    if name == "/image":
        return _media_line("image", rest) if rest.strip() else Line("error", error=_USAGE_IMAGE)
    if name == "/voice" and _looks_like_path(rest):
        return _media_line("voice", rest)
    return Line("send", event_text=stripped)


_USAGE_IMAGE = "usage: /image PATH [caption]"


def _looks_like_path(arg: str) -> bool:
    """`/voice on` is the reply setting; `/voice notes/hola.ogg` sends a file."""
    arg = arg.strip()
    return bool(arg) and ("/" in arg or "." in arg or Path(arg).expanduser().exists())


def _media_line(kind: str, rest: str) -> Line:
    try:
        words = shlex.split(rest)
    except ValueError:
        words = rest.split()
    path = Path(words[0]).expanduser()
    if not path.is_file():
        return Line("error", error=f"no such file: {path}")
    caption = " ".join(words[1:]) or None
    if kind == "image":
        return Line("send", event_text=caption, image=path)
    return Line("send", event_text=caption, voice=path)


class _LoopThread:
    """An event loop in a daemon thread; ``run`` waits for a coroutine there, and Ctrl-C on
    the main thread cancels it (and waits briefly for its clean-up, e.g. handing an item
    back to the inbox)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        finished = threading.Event()
        holder: dict[str, asyncio.Task[T]] = {}

        def start() -> None:
            task = self.loop.create_task(coro)
            task.add_done_callback(lambda _t: finished.set())
            holder["task"] = task

        self.loop.call_soon_threadsafe(start)
        try:
            finished.wait()
        except KeyboardInterrupt:
            self.loop.call_soon_threadsafe(lambda: holder["task"].cancel())
            finished.wait(timeout=5)
            raise
        return holder["task"].result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


def run_interactive(settings: Settings, learner_key: str, *, drop_earlier: bool) -> int:
    """The read-answer loop; 0 on Ctrl-D or /quit, 130 on Ctrl-C."""
    runner = _LoopThread()
    session: ChatSession | None = None
    try:
        session = runner.run(ChatSession.open(settings, learner_key))
        print(
            "LanguageBuddy — type a message (/help for commands, Ctrl-D or Ctrl-C to quit)",
            flush=True,
        )
        runner.run(session.settle_earlier(drop=drop_earlier))
        # An earlier message is answered now, before the learner types on top of it.
        runner.run(session.worker.run_until_idle())
        while True:
            try:
                typed = input("> ")
            except EOFError:
                print()
                return 0
            line = parse_line(typed)
            if line.action == "quit":
                return 0
            if line.action == "help":
                print(HELP)
            elif line.action == "error":
                note(line.error)
            elif line.action == "send":
                event = make_event(learner_key, line.event_text, line.image, line.voice)
                runner.run(session.send(event))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    finally:
        if session is not None:
            with suppress(KeyboardInterrupt, Exception):  # leaving anyway
                runner.run(asyncio.wait_for(session.aclose(), timeout=5))
        runner.close()
