"""Commands and input problems: answered from fixed phrases, never by the model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from languagebuddy.config import load_settings
from languagebuddy.events import Kind
from languagebuddy.services import make_openai_client
from languagebuddy.store import repos
from languagebuddy.store.db import make_sessionmaker
from languagebuddy.store.models import Identity, Learner, Turn
from languagebuddy.tutor.agent import Tutor
from languagebuddy.tutor.api import TutorInput
from languagebuddy.tutor.phrases import phrase
from tests.fakes.openai import FakeOpenAI


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> Iterator[FakeOpenAI]:
    yield fake_openai
    # Whatever the test did, the model was never asked.
    assert fake_openai.chat_bodies() == []


def _tutor(engine: AsyncEngine, fake: FakeOpenAI) -> Tutor:
    settings = load_settings(openai_api_key=fake.api_key, openai_base_url=fake.base_url)
    return Tutor(settings, make_sessionmaker(engine), make_openai_client(settings))


@pytest.fixture
def tutor(sqlite_engine: AsyncEngine, fake: FakeOpenAI) -> Tutor:
    return _tutor(sqlite_engine, fake)


@pytest.fixture
def any_db_tutor(engine: AsyncEngine, fake: FakeOpenAI) -> Tutor:
    return _tutor(engine, fake)


async def new_learner(tutor: Tutor, hint: str | None = None, **fields: Any) -> int:
    async with tutor._sessions() as session:
        learner, _ = await repos.find_or_create_learner(
            session, "telegram", uuid.uuid4().hex, language_hint=hint
        )
        if fields:
            await repos.update_learner(session, learner.id, **fields)
        await session.commit()
        return learner.id


async def learner_row(tutor: Tutor, learner_id: int) -> Learner | None:
    async with tutor._sessions() as session:
        return await repos.get_learner(session, learner_id)


def cmd(text: str) -> TutorInput:
    return TutorInput(kind=Kind.TEXT, text=text)


async def test_start_welcomes_and_asks_for_language_in_the_learners_language(
    tutor: Tutor,
) -> None:
    learner_id = await new_learner(tutor, hint="es-ES")
    reply = await tutor.respond(learner_id, cmd("/start"))
    assert reply.modality == "command"
    assert reply.text == phrase("welcome", "es") + "\n" + phrase("ask_language", "es")
    assert reply.inbound_memory == "/start"

    onboarded = await new_learner(tutor, native_language="ja", target_language="en", level="A2")
    reply = await tutor.respond(onboarded, cmd("/start@LanguageBuddyBot"))
    assert reply.text == phrase("welcome", "ja") + "\n" + phrase("help", "ja")


async def test_help_falls_back_to_english(tutor: Tutor) -> None:
    learner_id = await new_learner(tutor, hint="sw")  # no phrases in Swahili: English
    reply = await tutor.respond(learner_id, cmd("/help"))
    assert reply.text.startswith("Just write to me")
    assert "/level B1" in reply.text and "/forget-me" in reply.text


@pytest.mark.parametrize(
    ("argument", "code"),
    [("es", "es"), ("Français", "fr"), ("japanese", "ja"), ("pt-BR", "pt"), ("スペイン語", "es")],
)
async def test_language_accepts_names_and_codes(tutor: Tutor, argument: str, code: str) -> None:
    learner_id = await new_learner(tutor, native_language="en", level="B1")
    reply = await tutor.respond(learner_id, cmd(f"/language {argument}"))
    assert (await learner_row(tutor, learner_id)).target_language == code
    assert reply.text.startswith("Great, we'll practise")


async def test_unknown_language_changes_nothing(tutor: Tutor) -> None:
    learner_id = await new_learner(tutor, native_language="it", target_language="de")
    reply = await tutor.respond(learner_id, cmd("/language klingon"))
    assert reply.text == phrase("unknown_language", "it")
    assert (await learner_row(tutor, learner_id)).target_language == "de"


async def test_level(tutor: Tutor) -> None:
    learner_id = await new_learner(tutor, native_language="pt")
    reply = await tutor.respond(learner_id, cmd("/level b2"))
    assert reply.text == phrase("level_set", "pt", level="B2")
    assert (await learner_row(tutor, learner_id)).level == "B2"
    reply = await tutor.respond(learner_id, cmd("/level Z9"))
    assert reply.text == phrase("bad_level", "pt")
    assert (await learner_row(tutor, learner_id)).level == "B2"


async def test_voice_on_off_auto(tutor: Tutor) -> None:
    learner_id = await new_learner(tutor, native_language="ko")
    assert (await learner_row(tutor, learner_id)).voice_mode == "auto"  # the default
    reply = await tutor.respond(learner_id, cmd("/voice on"))
    assert reply.text == phrase("voice_on", "ko")
    assert (await learner_row(tutor, learner_id)).voice_mode == "on"
    reply = await tutor.respond(learner_id, cmd("/voice off"))
    assert reply.text == phrase("voice_off", "ko")
    assert (await learner_row(tutor, learner_id)).voice_mode == "off"
    reply = await tutor.respond(learner_id, cmd("/voice auto"))
    assert reply.text == phrase("voice_auto", "ko")
    assert (await learner_row(tutor, learner_id)).voice_mode == "auto"
    reply = await tutor.respond(learner_id, cmd("/voice maybe"))
    assert reply.text == phrase("voice_usage", "ko")
    assert (await learner_row(tutor, learner_id)).voice_mode == "auto"


async def test_reset_clears_memory_but_keeps_profile(any_db_tutor: Tutor) -> None:
    tutor = any_db_tutor
    learner_id = await new_learner(
        tutor, native_language="zh", target_language="en", level="B1", summary="likes tea"
    )
    async with tutor._sessions() as session:
        await repos.add_turn(
            session, learner_id=learner_id, direction="in", modality="text", text="hi"
        )
        await repos.upsert_vocabulary(session, learner_id, "en", "tea")
        await session.commit()
    reply = await tutor.respond(learner_id, cmd("/reset"))
    assert reply.text == phrase("reset_done", "zh")
    learner = await learner_row(tutor, learner_id)
    assert learner.summary is None and learner.level == "B1"
    async with tutor._sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Turn)) == 0
        assert len(await repos.vocabulary(session, learner_id)) == 1


async def test_forget_me_erases_the_learner(any_db_tutor: Tutor) -> None:
    tutor = any_db_tutor
    learner_id = await new_learner(tutor, native_language="fr", target_language="es")
    reply = await tutor.respond(learner_id, cmd("/forget_me"))
    assert reply.erased is True
    assert reply.inbound_memory is None
    assert reply.text == phrase("forgotten", "fr")
    assert await learner_row(tutor, learner_id) is None
    async with tutor._sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Identity)) == 0


async def test_unknown_command(tutor: Tutor) -> None:
    learner_id = await new_learner(tutor, native_language="de")
    reply = await tutor.respond(learner_id, cmd("/dance"))
    assert reply.text.startswith(phrase("unknown_command", "de"))


PROBLEMS = [
    (Kind.IMAGE, "image_too_large", "image"),
    (Kind.IMAGE, "image_too_many_pixels", "image"),
    (Kind.IMAGE, "image_truncated", "image"),
    (Kind.IMAGE, "image_not_an_image", "image"),
    (Kind.IMAGE, "image_download_failed", "image"),
    (Kind.VOICE, "audio_corrupt", "voice"),
    (Kind.VOICE, "audio_too_long", "voice"),
]


@pytest.mark.parametrize(("kind", "problem", "modality"), PROBLEMS)
async def test_problems_get_a_localized_reply_without_the_model(
    tutor: Tutor, kind: Kind, problem: str, modality: str
) -> None:
    learner_id = await new_learner(tutor, native_language="es", target_language="en", level="A1")
    reply = await tutor.respond(learner_id, TutorInput(kind=kind, problem=problem))
    assert reply.text == phrase(problem, "es")
    assert reply.modality == modality
    assert problem in (reply.inbound_memory or "")


async def test_unsupported_type(tutor: Tutor) -> None:
    learner_id = await new_learner(tutor, hint="it")
    reply = await tutor.respond(
        learner_id, TutorInput(kind=Kind.UNSUPPORTED, unsupported_type="sticker")
    )
    assert reply.text == phrase("unsupported", "it")
    assert reply.modality == "unsupported"
    assert reply.inbound_memory == "[sticker]"


async def test_unknown_problem_and_empty_text_get_generic_reply(tutor: Tutor) -> None:
    learner_id = await new_learner(tutor)
    reply = await tutor.respond(learner_id, TutorInput(kind=Kind.VOICE, problem="audio_weird"))
    assert reply.text == phrase("problem_generic", "en")
    reply = await tutor.respond(learner_id, TutorInput(kind=Kind.TEXT, text="   "))
    assert reply.text == phrase("problem_generic", "en")


async def test_unknown_learner_raises(tutor: Tutor) -> None:
    with pytest.raises(LookupError):
        await tutor.respond(999_999, cmd("/help"))
