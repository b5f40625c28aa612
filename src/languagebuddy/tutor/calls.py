"""What the tutor gives a live phone call: its brief (instructions, tools, turn-taking fitted
to the learner), the execution of the call's tools, and the recap sent afterwards.

Channel- and carrier-neutral: a call is one more way of talking with the same learner, so the
profile, memory, vocabulary and tool logic are the chat's own (``tools.py``); only the tool
schemas change shape, since the Realtime API takes flat function definitions.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from languagebuddy.ai.chat import ToolCall
from languagebuddy.config import Settings
from languagebuddy.store import calls as call_store
from languagebuddy.store import repos
from languagebuddy.store.models import Learner
from languagebuddy.tutor import prompts
from languagebuddy.tutor.memory import load_memory
from languagebuddy.tutor.phrases import phrase, phrase_language
from languagebuddy.tutor.tools import PROFILE_TOOLS, VOCABULARY_TOOL, ToolContext, run_tool

END_CALL = "end_call"
# The call's name for the chat's record_vocabulary: same arguments, same handler.
SAVE_VOCABULARY = "save_vocabulary"
_CHAT_NAMES = {SAVE_VOCABULARY: "record_vocabulary"}

# Beginners pause mid-sentence to find a word: the model waits longer before answering.
SILENCE_MS_BY_LEVEL = {"A1": 1200, "A2": 1000, "B1": 800, "B2": 700, "C1": 600, "C2": 550}
SILENCE_MS_ONBOARDING = 1000


def _flat(tool: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """A chat-completions tool as a Realtime function tool."""
    function = tool["function"]
    return {
        "type": "function",
        "name": name or function["name"],
        "description": function["description"],
        "parameters": function["parameters"],
    }


END_CALL_TOOL = {
    "type": "function",
    "name": END_CALL,
    "description": "End the phone call, after you said goodbye (the learner wants to stop).",
    "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
}


def call_tools() -> list[dict[str, Any]]:
    """end_call, save_vocabulary and the profile tools (set_level, and for a new caller the
    language and name tools), in the Realtime API's shape."""
    return [
        END_CALL_TOOL,
        _flat(VOCABULARY_TOOL, SAVE_VOCABULARY),
        *(_flat(tool) for tool in PROFILE_TOOLS),
    ]


@dataclass(frozen=True)
class CallBrief:
    """Everything a call needs from the tutor to configure its Realtime session."""

    learner_id: int
    instructions: str
    greeting: str
    tools: list[dict[str, Any]]
    language: str | None  # the target language: transcription hint
    silence_ms: int
    phrase_language: str  # for fixed phrases (the apology)
    display_name: str | None = None


@dataclass
class CallToolResult:
    """The output the model gets back, and what the call must do about it."""

    output: str
    end_call: bool = False
    profile_changed: bool = False
    words: list[str] = field(default_factory=list)


def _silence_ms(learner: Learner) -> int:
    if not learner.onboarded:
        return SILENCE_MS_ONBOARDING
    return SILENCE_MS_BY_LEVEL.get(learner.level or "", SILENCE_MS_BY_LEVEL["B1"])


async def call_brief(
    sessions: async_sessionmaker, settings: Settings, learner_id: int
) -> CallBrief:
    async with sessions() as session:
        learner = await repos.get_learner(session, learner_id)
        if learner is None:
            raise LookupError(f"learner {learner_id} not found")
        memory = await load_memory(session, learner, settings)
    instructions = prompts.call_instructions(
        learner, summary=memory.summary, recent=memory.turns, known_words=memory.known_words
    )
    return CallBrief(
        learner_id=learner_id,
        instructions=instructions,
        greeting=prompts.call_greeting(learner),
        tools=call_tools(),
        language=learner.target_language,
        silence_ms=_silence_ms(learner),
        phrase_language=phrase_language(learner.native_language, learner.interface_language),
        display_name=learner.display_name,
    )


async def run_call_tool(
    sessions: async_sessionmaker, learner_id: int, name: str, arguments: str
) -> CallToolResult:
    """Execute one function call of the call's model; the chat's tools do the work."""
    if name == END_CALL:
        return CallToolResult(output=json.dumps({"ok": True}), end_call=True)
    async with sessions() as session:
        learner = await repos.get_learner(session, learner_id)
        if learner is None:
            return CallToolResult(output=json.dumps({"ok": False, "error": "learner gone"}))
        ctx = ToolContext(learner_id, learner.target_language, learner.native_language)
        call = ToolCall(id=uuid.uuid4().hex, name=_CHAT_NAMES.get(name, name), arguments=arguments)
        output = await run_tool(session, call, ctx)
        await session.commit()
    words: list[str] = []
    if ctx.vocabulary_recorded:
        words = list(json.loads(output).get("recorded") or [])
    return CallToolResult(output=output, profile_changed=ctx.profile_changed, words=words)


async def call_recap(sessions: async_sessionmaker, learner_id: int, call_id: int) -> str | None:
    """The recap of a finished call for the learner's chat: the words saved during it, or,
    without new words, how long they talked. ``None`` if the call or learner is gone."""
    async with sessions() as session:
        learner = await repos.get_learner(session, learner_id)
        call = await call_store.get_call(session, call_id)
        if learner is None or call is None or call.learner_id != learner_id:
            return None
        since = call.answered_at or call.created_at
        words = await call_store.words_since(session, learner_id, since)
    lang = phrase_language(learner.native_language, learner.interface_language)
    if words:
        lines = "\n".join(f"• {w.term}" + (f" — {w.meaning}" if w.meaning else "") for w in words)
        return phrase("call_recap", lang, words=lines)
    minutes = max(1, round((call.duration_s or 0) / 60))
    return phrase("call_recap_plain", lang, minutes=str(minutes))
