"""LINE Messaging API: signed webhooks, events, reply-then-push delivery, content download.

Replying is free but the token is single use and lives about a minute, so it is used only
while fresh; otherwise (or when LINE rejects it) the reply is pushed with an ``X-Line-Retry-Key``
derived from the caller's idempotency key, so a retried push is never delivered twice.

Voice replies need an HTTPS URL LINE can fetch (``/media/{token}``); pass ``host_media`` to
enable them. Without it a voice part is sent as its text (if any), never dropped silently.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from languagebuddy.channels.base import (
    BadPayload,
    DeliveryError,
    MediaLimits,
    VerificationError,
    VoiceFormat,
    json_object,
)
from languagebuddy.channels.http import (
    MAX_MEDIA_BYTES,
    RetryPolicy,
    call,
    download_limited,
    header,
    json_or_none,
    make_client,
    status_error,
)
from languagebuddy.channels.split import chunk, split_text
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent, Kind, Media, OutboundPart
from languagebuddy.logs import get_logger

log = get_logger(__name__)

NAME = "line"
MAX_MESSAGES_PER_CALL = 5
LOADING_SECONDS = 20  # the loading animation's length (LINE allows 5-60 s)
REPLY_TOKEN_TTL = 50.0  # LINE documents "about one minute"; leave a margin
RETRY_KEY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://languagebuddy/line/retry-key")
_UNSUPPORTED = {"sticker", "video", "file", "location"}

# (audio bytes, mime) -> public HTTPS URL that LINE can fetch, e.g. a signed /media/{token}.
HostMedia = Callable[[bytes, str], Awaitable[str]]


class InvalidReplyToken(DeliveryError):
    """LINE refused the reply token (used, expired or foreign): push instead."""


def retry_key(idempotency_key: str, batch: int = 0) -> str:
    """The X-Line-Retry-Key for one push call: the same key and batch give the same UUID."""
    name = idempotency_key if batch == 0 else f"{idempotency_key}#{batch}"
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, name))


def classify(response: httpx.Response) -> DeliveryError | None:
    """``{"message": "...", "details": [...]}``: no numeric codes, the HTTP status is the code."""
    if response.status_code < 300:  # 200, or 202 for the loading animation
        return None
    body = json_or_none(response)
    message = body.get("message") if isinstance(body, dict) else None
    message = str(message or response.reason_phrase)
    if response.status_code == 400 and "reply token" in message.lower():
        return InvalidReplyToken(f"line: {message}", retryable=False, code="invalid_reply_token")
    return status_error(NAME, response, code=str(response.status_code), message=message)


def _classify_content(response: httpx.Response) -> DeliveryError | None:
    """The data API answers 202 while audio or video content is still being prepared."""
    if response.status_code == 202:
        return DeliveryError(
            "line: content not ready", retryable=True, code="not_ready", retry_after=2.0
        )
    return classify(response)


def _classify_push(response: httpx.Response) -> DeliveryError | None:
    """A 409 means this retry key was already accepted: the messages went out."""
    return None if response.status_code == 409 else classify(response)


@dataclass
class _Message:
    part: int  # index of the OutboundPart it belongs to
    body: dict[str, Any]


class LineChannel:
    """The Channel protocol over the LINE Messaging API."""

    name = NAME
    max_text_length = 5000
    typing_interval = LOADING_SECONDS - 2.0  # renewed just before the animation ends
    voice_format: VoiceFormat = "m4a"

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        max_media_bytes: int = MAX_MEDIA_BYTES,
        host_media: HostMedia | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = (settings.line_channel_secret or "").encode()
        token = settings.line_channel_access_token or ""
        self._data_base = settings.line_data_api_base_url.rstrip("/")
        self._client = client or make_client(
            settings.line_api_base_url, headers={"Authorization": f"Bearer {token}"}
        )
        self._retry = retry or RetryPolicy()
        self._max_media = max_media_bytes
        self.media_limits = MediaLimits(image_bytes=max_media_bytes, audio_bytes=max_media_bytes)
        self._host_media = host_media
        self._clock = clock

    # --- inbound -------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """X-Line-Signature must be base64(HMAC-SHA256(channel secret, raw body))."""
        if not self._secret:
            raise VerificationError("LINE_CHANNEL_SECRET is not set", status_code=403)
        supplied = header(headers, "x-line-signature")
        if not supplied:
            raise VerificationError("missing X-Line-Signature", status_code=401)
        expected = base64.b64encode(hmac.new(self._secret, body, hashlib.sha256).digest())
        if not hmac.compare_digest(supplied.strip().encode(), expected):
            raise VerificationError("bad X-Line-Signature", status_code=403)

    def parse(self, body: bytes) -> list[InboundEvent]:
        payload = json_object(body)
        events = payload.get("events", [])
        if not isinstance(events, list):
            raise BadPayload("events is not a list")
        parsed = []
        for raw in events:
            if not isinstance(raw, dict):
                raise BadPayload("event is not an object")
            event = _parse_event(raw, received_at=self._clock())
            if event is not None:
                parsed.append(event)
        return parsed

    # --- outbound ------------------------------------------------------------------------

    async def typing(self, event: InboundEvent) -> None:
        """The loading animation (one-to-one chats only; ends when our message arrives)."""
        if event.extra.get("chat_id"):
            return
        try:
            await call(
                NAME,
                "loading",
                lambda: self._client.post(
                    "/v2/bot/chat/loading/start",
                    json={"chatId": event.user_id, "loadingSeconds": LOADING_SECONDS},
                ),
                classify,
                policy=RetryPolicy(attempts=1),
            )
        except Exception as exc:  # best effort by design
            log.debug("typing indicator failed", channel=NAME, error=type(exc).__name__)

    async def send(
        self, event: InboundEvent, parts: list[OutboundPart], *, idempotency_key: str
    ) -> list[str]:
        """Reply (fresh token) or push, five message objects per call."""
        messages = await self._messages(parts)
        sent: list[str] = [""] * len(messages)
        use_reply = self._reply_token_fresh(event)
        batches = chunk(list(range(len(messages))), MAX_MESSAGES_PER_CALL)
        for number, batch in enumerate(batches):
            bodies = [messages[i].body for i in batch]
            try:
                ids: list[str] | None = None
                if use_reply:
                    use_reply = False  # single use, whatever happens
                    try:
                        ids = await self._reply(event.reply_token or "", bodies)
                    except InvalidReplyToken:
                        log.info("reply token refused; pushing", channel=NAME)
                if ids is None:
                    ids = await self._push(event, bodies, retry_key(idempotency_key, number))
            except DeliveryError as exc:
                exc.delivered = _delivered_parts(messages, sent, len(parts))
                raise
            for index, provider_id in zip(batch, ids, strict=False):
                sent[index] = provider_id
        return _delivered_parts(messages, sent, len(parts))

    def _reply_token_fresh(self, event: InboundEvent) -> bool:
        if not event.reply_token or event.extra.get("redelivery"):
            return False
        return self._clock() - event.received_at < REPLY_TOKEN_TTL

    async def _messages(self, parts: list[OutboundPart]) -> list[_Message]:
        messages: list[_Message] = []
        for index, part in enumerate(parts):
            if part.kind == "voice" and part.audio and self._host_media is not None:
                url = await self._host_media(part.audio, part.audio_mime or "audio/mp4")
                duration_ms = max(1, round((part.duration_s or 1.0) * 1000))
                body = {"type": "audio", "originalContentUrl": url, "duration": duration_ms}
                messages.append(_Message(index, body))
                continue
            if part.kind == "voice" and not part.text:
                log.warning("voice reply needs media hosting; part skipped", channel=NAME)
            for text in split_text(part.text, self.max_text_length):
                messages.append(_Message(index, {"type": "text", "text": text}))
        return messages

    async def _reply(self, reply_token: str, bodies: list[dict[str, Any]]) -> list[str]:
        response = await call(
            NAME,
            "reply",
            lambda: self._client.post(
                "/v2/bot/message/reply", json={"replyToken": reply_token, "messages": bodies}
            ),
            classify,
            policy=self._retry,
        )
        return _sent_ids(response, len(bodies))

    async def _push(self, event: InboundEvent, bodies: list[dict[str, Any]], key: str) -> list[str]:
        target = event.extra.get("chat_id") or event.user_id
        response = await call(
            NAME,
            "push",
            lambda: self._client.post(
                "/v2/bot/message/push",
                json={"to": target, "messages": bodies},
                headers={"X-Line-Retry-Key": key},
            ),
            _classify_push,
            policy=self._retry,
        )
        return _sent_ids(response, len(bodies))

    async def download(self, event: InboundEvent) -> Media:
        """GET {data}/v2/bot/message/{id}/content (202 while audio is still transcoding)."""
        if not event.media_id:
            raise DeliveryError("line: event has no media", retryable=False, code="no_media")
        data, mime = await download_limited(
            self._client,
            f"{self._data_base}/v2/bot/message/{event.media_id}/content",
            channel=NAME,
            limit=self._max_media,
            classify=_classify_content,
        )
        return Media(data=data, mime_type=mime or event.media_mime)

    async def check(self) -> tuple[bool, str]:
        """GET /v2/bot/info: proves the channel access token (for `doctor`)."""
        try:
            response = await self._client.get("/v2/bot/info")
        except httpx.HTTPError as exc:
            return False, f"cannot reach the Messaging API ({type(exc).__name__})"
        error = classify(response)
        if error is not None:
            return False, f"Messaging API refused: HTTP {error.code} (check the access token)"
        info = json_or_none(response)
        basic = info.get("basicId") if isinstance(info, dict) else None
        return True, f"bot {basic or '?'}"

    async def aclose(self) -> None:
        await self._client.aclose()


def _sent_ids(response: httpx.Response, count: int) -> list[str]:
    body = json_or_none(response)
    sent = body.get("sentMessages") if isinstance(body, dict) else None
    ids = [str(m.get("id")) for m in sent if isinstance(m, dict)] if isinstance(sent, list) else []
    if len(ids) < count:
        request_id = response.headers.get("x-line-accepted-request-id") or response.headers.get(
            "x-line-request-id", "unknown"
        )
        ids += [f"line-request:{request_id}:{n}" for n in range(len(ids), count)]
    return ids


def _delivered_parts(messages: list[_Message], sent: list[str], part_count: int) -> list[str]:
    """Provider ids of the leading parts whose every message went out."""
    delivered: list[str] = []
    for index in range(part_count):
        ids = [sent[i] for i, m in enumerate(messages) if m.part == index]
        if any(not provider_id for provider_id in ids):
            break
        delivered.append(",".join(ids))
    return delivered


def _parse_event(raw: dict[str, Any], *, received_at: float) -> InboundEvent | None:
    if raw.get("type") != "message" or raw.get("mode") == "standby":
        return None  # follow/unfollow/postback…, or another module owns the chat
    message = raw.get("message")
    source = raw.get("source")
    if not isinstance(message, dict) or not isinstance(source, dict):
        raise BadPayload("message event without message/source")
    user_id = source.get("userId")
    message_id = message.get("id")
    if not isinstance(user_id, str) or not user_id or not isinstance(message_id, str | int):
        return None  # e.g. a group member who has not consented to share their id
    event_id = raw.get("webhookEventId")
    context = raw.get("deliveryContext") if isinstance(raw.get("deliveryContext"), dict) else {}
    chat_id = source.get("groupId") or source.get("roomId")
    fields: dict[str, Any] = {
        "channel": NAME,
        "event_id": str(event_id) if isinstance(event_id, str) and event_id else f"m{message_id}",
        "user_id": user_id,
        "message_id": str(message_id),
        "reply_token": raw.get("replyToken") if isinstance(raw.get("replyToken"), str) else None,
        "received_at": received_at,
        "extra": {
            "redelivery": bool(context.get("isRedelivery")) if isinstance(context, dict) else False,
            "chat_id": chat_id if isinstance(chat_id, str) else None,
            "timestamp": raw.get("timestamp") if isinstance(raw.get("timestamp"), int) else None,
        },
    }
    kind = message.get("type")
    if kind == "text":
        text = message.get("text")
        return InboundEvent(kind=Kind.TEXT, text=text if isinstance(text, str) else "", **fields)
    if kind == "image":
        return InboundEvent(
            kind=Kind.IMAGE, media_id=str(message_id), media_mime="image/jpeg", **fields
        )
    if kind == "audio":
        duration = message.get("duration")
        return InboundEvent(
            kind=Kind.VOICE,
            media_id=str(message_id),
            media_mime="audio/mp4",  # LINE audio content is M4A
            media_duration_s=duration / 1000 if isinstance(duration, int | float) else None,
            **fields,
        )
    return InboundEvent(
        kind=Kind.UNSUPPORTED,
        unsupported_type=kind if isinstance(kind, str) and kind in _UNSUPPORTED else "unknown",
        **fields,
    )
