"""The LanguageBuddy tutor: one learner turn in, one reply out, whatever the channel.

Order of business for a turn: input problems and commands are answered from fixed phrases
(no model, so they work when the model is down); everything else goes to the model with the
learner's profile and memory, in a short tool loop through which the model saves profile
answers, new words and a photo's description.

The tutor writes profile, vocabulary, summary and usage, but never the conversation log: the
worker stores the inbound and outbound turns atomically with the outbox once a reply exists,
using ``TutorReply.inbound_memory`` for the learner's side.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections import defaultdict
from contextlib import suppress
from typing import Any

from openai import AsyncOpenAI
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from languagebuddy.ai.chat import ChatClient, ChatResult, OnDelta
from languagebuddy.config import Settings
from languagebuddy.errors import ModelRejected, ModelUnavailable, PermanentFailure
from languagebuddy.events import Kind
from languagebuddy.logs import get_logger
from languagebuddy.media.types import PreparedImage
from languagebuddy.store import repos
from languagebuddy.store.models import Learner
from languagebuddy.tutor import prompts
from languagebuddy.tutor.api import TutorInput, TutorReply
from languagebuddy.tutor.calls import (
    CallBrief,
    CallToolResult,
    call_brief,
    call_recap,
    run_call_tool,
)
from languagebuddy.tutor.commands import parse_command, run_command
from languagebuddy.tutor.memory import (
    Memory,
    history_messages,
    load_memory,
    refresh_summary,
    summary_due,
)
from languagebuddy.tutor.phrases import phrase, phrase_language, problem_phrase
from languagebuddy.tutor.tools import ToolContext, run_tool, tool_schemas

log = get_logger(__name__)

MAX_TOOL_ROUNDS = 4
MEMORY_FALLBACK_CHARS = 120
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s")
_MODALITY = {Kind.TEXT: "text", Kind.IMAGE: "image", Kind.VOICE: "voice"}


class _Usage:
    """Tokens per (kind, model) for one turn: stored as usage rows and returned in the reply."""

    def __init__(self) -> None:
        self.by_model: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.calls = 0
        self.seconds = 0.0

    def add(self, kind: str, result: ChatResult) -> None:
        tokens = self.by_model[(kind, result.model)]
        tokens[0] += result.input_tokens
        tokens[1] += result.output_tokens
        self.calls += 1
        self.seconds += result.seconds

    def totals(self) -> dict[str, int]:
        return {
            "input_tokens": sum(t[0] for t in self.by_model.values()),
            "output_tokens": sum(t[1] for t in self.by_model.values()),
            "model_calls": self.calls,
        }


class Tutor:
    """The channel-neutral tutor the worker (and the console chat) talk to."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker, client: AsyncOpenAI):
        self.settings = settings
        self._sessions = sessions
        self._chat = ChatClient(client)

    async def respond(
        self, learner_id: int, turn: TutorInput, *, on_delta: OnDelta | None = None
    ) -> TutorReply:
        """Answer one learner turn. Raises ``ModelUnavailable`` when the model stayed down
        after retries (the worker apologises once and retries the event later) and
        ``LookupError`` when the learner does not exist. ``on_delta`` streams the model's
        text as it arrives."""
        if turn.kind == Kind.STATUS:
            raise ValueError("delivery receipts are not learner turns")
        if turn.kind == Kind.CALL_RECAP:
            return await self._call_recap(learner_id, turn)
        async with self._sessions() as session:
            learner = await repos.get_learner(session, learner_id)
            if learner is None:
                raise LookupError(f"learner {learner_id} not found")
            lang = self._phrase_lang(learner, turn.language_hint)
            if turn.problem or turn.kind == Kind.UNSUPPORTED or not _has_content(turn):
                return self._problem_reply(learner, turn, lang)
            command = parse_command(turn.text) if turn.kind == Kind.TEXT else None
            if command is not None:
                reply = await run_command(session, learner, command, lang)
                await session.commit()
                reply.inbound_memory = None if reply.erased else (turn.text or "").strip()
                log.info("tutor.command", learner_id=learner_id, command=command.name)
                return reply
            # Profile, memory and whether the summary is due in one session: this runs for
            # every message, and each session is a pool checkout and round trips.
            memory = await load_memory(session, learner, self.settings)
            summarise = await summary_due(session, learner, memory, self.settings)
        return await self._converse(learner, memory, summarise, turn, on_delta)

    async def call_brief(self, learner_id: int) -> CallBrief:
        """Instructions, greeting, tools and turn-taking for a live call with this learner."""
        return await call_brief(self._sessions, self.settings, learner_id)

    async def run_call_tool(self, learner_id: int, name: str, arguments: str) -> CallToolResult:
        """Execute a tool the call's model called (the chat's tools do the work)."""
        return await run_call_tool(self._sessions, learner_id, name, arguments)

    async def _call_recap(self, learner_id: int, turn: TutorInput) -> TutorReply:
        if turn.call_id is None:
            raise PermanentFailure("call recap without a call")
        text = await call_recap(self._sessions, learner_id, turn.call_id)
        if text is None:
            raise PermanentFailure("the call or its learner is gone")
        log.info("tutor.call_recap", learner_id=learner_id, call_id=turn.call_id)
        return TutorReply(text=text, inbound_memory=None, modality="call_recap")

    async def call_instructions(self, learner_id: int) -> str:
        """System instructions for a live phone call (OpenAI Realtime), from the same profile
        and memory as the chat."""
        async with self._sessions() as session:
            learner = await repos.get_learner(session, learner_id)
            if learner is None:
                raise LookupError(f"learner {learner_id} not found")
            memory = await load_memory(session, learner, self.settings)
        return prompts.call_instructions(
            learner, summary=memory.summary, recent=memory.turns, known_words=memory.known_words
        )

    def apology_text(self, learner: Learner | None) -> str:
        """'Sorry, I'm having trouble thinking…' in the learner's language."""
        if learner is None:
            return phrase("apology", "en")
        return phrase("apology", self._phrase_lang(learner, None))

    async def apology(self, learner_id: int) -> str:
        async with self._sessions() as session:
            learner = await repos.get_learner(session, learner_id)
        return self.apology_text(learner)

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _phrase_lang(learner: Learner, hint: str | None) -> str:
        return phrase_language(learner.native_language, learner.interface_language, hint)

    def _problem_reply(self, learner: Learner, turn: TutorInput, lang: str) -> TutorReply:
        if turn.kind == Kind.UNSUPPORTED and not turn.problem:
            text, modality = phrase("unsupported", lang), "unsupported"
            memory = f"[{turn.unsupported_type or 'unsupported message'}]"
        else:
            text, modality = problem_phrase(turn.problem, lang), _MODALITY.get(turn.kind, "text")
            memory = f"[{modality} not usable: {turn.problem or 'empty'}]"
        log.info("tutor.problem", learner_id=learner.id, problem=turn.problem, kind=str(turn.kind))
        return TutorReply(text=text, inbound_memory=memory, modality=modality)

    async def _converse(
        self,
        learner: Learner,
        memory: Memory,
        summarise: bool,
        turn: TutorInput,
        on_delta: OnDelta | None,
    ) -> TutorReply:
        if not summarise:
            return await self._answer(learner, memory, turn, on_delta)
        # Folding old turns into the summary is housekeeping: it runs beside the reply, which
        # uses the summary as it stands (the next turn gets the new one), so the learner never
        # waits for an extra model call.
        learner_id = learner.id
        summary_task = asyncio.create_task(self._refresh_summary(learner_id))
        try:
            reply = await self._answer(learner, memory, turn, on_delta)
        except BaseException:
            summary_task.cancel()  # the event is retried; so is the summary, next time
            with suppress(asyncio.CancelledError):
                await summary_task
            raise
        summary_call = await summary_task
        if summary_call is not None:
            reply.timings["summary"] = round(summary_call.seconds * 1000, 2)
            summary_usage = _Usage()
            summary_usage.add("chat", summary_call)
            await self._record_usage(learner_id, summary_usage)
        return reply

    async def _refresh_summary(self, learner_id: int) -> ChatResult | None:
        try:
            return await refresh_summary(self._sessions, self._chat, self.settings, learner_id)
        except (ModelUnavailable, ModelRejected) as exc:
            # The old summary is good enough; the next turn tries again.
            log.warning("tutor.summary_failed", learner_id=learner_id, error=type(exc).__name__)
            return None

    async def _answer(
        self,
        learner: Learner,
        memory: Memory,
        turn: TutorInput,
        on_delta: OnDelta | None,
    ) -> TutorReply:
        usage = _Usage()
        timings: dict[str, float] = {}
        learner_id = learner.id

        image = turn.image
        kind = "vision" if image is not None else "chat"
        model = self.settings.vision_model if image is not None else self.settings.chat_model
        messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": self._system(learner, memory.summary, memory.known_words, turn),
            },
            *history_messages(memory.turns),
            {"role": "user", "content": _user_content(turn)},
        ]
        ctx = ToolContext(learner_id, learner.target_language, learner.native_language)
        tools = tool_schemas(image=image is not None)
        text = ""
        rounds = 0
        try:
            for rounds in range(1, MAX_TOOL_ROUNDS + 2):
                last = rounds > MAX_TOOL_ROUNDS
                result = await self._chat.complete(
                    model=model,
                    messages=messages,
                    tools=tools,
                    tool_choice="none" if last else None,
                    kind=kind,
                    on_delta=on_delta,
                )
                usage.add(kind, result)
                if result.text.strip():
                    text = result.text.strip()
                if not result.tool_calls or last:
                    break
                messages.append(result.assistant_message())
                learner = await self._run_tools(result, ctx, messages, learner)
                if ctx.profile_changed:
                    messages[0] = {
                        "role": "system",
                        "content": self._system(learner, memory.summary, memory.known_words, turn),
                    }
                    ctx.profile_changed = False
                if result.text.strip():
                    # The model already wrote its reply next to the tool calls (the usual
                    # "answer + record the new words"): no second call needed.
                    break
        except ModelRejected as exc:
            if image is not None:
                log.warning("tutor.image_rejected", learner_id=learner_id, status=exc.status_code)
                lang = self._phrase_lang(learner, turn.language_hint)
                return TutorReply(
                    text=problem_phrase("image_not_an_image", lang),
                    inbound_memory=_image_memory(None, turn.caption, ""),
                    modality="image",
                )
            raise ModelUnavailable(str(exc)) from exc
        finally:
            await self._record_usage(learner_id, usage)
        if not text:
            raise ModelUnavailable("the model returned no text")

        timings["model"] = round(usage.seconds * 1000, 2)  # inside model calls, of the tutor stage
        modality = _MODALITY.get(turn.kind, "text")
        inbound = (
            _image_memory(
                ctx.image_description, turn.caption or turn.text, text, photos=len(turn.images)
            )
            if image is not None
            else ("(forwarded) " if turn.forwarded else "") + (turn.text or "").strip()
        )
        log.info(
            "tutor.replied",
            learner_id=learner_id,
            modality=modality,
            rounds=rounds,
            tools=ctx.called,
            **usage.totals(),
        )
        return TutorReply(
            text=text,
            inbound_memory=inbound,
            modality=modality,
            usage=usage.totals(),
            timings=timings,
        )

    def _system(
        self, learner: Learner, summary: str | None, known_words: list[str], turn: TutorInput
    ) -> str:
        return prompts.system_prompt(
            learner,
            summary=summary,
            known_words=known_words,
            image=turn.image is not None,
            photos=len(turn.images),
        )

    async def _run_tools(
        self,
        result: ChatResult,
        ctx: ToolContext,
        messages: list[dict[str, Any]],
        learner: Learner,
    ) -> Learner:
        """Execute one round's tool calls in one transaction; returns the fresh profile."""
        async with self._sessions() as session:
            for call in result.tool_calls:
                output = await run_tool(session, call, ctx)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
            await session.commit()
            if ctx.profile_changed:
                fresh = await repos.get_learner(session, ctx.learner_id)
                if fresh is not None:
                    return fresh
        return learner

    async def _record_usage(self, learner_id: int, usage: _Usage) -> None:
        if not usage.by_model:
            return
        rows = [
            {"kind": kind, "model": model, "input_tokens": tokens_in, "output_tokens": tokens_out}
            for (kind, model), (tokens_in, tokens_out) in usage.by_model.items()
        ]
        try:
            async with self._sessions.begin() as session:
                await repos.record_usage_rows(session, learner_id, rows)
        except IntegrityError:
            log.info("tutor.usage_dropped", learner_id=learner_id, reason="learner erased")


def _has_content(turn: TutorInput) -> bool:
    if turn.image is not None:
        return True
    return bool((turn.text or "").strip() or (turn.caption or "").strip())


def _user_content(turn: TutorInput) -> str | list[dict[str, Any]]:
    """The learner's message for the model; photos become a text + image_url part list."""
    context = _context_note(turn)
    if turn.image is not None:
        caption = (turn.caption or turn.text or "").strip()
        count = len(turn.images)
        if not caption:
            caption = (
                "(The learner sent this photo without a caption.)"
                if count == 1
                else f"(The learner sent these {count} photos together, without a caption.)"
            )
        if turn.photos_left_out:
            caption += f" ({turn.photos_left_out} more photo(s) of the set are not shown.)"
        images = [
            {"type": "image_url", "image_url": {"url": _data_url(image), "detail": "auto"}}
            for image in turn.images
        ]
        return [{"type": "text", "text": context + caption}, *images]
    text = (turn.text or turn.caption or "").strip()
    if turn.kind != Kind.VOICE:
        return context + text
    if not turn.unclear_words:
        return f"{context}(voice note) {text}"
    heard = ", ".join(f"“{word}”" for word in turn.unclear_words)
    return (
        f"{context}(voice note) {text}\n(The speech recogniser was unsure of: {heard}. If that "
        "looks like a pronunciation slip, you may add one short pronunciation tip; otherwise "
        "ignore this note.)"
    )


def _context_note(turn: TutorInput) -> str:
    """What the model should know about where the learner's words come from."""
    notes = []
    if turn.replying_to:
        quoted = turn.replying_to.strip()
        if len(quoted) > MEMORY_FALLBACK_CHARS:
            quoted = quoted[: MEMORY_FALLBACK_CHARS - 1].rstrip() + "…"
        notes.append(f'(Replying to your message: "{quoted}")')
    if turn.forwarded:
        notes.append("(Forwarded: someone else wrote this; do not correct it as theirs.)")
    return " ".join(notes) + " " if notes else ""


def _data_url(image: PreparedImage) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(image.jpeg).decode("ascii")


def _image_memory(
    description: str | None, caption: str | None, lesson: str, *, photos: int = 1
) -> str:
    """'[photo: a red apple on a table] my lunch' — what the log keeps instead of the image
    ('[3 photos: …]' for a set)."""
    if not description:
        first = _SENTENCE_END.split(lesson.strip(), maxsplit=1)[0] if lesson.strip() else ""
        if len(first) > MEMORY_FALLBACK_CHARS:
            first = first[: MEMORY_FALLBACK_CHARS - 1].rstrip() + "…"
        description = first or "image"
    memory = f"[photo: {description}]" if photos <= 1 else f"[{photos} photos: {description}]"
    caption = (caption or "").strip()
    return f"{memory} {caption}" if caption else memory
