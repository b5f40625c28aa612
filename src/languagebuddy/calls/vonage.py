"""Vonage Voice call control: signed webhooks, the answer NCCO, call events and the REST calls
we make (hang-up, transfer, talk).

Webhooks (answer and events) carry ``Authorization: Bearer <JWT>`` signed HS256 with the
account's signature secret; its ``payload_hash`` is the SHA-256 of the raw body, so a body
changed on the way no longer matches. A webhook that does not verify is refused (401) before
anything is read from it.

The answer is an NCCO that connects the call to our media WebSocket: L16 at 16 kHz,
``eventType: synchronous`` (so that a socket that cannot connect reports ``failed`` to the
event URL, which may answer with a fallback NCCO), and the call's ids in ``headers``, which
Vonage echoes in the socket's first message and in the socket leg's events (at most 512 bytes).

REST calls carry an RS256 JWT made from the application's private key (claims
``application_id``, ``iat``, ``jti``, ``exp``), sent to the call's ``region_url`` when the
answer webhook gave one (a call can be controlled only in its region) and otherwise to
``VONAGE_API_BASE_URL``. The JWT authorises everything the application may do, so it only goes
to a Vonage host or to the configured base URL's host, never to whatever a URL says.
Hanging up a call that has already ended (404) counts as success.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from languagebuddy.channels.base import BadPayload, VerificationError, json_object
from languagebuddy.channels.http import (
    RetryPolicy,
    call,
    header,
    json_or_none,
    make_client,
    status_error,
)
from languagebuddy.config import ConfigError, Settings
from languagebuddy.errors import DeliveryError
from languagebuddy.logs import get_logger, redact_id

if TYPE_CHECKING:
    from languagebuddy.calls.service import CallService

log = get_logger(__name__)

PROVIDER = "vonage"
CONTENT_TYPE = "audio/l16;rate=16000"
MAX_HEADERS_BYTES = 512
JWT_TTL_SECONDS = 15 * 60  # what the official SDK gives its application JWTs
WEBHOOK_MAX_AGE_SECONDS = 300  # a signed webhook older (or newer) than this is refused
CLOCK_LEEWAY_SECONDS = 30
REST_TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=10.0, pool=5.0)
# Where an application JWT may be sent besides VONAGE_API_BASE_URL's host: Vonage's own hosts
# (``region_url`` is e.g. https://api-us-3.vonage.com).
_VONAGE_DOMAINS = ("vonage.com", "nexmo.com")

# Statuses after which the phone call is over, whatever came before.
FINAL_STATUSES = frozenset(
    {"completed", "busy", "cancelled", "failed", "rejected", "timeout", "unanswered"}
)
# Statuses of our WebSocket leg that mean it never connected (answer with a fallback NCCO).
SOCKET_FAILED_STATUSES = frozenset({"failed", "rejected", "unanswered", "timeout"})

# Vonage text-to-speech language codes for the phrase languages we speak.
_TALK_LANGUAGES = {
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

Leg = Literal["phone", "websocket"]


# -- numbers ------------------------------------------------------------------------------------


def e164(value: Any) -> str | None:
    """Vonage sends numbers as bare international digits ("447700900000"); we keep E.164
    ("+447700900000"). Anything that is not a number (a SIP URI without one, "Unknown", a
    WebSocket URI) is None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("sip:"):
        text = text[4:].split("@", 1)[0]
    digits = text[1:] if text.startswith("+") else text
    if digits.isdigit() and 7 <= len(digits) <= 15:
        return "+" + digits
    return None


# -- signed webhooks ----------------------------------------------------------------------------


class WebhookVerifier:
    """Checks Vonage's signed webhooks (answer and events) with the signature secret."""

    def __init__(self, signature_secret: str | None, application_id: str | None = None) -> None:
        self._secret = signature_secret
        self._application_id = application_id

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> None:
        """Raise VerificationError (401) unless the JWT is Vonage's, fresh, for our application
        and hashes this very body."""
        if not self._secret:
            raise VerificationError(
                "VONAGE_SIGNATURE_SECRET is not set: webhooks cannot be verified"
            )
        authorization = header(headers, "authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise VerificationError("missing Authorization: Bearer <JWT>")
        now = time.time() if now is None else now
        try:
            claims = jwt.decode(
                token.strip(),
                self._secret,
                algorithms=["HS256"],
                options={"require": ["iat"], "verify_iat": False},
                leeway=CLOCK_LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise VerificationError("expired webhook JWT") from None
        except jwt.InvalidTokenError as exc:
            raise VerificationError(f"webhook JWT did not verify ({type(exc).__name__})") from None
        issued = claims.get("iat")
        if not isinstance(issued, int | float) or isinstance(issued, bool):
            raise VerificationError("webhook JWT without a numeric iat")
        if issued > now + CLOCK_LEEWAY_SECONDS or now - issued > WEBHOOK_MAX_AGE_SECONDS:
            raise VerificationError("webhook JWT issued outside the 5-minute window")
        claimed_app = claims.get("application_id")
        if self._application_id and claimed_app is not None and claimed_app != self._application_id:
            raise VerificationError("webhook JWT is for another application")
        payload_hash = claims.get("payload_hash")
        if payload_hash is None:
            if body:  # only a bodiless request (the GET answer webhook) may come without one
                raise VerificationError("webhook JWT without payload_hash")
            return
        expected = hashlib.sha256(body).hexdigest()
        if not isinstance(payload_hash, str) or not hmac.compare_digest(
            payload_hash.lower().encode(), expected.encode()
        ):
            raise VerificationError("payload_hash does not match the body")


# -- the answer webhook and its NCCO ------------------------------------------------------------


@dataclass(frozen=True)
class AnswerRequest:
    """An incoming call as the answer webhook describes it."""

    uuid: str
    conversation_uuid: str | None
    from_number: str | None  # E.164
    to_number: str | None  # E.164
    region_url: str | None


def parse_answer(query: Mapping[str, str], body: bytes) -> AnswerRequest:
    """The answer webhook in either form: GET with the fields in the query string, or POST
    (``answer_method=POST``) with them in a JSON body. BadPayload when there is no call uuid."""
    fields: Mapping[str, Any] = json_object(body) if body.strip() else query
    call_uuid = fields.get("uuid")
    if not isinstance(call_uuid, str) or not call_uuid.strip():
        raise BadPayload("answer webhook without a call uuid")
    return AnswerRequest(
        uuid=call_uuid.strip(),
        conversation_uuid=_text(fields.get("conversation_uuid")),
        from_number=e164(fields.get("from")),
        to_number=e164(fields.get("to")),
        region_url=_text(fields.get("region_url")),
    )


def call_headers(answer: AnswerRequest, **extra: str) -> dict[str, str]:
    """The ids Vonage echoes back in ``websocket:connected`` and the socket leg's events, with
    ``extra`` ones after them; raises ValueError past Vonage's 512-byte limit."""
    headers = {"call_uuid": answer.uuid}
    if answer.conversation_uuid:
        headers["conversation_uuid"] = answer.conversation_uuid
    headers.update(extra)
    size = len(json.dumps(headers, separators=(",", ":")).encode())
    if size > MAX_HEADERS_BYTES:
        raise ValueError(f"NCCO headers are {size} bytes, over Vonage's {MAX_HEADERS_BYTES}")
    return headers


def connect_ncco(
    stream_url: str, event_url: str, headers: Mapping[str, str], *, caller: str | None = None
) -> list[dict[str, Any]]:
    """Connect the call to our media WebSocket: 16-bit linear PCM at 16 kHz both ways."""
    action: dict[str, Any] = {
        "action": "connect",
        "eventType": "synchronous",
        "eventUrl": [event_url],
        "endpoint": [
            {
                "type": "websocket",
                "uri": stream_url,
                "content-type": CONTENT_TYPE,
                "headers": dict(headers),
            }
        ],
    }
    if caller:
        action["from"] = caller.lstrip("+")
    return [action]


def talk_ncco(text: str, language: str = "en") -> list[dict[str, Any]]:
    """Vonage speaks ``text`` itself (an apology when our side cannot take the call)."""
    return [{"action": "talk", "text": text[:1500], "language": talk_language(language)}]


def talk_language(language: str) -> str:
    if "-" in language:
        return language
    return _TALK_LANGUAGES.get(language.lower(), "en-US")


# -- event webhooks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VonageEvent:
    """One call event: a status change of the phone leg or of our WebSocket leg."""

    status: str
    uuid: str
    conversation_uuid: str | None
    leg: Leg
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    timestamp: str | None = None
    duration_seconds: int | None = None
    start_time: str | None = None
    end_time: str | None = None
    detail: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def call_uuid(self) -> str:
        """The phone call this event is about (the socket leg names it in its headers)."""
        if self.leg == "websocket":
            return self.headers.get("call_uuid") or self.uuid
        return self.uuid

    @property
    def call_ended(self) -> bool:
        """The phone call is over (for the socket leg, ``disconnected`` is only the socket)."""
        return self.leg == "phone" and self.status in FINAL_STATUSES

    @property
    def socket_failed(self) -> bool:
        """Our WebSocket never connected: the caller would hear nothing."""
        return self.leg == "websocket" and self.status in SOCKET_FAILED_STATUSES


def parse_event(body: bytes) -> VonageEvent | None:
    """The event, or None for a body that is not a call status event (Vonage sends others,
    e.g. transfer or input events, to the same URL)."""
    payload = json_object(body)
    status = payload.get("status")
    call_uuid = payload.get("uuid")
    if not isinstance(status, str) or not status or not isinstance(call_uuid, str) or not call_uuid:
        return None
    to = payload.get("to")
    raw_headers = payload.get("headers")
    headers = (
        {str(k): str(v) for k, v in raw_headers.items() if isinstance(v, str | int | float)}
        if isinstance(raw_headers, dict)
        else {}
    )
    is_socket = isinstance(to, str) and to.startswith(("ws://", "wss://"))
    return VonageEvent(
        status=status.lower(),
        uuid=call_uuid,
        conversation_uuid=_text(payload.get("conversation_uuid")),
        leg="websocket" if is_socket else "phone",
        direction=_text(payload.get("direction")),
        from_number=e164(payload.get("from")),
        to_number=None if is_socket else e164(to),
        timestamp=_text(payload.get("timestamp")),
        duration_seconds=_seconds(payload.get("duration")),
        start_time=_text(payload.get("start_time")),
        end_time=_text(payload.get("end_time")),
        detail=_text(payload.get("detail")) or _text(payload.get("reason")),
        headers=headers,
    )


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _seconds(value: Any) -> int | None:
    """Vonage sends ``duration`` as a string of seconds ("34")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


# -- REST ---------------------------------------------------------------------------------------


def load_private_key(path: str | None) -> RSAPrivateKey:
    """The application's private key (PEM, as the Vonage dashboard downloads it); a missing or
    unreadable one stops the start with the variable's name."""
    name = "VONAGE_PRIVATE_KEY_PATH"
    if not path:
        raise ConfigError(f"{name}: not set (the private key of your Vonage application)")
    try:
        key = serialization.load_pem_private_key(Path(path).expanduser().read_bytes(), None)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path} ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{name}: {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError(f"{name}: {path} is not an RSA key (Vonage signs with RS256)")
    return key


def application_jwt(
    application_id: str, private_key: RSAPrivateKey, *, now: float | None = None
) -> str:
    """A fresh RS256 JWT for one REST request, with the claims Vonage's own SDK sends."""
    issued = int(time.time() if now is None else now)
    claims = {
        "application_id": application_id,
        "iat": issued,
        "jti": str(uuid.uuid4()),
        "exp": issued + JWT_TTL_SECONDS,
    }
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"typ": "JWT"})


class VonageControl:
    """The REST calls of one Vonage application (one pooled HTTP client)."""

    provider = PROVIDER

    def __init__(self, settings: Settings, *, retry: RetryPolicy | None = None) -> None:
        if not settings.vonage_application_id:
            raise ConfigError("VONAGE_APPLICATION_ID: not set (your Vonage application's id)")
        self._application_id = settings.vonage_application_id
        self._key = load_private_key(settings.vonage_private_key_path)
        self._base_url = settings.vonage_api_base_url.rstrip("/")
        base = urlsplit(self._base_url)
        self._base_origin = (base.scheme, (base.hostname or "").lower())
        self._retry = retry or RetryPolicy()
        self._client = make_client(self._base_url, timeout=REST_TIMEOUT)

    def api_base(self, region_url: str | None) -> str:
        """Where this call's requests go: its region when that is a host we trust with the
        application's JWT, else the configured base URL."""
        if not region_url:
            return self._base_url
        parts = urlsplit(region_url)
        host = (parts.hostname or "").lower()
        trusted = (parts.scheme == "https" and _is_vonage_host(host)) or (
            parts.scheme,
            host,
        ) == self._base_origin
        if not trusted or not parts.netloc:
            log.warning("vonage.region_url_ignored", host=host or None)
            return self._base_url
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    async def hang_up(self, call_uuid: str, *, region_url: str | None = None) -> None:
        """Hang up; a call that already ended counts as hung up."""
        await self._put(call_uuid, "", {"action": "hangup"}, "hangup", region_url, ended_ok=True)

    async def transfer(
        self, call_uuid: str, ncco: list[dict[str, Any]], *, region_url: str | None = None
    ) -> None:
        """Replace what the call is doing with a new NCCO (e.g. leave the socket for a talk)."""
        body = {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
        await self._put(call_uuid, "", body, "transfer", region_url)

    async def say(
        self, call_uuid: str, text: str, language: str, *, region_url: str | None = None
    ) -> float:
        """Have Vonage speak ``text`` into the call (when the model cannot); returns a generous
        estimate of how long it takes to say."""
        body = {"text": text[:1500], "language": talk_language(language)}
        await self._put(call_uuid, "/talk", body, "talk", region_url)
        return 1.0 + len(text) / 12

    async def probe(self) -> None:
        """One authenticated read (the last call, at most) to prove the application id and
        private key belong together; DeliveryError when Vonage refuses them."""
        url = f"{self._base_url}/v1/calls"

        def send() -> Any:
            token = application_jwt(self._application_id, self._key)
            return self._client.get(
                url, params={"page_size": 1}, headers={"Authorization": f"Bearer {token}"}
            )

        await call(PROVIDER, "probe", send, _classify(None, "probe", False), policy=self._retry)

    async def _put(
        self,
        call_uuid: str,
        suffix: str,
        body: dict[str, Any],
        method: str,
        region_url: str | None,
        *,
        ended_ok: bool = False,
    ) -> None:
        url = f"{self.api_base(region_url)}/v1/calls/{quote(call_uuid, safe='')}{suffix}"

        def send() -> Any:
            token = application_jwt(self._application_id, self._key)
            return self._client.put(url, json=body, headers={"Authorization": f"Bearer {token}"})

        classify = _classify(call_uuid, method, ended_ok)
        await call(PROVIDER, method, send, classify, policy=self._retry)

    async def aclose(self) -> None:
        await self._client.aclose()


def _classify(
    call_uuid: str | None, method: str, ended_ok: bool
) -> Callable[[httpx.Response], DeliveryError | None]:
    """Success, or the DeliveryError a response stands for (429 and 5xx retryable)."""

    def classify(response: httpx.Response) -> DeliveryError | None:
        if response.status_code < 300:
            return None
        if ended_ok and response.status_code == 404:
            log.info("vonage.call_already_ended", action=method, call=redact_id(call_uuid))
            return None
        problem = json_or_none(response)
        title = problem.get("title") if isinstance(problem, dict) else None
        detail = problem.get("detail") if isinstance(problem, dict) else None
        message = " ".join(str(part) for part in (title, detail) if part) or response.text
        return status_error(PROVIDER, response, code=str(response.status_code), message=message)

    return classify


def _is_vonage_host(host: str) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in _VONAGE_DOMAINS)


# -- the provider as the web routes see it -----------------------------------------------------


@dataclass
class VonageProvider:
    """Vonage's call control for the routes: webhook checks, the answer NCCO, call events and
    the application's REST commands. Everything else about a call is the shared bridge's."""

    webhooks: WebhookVerifier
    control: VonageControl
    event_url: str  # PUBLIC_BASE_URL/calls/vonage/events: our socket leg reports here

    async def answer(self, calls: CallService, answer: AnswerRequest) -> list[dict[str, Any]]:
        """The NCCO for an incoming call: connect it to our media socket with a token for
        this call. A repeated answer webhook gets the same NCCO while the socket has not
        connected, and an empty one (nothing more to do) once it has."""
        ringing = await calls.ring(
            PROVIDER,
            answer.uuid,
            from_e164=answer.from_number,
            to_e164=answer.to_number,
            provider_session_id=answer.conversation_uuid,
            region_url=answer.region_url,
        )
        if ringing is None:
            log.info("vonage.answer_repeated", call=redact_id(answer.uuid))
            return []
        return connect_ncco(ringing.stream_url, self.event_url, call_headers(answer))

    async def event(
        self, calls: CallService, event: VonageEvent
    ) -> tuple[str, list[dict[str, Any]] | None]:
        """Act on one verified event: (what was done, an NCCO to answer with or None). The
        phone leg's statuses are the call's; of our socket leg's, only a socket that never
        connected matters (the caller would hear nothing: Vonage apologises instead)."""
        if event.leg == "websocket":
            if not event.socket_failed:
                return "ignored", None
            text, language = await calls.apology(PROVIDER, event.call_uuid)
            log.warning(
                "vonage.socket_failed", call=redact_id(event.call_uuid), status=event.status
            )
            return "apologised", talk_ncco(text, language)
        if event.status == "answered":
            await calls.answered(PROVIDER, event.uuid, time.time())
            return "recorded", None
        if event.call_ended:
            await calls.hung_up(
                PROVIDER,
                event.uuid,
                cause=event.detail or event.status,
                source=None,  # Vonage does not say which side hung up
                duration_s=event.duration_seconds,
            )
            return "recorded", None
        return "ignored", None


def build_vonage(settings: Settings) -> VonageProvider:
    """Raises ConfigError (one line) when the private key cannot be used."""
    event_url = settings.public_base_url.rstrip("/") + "/calls/vonage/events"
    return VonageProvider(
        WebhookVerifier(settings.vonage_signature_secret, settings.vonage_application_id),
        VonageControl(settings),
        event_url,
    )
