"""The speech-to-text and text-to-speech clients against the fake OpenAI over real HTTP: what
each model family is asked for, what comes back, and how failures map."""

from __future__ import annotations

import pytest

from languagebuddy.ai.stt import TranscriptionClient
from languagebuddy.ai.tts import SpeechClient, SpeechStyle
from languagebuddy.errors import ModelRejected, ModelUnavailable
from languagebuddy.media.audio import prepare_audio
from languagebuddy.media.hosting import MediaGone, MediaHost, MediaTokenInvalid
from languagebuddy.store.db import make_sessionmaker
from languagebuddy.tutor.prompts import speech_style
from tests.audio_samples import voice_note
from tests.fakes.openai import FakeOpenAI

TEXT = "Hola, me llamo Ana. Quiero un perro."


def _upload(fmt: str = "ogg_opus") -> tuple[str, bytes, str]:
    audio = prepare_audio(voice_note(fmt))
    return audio.upload_name, audio.upload, audio.upload_mime


@pytest.mark.parametrize(
    ("model", "response_format", "include", "unclear"),
    [
        ("whisper-1", "verbose_json", [], ("Quiero un perro.",)),
        ("gpt-4o-transcribe", "json", ["logprobs"], ("perro",)),
        ("gpt-4o-mini-transcribe", "json", ["logprobs"], ("perro",)),
        ("gpt-transcribe", "json", [], ()),
    ],
)
async def test_each_model_is_asked_for_its_confidence(
    fake_openai: FakeOpenAI, model: str, response_format: str, include: list[str], unclear: tuple
) -> None:
    fake_openai.audio.transcript(TEXT, unclear=["perro"])
    client = TranscriptionClient(fake_openai.client(), model)
    transcript = await client.transcribe(_upload("amr_nb"), language="es", prompt="Ana, perro.")
    assert transcript.text == TEXT and transcript.unclear == unclear
    [record] = fake_openai.audio.transcriptions
    assert (record.response_format, record.include) == (response_format, include)
    assert (record.language, record.prompt) == ("es", "Ana, perro.")
    assert record.filename == "voice.flac" and record.container == "flac"


async def test_no_language_hint_unless_it_is_a_code(fake_openai: FakeOpenAI) -> None:
    client = TranscriptionClient(fake_openai.client(), "whisper-1")
    await client.transcribe(_upload(), language="Spanish")
    assert fake_openai.audio.transcriptions[0].language is None


async def test_transcription_failures_map_to_our_errors(fake_openai: FakeOpenAI) -> None:
    client = TranscriptionClient(fake_openai.client(max_retries=0), "whisper-1")
    fake_openai.audio.fail("transcribe", 503)
    with pytest.raises(ModelUnavailable):
        await client.transcribe(_upload())
    with pytest.raises(ModelRejected):  # the endpoint cannot read this file
        await client.transcribe(("voice.ogg", b"not audio at all" * 100, "audio/ogg"))


async def test_speech_streams_pcm_with_the_level_s_style(fake_openai: FakeOpenAI) -> None:
    style = speech_style("es", "A1")
    pcm = b""
    async for chunk in SpeechClient(fake_openai.client(), "gpt-4o-mini-tts", "alloy").stream(
        "Hola, ¿qué tal?", style
    ):
        pcm += chunk
    [record] = fake_openai.audio.speeches
    assert record.response_format == "pcm" and record.instructions == style.instructions
    assert "slowly" in style.instructions and record.speed is None
    assert len(pcm) == pytest.approx(record.duration_s * 48_000, abs=2)


async def test_tts_1_gets_a_speed_instead_of_instructions(fake_openai: FakeOpenAI) -> None:
    client = SpeechClient(fake_openai.client(), "tts-1", "nova")
    async for _ in client.stream("Hola.", speech_style("es", "A2")):
        pass
    async for _ in client.stream("Hola.", SpeechStyle("ignored", 1.0)):
        pass
    first, second = fake_openai.audio.speeches
    assert (first.instructions, first.speed) == (None, 0.9)
    assert (second.instructions, second.speed) == (None, None)


async def test_speech_failures_map_to_our_errors(fake_openai: FakeOpenAI) -> None:
    client = SpeechClient(fake_openai.client(max_retries=0), "gpt-4o-mini-tts", "alloy")
    fake_openai.audio.fail("speech", 429)
    with pytest.raises(ModelUnavailable):
        async for _ in client.stream("Hola."):
            pass
    bad = SpeechClient(fake_openai.client(max_retries=0), "gpt-4o-mini-tts", "no-such-voice")
    with pytest.raises(ModelRejected):
        async for _ in bad.stream("Hola."):
            pass


async def test_hosted_media_tokens_and_expiry(sqlite_engine) -> None:  # type: ignore[no-untyped-def]
    now = [1_000_000.0]
    host = MediaHost(
        make_sessionmaker(sqlite_engine), "https://b.example/", key="k" * 40, clock=lambda: now[0]
    )
    url = await host.host(b"m4a bytes", "audio/mp4")
    assert url.startswith("https://b.example/media/")
    token = url.rsplit("/", 1)[1]
    assert await host.open(token) == (b"m4a bytes", "audio/mp4", 900.0)
    other = MediaHost(make_sessionmaker(sqlite_engine), "https://b.example", key="other-key")
    with pytest.raises(MediaTokenInvalid):
        await other.open(token)  # signed with another key
    now[0] += 901
    with pytest.raises(MediaGone):
        await host.open(token)
    assert await host.purge() == 1
    assert await host.purge() == 0
