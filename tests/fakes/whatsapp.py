"""A protocol-faithful WhatsApp Cloud API (Graph API) peer, and webhook builders that sign and
serialise exactly as Meta does (\\uXXXX escapes, escaped slashes, HMAC over the raw bytes).

Usage::

    with FakeWhatsApp() as wa:
        settings = Settings(database_url=..., **wa.settings())
        media_id = wa.add_media(b"...", "image/jpeg")
        wa.fail_next(status=429, retry_after=1)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.faults import Faults
from tests.fakes.server import FakeServer

VERSION = "v23.0"
AUDIO_TYPES = {"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"}


def graph_error(
    code: int,
    message: str,
    *,
    details: str | None = None,
    subcode: int | None = None,
    kind: str = "OAuthException",
) -> dict[str, Any]:
    """A Graph API error body as Meta shapes it."""
    error: dict[str, Any] = {
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": "A" + secrets.token_urlsafe(16),
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return {"error": error}


PERMANENT_ERRORS: dict[int, tuple[int, str, str]] = {
    131047: (
        400,
        "(#131047) Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    ),
    131026: (400, "(#131026) Message Undeliverable", "Message Undeliverable."),
    100: (400, "(#100) Invalid parameter", "Invalid parameter"),
    190: (401, "Invalid OAuth access token - Cannot parse access token", ""),
}


class FakeWhatsApp:
    """Graph API endpoints used by the product, with Bearer auth as Meta checks it."""

    def __init__(
        self,
        *,
        access_token: str = "EAAG-fake-access-token",
        phone_number_id: str = "106540352242922",
        app_secret: str = "fake-app-secret",
        verify_token: str = "fake-verify-token",
    ) -> None:
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.faults = Faults()
        self._lock = threading.Lock()
        self.media: dict[str, tuple[bytes, str]] = {}
        self.uploads: dict[str, tuple[bytes, str]] = {}
        self.sent: list[dict[str, Any]] = []
        self.read_receipts: list[dict[str, Any]] = []
        self.closed_windows: set[str] = set()
        self.upload_delay = 0.0  # seconds before a media upload is answered (benchmarks)
        self.app = Starlette(
            routes=[
                Route(f"/{VERSION}/{{phone_id}}/messages", self._messages, methods=["POST"]),
                Route(f"/{VERSION}/{{phone_id}}/media", self._upload, methods=["POST"]),
                Route(f"/{VERSION}/{{object_id}}", self._get_object, methods=["GET"]),
                Route("/whatsapp_business/attachments/", self._lookaside, methods=["GET"]),
            ]
        )
        self.server = FakeServer(self.app)

    # --- lifecycle and configuration ----------------------------------------------------

    def start(self) -> FakeWhatsApp:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeWhatsApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"{self.server.base_url}/{VERSION}"

    def settings(self) -> dict[str, Any]:
        """Keyword overrides for ``Settings`` pointing the product at this fake."""
        return {
            "whatsapp_access_token": self.access_token,
            "whatsapp_phone_number_id": self.phone_number_id,
            "whatsapp_app_secret": self.app_secret,
            "whatsapp_verify_token": self.verify_token,
            "whatsapp_api_base_url": self.base_url,
        }

    def add_media(self, data: bytes, mime: str = "image/jpeg", media_id: str | None = None) -> str:
        """Host bytes the product can fetch with GET /{MEDIA_ID} then GET url."""
        media_id = media_id or str(secrets.randbelow(10**15) + 10**15)
        with self._lock:
            self.media[media_id] = (data, mime)
        return media_id

    def fail_next(
        self,
        status: int = 500,
        *,
        count: int = 1,
        code: int | None = None,
        retry_after: float | None = None,
        path_contains: str = "/messages",
        after: int = 0,
    ) -> None:
        """The next ``count`` matching calls (after ``after`` good ones) answer ``status``
        with a Graph error body."""
        if code is None:
            code = {429: 130429, 500: 131000, 503: 131016}.get(status, 1)
        message = {130429: "(#130429) Rate limit hit", 131000: "Something went wrong"}.get(
            code, f"(#{code}) Error"
        )
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self.faults.add(
            status,
            graph_error(code, message),
            count=count,
            headers=headers,
            path_contains=path_contains,
            after=after,
        )

    def permanent_error_next(self, code: int = 131047, *, count: int = 1, after: int = 0) -> None:
        status, message, details = PERMANENT_ERRORS[code]
        self.faults.add(
            status,
            graph_error(code, message, details=details or None),
            count=count,
            path_contains="/messages",
            after=after,
        )

    def texts_to(self, recipient: str) -> list[str]:
        with self._lock:
            return [
                m["text"]["body"]
                for m in self.sent
                if m.get("type") == "text" and recipient in (m.get("to"), m.get("recipient"))
            ]

    # --- handlers -------------------------------------------------------------------------

    def _auth_error(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.access_token}":
            return JSONResponse(
                graph_error(190, "Invalid OAuth access token - Cannot parse access token"),
                status_code=401,
                headers={"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token"'},
            )
        return None

    def _wrong_object(self, object_id: str) -> Response:
        return JSONResponse(
            graph_error(
                100,
                f"Unsupported get request. Object with ID '{object_id}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation.",
                subcode=33,
                kind="GraphMethodException",
            ),
            status_code=400,
        )

    async def _get_object(self, request: Request) -> Response:
        if (denied := self._auth_error(request)) is not None:
            return denied
        if (fault := self.faults.take(request.url.path)) is not None:
            return fault
        object_id = request.path_params["object_id"]
        if object_id == self.phone_number_id:
            return JSONResponse(
                {
                    "verified_name": "LanguageBuddy Test",
                    "code_verification_status": "VERIFIED",
                    "display_phone_number": "+1 555-000-1111",
                    "quality_rating": "GREEN",
                    "id": self.phone_number_id,
                }
            )
        with self._lock:
            media = self.media.get(object_id) or self.uploads.get(object_id)
        if media is None:
            return self._wrong_object(object_id)
        data, mime = media
        url = (
            f"{self.server.base_url}/whatsapp_business/attachments/?mid={object_id}"
            f"&ext={int(time.time())}&hash={secrets.token_urlsafe(8)}"
        )
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "url": url,
                "mime_type": mime,
                "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": str(len(data)),
                "id": object_id,
            }
        )

    async def _lookaside(self, request: Request) -> Response:
        if (denied := self._auth_error(request)) is not None:
            return denied
        with self._lock:
            media = self.media.get(request.query_params.get("mid", ""))
        if media is None:
            return Response(b"", status_code=404)
        return Response(media[0], media_type=media[1])

    async def _messages(self, request: Request) -> Response:
        if (denied := self._auth_error(request)) is not None:
            return denied
        if request.path_params["phone_id"] != self.phone_number_id:
            return self._wrong_object(request.path_params["phone_id"])
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse(
                graph_error(100, "(#100) Invalid parameter", details="body is not JSON"), 400
            )
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return JSONResponse(
                graph_error(100, "(#100) The parameter messaging_product is required."), 400
            )
        if body.get("status") == "read":
            if not str(body.get("message_id", "")).startswith("wamid."):
                return JSONResponse(graph_error(100, "(#100) Invalid parameter"), 400)
            with self._lock:
                self.read_receipts.append(body)
            return JSONResponse({"success": True})
        if (fault := self.faults.take(request.url.path)) is not None:
            return fault
        return self._accept_message(body)

    def _accept_message(self, body: dict[str, Any]) -> Response:
        to = body.get("to") or body.get("recipient")
        if not isinstance(to, str) or not to:
            return JSONResponse(graph_error(100, "(#100) The parameter to is required."), 400)
        if body.get("recipient_type", "individual") not in ("individual", "group"):
            return JSONResponse(graph_error(100, "(#100) Invalid parameter recipient_type"), 400)
        context = body.get("context")
        if context is not None and not str((context or {}).get("message_id", "")).startswith(
            "wamid."
        ):
            return JSONResponse(graph_error(100, "(#100) Invalid parameter context"), 400)
        kind = body.get("type", "text")
        if kind == "text":
            text = (body.get("text") or {}).get("body")
            if not isinstance(text, str) or not text.strip():
                return JSONResponse(
                    graph_error(100, "(#100) The parameter text['body'] is required."), 400
                )
            if len(text) > 4096:
                return JSONResponse(
                    graph_error(100, "(#100) Param text['body'] must be at most 4096 characters"),
                    400,
                )
        elif kind == "audio":
            media_id = (body.get("audio") or {}).get("id")
            with self._lock:
                known = media_id in self.uploads
            if not known:
                return JSONResponse(
                    graph_error(131053, "(#131053) Media upload error", details="unknown id"), 400
                )
        else:
            return JSONResponse(graph_error(100, "(#100) Invalid parameter"), 400)
        if to.lstrip("+") in self.closed_windows:
            status, message, details = PERMANENT_ERRORS[131047]
            return JSONResponse(graph_error(131047, message, details=details), status)
        message_id = "wamid." + secrets.token_urlsafe(24)
        with self._lock:
            self.sent.append({**body, "_id": message_id})
        contact = (
            {"input": to, "wa_id": to.lstrip("+")}
            if to.lstrip("+").isdigit()
            else {
                "input": to,
                "user_id": to,
            }
        )
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [contact],
                "messages": [{"id": message_id}],
            }
        )

    async def _upload(self, request: Request) -> Response:
        if self.upload_delay:
            await asyncio.sleep(self.upload_delay)
        if (denied := self._auth_error(request)) is not None:
            return denied
        if (fault := self.faults.take(request.url.path)) is not None:
            return fault
        form = await request.form()
        upload = form.get("file")
        mime = str(form.get("type") or "")
        if form.get("messaging_product") != "whatsapp" or upload is None or isinstance(upload, str):
            return JSONResponse(
                graph_error(100, "(#100) The parameter messaging_product is required."), 400
            )
        if mime.split(";")[0] not in AUDIO_TYPES | {"image/jpeg", "image/png"}:
            return JSONResponse(
                graph_error(131053, "(#131053) Media upload error", details="unsupported type"),
                400,
            )
        data = await upload.read()
        if len(data) > 16 * 1024 * 1024:
            return JSONResponse(graph_error(131053, "(#131053) Media upload error"), 400)
        media_id = str(secrets.randbelow(10**15) + 10**15)
        with self._lock:
            self.uploads[media_id] = (data, mime)
        return JSONResponse({"id": media_id})


# --- webhooks as Meta sends them -----------------------------------------------------------


def meta_json(payload: Any) -> bytes:
    """Serialise like Meta: compact, non-ASCII as \\uXXXX, "/" as "\\/"."""
    return (
        json.dumps(payload, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()
    )


def sign_whatsapp(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def whatsapp_headers(body: bytes, secret: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": sign_whatsapp(body, secret)}


def new_wamid() -> str:
    return "wamid.HBgN" + secrets.token_urlsafe(30)


def whatsapp_envelope(
    value: dict[str, Any], *, phone_number_id: str = "106540352242922"
) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
        **value,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }


def _contact(wa_id: str | None, name: str | None, bsuid: str | None) -> dict[str, Any]:
    contact: dict[str, Any] = {}
    if name is not None:
        contact["profile"] = {"name": name}
    if wa_id is not None:
        contact["wa_id"] = wa_id
    if bsuid is not None:
        contact["user_id"] = bsuid
    return contact


def whatsapp_message(
    kind: str,
    content: dict[str, Any] | None,
    *,
    wa_id: str | None = "5511987654321",
    bsuid: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """One ``messages[]`` item."""
    message: dict[str, Any] = {
        "id": message_id or new_wamid(),
        "timestamp": str(int(time.time())),
        "type": kind,
    }
    if wa_id is not None:
        message["from"] = wa_id
    elif bsuid is not None:
        message["from_user_id"] = bsuid
    if content is not None:
        message[kind] = content
    return message


def whatsapp_messages_webhook(
    messages: list[dict[str, Any]],
    *,
    wa_id: str | None = "5511987654321",
    name: str | None = "Ana",
    bsuid: str | None = None,
    phone_number_id: str = "106540352242922",
) -> bytes:
    value = {"contacts": [_contact(wa_id, name, bsuid)], "messages": messages}
    return meta_json(whatsapp_envelope(value, phone_number_id=phone_number_id))


def whatsapp_text_webhook(
    text: str,
    *,
    wa_id: str | None = "5511987654321",
    name: str | None = "Ana",
    bsuid: str | None = None,
    message_id: str | None = None,
) -> bytes:
    message = whatsapp_message(
        "text", {"body": text}, wa_id=wa_id, bsuid=bsuid, message_id=message_id
    )
    return whatsapp_messages_webhook([message], wa_id=wa_id, name=name, bsuid=bsuid)


def whatsapp_image_webhook(
    media_id: str,
    *,
    caption: str | None = None,
    mime: str = "image/jpeg",
    wa_id: str = "5511987654321",
    message_id: str | None = None,
) -> bytes:
    content: dict[str, Any] = {"id": media_id, "mime_type": mime, "sha256": "bm90IGNoZWNrZWQ="}
    if caption is not None:
        content["caption"] = caption
    message = whatsapp_message("image", content, wa_id=wa_id, message_id=message_id)
    return whatsapp_messages_webhook([message], wa_id=wa_id)


def whatsapp_audio_webhook(
    media_id: str,
    *,
    voice: bool = True,
    mime: str = "audio/ogg; codecs=opus",
    wa_id: str = "5511987654321",
    message_id: str | None = None,
) -> bytes:
    content = {
        "id": media_id,
        "mime_type": mime,
        "sha256": "bm90IGNoZWNrZWQ=",
        "voice": voice,
    }
    message = whatsapp_message("audio", content, wa_id=wa_id, message_id=message_id)
    return whatsapp_messages_webhook([message], wa_id=wa_id)


def whatsapp_unsupported_webhook(
    kind: str = "sticker", *, wa_id: str = "5511987654321", message_id: str | None = None
) -> bytes:
    contents: dict[str, dict[str, Any]] = {
        "sticker": {"id": "1", "mime_type": "image/webp", "animated": False},
        "video": {"id": "2", "mime_type": "video/mp4"},
        "location": {"latitude": -23.5, "longitude": -46.6},
        "reaction": {"message_id": "wamid.x", "emoji": "👍"},
    }
    message = whatsapp_message(kind, contents.get(kind, {}), wa_id=wa_id, message_id=message_id)
    return whatsapp_messages_webhook([message], wa_id=wa_id)


def whatsapp_status_webhook(
    message_id: str,
    status: str = "delivered",
    *,
    recipient_id: str = "5511987654321",
    error_code: int | None = None,
) -> bytes:
    item: dict[str, Any] = {
        "id": message_id,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient_id,
    }
    if error_code is not None:
        item["errors"] = [
            {"code": error_code, "title": PERMANENT_ERRORS.get(error_code, (0, "Error", ""))[1]}
        ]
    value = {"contacts": [_contact(recipient_id, None, None)], "statuses": [item]}
    return meta_json(whatsapp_envelope(value))
