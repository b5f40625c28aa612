"""Telegram Bot API: secret-token webhooks, updates to events, plain-text replies, files.

Replies are sent without ``parse_mode``: model output is untrusted text and MarkdownV2 would
reject (400) any unescaped punctuation.

In groups, supergroups and forum topics the learner is the sender (``from.id``), never the chat,
and the reply goes to the chat (into the topic, quoting the learner's message). Only what may be
for the buddy is kept: a command, a mention, a reply to one of its messages. Anonymous admins,
messages on behalf of a channel and channel posts have no learner and are dropped.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import httpx

from languagebuddy.channels.base import (
    MB,
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
    MediaTooLarge,
    RetryPolicy,
    call,
    download_limited,
    header,
    json_or_none,
    make_client,
    refuse_oversize,
    status_error,
)
from languagebuddy.channels.split import split_text
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent, Kind, Media, OutboundPart
from languagebuddy.logs import get_logger

log = get_logger(__name__)

NAME = "telegram"
BOT_FILE_LIMIT = 20 * MB  # getFile refuses bigger files, whatever their kind
LIMITS = MediaLimits(
    image_bytes=min(BOT_FILE_LIMIT, OUR_IMAGE_BYTES),
    audio_bytes=min(BOT_FILE_LIMIT, OUR_AUDIO_BYTES),
)
# Senders that are no person: @GroupAnonymousBot (an anonymous admin), the Telegram service
# account (channel posts forwarded into a discussion group) and @Channel_Bot (on behalf of a
# channel). Telegram puts them in ``from`` for old clients; ``sender_chat`` is the real sender.
NO_LEARNER_IDS = frozenset({1087968824, 777000, 136817688})
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
    marks_photo_sets = True  # media_group_id

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        media_limits: MediaLimits = LIMITS,
    ) -> None:
        self._token = settings.telegram_bot_token or ""
        self._secret = (settings.telegram_webhook_secret or "").encode()
        # The token is part of every path; keep it out of the base URL so logs never show it.
        self._client = client or make_client(settings.telegram_api_base_url)
        self._retry = retry or RetryPolicy()
        self.media_limits = media_limits
        # The bot's own user id is the token's first part: replies to it and text mentions of
        # it are recognised in parse. Its @username needs getMe, asked once when first needed.
        prefix = self._token.split(":", 1)[0]
        self._bot_id = int(prefix) if prefix.isdigit() else None
        self._username: str | None = None

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
        """One update is one event at most. Messages, their edits and reactions count; channel
        posts, callbacks, membership changes, polls, inline queries… have no learner turn."""
        update = json_object(body)
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise BadPayload("update_id missing")
        for key, parse in (
            ("message", _parse_message),
            ("edited_message", _parse_edit),
            ("message_reaction", _parse_reaction),
        ):
            value = update.get(key)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise BadPayload(f"{key} is not an object")
            event = parse(update_id, value, self._bot_id)
            return [event] if event else []
        return []

    async def addressed(self, event: InboundEvent) -> bool | None:
        """A command with a bot's @name, or a mention by @username: compared with our own
        username (getMe, once per process)."""
        command_for = event.extra.get("command_for")
        mentions = event.extra.get("mentions") or []
        if not command_for and not mentions:
            return None
        username = await self._own_username()
        if command_for:
            return command_for == username
        return True if username in mentions else None

    async def _own_username(self) -> str:
        if self._username is None:
            me = await self._api("getMe")
            name = me.get("username") if isinstance(me, dict) else None
            if not isinstance(name, str) or not name:
                raise DeliveryError("telegram: getMe without username", retryable=True)
            self._username = name.lower()
        return self._username

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
                "sendChatAction", RetryPolicy(attempts=1), json={**_target(event), "action": action}
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
        body: dict[str, Any] = {**_target(event), "text": text}
        if event.chat_id and event.message_id and event.message_id.isdigit():
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
        data: dict[str, str] = {key: str(value) for key, value in _target(event).items()}
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
        limit = self.media_limits.for_kind(event.kind)
        refuse_oversize(event.media_size, limit)  # the update states the size
        try:
            result = await self._api("getFile", json={"file_id": event.media_id})
        except DeliveryError as exc:
            if "too big" in str(exc):
                raise MediaTooLarge(limit) from exc
            raise
        path = result.get("file_path") if isinstance(result, dict) else None
        if not isinstance(path, str) or not path:
            raise DeliveryError("telegram: getFile gave no file_path", retryable=False)
        refuse_oversize(result.get("file_size"), limit)
        data, mime = await download_limited(
            self._client,
            f"/file/bot{self._token}/{path}",
            channel=NAME,
            limit=limit,
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


def _chat_id(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def _target(event: InboundEvent) -> dict[str, Any]:
    """Where a reply goes: the group (and its forum topic) or the learner's private chat."""
    target: dict[str, Any] = {"chat_id": _chat_id(event.chat_id or event.user_id)}
    thread = event.extra.get("thread_id")
    if event.chat_id and isinstance(thread, str) and thread.isdigit():
        target["message_thread_id"] = int(thread)
    return target


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


def _conversation(
    update_id: int, message: dict[str, Any], bot_id: int | None
) -> dict[str, Any] | None:
    """The event fields every message-like update shares, or None when no learner sent it."""
    chat = message.get("chat")
    if not isinstance(chat, dict) or not isinstance(chat.get("id"), int | str):
        raise BadPayload("message.chat.id missing")
    chat_type = chat.get("type") if isinstance(chat.get("type"), str) else None
    sender = message.get("from") if isinstance(message.get("from"), dict) else {}
    sender_id = _int(sender.get("id"))
    if chat_type == "private" and sender_id is None:
        sender_id = _int(chat["id"])
    if (
        chat_type == "channel"
        or message.get("sender_chat") is not None
        or message.get("is_automatic_forward")
        or sender_id is None
        or sender.get("is_bot") is True
        or sender_id in NO_LEARNER_IDS
    ):
        return None
    names = [sender.get("first_name"), sender.get("last_name")]
    language = sender.get("language_code")
    group = chat_type not in (None, "private")
    extra: dict[str, Any] = {"chat_type": chat_type}
    thread = _int(message.get("message_thread_id"))
    if group and thread is not None and message.get("is_topic_message") is True:
        extra["thread_id"] = str(thread)
    date = message.get("edit_date") or message.get("date")
    return {
        "channel": NAME,
        "event_id": str(update_id),
        "user_id": str(sender_id),
        "message_id": str(mid) if (mid := _int(message.get("message_id"))) is not None else None,
        "display_name": " ".join(str(n) for n in names if isinstance(n, str) and n) or None,
        "language_hint": language if isinstance(language, str) else None,
        "sent_at": float(date) if isinstance(date, int) and not isinstance(date, bool) else None,
        "chat_id": str(chat["id"]) if group else None,
        "extra": extra,
    }


def _parse_message(
    update_id: int, message: dict[str, Any], bot_id: int | None
) -> InboundEvent | None:
    fields = _conversation(update_id, message, bot_id)
    if fields is None:
        return None
    text = message.get("text") if isinstance(message.get("text"), str) else None
    caption = message.get("caption") if isinstance(message.get("caption"), str) else None
    reply = message.get("reply_to_message")
    # In a forum every message of a topic "replies" to the topic's opening service message.
    if isinstance(reply, dict) and "forum_topic_created" not in reply:
        replied = _int(reply.get("message_id"))
        fields["reply_to_message_id"] = str(replied) if replied is not None else None
    fields["forwarded"] = "forward_origin" in message or "forward_date" in message
    text, addressing = _addressing(message, text if text is not None else caption, bot_id)
    if fields["chat_id"] and addressing is None:
        return None  # group talk between its members: not stored, not answered
    if fields["chat_id"]:
        fields["addressed"] = addressing.pop("addressed", None) or None
        fields["extra"].update(addressing)
    if isinstance(message.get("text"), str):
        return InboundEvent(kind=Kind.TEXT, text=text, **fields)
    caption = text if caption is not None else None
    album = message.get("media_group_id")
    if isinstance(album, str) and album:
        fields["album_id"] = album
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
    return None  # service messages (pins, joins, topics…): nothing the learner said


def _addressing(
    message: dict[str, Any], text: str | None, bot_id: int | None
) -> tuple[str | None, dict[str, Any] | None]:
    """The text with a leading command's ``@botname`` taken off, and what tells whether a
    group message is for the buddy: ``addressed`` (a reply to it, a text mention of it),
    ``command_for`` (the @name after a command), ``mentions`` (@usernames). None: nothing in
    the message can be for the buddy."""
    found: dict[str, Any] = {}
    reply = message.get("reply_to_message")
    if isinstance(reply, dict) and "forum_topic_created" not in reply:
        author = reply.get("from") if isinstance(reply.get("from"), dict) else {}
        if bot_id is not None and _int(author.get("id")) == bot_id:
            found["addressed"] = True
    entities = message.get("entities") or message.get("caption_entities") or []
    mentions: list[str] = []
    command = False
    for entity in entities if isinstance(entities, list) and text else []:
        if not isinstance(entity, dict):
            continue
        kind, offset = entity.get("type"), _int(entity.get("offset"))
        if kind == "text_mention":
            user = entity.get("user") if isinstance(entity.get("user"), dict) else {}
            if bot_id is not None and _int(user.get("id")) == bot_id:
                found["addressed"] = True
        elif kind == "mention" and (handle := _entity_text(text or "", entity)):
            mentions.append(handle.lstrip("@").lower())
        elif kind == "bot_command" and offset == 0 and (token := _entity_text(text or "", entity)):
            command = True
            name, _, target = token.partition("@")
            if target:
                found["command_for"] = target.lower()
                text = name + (text or "")[len(token) :]
    if mentions:
        found["mentions"] = mentions
    if not found and not command:
        return text, None
    return text, found


def _entity_text(text: str, entity: dict[str, Any]) -> str | None:
    """The entity's substring: Telegram counts offsets in UTF-16 code units."""
    offset, length = _int(entity.get("offset")), _int(entity.get("length"))
    if offset is None or length is None or offset < 0 or length <= 0:
        return None
    units = text.encode("utf-16-le")
    piece = units[offset * 2 : (offset + length) * 2]
    return piece.decode("utf-16-le", errors="ignore") or None


def _parse_edit(update_id: int, message: dict[str, Any], bot_id: int | None) -> InboundEvent | None:
    """An edited message: the new text or caption of ``target_message_id``."""
    fields = _conversation(update_id, message, bot_id)
    if fields is None or fields["message_id"] is None:
        return None
    raw = message.get("text") if isinstance(message.get("text"), str) else message.get("caption")
    text, addressing = _addressing(message, raw if isinstance(raw, str) else None, bot_id)
    if fields["chat_id"] and addressing is None:
        return None  # an edit of group talk that was never for the buddy
    content = "text" if isinstance(message.get("text"), str) else "caption"
    return InboundEvent(
        kind=Kind.EDIT, target_message_id=fields["message_id"], **{content: text}, **fields
    )


def _parse_reaction(
    update_id: int, reaction: dict[str, Any], bot_id: int | None
) -> InboundEvent | None:
    """``message_reaction``: a person's reactions on a message changed (an empty list: taken
    back). Anonymous reactions (``actor_chat``) have no learner."""
    user = reaction.get("user")
    if not isinstance(user, dict):
        return None
    fields = _conversation(update_id, {**reaction, "from": user}, bot_id)
    target = _int(reaction.get("message_id"))
    if fields is None or target is None:
        return None
    emojis = []
    for item in reaction.get("new_reaction") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "emoji" and isinstance(item.get("emoji"), str):
            emojis.append(item["emoji"])
        elif item.get("type") in ("custom_emoji", "paid"):
            emojis.append("⭐" if item.get("type") == "paid" else "(custom emoji)")
    return InboundEvent(
        kind=Kind.REACTION,
        target_message_id=str(target),
        text="".join(emojis) or None,
        **{**fields, "message_id": None},
    )


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
