"""Every instruction the model sees, built from the learner's profile and memory.

Kept apart from the agent so the wording can be tuned (and reviewed) without touching the
control flow, and so chat, vision, summaries and phone calls share one voice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from languagebuddy.ai.tts import SpeechStyle
from languagebuddy.store.models import Learner, Turn
from languagebuddy.tutor.phrases import language_name

_PERSONA = (
    "You are LanguageBuddy, a warm, patient language-practice partner chatting in a messaging "
    "app. Keep messages short (one to four sentences), natural and friendly; no markdown "
    "headings or tables. Ask one question at a time to keep the conversation going."
)

_LEVEL_STYLE = {
    "A1": "very simple words and short present-tense sentences; add the native-language "
    "meaning of new words in brackets",
    "A2": "simple everyday sentences and common past/future forms; explain new words briefly",
    "B1": "clear everyday language with some variety; explain only less common words",
    "B2": "natural language with idioms now and then; explain only rare words",
    "C1": "rich, natural language at native speed, including idioms and nuance",
    "C2": "fully native language, any register or topic",
}


def _profile_lines(learner: Learner) -> list[str]:
    lines = []
    if learner.display_name:
        lines.append(f"- Name: {learner.display_name}")
    native = learner.native_language or learner.interface_language
    if native:
        lines.append(f"- Native language: {language_name(native)} ({native})")
    if learner.target_language:
        lines.append(
            f"- Practising: {language_name(learner.target_language)} ({learner.target_language})"
        )
    if learner.level:
        lines.append(f"- CEFR level: {learner.level}")
    return lines


def _memory_block(summary: str | None, known_words: Sequence[str]) -> str:
    parts = []
    if summary:
        parts.append(f"What you remember from earlier conversations:\n{summary.strip()}")
    if known_words:
        parts.append("Words they have been learning: " + ", ".join(known_words))
    return "\n\n".join(parts)


def system_prompt(
    learner: Learner,
    *,
    summary: str | None = None,
    known_words: Sequence[str] = (),
    image: bool = False,
    photos: int = 1,
) -> str:
    """The system message for a chat (or photo) turn: onboarding until the profile is
    complete, then practice in the target language at the learner's level."""
    profile = _profile_lines(learner)
    sections = [_PERSONA]
    if profile:
        sections.append("About the learner:\n" + "\n".join(profile))
    if not learner.onboarded:
        sections.append(_onboarding_rules(learner))
    else:
        sections.append(_practice_rules(learner))
    if image:
        sections.append(_image_rules(learner, photos))
    memory = _memory_block(summary, known_words)
    if memory:
        sections.append(memory)
    return "\n\n".join(sections)


def _onboarding_rules(learner: Learner) -> str:
    missing = []
    if not learner.target_language:
        missing.append("which language they want to practise")
    if not learner.level:
        missing.append("their level (CEFR A1 beginner … C2 advanced; help them pick if unsure)")
    return (
        "This learner is new. Before practising, find out "
        + " and ".join(missing)
        + ". Speak the language they write in (their native language). "
        "As soon as you know something, save it with the tools: set_target_language (ISO 639-1 "
        "code such as 'es'), set_level (A1..C2), set_native_language (ISO 639-1 code of the "
        "language they write in) and set_name if they tell you their name. Once both language "
        "and level are known, greet them in the target language at their level and start "
        "practising with a simple question."
    )


def _practice_rules(learner: Learner) -> str:
    target = language_name(learner.target_language)
    native = language_name(learner.native_language or learner.interface_language or "en")
    style = _LEVEL_STYLE.get(learner.level or "", _LEVEL_STYLE["B1"])
    return (
        f"Reply in {target}, using {style}. "
        "If their last message has mistakes, first correct them kindly and briefly (quote the "
        "fix, at most one short line, explain in "
        f"{native} only if the level is A1-A2), then carry on the conversation. "
        "If they write in another language, answer in "
        f"{target} anyway, gently, and help them say it in {target}. "
        "When you teach or use a word that is new for them, call record_vocabulary with the "
        f"word in {target}, its meaning in {native} and a short example. "
        "If they ask to change language, level or name, use the matching tool."
    )


def _image_rules(learner: Learner, photos: int = 1) -> str:
    target = (
        language_name(learner.target_language)
        if learner.target_language
        else ("the learner's language")
    )
    if photos > 1:
        return (
            f"The learner sent {photos} photos together: one lesson for the set, not one per "
            "photo. First call describe_image once with a short plain English description of "
            "what they show together (one sentence, no personal data such as faces' identity, "
            "names, addresses or numbers). Then reply with one mini-lesson fitted to their "
            f"level, in {target}: what the photos show, three to five useful words from them "
            "with their meaning, and one question back. If they added a caption, respond to it."
        )
    return (
        "The learner sent a photo. First call describe_image with a short plain English "
        "description of what it shows (one sentence, no personal data such as faces' identity, "
        "names, addresses or numbers). Then reply with a mini-lesson fitted to their level, in "
        f"{target}: what the photo shows, three to five useful words from it with their "
        "meaning, and one question back about it. If they added a caption, respond to it too."
    )


def summary_messages(previous: str | None, turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """The request that folds older turns into the rolling summary."""
    transcript = "\n".join(
        f"{'Learner' if t.direction == 'in' else 'Buddy'}: {turn_text(t)}" for t in turns
    )
    instructions = (
        "You keep the long-term memory of a language tutor. Merge the previous summary and the "
        "conversation below into one updated summary in English, at most 150 words: facts "
        "about the learner (interests, life, goals), topics covered, recurring mistakes, words "
        "they learned, and anything promised for next time. Write plain sentences, no preamble."
    )
    user = f"Previous summary:\n{previous or '(none)'}\n\nConversation:\n{transcript}"
    return [{"role": "system", "content": instructions}, {"role": "user", "content": user}]


def turn_text(turn: Turn) -> str:
    """What a logged turn said, for prompts (the text, or a voice note's transcript). A
    reaction of the learner to one of the buddy's turns is noted after it: feedback the buddy
    can use (a thumbs-up on a correction, a puzzled face on an explanation)."""
    text = turn.text or turn.transcript or ""
    if turn.modality == "voice" and turn.direction == "in" and text:
        return f"(voice note) {text}"
    if turn.modality == "call":
        return f"(phone call) {text}"
    if turn.direction == "out" and text and turn.reaction:
        return f"{text}\n(The learner reacted to this message with {turn.reaction}.)"
    return text


def call_instructions(
    learner: Learner,
    *,
    summary: str | None,
    recent: Sequence[Turn],
    known_words: Sequence[str] = (),
) -> str:
    """Instructions for a live phone call (OpenAI Realtime): the same buddy, spoken."""
    target = language_name(learner.target_language) if learner.target_language else None
    sections = [
        "You are LanguageBuddy, a warm, patient language-practice partner on a phone call. "
        "Speak naturally and briefly (one or two sentences per turn), leave room for the "
        "learner to talk, and never read out lists, symbols or formatting.",
    ]
    profile = _profile_lines(learner)
    if profile:
        sections.append("About the learner:\n" + "\n".join(profile))
    if target and learner.level:
        style = _LEVEL_STYLE.get(learner.level, _LEVEL_STYLE["B1"])
        sections.append(
            f"Speak {target}, using {style}. Speak a little slower than usual. When they make a "
            "mistake, repeat the correct form naturally in your answer rather than lecturing. "
            "If they are stuck, offer a word or rephrase more simply."
        )
    else:
        sections.append(
            "You do not yet know which language they want to practise or their level: ask "
            "them first, in the language they speak, then practise at that level."
        )
    memory = _memory_block(summary, known_words)
    if memory:
        sections.append(memory)
    if recent:
        lines = "\n".join(
            f"{'Learner' if t.direction == 'in' else 'You'}: {turn_text(t)}" for t in recent
        )
        sections.append(f"Your latest messages with them:\n{lines}")
    sections.append(_call_tool_rules(learner))
    sections.append("Open the call with a short greeting that picks up where you left off.")
    return "\n\n".join(sections)


_SPEAKING_PACE = {
    "A1": (
        "Speak slowly and very clearly, like a patient teacher with a beginner: short "
        "pauses between sentences, every word distinct.",
        0.85,
    ),
    "A2": (
        "Speak slowly and clearly, like a patient teacher: a calm pace with short pauses "
        "between sentences.",
        0.9,
    ),
    "B1": ("Speak clearly at a relaxed, slightly slower than natural pace.", 0.95),
    "B2": ("Speak clearly at a natural conversational pace.", 1.0),
    "C1": ("Speak naturally, at native speed.", 1.0),
    "C2": ("Speak naturally, at native speed.", 1.0),
}


def speech_style(target_language: str | None, level: str | None) -> SpeechStyle:
    """How a voice reply is spoken: slower and clearer for beginners. ``instructions`` go to
    models that take them (gpt-4o-mini-tts), ``speed`` to the ones that do not (tts-1)."""
    pace, speed = _SPEAKING_PACE.get(level or "", _SPEAKING_PACE["B1"])
    parts = ["You are a warm, friendly language tutor speaking a voice message.", pace]
    if target_language:
        parts.append(
            f"Speak {language_name(target_language)} with a natural native accent; read any "
            "words in other languages with their own pronunciation."
        )
    return SpeechStyle(instructions=" ".join(parts), speed=speed)


def _call_tool_rules(learner: Learner) -> str:
    rules = (
        "Tools: when you teach a word or expression that is new for them, call save_vocabulary "
        "(the term in the language they practise, its meaning in their native language). If "
        "they ask for an easier or harder level, or you learn their level, call set_level. When "
        "the learner wants to stop, say a short goodbye and call end_call."
    )
    if not learner.onboarded:
        rules += (
            " As soon as they tell you, save the language they want to practise with "
            "set_target_language, their native language with set_native_language and their "
            "name with set_name; ask their level (A1 beginner to C2) and save it with set_level."
        )
    return rules


def call_greeting(learner: Learner) -> str:
    """The instructions of the call's first response: greet the caller by name, at once."""
    name = learner.display_name
    who = f"the learner by name ({name})" if name else "the caller warmly"
    if learner.onboarded:
        target = language_name(learner.target_language)
        return (
            f"Greet {who} in {target}, in one short sentence at their level, and ask one "
            "simple question to start the conversation."
        )
    return (
        f"Greet {who} in one short sentence, say you are LanguageBuddy, and ask which "
        "language they would like to practise."
    )


def call_goodbye(reason: str) -> str:
    """The instructions of the call's last response; ``reason`` says why it ends."""
    why = {
        "end_call": "The learner wants to stop.",
        "dtmf": "The learner pressed the key to end the call.",
        "max_length": "The call has reached its maximum length.",
        "silence": "The learner has been silent for a long time.",
    }.get(reason, "The call is ending.")
    return (
        f"{why} Say a warm, very short goodbye (one sentence) in the language of the "
        "conversation. Do not ask anything and do not call any tool."
    )


def call_repeat_slowly(sentence: str | None) -> str:
    """The instructions when the learner asks (DTMF *) to hear the last sentence again."""
    if not sentence:
        return "Repeat what you said last, slowly and clearly, with simpler words."
    return (
        "The learner asked to hear it again. Repeat exactly this sentence, slowly and clearly, "
        f"pausing between words: {sentence}"
    )
