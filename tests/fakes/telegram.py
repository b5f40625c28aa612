"""A protocol-faithful Telegram Bot API peer and update builders.

Methods live at ``/bot<TOKEN>/<method>`` (JSON, form or multipart, as the real API accepts);
a wrong token answers 404 ``Not Found``; files are served at ``/file/bot<TOKEN>/<file_path>``.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.faults import Faults
from tests.fakes.server import FakeServer

BOT_FILE_LIMIT = 20 * 1024 * 1024


def tg_error(code: int, description: str, retry_after: int | None = None) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return JSONResponse(body, status_code=code)


def _ok(result: Any) -> JSONResponse:
    return JSONResponse({"ok": True, "result": result})


def _check_placement(params: dict[str, Any]) -> JSONResponse | None:
    """``message_thread_id`` (a forum topic) and ``reply_parameters`` as the API types them."""
    thread = params.get("message_thread_id")
    if thread is not None and not (isinstance(thread, int) or str(thread).isdigit()):
        return tg_error(400, "Bad Request: message thread not found")
    reply = params.get("reply_parameters")
    if reply is not None and not (
        isinstance(reply, dict) and isinstance(reply.get("message_id"), int)
    ):
        return tg_error(400, "Bad Request: can't parse reply parameters JSON object")
    return None


class FakeTelegram:
    """The Bot API methods the product uses, with the real API's error shapes."""

    def __init__(
        self,
        *,
        token: str = "123456789:AAFakeTokenForTestsOnly_abcdefghijk",
        webhook_secret: str = "fake-telegram-secret",
        username: str = "languagebuddy_test_bot",
    ) -> None:
        self.token = token
        self.webhook_secret = webhook_secret
        self.username = username
        self.faults = Faults()
        self._lock = threading.Lock()
        self._message_ids = itertools.count(1000)
        self.files: dict[str, tuple[bytes, str, str]] = {}  # file_id -> (data, mime, path)
        self.sent: list[dict[str, Any]] = []  # sendMessage / sendVoice calls accepted
        self.actions: list[dict[str, Any]] = []
        self.blocked: set[str] = set()
        self.webhook: dict[str, Any] | None = None
        # Called with each accepted sendMessage / sendVoice (e.g. a benchmark's learners wait
        # on it); runs on the fake's server thread.
        self.on_sent: Callable[[dict[str, Any]], None] | None = None
        self.app = Starlette(
            routes=[
                Route("/bot{token}/{method}", self._method, methods=["GET", "POST"]),
                Route("/file/bot{token}/{path:path}", self._file, methods=["GET"]),
            ]
        )
        self.server = FakeServer(self.app)

    def start(self) -> FakeTelegram:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def settings(self) -> dict[str, Any]:
        return {
            "telegram_bot_token": self.token,
            "telegram_webhook_secret": self.webhook_secret,
            "telegram_api_base_url": self.base_url,
        }

    def headers(self) -> dict[str, str]:
        """What Telegram sends with each webhook delivery."""
        return {
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": self.webhook_secret,
        }

    def add_file(
        self,
        data: bytes,
        mime: str = "audio/ogg",
        kind: str = "voice",
        *,
        file_id: str | None = None,
    ) -> str:
        """Host a file; returns its file_id for an update (``file_id`` to choose it)."""
        file_id = file_id or "AwACAgIAAxkBAA" + secrets.token_urlsafe(24)
        extension = {"audio/ogg": "oga", "image/jpeg": "jpg", "image/png": "png"}.get(mime, "bin")
        path = f"{kind}/file_{len(self.files)}.{extension}"
        with self._lock:
            self.files[file_id] = (data, mime, path)
        return file_id

    def fail_next(
        self,
        status: int = 500,
        *,
        count: int = 1,
        retry_after: int | None = None,
        method: str = "sendMessage",
    ) -> None:
        descriptions = {
            429: f"Too Many Requests: retry after {retry_after or 1}",
            500: "Internal Server Error",
            502: "Bad Gateway",
            403: "Forbidden: bot was blocked by the user",
            400: "Bad Request: chat not found",
        }
        body: dict[str, Any] = {
            "ok": False,
            "error_code": status,
            "description": descriptions.get(status, "Error"),
        }
        if status == 429:
            body["parameters"] = {"retry_after": retry_after or 1}
        self.faults.add(status, body, count=count, path_contains=f"/{method}")

    def texts_to(self, chat_id: int | str) -> list[str]:
        with self._lock:
            return [
                m["text"]
                for m in self.sent
                if "text" in m and str(m.get("chat_id")) == str(chat_id)
            ]

    # --- handlers -------------------------------------------------------------------------

    async def _params(self, request: Request) -> dict[str, Any]:
        """Bot API parameters from the query string, JSON, urlencoded or multipart body."""
        params: dict[str, Any] = dict(request.query_params)
        content_type = request.headers.get("content-type", "")
        if request.method == "POST":
            if content_type.startswith("application/json"):
                body = json.loads(await request.body() or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("not an object")
                params.update(body)
            elif content_type.startswith(
                ("multipart/form-data", "application/x-www-form-urlencoded")
            ):
                form = await request.form()
                for key, value in form.multi_items():
                    params[key] = await value.read() if isinstance(value, UploadFile) else value
        return params

    async def _method(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return tg_error(404, "Not Found")
        method = request.path_params["method"]
        if (fault := self.faults.take(request.url.path)) is not None:
            return fault
        try:
            params = await self._params(request)
        except ValueError:
            return tg_error(400, "Bad Request: can't parse JSON object")
        handler = {
            "getMe": self._get_me,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "sendVoice": self._send_voice,
            "sendChatAction": self._send_chat_action,
            "getFile": self._get_file,
        }.get(method)
        if handler is None:
            return tg_error(404, "Not Found: method not found")
        return handler(params)

    def _get_me(self, params: dict[str, Any]) -> Response:
        return _ok(
            {
                "id": int(self.token.split(":")[0]),
                "is_bot": True,
                "first_name": "LanguageBuddy",
                "username": self.username,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    def _set_webhook(self, params: dict[str, Any]) -> Response:
        url = params.get("url")
        if not isinstance(url, str) or not url.startswith("https://"):
            return tg_error(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        secret = params.get("secret_token")
        if secret is not None and not (
            isinstance(secret, str)
            and 1 <= len(secret) <= 256
            and all(c.isalnum() or c in "_-" for c in secret)
        ):
            return tg_error(400, "Bad Request: secret token contains unallowed characters")
        with self._lock:
            self.webhook = params
        return JSONResponse({"ok": True, "result": True, "description": "Webhook was set"})

    def _get_webhook_info(self, params: dict[str, Any]) -> Response:
        hook = self.webhook or {}
        return _ok(
            {
                "url": hook.get("url", ""),
                "has_custom_certificate": False,
                "pending_update_count": 0,
                "allowed_updates": hook.get("allowed_updates", []),
            }
        )

    def _chat(self, params: dict[str, Any]) -> tuple[str | None, Response | None]:
        chat_id = params.get("chat_id")
        if chat_id in (None, ""):
            return None, tg_error(400, "Bad Request: chat_id is empty")
        if str(chat_id) in self.blocked:
            return None, tg_error(403, "Forbidden: bot was blocked by the user")
        return str(chat_id), None

    def _message(self, chat_id: str, **content: Any) -> dict[str, Any]:
        return {
            "message_id": next(self._message_ids),
            "from": {
                "id": int(self.token.split(":")[0]),
                "is_bot": True,
                "first_name": "LanguageBuddy",
                "username": self.username,
            },
            "chat": {
                "id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id,
                "type": "private",
            },
            "date": int(time.time()),
            **content,
        }

    def _send_message(self, params: dict[str, Any]) -> Response:
        chat_id, error = self._chat(params)
        if error is not None:
            return error
        if (bad := _check_placement(params)) is not None:
            return bad
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return tg_error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:
            return tg_error(400, "Bad Request: message is too long")
        if params.get("parse_mode") == "MarkdownV2" and any(
            c in text for c in "_*[]()~`>#+-=|{}.!"
        ):
            return tg_error(400, "Bad Request: can't parse entities: character is reserved")
        message = self._message(chat_id, text=text)  # type: ignore[arg-type]
        self._record_sent({**params, "_id": message["message_id"]})
        return _ok(message)

    def _send_voice(self, params: dict[str, Any]) -> Response:
        chat_id, error = self._chat(params)
        if error is not None:
            return error
        voice = params.get("voice")
        if not isinstance(voice, bytes) or not voice:
            return tg_error(400, "Bad Request: there is no voice in the request")
        file_id = "AwACAgIAAxkBAA" + secrets.token_urlsafe(24)
        content = {
            "voice": {
                "file_id": file_id,
                "file_unique_id": secrets.token_urlsafe(8),
                "duration": int(params.get("duration") or 0),
                "mime_type": "audio/ogg",
                "file_size": len(voice),
            }
        }
        message = self._message(chat_id, **content)  # type: ignore[arg-type]
        self._record_sent({**params, "_id": message["message_id"]})
        return _ok(message)

    def _record_sent(self, sent: dict[str, Any]) -> None:
        with self._lock:
            self.sent.append(sent)
        if self.on_sent is not None:
            self.on_sent(sent)

    def _send_chat_action(self, params: dict[str, Any]) -> Response:
        _, error = self._chat(params)
        if error is not None:
            return error
        if params.get("action") not in {"typing", "record_voice", "upload_voice", "upload_photo"}:
            return tg_error(400, "Bad Request: wrong parameter action in request")
        with self._lock:
            self.actions.append(params)
        return _ok(True)

    def _get_file(self, params: dict[str, Any]) -> Response:
        with self._lock:
            entry = self.files.get(str(params.get("file_id")))
        if entry is None:
            return tg_error(400, "Bad Request: invalid file_id")
        data, _, path = entry
        if len(data) > BOT_FILE_LIMIT:
            return tg_error(400, "Bad Request: file is too big")
        return _ok(
            {
                "file_id": params["file_id"],
                "file_unique_id": "AgAD" + secrets.token_urlsafe(6),
                "file_size": len(data),
                "file_path": path,
            }
        )

    async def _file(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return tg_error(404, "Not Found")
        path = request.path_params["path"]
        with self._lock:
            found = [(d, m) for d, m, p in self.files.values() if p == path]
        if not found:
            return tg_error(404, "Not Found")
        # Telegram's file server answers application/octet-stream for most files.
        return Response(found[0][0], media_type="application/octet-stream")


# --- updates as Telegram sends them --------------------------------------------------------

_update_ids = itertools.count(912345678)


def telegram_update(
    message_fields: dict[str, Any],
    *,
    update_id: int | None = None,
    chat_id: int = 123456789,
    first_name: str = "Kenji",
    language_code: str | None = "ja",
    message_id: int = 42,
) -> dict[str, Any]:
    sender: dict[str, Any] = {"id": chat_id, "is_bot": False, "first_name": first_name}
    if language_code:
        sender["language_code"] = language_code
    return {
        "update_id": update_id if update_id is not None else next(_update_ids),
        "message": {
            "message_id": message_id,
            "from": sender,
            "chat": {"id": chat_id, "first_name": first_name, "type": "private"},
            "date": int(time.time()),
            **message_fields,
        },
    }


def telegram_body(update: dict[str, Any]) -> bytes:
    """Telegram serialises UTF-8 without escapes."""
    return json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode()


def telegram_text_update(text: str, **kwargs: Any) -> bytes:
    return telegram_body(telegram_update({"text": text}, **kwargs))


def telegram_photo_update(
    file_ids: list[str], *, caption: str | None = None, **kwargs: Any
) -> bytes:
    sizes = [
        {
            "file_id": fid,
            "file_unique_id": f"AQAD{n}",
            "file_size": 1000 * (n + 1) ** 2,
            "width": 90 * (n + 1),
            "height": 67 * (n + 1),
        }
        for n, fid in enumerate(file_ids)
    ]
    fields: dict[str, Any] = {"photo": sizes}
    if caption is not None:
        fields["caption"] = caption
    return telegram_body(telegram_update(fields, **kwargs))


def telegram_voice_update(
    file_id: str, *, duration: int = 4, size: int = 12345, **kwargs: Any
) -> bytes:
    voice = {
        "file_id": file_id,
        "file_unique_id": "AgAD1",
        "duration": duration,
        "mime_type": "audio/ogg",
        "file_size": size,
    }
    return telegram_body(telegram_update({"voice": voice}, **kwargs))
