"""What the tutor remembers of a learner: a rolling summary plus the last few turns.

The window of recent turns keeps prompts small and cheap; whatever falls out of it is folded
into ``learner.summary`` by one extra model call, so long-term facts survive without sending
the whole log every time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from languagebuddy.ai.chat import ChatClient, ChatResult
from languagebuddy.config import Settings
from languagebuddy.logs import get_logger
from languagebuddy.store import repos
from languagebuddy.store.models import Learner, Turn
from languagebuddy.tutor import prompts

log = get_logger(__name__)

KNOWN_WORDS = 15  # recent vocabulary shown to the model, so it can reuse and revise words
MAX_SUMMARY_CHARS = 4000
MAX_TURNS_PER_SUMMARY = 200  # a bound on one summary request, whatever the backlog


@dataclass
class Memory:
    summary: str | None = None
    turns: list[Turn] = field(default_factory=list)
    known_words: list[str] = field(default_factory=list)


async def load_memory(session: AsyncSession, learner: Learner, settings: Settings) -> Memory:
    """Summary, the last ``memory_turns`` turns (oldest first) and recent words."""
    turns = await repos.recent_turns(session, learner.id, settings.memory_turns)
    words = await repos.vocabulary(session, learner.id, limit=KNOWN_WORDS)
    known = [
        w.term
        for w in words
        if not learner.target_language or w.language == learner.target_language
    ]
    return Memory(summary=learner.summary, turns=turns, known_words=known)


def history_messages(turns: list[Turn]) -> list[dict[str, Any]]:
    """Logged turns as chat messages; empty turns (e.g. a failed media) are skipped."""
    messages: list[dict[str, Any]] = []
    for turn in turns:
        text = prompts.turn_text(turn)
        if not text:
            continue
        role = "user" if turn.direction == "in" else "assistant"
        messages.append({"role": role, "content": text})
    return messages


async def summary_due(
    session: AsyncSession, learner: Learner, memory: Memory, settings: Settings
) -> bool:
    """More than twice the window has piled up since the last summary. A learner whose recent
    turns do not fill the window has nothing to fold, and is answered without the count."""
    if len(memory.turns) < settings.memory_turns:
        return False
    after = learner.summary_upto_turn_id
    return await repos.count_turns_after(session, learner.id, after) > 2 * settings.memory_turns


async def refresh_summary(
    sessions: async_sessionmaker,
    chat: ChatClient,
    settings: Settings,
    learner_id: int,
) -> ChatResult | None:
    """Fold the turns older than the window into the summary, once more than twice the window
    has piled up since the last summary. Returns the model call (for usage) or ``None``."""
    window = settings.memory_turns
    async with sessions() as session:
        learner = await repos.get_learner(session, learner_id)
        if learner is None:
            return None
        after = learner.summary_upto_turn_id
        if await repos.count_turns_after(session, learner_id, after) <= 2 * window:
            return None
        recent = await repos.recent_turns(session, learner_id, window)
        older = await repos.turns_between(session, learner_id, after, recent[0].id - 1)
        previous = learner.summary
    if not older:
        return None
    older = older[-MAX_TURNS_PER_SUMMARY:]
    result = await chat.complete(
        model=settings.chat_model,
        messages=prompts.summary_messages(previous, older),
        kind="chat",
    )
    text = result.text.strip()
    if text:
        async with sessions() as session:
            await repos.update_learner(
                session,
                learner_id,
                summary=text[:MAX_SUMMARY_CHARS],
                summary_upto_turn_id=older[-1].id,
            )
            await session.commit()
        log.info("tutor.summary_updated", learner_id=learner_id, turns=len(older))
    return result
