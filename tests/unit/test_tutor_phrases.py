"""Phrases, language names, command parsing and prompt building: pure functions."""

from __future__ import annotations

import pytest

from languagebuddy.ai.chat import ChatResult, ToolCall, retry_after_seconds
from languagebuddy.store.models import Learner, Turn
from languagebuddy.tutor import prompts
from languagebuddy.tutor.agent import _image_memory
from languagebuddy.tutor.commands import Command, parse_command
from languagebuddy.tutor.phrases import (
    PHRASE_LANGUAGES,
    PHRASES,
    cefr_level,
    language_code,
    phrase,
    phrase_language,
    problem_phrase,
)

REQUIRED = {
    "help",
    "apology",
    "unsupported",
    "image_too_large",
    "image_too_many_pixels",
    "image_truncated",
    "image_not_an_image",
    "image_download_failed",
    "audio_corrupt",
    "audio_too_long",
}


def test_every_phrase_exists_in_every_interface_language() -> None:
    assert set(PHRASES) >= REQUIRED
    assert set(PHRASE_LANGUAGES) >= {"en", "es", "fr", "de", "it", "pt", "ja", "zh", "ko"}
    for key, table in PHRASES.items():
        assert set(table) == set(PHRASE_LANGUAGES), key
        for lang in PHRASE_LANGUAGES:
            assert phrase(
                key, lang, language="X", level="B1", words="w", minutes="3", text="X"
            ).strip()


def test_phrase_placeholders_and_fallback() -> None:
    assert phrase("level_set", "de", level="C1") == "Niveau auf C1 gesetzt."
    assert phrase("apology", "xx").startswith("Sorry")
    assert problem_phrase("image_too_large", "ja") == PHRASES["image_too_large"]["ja"]
    assert problem_phrase("nonsense", "fr") == PHRASES["problem_generic"]["fr"]
    assert problem_phrase(None, "en") == PHRASES["problem_generic"]["en"]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("es", "es"),
        ("ES", "es"),
        ("pt-BR", "pt"),
        ("zh_Hans", "zh"),
        ("Spanish", "es"),
        ("español", "es"),
        ("Espanol", "es"),
        ("Französisch", "fr"),
        ("日本語", "ja"),
        ("한국어", "ko"),
        ("mandarin", "zh"),
        ("klingon", None),
        ("", None),
        (None, None),
    ],
)
def test_language_code(value: str | None, code: str | None) -> None:
    assert language_code(value) == code


def test_phrase_language_order_and_fallback() -> None:
    assert phrase_language(None, "fr-CA", "de") == "fr"
    assert phrase_language("ru", None, "it") == "it"  # no Russian phrases: next candidate
    assert phrase_language(None, None, None) == "en"


def test_cefr_level() -> None:
    assert cefr_level(" b1 ") == "B1"
    assert cefr_level("B3") is None
    assert cefr_level(None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/start", Command("start")),
        ("/start@MyBot", Command("start")),
        ("/level  b1 ", Command("level", "b1")),
        ("/LANGUAGE Français", Command("language", "Français")),
        ("/forget_me", Command("forget-me")),
        ("/forget-me", Command("forget-me")),
        ("hola /level", None),
        ("/", None),
        (None, None),
    ],
)
def test_parse_command(text: str | None, expected: Command | None) -> None:
    assert parse_command(text) == expected


def test_prompts_follow_the_profile() -> None:
    new = Learner(id=1, interface_language="en")
    onboarding = prompts.system_prompt(new)
    assert "set_target_language" in onboarding and "set_level" in onboarding
    learner = Learner(
        id=1, display_name="Ana", native_language="en", target_language="fr", level="A1"
    )
    practice = prompts.system_prompt(learner, summary="Has a cat.", known_words=["le chat"])
    assert "Reply in French" in practice and "A1" in practice and "Ana" in practice
    assert "Has a cat." in practice and "le chat" in practice
    assert "record_vocabulary" in practice
    assert "describe_image" in prompts.system_prompt(learner, image=True)


def test_summary_messages_and_turn_text() -> None:
    turns = [
        Turn(direction="in", modality="voice", transcript="je suis fatigué"),
        Turn(direction="out", modality="text", text="Pourquoi ?"),
    ]
    messages = prompts.summary_messages("old", turns)
    assert "old" in messages[1]["content"]
    assert "Learner: (voice note) je suis fatigué" in messages[1]["content"]
    assert "Buddy: Pourquoi ?" in messages[1]["content"]


def test_image_memory() -> None:
    assert _image_memory("A dog.", "my dog", "x") == "[photo: A dog.] my dog"
    assert _image_memory(None, None, "Un perro. Palabras…") == "[photo: Un perro.]"
    long = "palabra " * 40
    assert len(_image_memory(None, "", long)) < 140
    assert _image_memory(None, None, "") == "[photo: image]"


def test_chat_helpers() -> None:
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds(None) is None
    assert ToolCall("c1", "set_level", "{bad").parsed() == {}
    result = ChatResult(text="", model="m", tool_calls=[ToolCall("c1", "f", "{}")])
    message = result.assistant_message()
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
