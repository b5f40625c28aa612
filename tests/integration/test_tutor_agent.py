"""The tutor against the fake_openai OpenAI (real HTTP, official SDK) and real databases."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from languagebuddy.config import Settings, load_settings
from languagebuddy.errors import ModelUnavailable
from languagebuddy.events import Kind
from languagebuddy.media.types import PreparedImage
from languagebuddy.metrics import MODEL_CALLS
from languagebuddy.services import make_openai_client
from languagebuddy.store import repos
from languagebuddy.store.db import make_sessionmaker
from languagebuddy.store.models import Turn, Usage
from languagebuddy.tutor.agent import Tutor
from languagebuddy.tutor.api import TutorInput
from tests.fakes.openai import FakeOpenAI

CHAT_MODEL = "chat-model"
VISION_MODEL = "vision-model"


TutorFactory = Callable[..., Tutor]


def _factory(engine: AsyncEngine, fake_openai: FakeOpenAI) -> TutorFactory:
    def build(**overrides: Any) -> Tutor:
        values: dict[str, Any] = {
            "openai_api_key": fake_openai.api_key,
            "openai_base_url": fake_openai.base_url,
            "openai_max_retries": 1,
            "openai_timeout_seconds": 5.0,
            "memory_turns": 4,
            "chat_model": CHAT_MODEL,
            "vision_model": VISION_MODEL,
        }
        values.update(overrides)
        settings: Settings = load_settings(**values)
        return Tutor(settings, make_sessionmaker(engine), make_openai_client(settings))

    return build


@pytest.fixture
def make_tutor(engine: AsyncEngine, fake_openai: FakeOpenAI) -> TutorFactory:
    """Tutor on SQLite and on PostgreSQL (the ``engine`` fixture runs both)."""
    return _factory(engine, fake_openai)


@pytest.fixture
def make_lite_tutor(sqlite_engine: AsyncEngine, fake_openai: FakeOpenAI) -> TutorFactory:
    """Tutor on SQLite only, for tests whose database work is not the point."""
    return _factory(sqlite_engine, fake_openai)


async def new_learner(tutor: Tutor, hint: str | None = "en", **fields: Any) -> int:
    async with tutor._sessions() as session:
        learner, _ = await repos.find_or_create_learner(
            session, "console", uuid.uuid4().hex, language_hint=hint
        )
        if fields:
            await repos.update_learner(session, learner.id, **fields)
        await session.commit()
        return learner.id


ONBOARDED = {"native_language": "en", "target_language": "es", "level": "B1"}


async def add_turns(tutor: Tutor, learner_id: int, texts: list[str]) -> list[int]:
    """Log alternating learner/buddy turns, as the worker would after each reply."""
    ids = []
    async with tutor._sessions() as session:
        for i, text in enumerate(texts):
            turn = await repos.add_turn(
                session,
                learner_id=learner_id,
                direction="in" if i % 2 == 0 else "out",
                modality="text",
                channel="console",
                text=text,
            )
            ids.append(turn.id)
        await session.commit()
    return ids


async def profile(tutor: Tutor, learner_id: int):
    async with tutor._sessions() as session:
        return await repos.get_learner(session, learner_id)


def text_turn(text: str, **kw: Any) -> TutorInput:
    return TutorInput(kind=Kind.TEXT, text=text, **kw)


# -- onboarding, prompt, vocabulary ------------------------------------------------------------


async def test_onboarding_through_tool_calls_stores_profile(
    make_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_tutor()
    learner_id = await new_learner(tutor, hint="en")
    fake_openai.reply_tools(
        ("set_target_language", {"language": "es"}),
        ("set_level", {"level": "A2"}),
        ("set_native_language", {"language": "en"}),
        ("set_name", {"name": "Ana"}),
    )
    fake_openai.reply("¡Hola, Ana! ¿Qué te gusta hacer?")

    reply = await tutor.respond(learner_id, text_turn("Hi! I'm Ana, I'd like Spanish, A2"))

    assert reply.text == "¡Hola, Ana! ¿Qué te gusta hacer?"
    assert reply.inbound_memory == "Hi! I'm Ana, I'd like Spanish, A2"
    assert reply.modality == "text"
    learner = await profile(tutor, learner_id)
    assert (learner.target_language, learner.level) == ("es", "A2")
    assert (learner.native_language, learner.display_name) == ("en", "Ana")

    first, second = fake_openai.chat_bodies()
    assert first["model"] == CHAT_MODEL
    assert "new" in first["messages"][0]["content"]
    assert {t["function"]["name"] for t in first["tools"]} >= {
        "set_target_language",
        "set_level",
        "set_native_language",
        "set_name",
        "record_vocabulary",
    }
    # Round two carries the assistant's tool calls, one result per call, and a system
    # prompt rebuilt from the now complete profile.
    assistant = second["messages"][-5]
    call_ids = [c["id"] for c in assistant["tool_calls"]]
    results = second["messages"][-4:]
    assert [r["tool_call_id"] for r in results] == call_ids
    assert all(json.loads(r["content"])["ok"] for r in results)
    assert "Reply in Spanish" in second["messages"][0]["content"]
    assert "A2" in second["messages"][0]["content"]
    async with tutor._sessions() as session:
        # The tutor never writes the log; usage is recorded.
        assert await session.scalar(select(func.count()).select_from(Turn)) == 0
        usage = (await session.execute(select(Usage))).scalars().all()
    assert [(u.kind, u.model) for u in usage] == [("chat", CHAT_MODEL)]
    assert usage[0].input_tokens > 0 and usage[0].output_tokens > 0
    assert reply.usage["model_calls"] == 2


async def test_invalid_tool_arguments_are_answered_not_stored(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor()
    learner_id = await new_learner(tutor)
    fake_openai.reply_tools(
        ("set_target_language", {"language": "klingon-ish"}), ("set_level", "{bad")
    )
    fake_openai.reply("Which language?")
    await tutor.respond(learner_id, text_turn("hmm"))
    results = fake_openai.chat_bodies()[1]["messages"][-2:]
    assert [json.loads(r["content"])["ok"] for r in results] == [False, False]
    learner = await profile(tutor, learner_id)
    assert learner.target_language is None and learner.level is None


async def test_prompt_carries_profile_summary_and_recent_turns(
    make_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_tutor(memory_turns=4)
    learner_id = await new_learner(
        tutor, display_name="Ana", summary="Ana loves football and has a dog.", **ONBOARDED
    )
    async with tutor._sessions() as session:
        await repos.upsert_vocabulary(session, learner_id, "es", "perro", "dog")
        await session.commit()
    await add_turns(tutor, learner_id, ["one", "uno", "two", "dos", "three", "tres"])

    reply = await tutor.respond(learner_id, text_turn("Ayer jugué al fútbol"))

    (body,) = fake_openai.chat_bodies()
    system = body["messages"][0]["content"]
    for expected in ("Ana", "Spanish", "English", "B1", "loves football", "perro"):
        assert expected in system
    history = [(m["role"], m["content"]) for m in body["messages"][1:]]
    assert history == [
        ("user", "two"),
        ("assistant", "dos"),
        ("user", "three"),
        ("assistant", "tres"),
        ("user", "Ayer jugué al fútbol"),
    ]
    assert "Ayer jugué al fútbol" in reply.text  # the fake_openai's default answer quotes it


async def test_record_vocabulary_stores_items(
    make_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_tutor()
    learner_id = await new_learner(tutor, **ONBOARDED)
    words = {
        "items": [
            {"term": "la manzana", "meaning": "the apple", "example": "Como una manzana."},
            {"term": "rojo", "meaning": "red"},
        ]
    }
    fake_openai.reply_tools(("record_vocabulary", words), text="¡Una manzana roja! ¿Te gusta?")
    fake_openai.reply_tools(
        ("record_vocabulary", {"items": [{"term": "rojo", "meaning": "red"}]}),
        text="Rojo otra vez.",
    )

    reply = await tutor.respond(learner_id, text_turn("I eat a red apple"))
    assert reply.text == "¡Una manzana roja! ¿Te gusta?"
    # Text next to the tool call is the answer: no second model call.
    assert len(fake_openai.chat_bodies()) == 1
    await tutor.respond(learner_id, text_turn("rojo"))

    async with tutor._sessions() as session:
        items = {v.term: v for v in await repos.vocabulary(session, learner_id)}
    assert set(items) == {"la manzana", "rojo"}
    assert items["la manzana"].meaning == "the apple"
    assert items["la manzana"].example == "Como una manzana."
    assert items["la manzana"].language == "es"
    assert items["rojo"].times_seen == 2


async def test_tool_loop_is_bounded(make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI) -> None:
    tutor = make_lite_tutor()
    learner_id = await new_learner(tutor, **ONBOARDED)
    fake_openai.reply_tools(
        ("set_level", {"level": "B1"}),
        times=None,
        when=lambda body: body.get("tool_choice") != "none",
    )
    fake_openai.reply("Final answer.", when=lambda b: b.get("tool_choice") == "none")
    reply = await tutor.respond(learner_id, text_turn("hola"))
    assert reply.text == "Final answer."
    bodies = fake_openai.chat_bodies()
    assert len(bodies) == 5  # four tool rounds, then one call with tool_choice none


# -- retries and failures ----------------------------------------------------------------------


async def test_429_with_retry_after_then_success(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor(openai_max_retries=2)
    learner_id = await new_learner(tutor, **ONBOARDED)
    fake_openai.fail(429, retry_after=0.3)
    started = time.monotonic()
    reply = await tutor.respond(learner_id, text_turn("hola"))
    assert time.monotonic() - started >= 0.3
    assert "hola" in reply.text
    assert len(fake_openai.chat_bodies()) == 2


async def test_persistent_500_raises_model_unavailable(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor(openai_max_retries=2)
    learner_id = await new_learner(tutor, native_language="fr", target_language="es", level="A1")
    before = MODEL_CALLS.labels("chat", "server_error")._value.get()
    fake_openai.fail(500, times=None, retry_after=0.01)
    with pytest.raises(ModelUnavailable):
        await tutor.respond(learner_id, text_turn("hola"))
    assert len(fake_openai.chat_bodies()) == 3  # the SDK retried twice
    assert MODEL_CALLS.labels("chat", "server_error")._value.get() == before + 1
    assert await tutor.apology(learner_id) == (
        "Désolé, j'ai du mal à réfléchir en ce moment. Je te réponds très vite."
    )
    assert "trouble" in tutor.apology_text(None)


async def test_exhausted_rate_limit_carries_retry_after(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor(openai_max_retries=1)
    learner_id = await new_learner(tutor, **ONBOARDED)
    fake_openai.fail(429, times=None, retry_after=0.05)
    with pytest.raises(ModelUnavailable) as caught:
        await tutor.respond(learner_id, text_turn("hola"))
    assert caught.value.retry_after == pytest.approx(0.05)


async def test_timeout_is_model_unavailable(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor(openai_max_retries=0, openai_timeout_seconds=0.3)
    learner_id = await new_learner(tutor, **ONBOARDED)
    fake_openai.slow(2.0)
    with pytest.raises(ModelUnavailable):
        await tutor.respond(learner_id, text_turn("hola"))


async def test_wrong_api_key_is_model_unavailable(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor(openai_api_key="sk-wrong", openai_max_retries=0)
    learner_id = await new_learner(tutor, **ONBOARDED)
    with pytest.raises(ModelUnavailable):
        await tutor.respond(learner_id, text_turn("hola"))


# -- streaming, voice, call instructions --------------------------------------------------------


async def test_streaming_passes_deltas_and_gives_same_reply(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor()
    learner_id = await new_learner(tutor, **ONBOARDED)
    fake_openai.reply_tools(("record_vocabulary", {"items": [{"term": "hola", "meaning": "hi"}]}))
    fake_openai.reply("Hola, ¿qué tal estás hoy?")
    pieces: list[str] = []

    async def on_delta(piece: str) -> None:
        pieces.append(piece)

    reply = await tutor.respond(learner_id, text_turn("hi"), on_delta=on_delta)
    assert reply.text == "Hola, ¿qué tal estás hoy?"
    assert "".join(pieces) == reply.text and len(pieces) > 1
    assert all(body["stream"] for body in fake_openai.chat_bodies())
    async with tutor._sessions() as session:
        assert [v.term for v in await repos.vocabulary(session, learner_id)] == ["hola"]


async def test_voice_turn_is_marked_spoken_and_unclear_words_reach_the_model(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor()
    learner_id = await new_learner(tutor, **ONBOARDED)
    reply = await tutor.respond(learner_id, TutorInput(kind=Kind.VOICE, text="me gusta el café"))
    assert reply.modality == "voice"
    assert reply.inbound_memory == "me gusta el café"
    assert (
        fake_openai.chat_bodies()[0]["messages"][-1]["content"] == "(voice note) me gusta el café"
    )
    await tutor.respond(
        learner_id,
        TutorInput(kind=Kind.VOICE, text="quiero un perro", unclear_words=("perro",)),
    )
    content = fake_openai.chat_bodies()[-1]["messages"][-1]["content"]
    assert content.startswith("(voice note) quiero un perro")
    assert "“perro”" in content and "pronunciation tip" in content


async def test_call_instructions_use_profile_and_memory(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor()
    learner_id = await new_learner(
        tutor, display_name="Ana", summary="Ana is planning a trip to Peru.", **ONBOARDED
    )
    await add_turns(tutor, learner_id, ["¿Qué llevo a Lima?", "Una chaqueta."])
    text = await tutor.call_instructions(learner_id)
    for expected in ("phone call", "Spanish", "B1", "Ana", "trip to Peru", "Una chaqueta"):
        assert expected in text
    assert fake_openai.chat_bodies() == []


# -- rolling summary ----------------------------------------------------------------------------


def _is_summary(body: dict[str, Any]) -> bool:
    return "long-term memory" in body["messages"][0]["content"]


async def test_summary_written_when_window_overflows(
    make_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_tutor(memory_turns=2)
    learner_id = await new_learner(tutor, summary="Likes cats.", **ONBOARDED)
    ids = await add_turns(tutor, learner_id, [f"t{i}" for i in range(1, 8)])  # 7 > 2 * 2
    fake_openai.reply("Ana likes cats and talked about t1 to t5.", when=_is_summary)

    reply = await tutor.respond(learner_id, text_turn("hola"))

    [summary_body] = [b for b in fake_openai.chat_bodies() if _is_summary(b)]
    [chat_body] = [b for b in fake_openai.chat_bodies() if not _is_summary(b)]
    sent = summary_body["messages"][1]["content"]
    assert "Likes cats." in sent and "Learner: t1" in sent and "Learner: t5" in sent
    assert "t6" not in sent  # still inside the window
    learner = await profile(tutor, learner_id)
    assert learner.summary == "Ana likes cats and talked about t1 to t5."
    assert learner.summary_upto_turn_id == ids[4]
    assert reply.timings["summary"] > 0
    # The reply ran beside the summary, on the summary as it stood.
    assert "Likes cats." in chat_body["messages"][0]["content"]
    assert [m["content"] for m in chat_body["messages"][1:]] == ["t6", "t7", "hola"]

    # The next turn carries the new summary, and nothing new beyond the window: no second call.
    fake_openai.reset()
    await tutor.respond(learner_id, text_turn("otra vez"))
    assert not any(_is_summary(b) for b in fake_openai.chat_bodies())
    [next_body] = fake_openai.chat_bodies()
    assert "talked about t1 to t5" in next_body["messages"][0]["content"]


async def test_summary_runs_beside_the_reply_not_before_it(
    make_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_tutor(memory_turns=2)
    learner_id = await new_learner(tutor, **ONBOARDED)
    await add_turns(tutor, learner_id, [f"t{i}" for i in range(1, 8)])
    fake_openai.slow(1.0, "A slow summary.", when=_is_summary)
    fake_openai.slow(1.0, "¡Hola!")
    reply = await tutor.respond(learner_id, text_turn("hola"))
    assert reply.text == "¡Hola!"
    assert (await profile(tutor, learner_id)).summary == "A slow summary."
    # Run one after the other, the second request would reach the fake_openai a full second after
    # the first (the fake_openai holds each answer for 1 s); side by side they arrive together.
    first, second = (r.at for r in fake_openai.requests())
    assert abs(second - first) < 0.5


async def test_failed_summary_does_not_block_the_reply(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor(memory_turns=2, openai_max_retries=0)
    learner_id = await new_learner(tutor, **ONBOARDED)
    await add_turns(tutor, learner_id, [f"t{i}" for i in range(1, 8)])
    fake_openai.fail(500, when=_is_summary)
    reply = await tutor.respond(learner_id, text_turn("hola"))
    assert "hola" in reply.text
    assert (await profile(tutor, learner_id)).summary is None


# -- photos -------------------------------------------------------------------------------------


def prepared_jpeg() -> PreparedImage:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return PreparedImage(
        jpeg=data,
        width=64,
        height=48,
        original_width=64,
        original_height=48,
        original_format="JPEG",
        original_size=len(data),
        sha256="0" * 64,
    )


async def test_image_turn_goes_to_vision_model_and_memory_keeps_description(
    make_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_tutor()
    learner_id = await new_learner(tutor, **ONBOARDED)
    image = prepared_jpeg()
    fake_openai.reply_tools(
        ("describe_image", {"description": "A red apple on a wooden table."}),
        ("record_vocabulary", {"items": [{"term": "la manzana", "meaning": "the apple"}]}),
        when=lambda body: body["model"] == VISION_MODEL,
    )
    fake_openai.reply(
        "¡Es una manzana roja! Palabras: la manzana (apple), la mesa (table). ¿Te gustan?",
        when=lambda body: body["model"] == VISION_MODEL,
    )

    reply = await tutor.respond(
        learner_id, TutorInput(kind=Kind.IMAGE, caption="mi almuerzo", image=image)
    )

    assert reply.text.startswith("¡Es una manzana roja!")
    assert reply.modality == "image"
    assert reply.inbound_memory == "[photo: A red apple on a wooden table.] mi almuerzo"
    first, second = fake_openai.chat_bodies()
    assert first["model"] == second["model"] == VISION_MODEL
    content = first["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "mi almuerzo"}
    assert content[1]["type"] == "image_url"
    assert content[1]["image_url"]["detail"] == "auto"
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == image.jpeg
    assert "describe_image" in {t["function"]["name"] for t in first["tools"]}
    assert "photo" in first["messages"][0]["content"]
    async with tutor._sessions() as session:
        kinds = {u.kind for u in (await session.execute(select(Usage))).scalars()}
        assert [v.term for v in await repos.vocabulary(session, learner_id)] == ["la manzana"]
    assert kinds == {"vision"}


async def test_image_memory_falls_back_to_first_sentence(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor()
    learner_id = await new_learner(tutor, **ONBOARDED)
    fake_openai.reply("Veo un gato negro en un sofá. Palabras: el gato, el sofá. ¿Tienes gato?")
    reply = await tutor.respond(learner_id, TutorInput(kind=Kind.IMAGE, image=prepared_jpeg()))
    assert reply.inbound_memory == "[photo: Veo un gato negro en un sofá.]"
    content = fake_openai.chat_bodies()[0]["messages"][-1]["content"]
    assert "without a caption" in content[0]["text"]


async def test_image_rejected_by_model_gets_friendly_reply(
    make_lite_tutor: TutorFactory, fake_openai: FakeOpenAI
) -> None:
    tutor = make_lite_tutor()
    learner_id = await new_learner(tutor, native_language="de", target_language="es", level="A2")
    fake_openai.fail(400, message="Invalid image.")
    reply = await tutor.respond(learner_id, TutorInput(kind=Kind.IMAGE, image=prepared_jpeg()))
    assert "Bild" in reply.text
    assert reply.modality == "image"
