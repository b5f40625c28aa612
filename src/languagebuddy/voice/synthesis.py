"""Speaking a reply while it is still being written.

The tutor's text streams in; each sentence goes to the speech model the moment it is complete,
several at once, and one task feeds their audio to the encoder in sentence order as it arrives
(sentence 2's audio waits in memory while sentence 1 is still streaming). When the reply ends
only its last sentence is left to synthesise: that, not the sum of all of them, is what the
learner waits for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from languagebuddy.ai.tts import PCM_BYTES_PER_SECOND, SpeechClient, SpeechStyle
from languagebuddy.media.audio import VoiceEncoder, run_audio
from languagebuddy.media.types import EncodedAudio
from languagebuddy.voice.sentences import SentenceSplitter, same_text, speakable

# PCM handed to the encoder at a time (0.5 s): few thread hops, a short tail at the end.
FEED_BYTES = PCM_BYTES_PER_SECOND // 2
MAX_PARALLEL = 3  # speech requests at once per reply
_END = object()


@dataclass
class _Sentence:
    text: str
    chunks: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class SpeechAssembler:
    """Text in (``add``, the tutor's ``on_delta``), one encoded voice note out (``finish``).

    ``clock()`` gives the moment ``first_audio_at`` and ``synthesis_done_at`` are read from;
    ``encode_seconds`` adds up the encoder's own time (off the event loop)."""

    def __init__(
        self,
        speech: SpeechClient,
        style: SpeechStyle,
        voice_format: str,
        *,
        clock: Callable[[], float] = time.perf_counter,
        max_parallel: int = MAX_PARALLEL,
    ) -> None:
        self._speech = speech
        self._style = style
        self._voice_format = voice_format
        self._clock = clock
        self._parallel = asyncio.Semaphore(max_parallel)
        self._splitter = SentenceSplitter()
        self._pieces: list[str] = []  # the text cut so far, exactly as it streamed
        self._sentences: list[_Sentence] = []
        self._changed = asyncio.Event()
        self._complete = False
        self._pump: asyncio.Task[EncodedAudio] | None = None
        self.first_audio_at: float | None = None
        self.synthesis_done_at: float | None = None
        self.encode_seconds = 0.0
        self.pcm_bytes = 0  # everything synthesised, for usage (a restart counts twice)
        self.requests = 0

    # -- input -----------------------------------------------------------------------------

    async def add(self, delta: str) -> None:
        """The next piece of the reply's text."""
        for piece in self._splitter.feed(delta):
            self._start(piece)

    async def finish(self, final_text: str) -> EncodedAudio | None:
        """The note for ``final_text`` (the stored reply). If what streamed is not that text
        (a tool round wrote something else), synthesis starts over from the stored text. None
        when nothing in it can be spoken. Raises ``ModelUnavailable`` / ``ModelRejected``."""
        streamed = "".join(self._pieces) + self._splitter.pending
        if not same_text(streamed, final_text):
            await self._restart()
            for piece in self._splitter.split(final_text):
                self._start(piece)
        else:
            rest = self._splitter.flush()
            if rest.strip():
                self._start(rest)
        self._complete = True
        self._changed.set()
        if self._pump is None:
            return None
        return await self._pump

    async def aclose(self) -> None:
        """Abandon the note (the reply failed, or it is not to be spoken)."""
        await self._restart()

    # -- internals -------------------------------------------------------------------------

    def _start(self, piece: str) -> None:
        self._pieces.append(piece)
        text = speakable(piece)
        if not text:
            return
        sentence = _Sentence(text)
        sentence.task = asyncio.create_task(self._synthesise(sentence))
        self._sentences.append(sentence)
        self._changed.set()
        if self._pump is None:
            self._pump = asyncio.create_task(self._assemble())

    async def _synthesise(self, sentence: _Sentence) -> None:
        try:
            async with self._parallel:
                self.requests += 1
                async for chunk in self._speech.stream(sentence.text, self._style):
                    sentence.chunks.put_nowait(chunk)
        finally:
            sentence.chunks.put_nowait(_END)

    async def _assemble(self) -> EncodedAudio:
        """Feed every sentence's audio, in order, into one encoder as it arrives."""
        encoder = VoiceEncoder(self._voice_format)
        pending = bytearray()
        index = 0
        try:
            while True:
                if index < len(self._sentences):
                    sentence = self._sentences[index]
                    index += 1
                    while (chunk := await sentence.chunks.get()) is not _END:
                        assert isinstance(chunk, bytes)
                        if self.first_audio_at is None:
                            self.first_audio_at = self._clock()
                        self.pcm_bytes += len(chunk)
                        pending += chunk
                        if len(pending) >= FEED_BYTES:
                            await self._encode(encoder.feed, bytes(pending))
                            pending.clear()
                    assert sentence.task is not None
                    await sentence.task  # its error, if the stream failed
                    continue
                if self._complete:
                    break
                self._changed.clear()
                await self._changed.wait()
            self.synthesis_done_at = self._clock()
            if pending:
                await self._encode(encoder.feed, bytes(pending))
            return await self._encode(encoder.finish)
        except BaseException:
            encoder.close()
            raise

    async def _encode(self, step: Callable[..., object], *args: object) -> EncodedAudio:
        started = time.perf_counter()
        try:
            return await run_audio(step, *args)  # type: ignore[return-value]
        finally:
            self.encode_seconds += time.perf_counter() - started

    async def _restart(self) -> None:
        tasks = [s.task for s in self._sentences if s.task is not None]
        if self._pump is not None:
            tasks.append(self._pump)  # type: ignore[arg-type]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._sentences = []
        self._pieces = []
        self._splitter = SentenceSplitter()
        self._pump = None
        self.first_audio_at = self.synthesis_done_at = None
