"""WhatsApp Cloud API: webhook verification and parsing, replies, typing, media.

Learners are keyed by ``wa_id`` (their number without "+") when Meta sends it, else by the
business-scoped user id (BSUID) that replaces it for users with a WhatsApp username.

Not every message is a turn: reactions, deletions (``revoke``), edits and system notices become
events the pipeline handles without a reply. In a group (``group_id``) the learner is the sender
and only a command or a reply to the buddy is kept; the rest of the group's talk is dropped here,
before anything is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import time
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
    RetryPolicy,
    call,
    download_limited,
    header,
    json_or_none,
    make_client,
    parse_retry_after,
    refuse_oversize,
    status_error,
)
from languagebuddy.channels.split import split_text
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent, Kind, Media, OutboundPart
from languagebuddy.logs import get_logger

log = get_logger(__name__)

NAME = "whatsapp"
UPLOAD_KEPT_SECONDS = 29 * 86_400
# Meta's media limits (Cloud API "supported media types"): images 5 MB, audio 16 MB, documents
# 100 MB. A photo sent as a document is an image under the document limit (and ours).
LIMITS = MediaLimits(
    image_bytes=min(5 * MB, OUR_IMAGE_BYTES), audio_bytes=min(16 * MB, OUR_AUDIO_BYTES)
)
DOCUMENT_IMAGE_BYTES = min(100 * MB, OUR_IMAGE_BYTES)
# Graph error codes that mean "slow down" even when the HTTP status is 400.
_RATE_LIMIT_CODES = {4, 80007, 130429, 131048, 131056}
_RETRYABLE_CODES = _RATE_LIMIT_CODES | {1, 2, 131000, 131016}
_UNSUPPORTED_TYPES = {
    "sticker",
    "video",
    "document",
    "location",
    "contacts",
    "order",
    "unsupported",
    "unknown",
}


def _is_wa_id(value: str | None) -> bool:
    return bool(value) and value.isdigit()  # type: ignore[union-attr]


def classify(response: httpx.Response) -> DeliveryError | None:
    """Graph API errors: the ``error.code`` decides, the HTTP status breaks ties."""
    if response.status_code < 300:
        return None
    body = json_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    message = str(error.get("message") or response.reason_phrase)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if isinstance(code, int) and code in _RETRYABLE_CODES:
        return DeliveryError(
            f"whatsapp: {message[:200]}", retryable=True, code=str(code), retry_after=retry_after
        )
    return status_error(
        NAME,
        response,
        code=str(code) if code is not None else None,
        message=message,
        retry_after=retry_after,
    )


class WhatsAppChannel:
    """The Channel protocol over the WhatsApp Cloud API (Graph API)."""

    name = NAME
    max_text_length = 4096
    typing_interval = 20.0  # Meta drops the indicator after 25 s or at our reply
    voice_format: VoiceFormat = "ogg_opus"
    single_reply = False
    marks_photo_sets = False  # a burst of photos is separate messages

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        media_limits: MediaLimits = LIMITS,
    ) -> None:
        self._token = settings.whatsapp_access_token or ""
        self._phone_number_id = settings.whatsapp_phone_number_id or ""
        self._app_secret = (settings.whatsapp_app_secret or "").encode()
        self._verify_token = settings.whatsapp_verify_token or ""
        self._client = client or make_client(
            settings.whatsapp_api_base_url,
            headers={"Authorization": f"Bearer {self._token}"},
        )
        self._retry = retry or RetryPolicy()
        self.media_limits = media_limits

    # --- inbound -------------------------------------------------------------------------

    def hub_challenge(self, params: Mapping[str, str]) -> str | None:
        """The challenge to echo for Meta's subscription check, or None to refuse (403)."""
        mode = params.get("hub.mode")
        token = params.get("hub.verify_token") or ""
        challenge = params.get("hub.challenge")
        if mode != "subscribe" or challenge is None or not self._verify_token:
            return None
        if not hmac.compare_digest(token.encode(), self._verify_token.encode()):
            return None
        return challenge

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """X-Hub-Signature-256 must be the hex HMAC-SHA256 of the raw body under the app secret."""
        if not self._app_secret:
            raise VerificationError("WHATSAPP_APP_SECRET is not set", status_code=403)
        supplied = header(headers, "x-hub-signature-256")
        if not supplied:
            raise VerificationError("missing X-Hub-Signature-256", status_code=401)
        expected = "sha256=" + hmac.new(self._app_secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(supplied.strip().lower().encode(), expected.encode()):
            raise VerificationError("bad X-Hub-Signature-256", status_code=403)

    def parse(self, body: bytes) -> list[InboundEvent]:
        payload = json_object(body)
        entries = payload.get("entry", [])
        if not isinstance(entries, list):
            raise BadPayload("entry is not a list")
        events: list[InboundEvent] = []
        for entry in entries:
            changes = entry.get("changes", []) if isinstance(entry, dict) else None
            if not isinstance(changes, list):
                raise BadPayload("entry.changes is not a list")
            for change in changes:
                if not isinstance(change, dict):
                    raise BadPayload("change is not an object")
                value = change.get("value")
                if change.get("field") != "messages" or not isinstance(value, dict):
                    continue
                events.extend(_parse_value(value))
        return events

    async def addressed(self, event: InboundEvent) -> bool | None:
        """A group message kept by ``parse`` is a command or a reply: the pipeline decides."""
        return None

    # --- outbound ------------------------------------------------------------------------

    async def typing(self, event: InboundEvent, *, voice: bool = False) -> None:
        """Mark the learner's message read and show "typing…" (up to 25 s or until we reply;
        the Cloud API has only the text indicator, also while a voice reply is made)."""
        if not event.message_id or event.kind is Kind.STATUS:
            return
        body = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": event.message_id,
            "typing_indicator": {"type": "text"},
        }
        try:
            await call(
                NAME,
                "typing",
                lambda: self._client.post(f"/{self._phone_number_id}/messages", json=body),
                classify,
                policy=RetryPolicy(attempts=1),
            )
        except Exception as exc:  # best effort by design
            log.debug("typing indicator failed", channel=NAME, error=type(exc).__name__)

    async def send(
        self, event: InboundEvent, parts: list[OutboundPart], *, idempotency_key: str
    ) -> list[str]:
        """Send each part in order. WhatsApp has no idempotency key; the caller's outbox
        remembers which parts went out (``DeliveryError.delivered``)."""
        del idempotency_key
        ids: list[str] = []
        for part in parts:
            try:
                if part.kind == "voice" and (part.audio or part.media_ref):
                    ids.append(await self._send_voice(event, part))
                    continue
                texts = split_text(part.text, self.max_text_length)
                sent = [await self._send_text(event, text) for text in texts]
                ids.append(sent[0] if len(sent) == 1 else ",".join(sent) if sent else "")
            except DeliveryError as exc:
                exc.delivered = ids
                raise
        return ids

    def _recipient(self, event: InboundEvent) -> dict[str, Any]:
        if event.chat_id:
            # A group: answer there, quoting the learner's message so it is clearly theirs.
            target: dict[str, Any] = {"recipient_type": "group", "to": event.chat_id}
            if event.message_id:
                target["context"] = {"message_id": event.message_id}
            return target
        if _is_wa_id(event.user_id):
            return {"recipient_type": "individual", "to": event.user_id}
        return {"recipient_type": "individual", "recipient": event.user_id}

    async def _post_message(self, body: dict[str, Any], method: str) -> str:
        response = await call(
            NAME,
            method,
            lambda: self._client.post(f"/{self._phone_number_id}/messages", json=body),
            classify,
            policy=self._retry,
        )
        data = json_or_none(response)
        try:
            return str(data["messages"][0]["id"])  # type: ignore[index]
        except (KeyError, IndexError, TypeError) as exc:
            raise DeliveryError(
                "whatsapp: send answered without a message id", retryable=False, code="bad_reply"
            ) from exc

    async def _send_text(self, event: InboundEvent, text: str) -> str:
        body = {
            "messaging_product": "whatsapp",
            **self._recipient(event),
            "type": "text",
            "text": {"preview_url": False, "body": text},
        }
        return await self._post_message(body, "messages")

    async def upload_voice(self, event: InboundEvent, part: OutboundPart) -> MediaRef | None:
        """Upload the note; Meta keeps uploaded media for 30 days (we count 29)."""
        media_id = await self.upload(part.audio or b"", part.audio_mime or "audio/ogg")
        return MediaRef(media_id, time.time() + UPLOAD_KEPT_SECONDS)

    async def _send_voice(self, event: InboundEvent, part: OutboundPart) -> str:
        """Send by media id (OGG/Opus renders as a voice note), uploading first unless the
        part was uploaded already."""
        media_id = part.media_ref or await self.upload(
            part.audio or b"", part.audio_mime or "audio/ogg"
        )
        body = {
            "messaging_product": "whatsapp",
            **self._recipient(event),
            "type": "audio",
            "audio": {"id": media_id},
        }
        return await self._post_message(body, "messages")

    async def upload(self, data: bytes, mime: str) -> str:
        """POST /{PHONE_NUMBER_ID}/media (multipart); returns the media id."""
        extension = {"audio/ogg": "ogg", "audio/mpeg": "mp3", "audio/mp4": "m4a"}.get(
            mime.split(";")[0], "bin"
        )
        response = await call(
            NAME,
            "media",
            lambda: self._client.post(
                f"/{self._phone_number_id}/media",
                data={"messaging_product": "whatsapp", "type": mime},
                files={"file": (f"reply.{extension}", data, mime)},
            ),
            classify,
            policy=self._retry,
        )
        data_json = json_or_none(response)
        if not isinstance(data_json, dict) or "id" not in data_json:
            raise DeliveryError("whatsapp: upload answered without an id", retryable=False)
        return str(data_json["id"])

    def _limit(self, event: InboundEvent) -> int:
        if event.kind is Kind.IMAGE and event.extra.get("document"):
            return DOCUMENT_IMAGE_BYTES
        return self.media_limits.for_kind(event.kind)

    async def download(self, event: InboundEvent) -> Media:
        """GET /{MEDIA_ID} for a short-lived URL, then GET the URL (both with the token). The
        lookup states the file's size: an oversize file is refused before its bytes are asked
        for (and while streaming, should the lookup be wrong)."""
        if not event.media_id:
            raise DeliveryError("whatsapp: event has no media", retryable=False, code="no_media")
        limit = self._limit(event)
        refuse_oversize(event.media_size, limit)
        response = await call(
            NAME,
            "media_info",
            lambda: self._client.get(f"/{event.media_id}"),
            classify,
            policy=self._retry,
        )
        info = json_or_none(response)
        if not isinstance(info, dict) or not isinstance(info.get("url"), str):
            raise DeliveryError("whatsapp: media info without url", retryable=False)
        refuse_oversize(info.get("file_size"), limit)
        data, mime = await download_limited(
            self._client, info["url"], channel=NAME, limit=limit, classify=classify
        )
        return Media(data=data, mime_type=info.get("mime_type") or mime or event.media_mime)

    async def check(self) -> tuple[bool, str]:
        """GET /{PHONE_NUMBER_ID}: proves the token and the number id (for `doctor`)."""
        try:
            response = await self._client.get(f"/{self._phone_number_id}")
        except httpx.HTTPError as exc:
            return False, f"cannot reach the Graph API ({type(exc).__name__})"
        error = classify(response)
        if error is not None:
            return False, f"Graph API refused: code {error.code} ({error})"
        info = json_or_none(response)
        name = info.get("verified_name") if isinstance(info, dict) else None
        number = info.get("display_phone_number") if isinstance(info, dict) else None
        return True, f"phone number {number or '?'} ({name or 'unnamed'})"

    async def aclose(self) -> None:
        await self._client.aclose()


# --- parsing helpers (pure functions, unit-tested with the fake's webhook builders) ---------


def _contacts(value: dict[str, Any]) -> list[dict[str, Any]]:
    contacts = value.get("contacts") or []
    return [c for c in contacts if isinstance(c, dict)] if isinstance(contacts, list) else []


def _identity(
    contacts: list[dict[str, Any]], wa_id: str | None, bsuid: str | None
) -> tuple[str | None, str | None, str | None]:
    """(user_id, phone_e164, display_name) from the sender ids and the contacts array."""
    match: dict[str, Any] | None = None
    for contact in contacts:
        if (wa_id and contact.get("wa_id") == wa_id) or (bsuid and contact.get("user_id") == bsuid):
            match = contact
            break
    if match is None and len(contacts) == 1:
        match = contacts[0]
    if match is not None:
        wa_id = wa_id or _str(match.get("wa_id"))
        bsuid = bsuid or _str(match.get("user_id"))
    profile = match.get("profile") if match else None
    name = _str(profile.get("name")) if isinstance(profile, dict) else None
    if _is_wa_id(wa_id):
        return wa_id, f"+{wa_id}", name
    return bsuid or wa_id, None, name


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value)
    return text or None


def _parse_value(value: dict[str, Any]) -> list[InboundEvent]:
    contacts = _contacts(value)
    events: list[InboundEvent] = []
    messages = value.get("messages") or []
    statuses = value.get("statuses") or []
    if not isinstance(messages, list) or not isinstance(statuses, list):
        raise BadPayload("messages/statuses is not a list")
    for message in messages:
        if not isinstance(message, dict):
            raise BadPayload("message is not an object")
        event = _parse_message(message, contacts)
        if event is not None:
            events.append(event)
    for status in statuses:
        if not isinstance(status, dict):
            raise BadPayload("status is not an object")
        event = _parse_status(status, contacts)
        if event is not None:
            events.append(event)
    return events


def _parse_message(message: dict[str, Any], contacts: list[dict[str, Any]]) -> InboundEvent | None:
    message_id = _str(message.get("id"))
    user_id, phone, name = _identity(
        contacts, _str(message.get("from")), _str(message.get("from_user_id"))
    )
    if not message_id or not user_id:
        return None
    kind_name = _str(message.get("type")) or "unknown"
    content = _dict(message.get(kind_name))
    context = _dict(message.get("context"))
    fields: dict[str, Any] = {
        "channel": NAME,
        "event_id": message_id,
        "message_id": message_id,
        "user_id": user_id,
        "phone_e164": phone,
        "display_name": name,
        "sent_at": _timestamp(message.get("timestamp")),
        "chat_id": _str(message.get("group_id")),
        "reply_to_message_id": _str(context.get("id")),
        "forwarded": bool(context.get("forwarded") or context.get("frequently_forwarded")),
    }
    if kind_name == "reaction":  # an empty or missing emoji takes the reaction back
        return _act_on(Kind.REACTION, content.get("message_id"), fields, text=content.get("emoji"))
    if kind_name == "revoke":
        return _act_on(Kind.DELETE, content.get("original_message_id"), fields)
    if kind_name == "edit":
        edited = _dict(content.get("message"))
        inner = _dict(edited.get(_str(edited.get("type")) or ""))
        return _act_on(
            Kind.EDIT,
            content.get("original_message_id"),
            fields,
            text=inner.get("body"),
            caption=inner.get("caption"),
        )
    if kind_name == "system":
        return _system_notice(_dict(message.get("system")), fields)
    if kind_name in _SILENT_TYPES or (kind_name == "interactive" and "nfm_reply" in content):
        return None
    event = _turn(kind_name, content, fields)
    if event.chat_id and not _may_be_for_the_buddy(event):
        return None  # group talk between its members: not stored, not answered
    return event


# Sent without the learner saying anything: the chat was opened (a welcome request), a form the
# buddy never sent was submitted.
_SILENT_TYPES = {"request_welcome"}


def _turn(kind_name: str, content: dict[str, Any], fields: dict[str, Any]) -> InboundEvent:
    mime = _str(content.get("mime_type"))
    if kind_name == "text":
        return InboundEvent(kind=Kind.TEXT, text=_str(content.get("body")) or "", **fields)
    if kind_name == "button":  # a quick-reply button of a template: its label is the answer
        return InboundEvent(kind=Kind.TEXT, text=_str(content.get("text")) or "", **fields)
    if kind_name == "interactive":
        reply = content.get("button_reply") or content.get("list_reply")
        if isinstance(reply, dict) and _str(reply.get("title")):
            return InboundEvent(kind=Kind.TEXT, text=_str(reply.get("title")), **fields)
    if kind_name == "image" or (kind_name == "document" and (mime or "").startswith("image/")):
        return InboundEvent(
            kind=Kind.IMAGE,
            media_id=_str(content.get("id")),
            media_mime=mime,
            media_size=_size(content.get("file_size")),
            caption=_str(content.get("caption")),
            extra={"document": kind_name == "document"},
            **fields,
        )
    if kind_name == "audio":
        return InboundEvent(
            kind=Kind.VOICE,
            media_id=_str(content.get("id")),
            media_mime=mime,
            extra={"voice": bool(content.get("voice"))},
            **fields,
        )
    return InboundEvent(
        kind=Kind.UNSUPPORTED,
        unsupported_type=kind_name if kind_name in _UNSUPPORTED_TYPES else "unknown",
        **fields,
    )


def _may_be_for_the_buddy(event: InboundEvent) -> bool:
    """In a group, only a command or a reply can be for the buddy (which one, the pipeline
    decides from its log); WhatsApp sends no mention data in the webhook."""
    text = (event.text or "").lstrip()
    return text.startswith("/") or event.reply_to_message_id is not None


def _act_on(kind: Kind, target: Any, fields: dict[str, Any], **content: Any) -> InboundEvent | None:
    """A reaction, deletion or edit: an event about another message, never a turn."""
    target_id = _str(target)
    if not target_id:
        return None
    values = {key: _str(value) for key, value in content.items()}
    return InboundEvent(
        kind=kind, target_message_id=target_id, **{**fields, "reply_to_message_id": None}, **values
    )


def _system_notice(system: dict[str, Any], fields: dict[str, Any]) -> InboundEvent | None:
    """A number change moves the learner to their new id; other notices (a new security code,
    ``customer_identity_changed``) need nothing from us."""
    notice = _str(system.get("type"))
    if notice in ("user_changed_number", "customer_changed_number"):
        new_wa_id = _str(system.get("wa_id")) or _str(system.get("new_wa_id"))
        new_bsuid = _str(system.get("user_id"))
        phone = f"+{new_wa_id}" if _is_wa_id(new_wa_id) else None
        # A learner keyed by their number follows it; one keyed by the BSUID keeps that key
        # (only a new BSUID moves them) and the new number becomes their phone.
        if _is_wa_id(fields["user_id"]):
            new_id = new_wa_id if _is_wa_id(new_wa_id) else new_bsuid
        else:
            new_id = new_bsuid
        if new_id == fields["user_id"]:
            new_id = None
        if not new_id and not phone:
            return None
        return InboundEvent(
            kind=Kind.IDENTITY, new_user_id=new_id, **{**fields, "phone_e164": phone}
        )
    if notice == "user_changed_user_id":
        new_bsuid = _str(system.get("user_id"))
        if not new_bsuid or _is_wa_id(fields["user_id"]) or new_bsuid == fields["user_id"]:
            return None  # keyed by the number, which did not change
        return InboundEvent(kind=Kind.IDENTITY, new_user_id=new_bsuid, **fields)
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _timestamp(value: Any) -> float | None:
    text = _str(value)
    return float(text) if text and text.isdigit() else None


def _size(value: Any) -> int | None:
    text = _str(value)
    return int(text) if text and text.isdigit() else None


def _parse_status(status: dict[str, Any], contacts: list[dict[str, Any]]) -> InboundEvent | None:
    message_id = _str(status.get("id"))
    state = _str(status.get("status"))
    user_id, phone, _ = _identity(
        contacts, _str(status.get("recipient_id")), _str(status.get("recipient_user_id"))
    )
    if not message_id or not state:
        return None
    error_text = None
    errors = status.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        error_text = f"{errors[0].get('code')}: {errors[0].get('title') or ''}".strip()
    return InboundEvent(
        channel=NAME,
        event_id=f"status:{message_id}:{state}",
        user_id=user_id or "unknown",
        kind=Kind.STATUS,
        message_id=message_id,
        status=state,
        status_error=error_text,
        phone_e164=phone,
    )
