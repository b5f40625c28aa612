"""Telegram Bot API: secret-token webhooks, updates to events, plain-text replies, files.

Replies are sent without ``parse_mode``: model output is untrusted text and MarkdownV2 would
reject (400) any unescaped punctuation.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import httpx

from languagebuddy.channels.base import (
    BadPayload,
    DeliveryError,
    MediaLimits,
    MediaRef,
    VerificationError,
    VoiceFormat,
    json_object,
)
from languagebuddy.channels.http import (
    MAX_MEDIA_BYTES,
    MediaTooLarge,
    RetryPolicy,
    call,
    download_limited,
    header,
    json_or_none,
    make_client,
    status_error,
)
from languagebuddy.channels.split import split_text
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent, Kind, Media, OutboundPart
from languagebuddy.logs import get_logger

log = get_logger(__name__)

NAME = "telegram"
BOT_FILE_LIMIT = 20 * 1024 * 1024  # getFile refuses bigger files
# Message fields that carry content we cannot use, in the order Telegram documents them.
_UNSUPPORTED = (
    "animation",
    "sticker",
    "video",
    "video_note",
    "document",
    "contact",
    "dice",
    "game",
    "poll",
    "venue",
    "location",
    "story",
    "paid_media",
    "invoice",
)


def classify(response: httpx.Response) -> DeliveryError | None:
    """``{"ok": false, "error_code", "description", "parameters": {"retry_after"}}``."""
    body = json_or_none(response)
    if response.status_code < 300 and isinstance(body, dict) and body.get("ok") is True:
        return None
    if response.status_code < 300 and not isinstance(body, dict):
        return None  # file downloads: raw bytes
    body = body if isinstance(body, dict) else {}
    params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    retry_after = params.get("retry_after") if isinstance(params, dict) else None
    code = body.get("error_code", response.status_code)
    return status_error(
        NAME,
        response,
        code=str(code),
        message=str(body.get("description") or response.reason_phrase),
        retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
    )


class TelegramChannel:
    """The Channel protocol over the Telegram Bot API."""

    name = NAME
    max_text_length = 4096
    typing_interval = 4.5  # a chat action lasts 5 s
    voice_format: VoiceFormat = "ogg_opus"
    single_reply = False

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        max_media_bytes: int = min(MAX_MEDIA_BYTES, BOT_FILE_LIMIT),
    ) -> None:
        self._token = settings.telegram_bot_token or ""
        self._secret = (settings.telegram_webhook_secret or "").encode()
        # The token is part of every path; keep it out of the base URL so logs never show it.
        self._client = client or make_client(settings.telegram_api_base_url)
        self._retry = retry or RetryPolicy()
        self._max_media = max_media_bytes
        self.media_limits = MediaLimits(image_bytes=max_media_bytes, audio_bytes=max_media_bytes)

    # --- inbound -------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """X-Telegram-Bot-Api-Secret-Token must equal TELEGRAM_WEBHOOK_SECRET."""
        if not self._secret:
            raise VerificationError("TELEGRAM_WEBHOOK_SECRET is not set", status_code=403)
        supplied = header(headers, "x-telegram-bot-api-secret-token")
        if not supplied:
            raise VerificationError("missing secret token", status_code=401)
        if not hmac.compare_digest(supplied.encode(), self._secret):
            raise VerificationError("bad secret token", status_code=403)

    def parse(self, body: bytes) -> list[InboundEvent]:
        update = json_object(body)
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise BadPayload("update_id missing")
        message = update.get("message")
        if message is None:
            return []  # edited messages, callbacks…: not subscribed, nothing to answer
        if not isinstance(message, dict):
            raise BadPayload("message is not an object")
        event = _parse_message(update_id, message)
        return [event] if event else []

    # --- outbound ------------------------------------------------------------------------

    def _path(self, method: str) -> str:
        return f"/bot{self._token}/{method}"

    async def _api(self, method: str, policy: RetryPolicy | None = None, **kwargs: Any) -> Any:
        response = await call(
            NAME,
            method,
            lambda: self._client.post(self._path(method), **kwargs),
            classify,
            policy=policy or self._retry,
        )
        payload = json_or_none(response)
        return payload.get("result") if isinstance(payload, dict) else None

    async def typing(self, event: InboundEvent, *, voice: bool = False) -> None:
        """sendChatAction lasts 5 s or until our next message; "recording voice…" while a
        voice reply is being made."""
        action = "record_voice" if voice else "typing"
        try:
            await self._api(
                "sendChatAction",
                RetryPolicy(attempts=1),
                json={"chat_id": _chat_id(event.user_id), "action": action},
            )
        except Exception as exc:  # best effort by design
            log.debug("typing indicator failed", channel=NAME, error=type(exc).__name__)

    async def send(
        self, event: InboundEvent, parts: list[OutboundPart], *, idempotency_key: str
    ) -> list[str]:
        """Send parts in order; the Bot API has no idempotency key (the outbox dedupes)."""
        del idempotency_key
        ids: list[str] = []
        for part in parts:
            try:
                if part.kind == "voice" and part.audio:
                    ids.append(await self._send_voice(event, part))
                    continue
                sent = [
                    await self._send_text(event, text)
                    for text in split_text(part.text, self.max_text_length)
                ]
                ids.append(",".join(sent))
            except DeliveryError as exc:
                exc.delivered = ids
                raise
        return ids

    async def _send_text(self, event: InboundEvent, text: str) -> str:
        body: dict[str, Any] = {"chat_id": _chat_id(event.user_id), "text": text}
        if event.extra.get("chat_type") not in (None, "private") and event.message_id:
            # In a group, quote the learner's message so the reply is clearly theirs.
            body["reply_parameters"] = {
                "message_id": int(event.message_id),
                "allow_sending_without_reply": True,
            }
        result = await self._api("sendMessage", json=body)
        return _message_id(result)

    async def upload_voice(self, event: InboundEvent, part: OutboundPart) -> MediaRef | None:
        """sendVoice carries the file itself: nothing to upload ahead."""
        return None

    async def _send_voice(self, event: InboundEvent, part: OutboundPart) -> str:
        """sendVoice multipart; OGG/Opus shows as a voice message with a waveform."""
        data: dict[str, str] = {"chat_id": str(event.user_id)}
        if part.duration_s:
            data["duration"] = str(max(1, round(part.duration_s)))
        if part.text:
            data["caption"] = part.text[:1024]
        mime = part.audio_mime or "audio/ogg"
        extension = "mp3" if "mpeg" in mime else "m4a" if "mp4" in mime else "ogg"
        result = await self._api(
            "sendVoice",
            data=data,
            files={"voice": (f"reply.{extension}", part.audio or b"", mime)},
        )
        return _message_id(result)

    async def download(self, event: InboundEvent) -> Media:
        """getFile for a path, then GET {base}/file/bot<TOKEN>/<path> (bots: 20 MB at most)."""
        if not event.media_id:
            raise DeliveryError("telegram: event has no media", retryable=False, code="no_media")
        if event.media_size and event.media_size > self._max_media:
            raise MediaTooLarge(self._max_media)
        try:
            result = await self._api("getFile", json={"file_id": event.media_id})
        except DeliveryError as exc:
            if "too big" in str(exc):
                raise MediaTooLarge(self._max_media) from exc
            raise
        path = result.get("file_path") if isinstance(result, dict) else None
        if not isinstance(path, str) or not path:
            raise DeliveryError("telegram: getFile gave no file_path", retryable=False)
        data, mime = await download_limited(
            self._client,
            f"/file/bot{self._token}/{path}",
            channel=NAME,
            limit=self._max_media,
            classify=classify,
        )
        if mime in (None, "application/octet-stream"):
            mime = event.media_mime or mime
        return Media(data=data, mime_type=mime, filename=path.rsplit("/", 1)[-1])

    async def set_webhook(self, url: str, *, allowed_updates: list[str]) -> str:
        """setWebhook with our secret; returns Telegram's description."""
        body = {
            "url": url,
            "secret_token": self._secret.decode(),
            "allowed_updates": allowed_updates,
            "drop_pending_updates": False,
        }
        response = await call(
            NAME,
            "setWebhook",
            lambda: self._client.post(self._path("setWebhook"), json=body),
            classify,
            policy=self._retry,
        )
        payload = json_or_none(response)
        description = payload.get("description") if isinstance(payload, dict) else None
        return str(description or "Webhook was set")

    async def check(self) -> tuple[bool, str]:
        """getMe: proves the token (for `doctor`)."""
        try:
            response = await self._client.post(self._path("getMe"))
        except httpx.HTTPError as exc:
            return False, f"cannot reach the Bot API ({type(exc).__name__})"
        error = classify(response)
        if error is not None:
            return False, f"Bot API refused: {error.code} (check TELEGRAM_BOT_TOKEN)"
        payload = json_or_none(response)
        me = payload.get("result") if isinstance(payload, dict) else None
        username = me.get("username") if isinstance(me, dict) else None
        return True, f"bot @{username or '?'}"

    async def aclose(self) -> None:
        await self._client.aclose()


def _chat_id(user_id: str) -> int | str:
    try:
        return int(user_id)
    except ValueError:
        return user_id


def _message_id(result: Any) -> str:
    if isinstance(result, dict) and "message_id" in result:
        return str(result["message_id"])
    raise DeliveryError("telegram: reply without message_id", retryable=False, code="bad_reply")


def _largest_photo(sizes: list[Any]) -> dict[str, Any] | None:
    """The biggest size a bot may download (Telegram lists sizes smallest first)."""
    candidates = [s for s in sizes if isinstance(s, dict) and s.get("file_id")]
    if not candidates:
        return None

    def area(size: dict[str, Any]) -> int:
        width, height = size.get("width"), size.get("height")
        if isinstance(width, int) and isinstance(height, int):
            return width * height
        return _int(size.get("file_size")) or 0

    fitting = [s for s in candidates if (_int(s.get("file_size")) or 0) <= BOT_FILE_LIMIT]
    return max(fitting or candidates, key=area)


def _parse_message(update_id: int, message: dict[str, Any]) -> InboundEvent | None:
    chat = message.get("chat")
    sender = message.get("from") if isinstance(message.get("from"), dict) else {}
    if not isinstance(chat, dict) or not isinstance(chat.get("id"), int | str):
        raise BadPayload("message.chat.id missing")
    names = [sender.get("first_name"), sender.get("last_name")]
    display = " ".join(str(n) for n in names if isinstance(n, str) and n) or None
    language = sender.get("language_code")
    fields: dict[str, Any] = {
        "channel": NAME,
        "event_id": str(update_id),
        "user_id": str(chat["id"]),
        "message_id": str(mid) if (mid := _int(message.get("message_id"))) is not None else None,
        "display_name": display,
        "language_hint": language if isinstance(language, str) else None,
        "extra": {"chat_type": chat.get("type") if isinstance(chat.get("type"), str) else None},
    }
    caption = message.get("caption") if isinstance(message.get("caption"), str) else None
    if isinstance(message.get("text"), str):
        return InboundEvent(kind=Kind.TEXT, text=message["text"], **fields)
    photo = message.get("photo")
    if isinstance(photo, list) and (best := _largest_photo(photo)):
        return InboundEvent(
            kind=Kind.IMAGE,
            media_id=str(best["file_id"]),
            media_mime="image/jpeg",
            media_size=_int(best.get("file_size")),
            caption=caption,
            **fields,
        )
    for key in ("voice", "audio"):
        media = message.get(key)
        if isinstance(media, dict) and media.get("file_id"):
            return _media_event(Kind.VOICE, media, caption, fields)
    document = message.get("document")
    if "animation" not in message and isinstance(document, dict) and document.get("file_id"):
        mime = str(document.get("mime_type") or "")
        if mime.startswith("image/"):
            return _media_event(Kind.IMAGE, document, caption, fields)
        if mime.startswith("audio/"):
            return _media_event(Kind.VOICE, document, caption, fields)
    for key in _UNSUPPORTED:
        if key in message:
            return InboundEvent(kind=Kind.UNSUPPORTED, unsupported_type=key, **fields)
    return None  # service messages (pins, joins…): nothing the learner said


def _media_event(
    kind: Kind, media: dict[str, Any], caption: str | None, fields: dict[str, Any]
) -> InboundEvent:
    duration = media.get("duration")
    return InboundEvent(
        kind=kind,
        media_id=str(media["file_id"]),
        media_mime=media.get("mime_type") if isinstance(media.get("mime_type"), str) else None,
        media_size=_int(media.get("file_size")),
        media_duration_s=float(duration) if isinstance(duration, int | float) else None,
        caption=caption,
        **fields,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
