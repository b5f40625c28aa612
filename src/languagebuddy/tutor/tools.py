"""The tools the model may call, and their execution against the store.

Tools are how the model changes durable state (profile, vocabulary) in a checked way: every
argument is validated here, and a bad one is answered with an error the model can correct
instead of being written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from languagebuddy.ai.chat import ToolCall
from languagebuddy.config import CEFR_LEVELS
from languagebuddy.store import repos
from languagebuddy.tutor.phrases import cefr_level, language_code, language_name

MAX_VOCABULARY_ITEMS = 20
MAX_DESCRIPTION_CHARS = 300


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]):
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_LANGUAGE = {"type": "string", "description": "ISO 639-1 code, e.g. 'es', 'ja', 'pt'"}

PROFILE_TOOLS = [
    _function(
        "set_target_language",
        "Save the language the learner wants to practise.",
        {"language": _LANGUAGE},
        ["language"],
    ),
    _function(
        "set_native_language",
        "Save the learner's native language (the one they are most at ease in).",
        {"language": _LANGUAGE},
        ["language"],
    ),
    _function(
        "set_level",
        "Save the learner's CEFR level in the target language.",
        {"level": {"type": "string", "enum": list(CEFR_LEVELS)}},
        ["level"],
    ),
    _function(
        "set_name",
        "Save the name the learner wants to be called.",
        {"name": {"type": "string"}},
        ["name"],
    ),
]

VOCABULARY_TOOL = _function(
    "record_vocabulary",
    "Save words or expressions in the target language that are new for the learner.",
    {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "term": {"type": "string", "description": "the word, in the target language"},
                    "meaning": {"type": "string", "description": "meaning in the native language"},
                    "example": {"type": "string", "description": "a short example sentence"},
                },
                "required": ["term", "meaning"],
            },
        }
    },
    ["items"],
)

DESCRIBE_IMAGE_TOOL = _function(
    "describe_image",
    "Record a one-sentence plain English description of the learner's photo for memory.",
    {"description": {"type": "string"}},
    ["description"],
)


def tool_schemas(*, image: bool = False) -> list[dict[str, Any]]:
    """Tools offered for a turn; ``describe_image`` only when there is a photo."""
    tools = [*PROFILE_TOOLS, VOCABULARY_TOOL]
    if image:
        tools.append(DESCRIBE_IMAGE_TOOL)
    return tools


@dataclass
class ToolContext:
    """What tool calls of one turn share and report back to the agent."""

    learner_id: int
    target_language: str | None
    native_language: str | None = None
    image_description: str | None = None
    profile_changed: bool = False
    vocabulary_recorded: int = 0
    called: list[str] = field(default_factory=list)


def _ok(**values: Any) -> str:
    return json.dumps({"ok": True, **values}, ensure_ascii=False)


def _error(message: str) -> str:
    return json.dumps({"ok": False, "error": message})


async def run_tool(session: AsyncSession, call: ToolCall, ctx: ToolContext) -> str:
    """Execute one tool call in ``session`` (the caller commits); returns the JSON result
    that goes back to the model."""
    ctx.called.append(call.name)
    args = call.parsed()
    handler = _HANDLERS.get(call.name)
    if handler is None:
        return _error(f"unknown tool {call.name!r}")
    return await handler(session, args, ctx)


async def _set_target_language(session: AsyncSession, args: dict[str, Any], ctx: ToolContext):
    code = language_code(str(args.get("language", "")))
    if code is None:
        return _error("unknown language; use an ISO 639-1 code such as 'es'")
    await repos.update_learner(session, ctx.learner_id, target_language=code)
    ctx.target_language = code
    ctx.profile_changed = True
    return _ok(target_language=code, name=language_name(code))


async def _set_native_language(session: AsyncSession, args: dict[str, Any], ctx: ToolContext):
    code = language_code(str(args.get("language", "")))
    if code is None:
        return _error("unknown language; use an ISO 639-1 code such as 'en'")
    await repos.update_learner(session, ctx.learner_id, native_language=code)
    ctx.native_language = code
    ctx.profile_changed = True
    return _ok(native_language=code, name=language_name(code))


async def _set_level(session: AsyncSession, args: dict[str, Any], ctx: ToolContext):
    level = cefr_level(str(args.get("level", "")))
    if level is None:
        return _error("level must be one of " + ", ".join(CEFR_LEVELS))
    await repos.update_learner(session, ctx.learner_id, level=level)
    ctx.profile_changed = True
    return _ok(level=level)


async def _set_name(session: AsyncSession, args: dict[str, Any], ctx: ToolContext):
    name = " ".join(str(args.get("name", "")).split())[:200]
    if not name:
        return _error("name is empty")
    await repos.update_learner(session, ctx.learner_id, display_name=name)
    ctx.profile_changed = True
    return _ok(name=name)


async def _record_vocabulary(session: AsyncSession, args: dict[str, Any], ctx: ToolContext):
    if not ctx.target_language:
        return _error("set the target language first")
    items = args.get("items")
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        items = [args] if args.get("term") else []
    saved: list[str] = []
    for item in items[:MAX_VOCABULARY_ITEMS]:
        if not isinstance(item, dict):
            continue
        term = str(item.get("term") or "").strip()
        if not term:
            continue
        meaning = str(item.get("meaning") or "").strip() or None
        example = str(item.get("example") or "").strip() or None
        await repos.upsert_vocabulary(
            session, ctx.learner_id, ctx.target_language, term, meaning, example
        )
        saved.append(term)
    if not saved:
        return _error("no items with a term")
    ctx.vocabulary_recorded += len(saved)
    return _ok(recorded=saved)


async def _describe_image(session: AsyncSession, args: dict[str, Any], ctx: ToolContext):
    description = " ".join(str(args.get("description", "")).split())[:MAX_DESCRIPTION_CHARS]
    if not description:
        return _error("description is empty")
    ctx.image_description = description
    return _ok()


_HANDLERS = {
    "set_target_language": _set_target_language,
    "set_native_language": _set_native_language,
    "set_level": _set_level,
    "set_name": _set_name,
    "record_vocabulary": _record_vocabulary,
    "describe_image": _describe_image,
}
