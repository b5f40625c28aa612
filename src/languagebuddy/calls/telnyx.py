"""Telnyx Call Control v2: webhook verification and parsing, and the REST commands we send.

Webhooks are signed with ed25519 over ``"{telnyx-timestamp}|{raw body}"``; a signature that
does not verify with ``TELNYX_PUBLIC_KEY``, or a timestamp more than 5 minutes away, is refused
before anything is read from the body. Commands are ``POST {TELNYX_API_BASE_URL}/calls/
{call_control_id}/actions/<action>`` with the API key as Bearer token, and a ``command_id``
derived from the call so that a redelivered webhook can never make Telnyx act twice. "Call has
already ended" (422 / 90018) means a hang-up has nothing left to do: success.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from languagebuddy.channels.base import BadPayload, VerificationError, json_object
from languagebuddy.config import Settings
from languagebuddy.errors import DeliveryError
from languagebuddy.logs import get_logger, redact_id
from languagebuddy.metrics import PLATFORM_CALLS

if TYPE_CHECKING:
    from languagebuddy.calls.service import CallService

log = get_logger(__name__)

PROVIDER = "telnyx"
TIMESTAMP_TOLERANCE_SECONDS = 300
CALL_ENDED = "90018"
# Any fixed namespace: command ids are uuid5(call_control_id + action), stable across retries.
_COMMAND_NAMESPACE = uuid.UUID("6f1c2d4e-8a7b-4c3d-9e2f-1a0b9c8d7e6f")
# Telnyx's text-to-speech language codes for the phrase languages we speak.
_SPEAK_LANGUAGES = {
    "en": "en-US",
    "es": "es-ES",
    "fr": "fr-FR",
    "de": "de-DE",
    "it": "it-IT",
    "pt": "pt-BR",
    "ja": "ja-JP",
    "zh": "cmn-CN",
    "ko": "ko-KR",
}


@dataclass(frozen=True)
class TelnyxEvent:
    """One Call Control webhook, reduced to what we act on."""

    event_type: str
    event_id: str
    call_control_id: str
    call_session_id: str | None
    direction: str | None
    from_number: str | None
    to_number: str | None
    hangup_cause: str | None = None
    hangup_source: str | None = None
    occurred_at: str | None = None


def command_id(call_control_id: str, action: str) -> str:
    return str(uuid.uuid5(_COMMAND_NAMESPACE, f"{call_control_id}|{action}"))


class TelnyxWebhooks:
    """Verifies and parses Call Control webhooks with the account's public key."""

    def __init__(self, public_key_b64: str | None) -> None:
        self._key: VerifyKey | None = None
        if public_key_b64:
            try:
                raw = base64.b64decode(public_key_b64, validate=True)
                self._key = VerifyKey(raw)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("TELNYX_PUBLIC_KEY is not a base64 ed25519 public key") from exc

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> None:
        if self._key is None:
            raise VerificationError("TELNYX_PUBLIC_KEY is not set: webhooks cannot be verified")
        signature = headers.get("telnyx-signature-ed25519")
        timestamp = headers.get("telnyx-timestamp")
        if not signature or not timestamp:
            raise VerificationError("missing telnyx-signature-ed25519 or telnyx-timestamp")
        try:
            sent_at = int(timestamp)
            raw_signature = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error):
            raise VerificationError("malformed signature headers") from None
        if abs((now if now is not None else time.time()) - sent_at) > TIMESTAMP_TOLERANCE_SECONDS:
            raise VerificationError("timestamp outside the 5-minute window")
        try:
            self._key.verify(timestamp.encode() + b"|" + body, raw_signature)
        except (BadSignatureError, ValueError):
            raise VerificationError("signature did not verify") from None

    @staticmethod
    def parse(body: bytes) -> TelnyxEvent | None:
        """The event, or None for a body that carries no call event we know."""
        payload = json_object(body)
        data = payload.get("data")
        if not isinstance(data, dict) or data.get("record_type", "event") != "event":
            raise BadPayload("not a Call Control event")
        inner = data.get("payload")
        event_type = data.get("event_type")
        if not isinstance(inner, dict) or not isinstance(event_type, str):
            raise BadPayload("event without event_type or payload")
        call_control_id = inner.get("call_control_id")
        if not isinstance(call_control_id, str) or not call_control_id:
            return None
        return TelnyxEvent(
            event_type=event_type,
            event_id=str(data.get("id") or ""),
            call_control_id=call_control_id,
            call_session_id=_str(inner.get("call_session_id")),
            direction=_str(inner.get("direction")),
            from_number=_e164(inner.get("from")),
            to_number=_e164(inner.get("to")),
            hangup_cause=_str(inner.get("hangup_cause")),
            hangup_source=_str(inner.get("hangup_source")),
            occurred_at=_str(data.get("occurred_at")),
        )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _e164(value: Any) -> str | None:
    """'+13125550100' stays; 'sip:+1312...@host' and bare digits become E.164 when they can."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("sip:"):
        text = text[4:].split("@", 1)[0]
    digits = text.lstrip("+")
    if digits.isdigit() and 7 <= len(digits) <= 15:
        return "+" + digits
    return None


class TelnyxControl:
    """The REST commands of one Telnyx account (one pooled HTTP client)."""

    provider = PROVIDER

    def __init__(self, settings: Settings, *, timeout: float = 10.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=settings.telnyx_api_base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {settings.telnyx_api_key or ''}"},
            timeout=timeout,
        )

    async def answer(self, call_control_id: str, stream_url: str) -> None:
        """Answer and stream the caller's audio to us, bidirectional RTP in PCMU."""
        await self._command(
            call_control_id,
            "answer",
            {
                "stream_url": stream_url,
                "stream_track": "inbound_track",
                "stream_bidirectional_mode": "rtp",
                "stream_bidirectional_codec": "PCMU",
                "command_id": command_id(call_control_id, "answer"),
            },
        )

    async def hang_up(self, call_control_id: str, *, region_url: str | None = None) -> None:
        """Hang up; a call that already ended counts as hung up. (Telnyx has one API host:
        ``region_url`` is never given.)"""
        try:
            await self._command(
                call_control_id, "hangup", {"command_id": command_id(call_control_id, "hangup")}
            )
        except DeliveryError as exc:
            if exc.code != CALL_ENDED:
                raise

    async def say(
        self, call_control_id: str, text: str, language: str, *, region_url: str | None = None
    ) -> float:
        """Have Telnyx speak ``text`` on the call (used when the model cannot); returns a
        generous estimate of how long it takes to say."""
        await self._command(
            call_control_id,
            "speak",
            {
                "payload": text,
                "payload_type": "text",
                "voice": "female",
                "language": _SPEAK_LANGUAGES.get(language, "en-US"),
                "command_id": command_id(call_control_id, "speak"),
            },
        )
        return 1.0 + len(text) / 12

    async def _command(self, call_control_id: str, action: str, body: dict[str, Any]) -> None:
        path = f"/calls/{call_control_id}/actions/{action}"
        try:
            response = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            PLATFORM_CALLS.labels(PROVIDER, action, "network").inc()
            raise DeliveryError(f"telnyx {action}: {type(exc).__name__}", retryable=True) from exc
        if response.status_code < 300:
            PLATFORM_CALLS.labels(PROVIDER, action, "ok").inc()
            return
        code, title = _error(response)
        outcome = "ended" if code == CALL_ENDED else "error"
        PLATFORM_CALLS.labels(PROVIDER, action, outcome).inc()
        log.info(
            "telnyx.command_failed",
            action=action,
            call=redact_id(call_control_id),
            status=response.status_code,
            code=code,
        )
        raise DeliveryError(
            f"telnyx {action}: {response.status_code} {title}",
            retryable=response.status_code >= 500 or response.status_code == 429,
            code=code,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _error(response: httpx.Response) -> tuple[str | None, str]:
    try:
        errors = response.json().get("errors") or []
        first = errors[0] if errors else {}
        return (str(first.get("code")) if first.get("code") else None), str(first.get("title", ""))
    except (ValueError, AttributeError, IndexError):
        return None, response.text[:200]


@dataclass
class TelnyxProvider:
    """Telnyx as the web routes see it: webhook checks and the account's commands."""

    webhooks: TelnyxWebhooks
    control: TelnyxControl

    async def handle(self, calls: CallService, event: TelnyxEvent) -> str:
        """Act on one verified webhook; returns what was done (for the answer and logs).
        A failed answer raises DeliveryError: the route answers 503 and Telnyx redelivers,
        and the redelivery answers again with the same command_id."""
        ccid = event.call_control_id
        if event.event_type == "call.initiated":
            if event.direction not in (None, "incoming"):
                return "ignored"
            ringing = await calls.ring(
                PROVIDER,
                ccid,
                from_e164=event.from_number,
                to_e164=event.to_number,
                provider_session_id=event.call_session_id,
            )
            if ringing is None:
                return "duplicate"
            await self.control.answer(ccid, ringing.stream_url)
            return "answered"
        if event.event_type == "call.answered":
            await calls.answered(PROVIDER, ccid, time.time())
            return "recorded"
        if event.event_type == "call.hangup":
            await calls.hung_up(
                PROVIDER, ccid, cause=event.hangup_cause, source=event.hangup_source
            )
            return "recorded"
        return "ignored"


def build_telnyx(settings: Settings) -> TelnyxProvider:
    return TelnyxProvider(TelnyxWebhooks(settings.telnyx_public_key), TelnyxControl(settings))
