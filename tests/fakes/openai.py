"""A protocol-faithful fake of the OpenAI REST API, served over real HTTP by ``FakeServer``.

The official SDK talks to it through ``base_url=fake.base_url`` exactly as it talks to
api.openai.com: bearer auth, JSON chat completions, SSE streams ending in ``data: [DONE]``,
error bodies and ``Retry-After`` headers. Tests script what the "model" says; anything not
scripted gets a deterministic default answer that quotes the learner's last message.

    with FakeOpenAI() as fake:
        fake.reply_tools(("set_level", {"level": "B1"}))
        fake.reply("¡Genial!")
        fake.fail(429, retry_after=0.01)
        client = fake.client(max_retries=2)

Endpoints live in ``self.handlers`` keyed by path, with one script queue per endpoint name,
so audio (``/v1/audio/transcriptions``, ``/v1/audio/speech``) and a Realtime WebSocket route can
be added beside chat without changing how tests script responses.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from openai import AsyncOpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.fakes.openai_audio import FakeAudio
from tests.fakes.server import FakeServer, RecordedRequest

Predicate = Callable[[dict[str, Any]], bool]
Handler = Callable[[Request, dict[str, Any]], Awaitable[Response]]


@dataclass
class Scripted:
    """One scripted answer: text and/or tool calls, or an HTTP error; optionally slow.

    ``when`` restricts which request may consume it (e.g. only the vision model); ``times``
    repeats it (``None``: forever, until ``reset``)."""

    text: str | None = None
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    status: int = 200
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    when: Predicate | None = None
    times: int | None = 1
    usage: tuple[int, int] | None = None


def openai_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in OpenAI's wire shape: ``{"error": {message, type, param, code}}``."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


_ERROR_DEFAULTS = {
    400: ("invalid_request_error", None, "Invalid request."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


class FakeOpenAI:
    """The fake itself: a Starlette app plus its server, script queues and helpers."""

    def __init__(self, api_key: str = "sk-fake-test-key", **realtime: Any) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._ids = count(1)
        self.queues: dict[str, deque[Scripted]] = {}
        self.handlers: dict[str, tuple[str, Handler]] = {
            "/v1/chat/completions": ("chat", self._chat_completions),
        }
        self.app = Starlette(
            routes=[
                Route("/v1/{path:path}", self._dispatch, methods=["GET", "POST", "DELETE"]),
            ]
        )
        self.server = FakeServer(self.app)
        # Streamed chat pacing for benchmarks: the first token after ``chat_first_token``
        # seconds, then ``chat_tokens_per_second`` (0: as fast as possible), a token being
        # ``chat_chars_per_token`` characters of the answer (0: a word).
        self.chat_first_token = 0.0
        self.chat_tokens_per_second = 0.0
        self.chat_chars_per_token = 0
        self.audio = FakeAudio(self)
        # The Realtime WebSocket (calls): its own module, options passed through.
        from tests.fakes.openai_realtime import FakeRealtime

        self.realtime = FakeRealtime(api_key, **realtime)
        self.add_websocket("/v1/realtime", self.realtime.handle)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` / ``OPENAI_BASE_URL``."""
        return f"{self.server.base_url}/v1"

    def add_endpoint(self, path: str, endpoint: str, handler: Handler) -> None:
        """Serve another REST path (e.g. ``/v1/audio/speech``) behind the same bearer check;
        ``handler(request, json_body)`` may ``self._take(endpoint, body)`` its scripts."""
        self.handlers[path] = (endpoint, handler)

    def add_websocket(self, path: str, handler: Callable[[WebSocket], Awaitable[None]]) -> None:
        """Serve a WebSocket (e.g. ``/v1/realtime``); the catch-all HTTP route never matches
        WebSocket scopes, so order does not matter."""
        self.app.router.routes.append(WebSocketRoute(path, handler))

    def client(self, **kwargs: Any) -> AsyncOpenAI:
        """An SDK client pointed at this fake (tests may also build their own)."""
        kwargs.setdefault("max_retries", 1)
        kwargs.setdefault("timeout", 10.0)
        return AsyncOpenAI(api_key=self.api_key, base_url=self.base_url, **kwargs)

    def reset(self) -> None:
        """Drop scripts and recorded requests (between tests sharing one fake)."""
        with self._lock:
            self.queues.clear()
        self.server.clear()
        self.chat_first_token = self.chat_tokens_per_second = 0.0
        self.chat_chars_per_token = 0
        self.audio.reset()
        self.realtime.reset()

    # -- scripting ---------------------------------------------------------------------------

    def script(self, item: Scripted, endpoint: str = "chat") -> FakeOpenAI:
        with self._lock:
            self.queues.setdefault(endpoint, deque()).append(item)
        return self

    def reply(self, text: str, **options: Any) -> FakeOpenAI:
        """The next chat completion answers ``text``."""
        return self.script(Scripted(text=text, **options))

    def reply_tools(
        self, *calls: tuple[str, dict[str, Any] | str], text: str | None = None, **options: Any
    ) -> FakeOpenAI:
        """The next chat completion calls these tools (name, arguments), maybe with text."""
        return self.script(Scripted(text=text, tool_calls=list(calls), **options))

    def fail(
        self,
        status: int = 500,
        *,
        retry_after: float | None = None,
        times: int | None = 1,
        message: str | None = None,
        delay: float = 0.0,
        when: Predicate | None = None,
    ) -> FakeOpenAI:
        """The next ``times`` chat requests (``None``: all) fail with ``status``."""
        return self.script(
            Scripted(
                status=status,
                retry_after=retry_after,
                times=times,
                error_message=message,
                delay=delay,
                when=when,
            )
        )

    def slow(self, delay: float, text: str | None = None, **options: Any) -> FakeOpenAI:
        """The next chat request waits ``delay`` seconds before answering (timeouts)."""
        return self.script(Scripted(text=text, delay=delay, **options))

    def pending(self, endpoint: str = "chat") -> int:
        with self._lock:
            return len(self.queues.get(endpoint, ()))

    # -- what was received -------------------------------------------------------------------

    def requests(self, path: str = "/v1/chat/completions") -> list[RecordedRequest]:
        return self.server.recorded(path, method="POST")

    def chat_bodies(self) -> list[dict[str, Any]]:
        """JSON bodies of every chat completion request, in order (retries included)."""
        return [r.json() for r in self.requests("/v1/chat/completions")]

    # -- HTTP --------------------------------------------------------------------------------

    def _take(self, endpoint: str, body: dict[str, Any]) -> Scripted | None:
        with self._lock:
            queue = self.queues.get(endpoint)
            if not queue:
                return None
            for item in list(queue):
                if item.when is None or item.when(body):
                    if item.times is not None:
                        item.times -= 1
                        if item.times <= 0:
                            queue.remove(item)
                    return item
        return None

    async def _dispatch(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            shown = auth.removeprefix("Bearer ")[-4:] or "none"
            return openai_error(
                401,
                f"Incorrect API key provided: ...{shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        entry = self.handlers.get(request.url.path)
        if entry is None:
            return openai_error(404, f"Unknown request URL: {request.method} {request.url.path}.")
        _, handler = entry
        body: dict[str, Any] = {}
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = await request.json()
            except json.JSONDecodeError:
                return openai_error(400, "We could not parse the JSON body of your request.")
        return await handler(request, body)

    async def _chat_completions(self, request: Request, body: dict[str, Any]) -> Response:
        if not body.get("model") or not isinstance(body.get("messages"), list):
            return openai_error(400, "'model' and 'messages' are required.", param="messages")
        item = self._take("chat", body) or Scripted(text=default_reply(body))
        if item.delay:
            await asyncio.sleep(item.delay)
        if item.status != 200:
            return self._error(item)
        message_id = f"chatcmpl-fake{next(self._ids)}"
        calls = [
            {
                "id": f"call_fake{next(self._ids)}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
            for name, args in item.tool_calls
        ]
        prompt_tokens, completion_tokens = item.usage or _estimate_usage(body, item.text, calls)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _stream_chunks(
                message_id,
                body["model"],
                item.text,
                calls,
                (prompt_tokens, completion_tokens) if include_usage else None,
                self.chat_chars_per_token,
            )
            pacing = (self.chat_first_token, self.chat_tokens_per_second)
            return StreamingResponse(_sse(chunks, *pacing), media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": item.text, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        return JSONResponse(
            {
                "id": message_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if calls else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
            headers={"x-request-id": f"req_fake{next(self._ids)}"},
        )

    def _error(self, item: Scripted) -> Response:
        type_, code, message = _ERROR_DEFAULTS.get(
            item.status,
            (
                "server_error" if item.status >= 500 else "invalid_request_error",
                None,
                f"Error {item.status}.",
            ),
        )
        headers = {"x-request-id": f"req_fake{next(self._ids)}"}
        if item.retry_after is not None:
            headers["retry-after"] = f"{item.retry_after:g}"
            headers["retry-after-ms"] = str(int(item.retry_after * 1000))
        return openai_error(
            item.status,
            item.error_message or message,
            type_=item.error_type or type_,
            code=item.error_code or code,
            headers=headers,
        )


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message (text parts of a content list included)."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def has_image(body: dict[str, Any]) -> bool:
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list) and any(p.get("type") == "image_url" for p in content):
            return True
    return False


def default_reply(body: dict[str, Any]) -> str:
    """A deterministic answer that shows the request got through: it quotes the learner."""
    said = " ".join(last_user_text(body).split())[:200]
    if has_image(body):
        return f"¡Qué foto! Veo algo interesante. You wrote: “{said}”. ¿Qué ves tú?"
    return f"¡Muy bien! You said: “{said}”. ¿Y qué más?"


def _estimate_usage(
    body: dict[str, Any], text: str | None, calls: list[dict[str, Any]]
) -> tuple[int, int]:
    prompt = len(json.dumps(body.get("messages", []), ensure_ascii=False)) // 4 + 1
    completion = (len(text or "") + len(json.dumps(calls))) // 4 + 1
    return prompt, completion


def _stream_chunks(
    message_id: str,
    model: str,
    text: str | None,
    calls: list[dict[str, Any]],
    usage: tuple[int, int] | None,
    chars_per_token: int = 0,
) -> list[dict[str, Any]]:
    """chat.completion.chunk objects as the API streams them: role, content pieces, tool-call
    deltas (id and name first, arguments in pieces), finish reason, then usage (if asked)."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": message_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    if text and chars_per_token:
        out.extend(
            chunk({"content": text[i : i + chars_per_token]})
            for i in range(0, len(text), chars_per_token)
        )
    elif text:
        words = text.split(" ")
        out.extend(
            chunk({"content": word + (" " if i < len(words) - 1 else "")})
            for i, word in enumerate(words)
        )
    for index, call in enumerate(calls):
        args = call["function"]["arguments"]
        half = len(args) // 2
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in (args[:half], args[half:]):
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    out.append(chunk({}, "tool_calls" if calls else "stop"))
    if usage is not None:
        final = chunk({})
        final["choices"] = []
        final["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
        }
        out.append(final)
    return out


async def _sse(
    chunks: list[dict[str, Any]], first_token: float = 0.0, tokens_per_second: float = 0.0
) -> AsyncIterator[bytes]:
    """The chunks as server-sent events; content chunks paced as a model writes them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tokens = 0
    for item in chunks:
        choices = item.get("choices") or [{}]
        if choices[0].get("delta", {}).get("content"):
            due = start + first_token + (tokens / tokens_per_second if tokens_per_second else 0)
            tokens += 1
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
        yield f"data: {json.dumps(item, ensure_ascii=False)}\n\n".encode()
    yield b"data: [DONE]\n\n"
