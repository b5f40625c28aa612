"""Slash commands, answered without the model: they must work (and be cheap and exact) even
when the model is down, and they change settings the learner controls directly."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from languagebuddy.store import repos
from languagebuddy.store.models import Learner
from languagebuddy.tutor.api import TutorReply
from languagebuddy.tutor.phrases import cefr_level, language_code, language_name, phrase

# Telegram command names allow only [a-z0-9_], so /forget_me and /forgetme mean /forget-me.
_ALIASES = {"forget_me": "forget-me", "forgetme": "forget-me", "lang": "language"}
COMMANDS = ("start", "help", "language", "level", "voice", "reset", "forget-me")
_ON = {"on", "yes", "1", "true", "si", "sí", "oui", "ja", "sim", "はい", "开", "켜기"}
_OFF = {"off", "no", "0", "false", "non", "nein", "não", "nao", "いいえ", "关", "끄기"}
_AUTO = {"auto", "default", "automático", "automatique", "automatisch", "自動", "自动", "자동"}
_VOICE_MODES = {
    **dict.fromkeys(_ON, "on"),
    **dict.fromkeys(_OFF, "off"),
    **dict.fromkeys(_AUTO, "auto"),
}


@dataclass(frozen=True)
class Command:
    name: str
    arg: str = ""


def parse_command(text: str | None) -> Command | None:
    """'/level b1' -> Command('level', 'b1'); '/start@MyBot' -> Command('start'). Text that
    does not start with '/' is not a command."""
    if not text:
        return None
    stripped = text.strip()
    if not stripped.startswith("/") or len(stripped) < 2:
        return None
    head, _, rest = stripped[1:].partition(" ")
    name = head.split("@", 1)[0].lower()
    return Command(_ALIASES.get(name, name), rest.strip())


async def run_command(
    session: AsyncSession, learner: Learner, command: Command, lang: str
) -> TutorReply:
    """Apply the command in ``session`` (the caller commits) and say what happened."""
    name, arg = command.name, command.arg
    if name == "start":
        parts = [phrase("welcome", lang)]
        parts.append(phrase("help", lang) if learner.onboarded else phrase("ask_language", lang))
        return _reply("\n".join(parts))
    if name == "help":
        return _reply(phrase("help", lang))
    if name == "language":
        code = language_code(arg)
        if code is None:
            return _reply(phrase("unknown_language", lang))
        await repos.update_learner(session, learner.id, target_language=code)
        text = phrase("language_set", lang, language=language_name(code, autonym=True))
        if not learner.level:
            text += "\n" + phrase("bad_level", lang)
        return _reply(text)
    if name == "level":
        level = cefr_level(arg)
        if level is None:
            return _reply(phrase("bad_level", lang))
        await repos.update_learner(session, learner.id, level=level)
        return _reply(phrase("level_set", lang, level=level))
    if name == "voice":
        choice = arg.lower()
        mode = _VOICE_MODES.get(choice)
        if mode is None:
            return _reply(phrase("voice_usage", lang))
        await repos.update_learner(session, learner.id, voice_mode=mode)
        return _reply(phrase(f"voice_{mode}", lang))
    if name == "reset":
        await repos.clear_memory(session, learner.id)
        return _reply(phrase("reset_done", lang))
    if name == "forget-me":
        await repos.delete_learner(session, learner.id)
        return TutorReply(text=phrase("forgotten", lang), erased=True, modality="command")
    return _reply(phrase("unknown_command", lang) + "\n" + phrase("help", lang))


def _reply(text: str) -> TutorReply:
    return TutorReply(text=text, modality="command")
