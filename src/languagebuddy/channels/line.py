"""LINE Messaging API: signed webhooks, events, reply-then-push delivery, content download.

Replying is free but the token is single use and lives about a minute, so it is used only
while fresh; otherwise (or when LINE rejects it) the reply is pushed with an ``X-Line-Retry-Key``
derived from the caller's idempotency key, so a retried push is never delivered twice.

Voice replies need an HTTPS URL LINE can fetch (``/media/{token}``); pass ``host_media`` to
enable them. Without it a voice part is sent as its text (if any), never dropped silently.

Media from an external provider (``contentProvider.type = "external"``) is not served by the
content API: it is fetched from its ``originalContentUrl`` (https, a public host, no LINE token,
the same size limits). In groups and rooms the learner is the sender and only a mention of the
buddy, a quote of one of its messages or a command is kept; the rest is dropped before storing.
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
    OUR_AUDIO_BYTES,
    OUR_IMAGE_BYTES,
    BadPayload,
    DeliveryError,
    MediaLimits,
    MediaRef,
    VerificationError,
    VoiceFormat,
    json_object,
)
from languagebuddy.channels.http import (
    RetryPolicy,
    call,
    download_external,
    download_limited,
    header,
    json_or_none,
    make_client,
    make_external_client,
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
# A hosted URL lives 15 minutes; reuse one for a retried send only while LINE has time to
# fetch it.
HOSTED_URL_TRUSTED_SECONDS = 10 * 60
RETRY_KEY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://languagebuddy/line/retry-key")
_UNSUPPORTED = {"sticker", "video", "file", "location"}
# LINE documents no size limit for content it receives (its own image and audio messages take
# 10 MB and 200 MB): ours apply.
LIMITS = MediaLimits(image_bytes=OUR_IMAGE_BYTES, audio_bytes=OUR_AUDIO_BYTES)

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
    single_reply = True  # the reply token: one free reply per event, pushes are billed
    marks_photo_sets = True  # imageSet

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        media_limits: MediaLimits = LIMITS,
        host_media: HostMedia | None = None,
        clock: Callable[[], float] = time.time,
        external_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._secret = (settings.line_channel_secret or "").encode()
        token = settings.line_channel_access_token or ""
        self._data_base = settings.line_data_api_base_url.rstrip("/")
        self._client = client or make_client(
            settings.line_api_base_url, headers={"Authorization": f"Bearer {token}"}
        )
        self._retry = retry or RetryPolicy()
        self.media_limits = media_limits
        self._host_media = host_media
        self._clock = clock
        # Third-party hosts get a client of their own: the LINE token must never reach them.
        self._external = external_client or make_external_client()
        self._external_http_hosts = settings.external_http_hosts

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

    async def addressed(self, event: InboundEvent) -> bool | None:
        """Mentions of the buddy are marked ``isSelf`` in the webhook: nothing left to ask."""
        return None

    # --- outbound ------------------------------------------------------------------------

    async def typing(self, event: InboundEvent, *, voice: bool = False) -> None:
        """The loading animation (one-to-one chats only; ends when our message arrives)."""
        if event.chat_id:
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
        """Reply (fresh token) or push, five message objects per call. In a group the first
        text quotes the learner's message, so it is clear whom the buddy answers."""
        messages = await self._messages(parts)
        quote = event.extra.get("quote_token")
        if event.chat_id and isinstance(quote, str) and quote:
            first = next((m for m in messages if m.body["type"] == "text"), None)
            if first is not None:
                first.body["quoteToken"] = quote
        sent: list[str] = [""] * len(messages)
        # Replies are free and there is one per event: keep it for the reply itself.
        use_reply = self._reply_token_fresh(event) and not all(p.interim for p in parts)
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
            if part.kind == "voice" and (
                part.media_ref or (part.audio and self._host_media is not None)
            ):
                url = part.media_ref or await self._host(part)
                duration_ms = max(1, round((part.duration_s or 1.0) * 1000))
                body = {"type": "audio", "originalContentUrl": url, "duration": duration_ms}
                messages.append(_Message(index, body))
                continue
            if part.kind == "voice" and not part.text:
                log.warning("voice reply needs media hosting; part skipped", channel=NAME)
            for text in split_text(part.text, self.max_text_length):
                messages.append(_Message(index, {"type": "text", "text": text}))
        return messages

    async def upload_voice(self, event: InboundEvent, part: OutboundPart) -> MediaRef | None:
        """Publish the note at our signed /media URL, which LINE fetches (M4A, HTTPS)."""
        if self._host_media is None or not part.audio:
            return None
        url = await self._host(part)
        return MediaRef(url, self._clock() + HOSTED_URL_TRUSTED_SECONDS)

    async def _host(self, part: OutboundPart) -> str:
        assert self._host_media is not None
        return await self._host_media(part.audio or b"", part.audio_mime or "audio/mp4")

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
        target = event.chat_id or event.user_id
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
        """GET {data}/v2/bot/message/{id}/content (202 while audio is still transcoding), or
        the provider's own URL for external content."""
        if not event.media_id:
            raise DeliveryError("line: event has no media", retryable=False, code="no_media")
        limit = self.media_limits.for_kind(event.kind)
        external = event.extra.get("content_url")
        if isinstance(external, str):
            data, mime = await download_external(
                self._external,
                external,
                channel=NAME,
                limit=limit,
                http_hosts=self._external_http_hosts,
            )
        else:
            data, mime = await download_limited(
                self._client,
                f"{self._data_base}/v2/bot/message/{event.media_id}/content",
                channel=NAME,
                limit=limit,
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
        await self._external.aclose()


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
    kind = raw.get("type")
    if kind not in ("message", "unsend", "messageEdited") or raw.get("mode") == "standby":
        return None  # follow, join, postback, beacon…: no learner turn; or another module's chat
    source = raw.get("source")
    if not isinstance(source, dict):
        raise BadPayload(f"{kind} event without source")
    fields = _fields(raw, source, received_at)
    if kind == "unsend":
        unsend = raw.get("unsend") if isinstance(raw.get("unsend"), dict) else {}
        target = unsend.get("messageId")
        if fields is None or not isinstance(target, str | int) or isinstance(target, bool):
            return None
        fields["event_id"] = fields["event_id"] or f"u{target}"
        return InboundEvent(kind=Kind.DELETE, target_message_id=str(target), **fields)
    message = raw.get("message")
    if not isinstance(message, dict):
        raise BadPayload(f"{kind} event without message")
    message_id = message.get("id")
    if fields is None or not isinstance(message_id, str | int) or isinstance(message_id, bool):
        return None  # e.g. a group member who has not consented to share their id
    fields["message_id"] = str(message_id)
    if not fields["event_id"]:
        edit = f":{fields['sent_at']}" if kind == "messageEdited" else ""
        fields["event_id"] = f"{'e' if edit else 'm'}{message_id}{edit}"
    if isinstance(message.get("quoteToken"), str):
        fields["extra"]["quote_token"] = message["quoteToken"]
    text = message.get("text") if isinstance(message.get("text"), str) else None
    if kind == "messageEdited":  # edits arrive in any order: ``sent_at`` says which is last
        if message.get("type") != "text" or text is None:
            return None
        return InboundEvent(kind=Kind.EDIT, target_message_id=str(message_id), text=text, **fields)
    quoted = message.get("quotedMessageId")
    fields["reply_to_message_id"] = str(quoted) if isinstance(quoted, str | int) else None
    if fields["chat_id"]:
        addressed = _mentions_the_buddy(message)
        if not (addressed or fields["reply_to_message_id"] or (text or "").startswith("/")):
            return None  # group talk between its members: not stored, not answered
        fields["addressed"] = addressed or None
    return _message_event(message, text, fields)


def _fields(
    raw: dict[str, Any], source: dict[str, Any], received_at: float
) -> dict[str, Any] | None:
    """What every event of a learner shares; None when the source names no learner."""
    user_id = source.get("userId")
    if not isinstance(user_id, str) or not user_id:
        return None
    event_id = raw.get("webhookEventId")
    context = raw.get("deliveryContext") if isinstance(raw.get("deliveryContext"), dict) else {}
    chat_id = source.get("groupId") if source.get("type") == "group" else source.get("roomId")
    timestamp = raw.get("timestamp")
    return {
        "channel": NAME,
        # Without a webhookEventId (old deliveries), see _fallback_id.
        "event_id": str(event_id) if isinstance(event_id, str) and event_id else "",
        "user_id": user_id,
        "reply_token": raw.get("replyToken") if isinstance(raw.get("replyToken"), str) else None,
        "received_at": received_at,
        "sent_at": timestamp / 1000
        if isinstance(timestamp, int | float) and not isinstance(timestamp, bool)
        else None,
        "chat_id": chat_id if isinstance(chat_id, str) and chat_id else None,
        "extra": {
            "redelivery": bool(context.get("isRedelivery")) if isinstance(context, dict) else False
        },
    }


def _mentions_the_buddy(message: dict[str, Any]) -> bool:
    mention = message.get("mention") if isinstance(message.get("mention"), dict) else {}
    mentionees = mention.get("mentionees") if isinstance(mention, dict) else None
    return any(
        isinstance(m, dict) and m.get("isSelf") is True
        for m in (mentionees if isinstance(mentionees, list) else [])
    )


def _message_event(
    message: dict[str, Any], text: str | None, fields: dict[str, Any]
) -> InboundEvent:
    kind = message.get("type")
    message_id = fields["message_id"]
    if kind == "text":
        return InboundEvent(kind=Kind.TEXT, text=text or "", **fields)
    if kind in ("image", "audio"):
        provider = message.get("contentProvider")
        provider = provider if isinstance(provider, dict) else {}
        url = provider.get("originalContentUrl")
        if provider.get("type") == "external" and isinstance(url, str) and url:
            fields["extra"]["content_url"] = url
    if kind == "image":
        image_set = message.get("imageSet") if isinstance(message.get("imageSet"), dict) else {}
        set_id = image_set.get("id") if isinstance(image_set, dict) else None
        if isinstance(set_id, str) and set_id:
            fields["album_id"] = set_id
            fields["album_index"] = _positive(image_set.get("index"))
            fields["album_size"] = _positive(image_set.get("total"))
        return InboundEvent(kind=Kind.IMAGE, media_id=message_id, media_mime="image/jpeg", **fields)
    if kind == "audio":
        duration = message.get("duration")
        return InboundEvent(
            kind=Kind.VOICE,
            media_id=message_id,
            media_mime="audio/mp4",  # LINE audio content is M4A
            media_duration_s=duration / 1000
            if isinstance(duration, int | float) and not isinstance(duration, bool)
            else None,
            **fields,
        )
    return InboundEvent(
        kind=Kind.UNSUPPORTED,
        unsupported_type=kind if isinstance(kind, str) and kind in _UNSUPPORTED else "unknown",
        **fields,
    )


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
