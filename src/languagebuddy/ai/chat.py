"""A small wrapper over the official SDK's chat completions: tools, optional streaming, and one
error vocabulary for the rest of the service.

The SDK already retries 408/409/429/5xx and connection errors, honouring ``Retry-After``; what
still fails after that becomes ``ModelUnavailable`` (keep the event, apologise, retry later).
Requests the provider refuses for good (bad request, unknown model) become ``ModelRejected``,
because retrying them would only repeat the refusal.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from languagebuddy.errors import ModelRejected, ModelUnavailable
from languagebuddy.logs import get_logger
from languagebuddy.metrics import MODEL_CALLS

log = get_logger(__name__)

OnDelta = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it

    def parsed(self) -> dict[str, Any]:
        """The arguments as a dict; malformed JSON gives ``{}`` so the tool can explain."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class ChatResult:
    text: str
    model: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    seconds: float = 0.0

    def assistant_message(self) -> dict[str, Any]:
        """This answer as a message to send back in the next request of a tool loop."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return message


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After (or OpenAI's retry-after-ms) from response headers, in seconds."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def map_error(exc: openai.OpenAIError, kind: str) -> Exception:
    """Translate what is left after the SDK's own retries into our two exceptions (shared by
    every OpenAI client here: chat, transcription, speech)."""
    if isinstance(exc, openai.APITimeoutError):
        MODEL_CALLS.labels(kind, "timeout").inc()
        return ModelUnavailable("model request timed out")
    if isinstance(exc, openai.APIConnectionError):
        MODEL_CALLS.labels(kind, "connection_error").inc()
        return ModelUnavailable("could not reach the model provider")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = retry_after_seconds(exc.response.headers)
        if status == 429:
            MODEL_CALLS.labels(kind, "rate_limited").inc()
            return ModelUnavailable("model rate limited", retry_after=retry_after)
        if status in (401, 403):
            # A wrong or revoked key: the operator must fix it, the learner gets an apology.
            MODEL_CALLS.labels(kind, "auth_error").inc()
            log.error("openai.auth_failed", status=status, request_id=exc.request_id)
            return ModelUnavailable(
                f"model provider refused the API key ({status}): check OPENAI_API_KEY",
                retry_after=retry_after,
            )
        if status >= 500 or status in (408, 409):
            MODEL_CALLS.labels(kind, "server_error").inc()
            return ModelUnavailable(f"model provider error {status}", retry_after=retry_after)
        MODEL_CALLS.labels(kind, "rejected").inc()
        return ModelRejected(f"model provider rejected the request ({status})", status)
    MODEL_CALLS.labels(kind, "error").inc()
    return ModelUnavailable(f"model call failed: {type(exc).__name__}")


def call_failed(exc: openai.OpenAIError, kind: str, model: str) -> Exception:
    """Log a failed model call (its kind, model and status; never its content) and return
    the exception to raise in its place."""
    mapped = map_error(exc, kind)
    log.warning(
        "openai.call_failed",
        kind=kind,
        model=model,
        error=type(exc).__name__,
        status=getattr(exc, "status_code", None),
    )
    return mapped


class ChatClient:
    """Chat completions with tools. One instance per process is enough."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        kind: str = "chat",
        on_delta: OnDelta | None = None,
    ) -> ChatResult:
        """One model call. With ``on_delta`` the answer streams and each text piece is passed on
        as it arrives (a console can print it); the result is the same either way."""
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        if tools:
            kwargs["tools"] = tools
            if tool_choice:
                kwargs["tool_choice"] = tool_choice
        started = time.perf_counter()
        try:
            if on_delta is None:
                result = await self._complete(kwargs)
            else:
                result = await self._stream(kwargs, on_delta)
        except openai.OpenAIError as exc:
            raise call_failed(exc, kind, model) from exc
        result.seconds = time.perf_counter() - started
        MODEL_CALLS.labels(kind, "ok").inc()
        return result

    async def _post(self, body: dict[str, Any], *, stream: bool) -> Any:
        """POST /chat/completions through the SDK's own client (auth, retries, errors,
        response models), without ``chat.completions.create``'s walk of every message against
        the params' TypedDicts: with a tutor's prompt and history that walk was about a third
        of the CPU of answering a message, for a body that is plain JSON already."""
        return await self._client.post(
            "/chat/completions",
            body=body,
            cast_to=ChatCompletion,
            options={"security": {"bearer_auth": True}},
            stream=stream,
            stream_cls=AsyncStream[ChatCompletionChunk],
        )

    async def _complete(self, kwargs: dict[str, Any]) -> ChatResult:
        response: ChatCompletion = await self._post(kwargs, stream=False)
        choice = response.choices[0] if response.choices else None
        message = choice.message if choice else None
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "")
            for c in (message.tool_calls or [] if message else [])
            if getattr(c, "function", None) is not None
        ]
        usage = response.usage
        return ChatResult(
            text=(message.content or "") if message else "",
            model=response.model or kwargs["model"],
            tool_calls=calls,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason if choice else None,
        )

    async def _stream(self, kwargs: dict[str, Any], on_delta: OnDelta) -> ChatResult:
        body = {**kwargs, "stream": True, "stream_options": {"include_usage": True}}
        stream: AsyncStream[ChatCompletionChunk] = await self._post(body, stream=True)
        pieces: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        model = kwargs["model"]
        finish_reason: str | None = None
        input_tokens = output_tokens = 0
        async for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                input_tokens = chunk.usage.prompt_tokens
                output_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content:
                    pieces.append(delta.content)
                    await on_delta(delta.content)
                for part in delta.tool_calls or []:
                    slot = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                    if part.id:
                        slot["id"] = part.id
                    if part.function is not None:
                        slot["name"] += part.function.name or ""
                        slot["arguments"] += part.function.arguments or ""
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
        return ChatResult(
            text="".join(pieces),
            model=model,
            tool_calls=[ToolCall(**calls[i]) for i in sorted(calls)],
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=finish_reason,
        )
