"""The fake_openai OpenAI speaks the real protocol: checked with the official SDK over real HTTP."""

from __future__ import annotations

import time

import openai
import pytest
from openai import AsyncOpenAI

from tests.fakes.openai import FakeOpenAI

MESSAGES = [{"role": "user", "content": "Hola, me llamo Ana"}]


async def test_wrong_key_is_401_with_openai_error_body(fake_openai: FakeOpenAI) -> None:
    client = AsyncOpenAI(api_key="sk-wrong", base_url=fake_openai.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"
    assert caught.value.body["param"] is None  # type: ignore[index]


async def test_default_reply_quotes_the_learner(fake_openai: FakeOpenAI) -> None:
    response = await fake_openai.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert response.object == "chat.completion"
    assert "Hola, me llamo Ana" in (response.choices[0].message.content or "")
    assert response.usage is not None and response.usage.total_tokens > 0
    (request,) = fake_openai.requests()
    assert request.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert request.json()["messages"] == MESSAGES


async def test_scripted_tool_calls_non_stream(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_tools(("set_level", {"level": "B1"}), ("set_name", '{"name": "Ana"}'))
    response = await fake_openai.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["set_level", "set_name"]
    assert calls[0].function.arguments == '{"level": "B1"}'
    assert calls[0].id != calls[1].id


async def test_stream_yields_chunks_tool_deltas_and_usage(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_tools(
        ("record_vocabulary", {"items": [{"term": "gato"}]}), text="Un gato bonito"
    )
    stream = await fake_openai.client().chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    text, args, names, usage = "", "", "", None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                names += (call.function.name or "") if call.function else ""
                args += (call.function.arguments or "") if call.function else ""
    assert text == "Un gato bonito"
    assert names == "record_vocabulary"
    assert args == '{"items": [{"term": "gato"}]}'
    assert usage is not None and usage.completion_tokens > 0
    raw = fake_openai.requests()[0]
    assert raw.json()["stream"] is True


async def test_raw_sse_ends_with_done(fake_openai: FakeOpenAI) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{fake_openai.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {fake_openai.api_key}"},
            json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.splitlines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


async def test_429_retry_after_is_honoured_by_the_sdk(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail(429, retry_after=0.3)
    started = time.monotonic()
    response = await fake_openai.client(max_retries=2).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert time.monotonic() - started >= 0.3
    assert response.choices[0].message.content
    assert len(fake_openai.requests()) == 2


async def test_persistent_500_and_unknown_path(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail(500, times=None, retry_after=0.01)
    with pytest.raises(openai.InternalServerError):
        await fake_openai.client(max_retries=2).chat.completions.create(
            model="m", messages=MESSAGES
        )
    assert len(fake_openai.requests()) == 3
    with pytest.raises(openai.NotFoundError):
        await fake_openai.client(max_retries=0).models.list()


async def test_slow_response_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.slow(2.0)
    with pytest.raises(openai.APITimeoutError):
        await fake_openai.client(max_retries=0, timeout=0.3).chat.completions.create(
            model="m", messages=MESSAGES
        )


async def test_when_predicate_routes_scripts(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply("vision answer", when=lambda body: body["model"] == "vision")
    client = fake_openai.client()
    first = await client.chat.completions.create(model="chat", messages=MESSAGES)
    second = await client.chat.completions.create(model="vision", messages=MESSAGES)
    assert first.choices[0].message.content != "vision answer"
    assert second.choices[0].message.content == "vision answer"
    assert fake_openai.pending() == 0


async def test_extension_points_for_audio_and_realtime(fake_openai: FakeOpenAI) -> None:
    from starlette.responses import Response
    from starlette.websockets import WebSocket

    async def speech(request, body):  # type: ignore[no-untyped-def]
        return Response(b"\x00\x01" * 10, media_type="audio/pcm")

    async def realtime(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "session.created", "event_id": "event_1"})
        await websocket.close()

    real_speech = fake_openai.handlers["/v1/audio/speech"]
    fake_openai.add_endpoint("/v1/audio/speech", "speech", speech)
    # /v1/realtime itself is the built-in fake Realtime API; the extension point serves others.
    fake_openai.add_websocket("/v1/custom-socket", realtime)
    try:
        audio = await fake_openai.client().audio.speech.create(
            model="gpt-4o-mini-tts", voice="alloy", input="hola", response_format="pcm"
        )
        assert audio.content == b"\x00\x01" * 10
        from websockets.asyncio.client import connect

        async with connect(f"{fake_openai.server.ws_url}/v1/custom-socket") as ws:
            assert "session.created" in await ws.recv()
    finally:
        fake_openai.handlers["/v1/audio/speech"] = real_speech
        fake_openai.app.router.routes.pop()
