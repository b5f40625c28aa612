"""The "typing…" / "recording…" indicator while the buddy works on a reply.

Platforms drop the indicator after a few seconds (Telegram 5 s, WhatsApp 25 s, LINE's loading
animation when it runs out) and as soon as we send a message, so it is sent at the start, again
every ``channel.typing_interval``, and at once after each message of a reply that goes out in
several steps ("You said …", the text, then the voice note).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from languagebuddy.channels.base import Channel
from languagebuddy.events import InboundEvent


class TypingIndicator:
    def __init__(self, channel: Channel, event: InboundEvent, *, voice: bool = False) -> None:
        self._channel = channel
        self._event = event
        self.voice = voice
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> TypingIndicator:
        self._task = asyncio.create_task(self._run())
        return self

    def poke(self, *, voice: bool | None = None) -> None:
        """Show it again now (a message just went out), as a voice indicator if ``voice``."""
        if voice is not None:
            self.voice = voice
        self._wake.set()

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            await self._channel.typing(self._event, voice=self.voice)
            interval = self._channel.typing_interval
            if interval:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=interval)
            else:
                await self._wake.wait()
