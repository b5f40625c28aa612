"""Cutting a streamed reply into sentences, making it speakable, the transcription prompt, and
what the transcription models say about their confidence."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from languagebuddy.ai.stt import _from_segments, _unclear_words, transcription_prompt
from languagebuddy.events import Kind
from languagebuddy.voice.reply import wants_voice
from languagebuddy.voice.sentences import SentenceSplitter, same_text, speakable

REPLY = (
    "¡Hola! Ayer fuiste al mercado con tu hermana. Compraste 3.5 kilos de fruta... "
    "¿Qué más compraste? Dime:\n«Compré pan.» Muy bien."
)


def _stream(text: str, sizes: list[int]) -> tuple[list[str], str]:
    splitter = SentenceSplitter()
    pieces: list[str] = []
    position = 0
    for size in sizes:
        pieces += splitter.feed(text[position : position + size])
        position += size
    pieces += splitter.feed(text[position:])
    return pieces, splitter.flush()


def test_sentences_are_cut_where_a_reader_would() -> None:
    pieces, rest = _stream(REPLY, [3] * 60)
    assert [p.strip() for p in pieces] == [
        "¡Hola! Ayer fuiste al mercado con tu hermana.",  # the short opener rides along
        "Compraste 3.5 kilos de fruta...",  # no cut at a decimal point or inside "..."
        "¿Qué más compraste?",
        "Dime:\n«Compré pan.»",  # too short to stand alone; the closing quote stays
    ]
    assert rest.strip() == "Muy bien."


@given(
    text=st.text(alphabet=st.sampled_from("ab .!?…。\n,«»12"), max_size=400),
    sizes=st.lists(st.integers(min_value=0, max_value=40), max_size=40),
)
def test_pieces_are_exactly_the_streamed_text(text: str, sizes: list[int]) -> None:
    pieces, rest = _stream(text, sizes)
    assert "".join(pieces) + rest == text
    assert all(len(p) <= SentenceSplitter().max_chars for p in pieces)


def test_run_ons_are_cut_before_they_get_long() -> None:
    text = "palabra, " * 200
    pieces = SentenceSplitter().split(text)
    assert len(pieces) > 1 and all(len(p) <= 600 for p in pieces)
    assert "".join(pieces) == text


def test_speakable_drops_markup_and_emoji() -> None:
    assert speakable("**Muy bien** 🎉👍🏽 [mira](https://x.y) `hola`\n- uno") == (
        "Muy bien mira hola uno"
    )
    assert speakable("🎉") == ""
    assert speakable("日本語、いいですね！") == "日本語、いいですね！"
    assert same_text(" a  b\n", "a b") and not same_text("a b", "a c")


def test_voice_preference() -> None:
    assert wants_voice("auto", Kind.VOICE) and not wants_voice("auto", Kind.TEXT)
    assert wants_voice("on", Kind.TEXT) and wants_voice("on", Kind.VOICE)
    assert not wants_voice("off", Kind.VOICE)


def test_transcription_prompt() -> None:
    assert transcription_prompt(None, []) is None
    assert transcription_prompt("Ana", ["mercado", "hermana"]) == "Ana, mercado, hermana."
    prompt = transcription_prompt("Ana", [f"palabra{n}" for n in range(500)])
    assert prompt is not None and len(prompt) <= 601


def _segment(text: str, avg_logprob: float, no_speech_prob: float) -> SimpleNamespace:
    return SimpleNamespace(text=text, avg_logprob=avg_logprob, no_speech_prob=no_speech_prob)


def test_whisper_segments_drop_silence_and_flag_unclear_parts() -> None:
    response = SimpleNamespace(language="spanish")
    transcript = _from_segments(
        response,
        [
            _segment(" Hola, me llamo Ana.", -0.2, 0.01),
            _segment(" Quiero un perro muy grande y bonito de color marrón.", -1.1, 0.05),
            _segment(" Thank you for watching.", -1.3, 0.93),  # Whisper's silence
        ],
        "whisper-1",
        {},
    )
    assert transcript.text == (
        "Hola, me llamo Ana. Quiero un perro muy grande y bonito de color marrón."
    )
    assert transcript.unclear == ("Quiero un perro muy grande y bonito de",)  # 8 words at most
    assert transcript.dropped_segments == 1


def test_gpt4o_logprobs_become_unclear_words() -> None:
    tokens = [("Hola", -0.01), (",", -0.01), (" quiero", -0.02), (" un", -0.01)]
    tokens += [(" per", -0.5), ("ro", -0.4), (".", -0.01), (" Vale", -2.0), ("!", -0.01)]
    logprobs = [SimpleNamespace(token=t, logprob=lp) for t, lp in tokens]
    assert _unclear_words(logprobs) == ("perro", "Vale")  # p(perro) = e^-0.9 < 0.5
