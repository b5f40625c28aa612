"""split_text: no part over the limit, nothing but cut whitespace lost, cuts where readers pause."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from languagebuddy.channels.split import chunk, split_text, utf16_len


def assert_reassembles(text: str, parts: list[str]) -> None:
    """``text`` == parts joined by whitespace-only gaps (the only thing a cut may drop)."""
    index = 0
    for part in parts:
        found = text.find(part, index)
        assert found >= 0, f"part {part!r} not found in order"
        assert text[index:found].strip() == "", "non-whitespace dropped between parts"
        index = found + len(part)
    assert text[index:].strip() == ""


words = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=400)
prose = st.lists(
    st.sampled_from(
        [
            "Hello",
            "world.",
            "¿Qué",
            "tal?",
            "今日は",
            "晴れです。",
            "😀",
            "\n",
            "\n\n",
            " ",
            "a,",
            "b!",
        ]
    ),
    max_size=300,
).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(words, prose), limit=st.integers(min_value=2, max_value=120))
def test_parts_fit_and_reassemble(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(utf16_len(p) <= limit for p in parts)
    assert all(p.strip() for p in parts)
    assert_reassembles(text, parts)
    if text.strip() and utf16_len(text) <= limit:
        assert parts == [text]


@pytest.mark.parametrize("limit", [4096, 5000])
def test_platform_limits(limit: int) -> None:
    text = "This is a sentence that keeps going. " * 400
    parts = split_text(text, limit)
    assert len(parts) > 1
    assert all(len(p) <= limit for p in parts)
    assert all(p.endswith(".") for p in parts[:-1]), "cut at sentence ends"
    assert_reassembles(text, parts)


def test_prefers_paragraphs_then_sentences() -> None:
    text = "First paragraph here.\n\nSecond one, longer. It has two sentences."
    assert split_text(text, 45) == [
        "First paragraph here.",
        "Second one, longer. It has two sentences.",
    ]
    assert split_text(text[23:], 30) == ["Second one, longer.", "It has two sentences."]


def test_sentence_end_keeps_closing_quote() -> None:
    parts = split_text('He said "hi." Then he left. And more', 16)
    assert parts == ['He said "hi."', "Then he left.", "And more"]


def test_cjk_cut_after_full_stop() -> None:
    assert split_text("こんにちは。元気ですか？今日は", 8) == [
        "こんにちは。",
        "元気ですか？",
        "今日は",
    ]


def test_astral_characters_count_twice() -> None:
    assert split_text("😀" * 5, 4) == ["😀😀", "😀😀", "😀"]


def test_blank_and_short() -> None:
    assert split_text("", 10) == []
    assert split_text("   \n ", 10) == []
    assert split_text("short", 10) == ["short"]


def test_chunk() -> None:
    assert chunk(list("abcdefg"), 5) == [list("abcde"), list("fg")]
    assert chunk([], 5) == []
