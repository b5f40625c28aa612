"""A protocol-faithful LINE Messaging API peer and signed webhook builders.

The API host is served under ``/api`` and the data host under ``/data`` so a test notices when
the product fetches content from the wrong host. Reply tokens are single use and expire;
``X-Line-Retry-Key`` must be a UUID and a reused key answers 409 like LINE does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.faults import Faults
from tests.fakes.server import FakeServer

MAX_MESSAGES = 5
MAX_TEXT = 5000
AUTH_FAILED = (
    "Authentication failed. Confirm that the access token in the authorization header is valid."
)


def line_error(
    status: int, message: str, details: list[dict[str, str]] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"message": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers={"x-line-request-id": str(uuid.uuid4())})


class FakeLine:
    """The Messaging API endpoints the product uses."""

    def __init__(
        self,
        *,
        access_token: str = "fake-line-channel-access-token",
        channel_secret: str = "fake-line-channel-secret",
    ) -> None:
        self.access_token = access_token
        self.channel_secret = channel_secret
        self.faults = Faults()
        self._lock = threading.Lock()
        self._ids = itertools.count(500000000000000000)
        self.reply_tokens: dict[str, dict[str, Any]] = {}
        self.retry_keys: dict[str, tuple[str, list[dict[str, str]]]] = {}
        self.content: dict[str, tuple[bytes, str]] = {}
        self.transcoding: set[str] = set()  # message ids whose content is not ready yet
        self.replies: list[dict[str, Any]] = []
        self.pushes: list[dict[str, Any]] = []
        self.loading: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/api/v2/bot/message/reply", self._reply, methods=["POST"]),
                Route("/api/v2/bot/message/push", self._push, methods=["POST"]),
                Route("/api/v2/bot/chat/loading/start", self._loading, methods=["POST"]),
                Route("/api/v2/bot/info", self._info, methods=["GET"]),
                Route("/data/v2/bot/message/{message_id}/content", self._content, methods=["GET"]),
                Route(
                    "/data/v2/bot/message/{message_id}/content/transcoding",
                    self._transcoding,
                    methods=["GET"],
                ),
            ]
        )
        self.server = FakeServer(self.app)

    def start(self) -> FakeLine:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeLine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        return f"{self.server.base_url}/api"

    @property
    def data_url(self) -> str:
        return f"{self.server.base_url}/data"

    def settings(self) -> dict[str, Any]:
        return {
            "line_channel_access_token": self.access_token,
            "line_channel_secret": self.channel_secret,
            "line_api_base_url": self.api_url,
            "line_data_api_base_url": self.data_url,
        }

    def issue_reply_token(
        self, user_id: str, *, ttl: float = 60.0, token: str | None = None
    ) -> str:
        """A reply token as a webhook would carry it: single use, valid for ``ttl`` seconds.
        ``user_id`` is the chat the reply lands in (a user, or a group or room id)."""
        token = token or secrets.token_hex(16)
        with self._lock:
            self.reply_tokens[token] = {
                "user": user_id,
                "expires": time.time() + ttl,
                "used": False,
            }
        return token

    def expire_reply_token(self, token: str) -> None:
        with self._lock:
            self.reply_tokens[token]["expires"] = 0.0

    def add_content(
        self, data: bytes, mime: str = "image/jpeg", message_id: str | None = None
    ) -> str:
        message_id = message_id or str(next(self._ids))
        with self._lock:
            self.content[message_id] = (data, mime)
        return message_id

    def fail_next(
        self,
        status: int = 500,
        *,
        count: int = 1,
        retry_after: float | None = None,
        path_contains: str = "/v2/bot/message/",
        message: str | None = None,
    ) -> None:
        default = {
            429: "The API rate limit has been exceeded. Try again later.",
            500: "Internal Server Error",
            400: "The request body has 1 error(s)",
            401: AUTH_FAILED,
            403: "Not authorized to use this endpoint.",
        }.get(status, "Error")
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self.faults.add(
            status,
            {"message": message or default},
            count=count,
            headers=headers,
            path_contains=path_contains,
        )

    def texts_to(self, user_id: str) -> list[str]:
        with self._lock:
            calls = [(r["_user"], r) for r in self.replies] + [(p["to"], p) for p in self.pushes]
        return [
            m["text"]
            for target, call in calls
            if target == user_id
            for m in call["messages"]
            if m["type"] == "text"
        ]

    # --- handlers -------------------------------------------------------------------------

    def _denied(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return line_error(401, AUTH_FAILED)
        return None

    def _check_messages(self, messages: Any) -> Response | None:
        if not isinstance(messages, list) or not messages:
            return line_error(
                400,
                "The request body has 1 error(s)",
                [{"message": "Size must be between 1 and 5", "property": "messages"}],
            )
        if len(messages) > MAX_MESSAGES:
            return line_error(
                400,
                "The request body has 1 error(s)",
                [{"message": "Size must be between 1 and 5", "property": "messages"}],
            )
        for n, message in enumerate(messages):
            kind = message.get("type") if isinstance(message, dict) else None
            quote = message.get("quoteToken") if isinstance(message, dict) else None
            if quote is not None and (kind != "text" or not isinstance(quote, str) or not quote):
                return line_error(
                    400,
                    "The request body has 1 error(s)",
                    [{"message": "invalid quote token", "property": f"messages[{n}].quoteToken"}],
                )
            if kind == "text":
                text = message.get("text")
                if not isinstance(text, str) or not text:
                    return line_error(
                        400,
                        "The request body has 1 error(s)",
                        [{"message": "May not be empty", "property": f"messages[{n}].text"}],
                    )
                if len(text.encode("utf-16-le")) // 2 > MAX_TEXT:
                    return line_error(
                        400,
                        "The request body has 1 error(s)",
                        [
                            {
                                "message": "Length must be between 0 and 5000",
                                "property": f"messages[{n}].text",
                            }
                        ],
                    )
            elif kind == "audio":
                url = message.get("originalContentUrl")
                if (
                    not isinstance(url, str)
                    or not url.startswith("https://")
                    or not isinstance(message.get("duration"), int)
                ):
                    return line_error(
                        400,
                        "The request body has 1 error(s)",
                        [{"message": "invalid audio", "property": f"messages[{n}]"}],
                    )
            else:
                return line_error(
                    400,
                    "The request body has 1 error(s)",
                    [{"message": "Invalid message type", "property": f"messages[{n}].type"}],
                )
        return None

    def _sent(self, count: int) -> list[dict[str, str]]:
        return [
            {"id": str(next(self._ids)), "quoteToken": secrets.token_urlsafe(12)}
            for _ in range(count)
        ]

    async def _json(self, request: Request) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def _reply(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        if (fault := self.faults.take(request.url.path)) is not None:
            return fault
        body = await self._json(request)
        if body is None:
            return line_error(400, "The request body has 1 error(s)")
        if (bad := self._check_messages(body.get("messages"))) is not None:
            return bad
        with self._lock:
            token = self.reply_tokens.get(str(body.get("replyToken")))
            if token is None or token["used"] or token["expires"] < time.time():
                return line_error(400, "Invalid reply token")
            token["used"] = True
            self.replies.append({**body, "_user": token["user"]})
        return JSONResponse({"sentMessages": self._sent(len(body["messages"]))})

    async def _push(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        if (fault := self.faults.take(request.url.path)) is not None:
            return fault
        key = request.headers.get("x-line-retry-key")
        if key is not None:
            try:
                uuid.UUID(key)
            except ValueError:
                return line_error(400, "The value for the 'X-Line-Retry-Key' header is invalid")
            with self._lock:
                accepted = self.retry_keys.get(key)
            if accepted is not None:
                response = JSONResponse(
                    {"message": "The retry key is already accepted", "sentMessages": accepted[1]},
                    status_code=409,
                )
                response.headers["x-line-accepted-request-id"] = accepted[0]
                return response
        body = await self._json(request)
        if body is None:
            return line_error(400, "The request body has 1 error(s)")
        to = body.get("to")
        if not isinstance(to, str) or to[:1] not in ("U", "C", "R"):
            return line_error(
                400, "The property, 'to', in the request body is invalid (line: -, column: -)"
            )
        if (bad := self._check_messages(body.get("messages"))) is not None:
            return bad
        request_id = str(uuid.uuid4())
        sent = self._sent(len(body["messages"]))
        with self._lock:
            if key is not None:
                self.retry_keys[key] = (request_id, sent)
            self.pushes.append({**body, "_retry_key": key})
        return JSONResponse({"sentMessages": sent}, headers={"x-line-request-id": request_id})

    async def _loading(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await self._json(request) or {}
        seconds = body.get("loadingSeconds", 20)
        if not str(body.get("chatId", "")).startswith("U") or not (
            isinstance(seconds, int) and 5 <= seconds <= 60 and seconds % 5 == 0
        ):
            return line_error(400, "The request body has 1 error(s)")
        with self._lock:
            self.loading.append(body)
        return JSONResponse({}, status_code=202)

    async def _info(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        return JSONResponse(
            {
                "userId": "U" + "0" * 32,
                "basicId": "@123abcde",
                "displayName": "LanguageBuddy",
                "chatMode": "bot",
                "markAsReadMode": "auto",
            }
        )

    async def _content(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        if (fault := self.faults.take(request.url.path)) is not None:
            return fault
        message_id = request.path_params["message_id"]
        with self._lock:
            entry = self.content.get(message_id)
            pending = message_id in self.transcoding
        if pending:
            return Response(b"", status_code=202)
        if entry is None:
            return line_error(404, "Not found")
        return Response(entry[0], media_type=entry[1])

    async def _transcoding(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        message_id = request.path_params["message_id"]
        with self._lock:
            status = (
                "processing"
                if message_id in self.transcoding
                else ("succeeded" if message_id in self.content else "failed")
            )
        return JSONResponse({"status": status})


# --- webhooks as LINE sends them -------------------------------------------------------------


def sign_line(body: bytes, secret: str) -> str:
    """The X-Line-Signature header value for ``body``."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def line_headers(body: bytes, secret: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        "X-Line-Signature": sign_line(body, secret),
    }


def new_event_id() -> str:
    return "01J" + secrets.token_hex(12).upper()[:23]


def line_event(
    message: dict[str, Any] | None,
    *,
    user_id: str = "U4af4980629a1b2c3d4e5f6a7b8c9d0e1",
    reply_token: str | None = "nHuyWiB7yP5Zw52FIkcQobQuGDXCTA",
    webhook_event_id: str | None = None,
    redelivery: bool = False,
    kind: str = "message",
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "webhookEventId": webhook_event_id or new_event_id(),
        "deliveryContext": {"isRedelivery": redelivery},
        "source": {"type": "user", "userId": user_id},
    }
    if reply_token is not None:
        event["replyToken"] = reply_token
    if message is not None:
        event["message"] = message
    return event


def line_body(
    events: list[dict[str, Any]], destination: str = "U0123456789abcdef0123456789abcdef"
) -> bytes:
    """LINE sends compact UTF-8 JSON (non-ASCII unescaped)."""
    return json.dumps(
        {"destination": destination, "events": events}, ensure_ascii=False, separators=(",", ":")
    ).encode()


def line_text_webhook(text: str, **kwargs: Any) -> bytes:
    message = {
        "id": str(secrets.randbelow(10**17) + 10**17),
        "quoteToken": secrets.token_urlsafe(12),
        "type": "text",
        "text": text,
    }
    return line_body([line_event(message, **kwargs)])


def line_image_webhook(message_id: str, **kwargs: Any) -> bytes:
    message = {
        "id": message_id,
        "quoteToken": secrets.token_urlsafe(12),
        "type": "image",
        "contentProvider": {"type": "line"},
    }
    return line_body([line_event(message, **kwargs)])


def line_audio_webhook(message_id: str, *, duration_ms: int = 60000, **kwargs: Any) -> bytes:
    message = {
        "id": message_id,
        "type": "audio",
        "duration": duration_ms,
        "contentProvider": {"type": "line"},
    }
    return line_body([line_event(message, **kwargs)])
