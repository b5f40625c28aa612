"""Vonage call control pieces: webhook signatures, the answer webhook and its NCCO, call
events, and the REST client against the fake Vonage (which checks our RS256 JWTs)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from languagebuddy.calls.vonage import (
    JWT_TTL_SECONDS,
    MAX_HEADERS_BYTES,
    AnswerRequest,
    VonageControl,
    WebhookVerifier,
    application_jwt,
    call_headers,
    connect_ncco,
    e164,
    load_private_key,
    parse_answer,
    parse_event,
    talk_ncco,
)
from languagebuddy.channels.base import BadPayload, VerificationError
from languagebuddy.channels.http import RetryPolicy
from languagebuddy.config import ConfigError, load_settings
from languagebuddy.doctor import check_vonage
from languagebuddy.errors import DeliveryError
from tests.fakes.vonage import FakeVonage, check_ncco


@pytest.fixture(scope="module")
def vonage() -> Iterator[FakeVonage]:
    with FakeVonage() as fake:
        yield fake


@pytest.fixture
def verifier(vonage: FakeVonage) -> WebhookVerifier:
    return WebhookVerifier(vonage.signature_secret, vonage.application_id)


EVENT = json.dumps(
    {
        "from": "447700900001",
        "to": "447700900000",
        "uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        "conversation_uuid": "CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        "status": "completed",
        "direction": "inbound",
        "timestamp": "2026-12-02T10:00:34.000Z",
        "start_time": "2026-12-02T10:00:00.000Z",
        "end_time": "2026-12-02T10:00:34.000Z",
        "duration": "34",
        "rate": "0.00450000",
        "price": "0.00255000",
        "network": "23410",
    }
).encode()


# -- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("447700900000", "+447700900000"),
        ("+447700900000", "+447700900000"),
        ("sip:+34600111222@sip.example.com", "+34600111222"),
        ("Unknown", None),
        ("wss://buddy.example.com/calls/vonage/media-stream", None),
        ("123", None),
        (447700900000, None),
        (None, None),
    ],
)
def test_numbers_become_e164_or_nothing(raw: object, expected: str | None) -> None:
    assert e164(raw) == expected


# -- signed webhooks ----------------------------------------------------------------------------


def test_a_signed_event_verifies(vonage: FakeVonage, verifier: WebhookVerifier) -> None:
    verifier.verify(vonage.sign(EVENT), EVENT)


def test_a_signed_get_answer_webhook_without_body_verifies(
    vonage: FakeVonage, verifier: WebhookVerifier
) -> None:
    verifier.verify(vonage.sign(b""), b"")


def test_header_name_and_scheme_are_case_insensitive(
    vonage: FakeVonage, verifier: WebhookVerifier
) -> None:
    token = vonage.sign(EVENT)["authorization"].split(" ", 1)[1]
    verifier.verify({"Authorization": f"bearer {token}"}, EVENT)


def test_missing_authorization_is_refused(verifier: WebhookVerifier) -> None:
    with pytest.raises(VerificationError) as refused:
        verifier.verify({}, EVENT)
    assert refused.value.status_code == 401


def test_not_a_bearer_token_is_refused(verifier: WebhookVerifier) -> None:
    with pytest.raises(VerificationError):
        verifier.verify({"authorization": "Basic dXNlcjpwYXNz"}, EVENT)


def test_a_jwt_signed_with_another_secret_is_refused(
    vonage: FakeVonage, verifier: WebhookVerifier
) -> None:
    with pytest.raises(VerificationError, match="did not verify"):
        verifier.verify(vonage.sign(EVENT, secret="x" * 48), EVENT)


def test_a_garbled_jwt_is_refused(verifier: WebhookVerifier) -> None:
    with pytest.raises(VerificationError):
        verifier.verify({"authorization": "Bearer not.a.jwt"}, EVENT)


def test_a_changed_body_no_longer_matches_its_payload_hash(
    vonage: FakeVonage, verifier: WebhookVerifier
) -> None:
    headers = vonage.sign(EVENT)
    tampered = EVENT.replace(b'"duration": "34"', b'"duration": "3400"')
    with pytest.raises(VerificationError, match="payload_hash"):
        verifier.verify(headers, tampered)


def test_a_wrong_payload_hash_is_refused(vonage: FakeVonage, verifier: WebhookVerifier) -> None:
    wrong = hashlib.sha256(b"another body").hexdigest()
    with pytest.raises(VerificationError, match="payload_hash"):
        verifier.verify(vonage.sign(EVENT, payload_hash=wrong), EVENT)


def test_a_body_without_payload_hash_is_refused(
    vonage: FakeVonage, verifier: WebhookVerifier
) -> None:
    with pytest.raises(VerificationError, match="payload_hash"):
        verifier.verify(vonage.sign(EVENT, hash_body=False), EVENT)


def test_an_expired_jwt_is_refused(vonage: FakeVonage, verifier: WebhookVerifier) -> None:
    headers = vonage.sign(EVENT, exp=int(time.time()) - 120)
    with pytest.raises(VerificationError, match="expired"):
        verifier.verify(headers, EVENT)


def test_a_jwt_issued_long_ago_is_refused(vonage: FakeVonage, verifier: WebhookVerifier) -> None:
    """Vonage's webhook JWTs carry no exp: a replay is refused by their age."""
    headers = vonage.sign(EVENT, issued_at=time.time() - 301 - 30)
    with pytest.raises(VerificationError, match="5-minute"):
        verifier.verify(headers, EVENT)


def test_a_jwt_from_the_future_is_refused(vonage: FakeVonage, verifier: WebhookVerifier) -> None:
    headers = vonage.sign(EVENT, issued_at=time.time() + 120)
    with pytest.raises(VerificationError, match="5-minute"):
        verifier.verify(headers, EVENT)


def test_a_jwt_for_another_application_is_refused(
    vonage: FakeVonage, verifier: WebhookVerifier
) -> None:
    headers = vonage.sign(EVENT, application_id="another-application")
    with pytest.raises(VerificationError, match="another application"):
        verifier.verify(headers, EVENT)


def test_a_jwt_without_iat_is_refused(vonage: FakeVonage, verifier: WebhookVerifier) -> None:
    claims = {"payload_hash": hashlib.sha256(EVENT).hexdigest(), "iss": "Vonage"}
    token = jwt.encode(claims, vonage.signature_secret, algorithm="HS256")
    with pytest.raises(VerificationError):
        verifier.verify({"authorization": f"Bearer {token}"}, EVENT)


def test_an_unsigned_jwt_is_refused(vonage: FakeVonage, verifier: WebhookVerifier) -> None:
    """``alg: none`` must never pass, whatever its claims."""
    claims = {"iat": int(time.time()), "payload_hash": hashlib.sha256(EVENT).hexdigest()}
    token = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(VerificationError):
        verifier.verify({"authorization": f"Bearer {token}"}, EVENT)


def test_without_a_signature_secret_every_webhook_is_refused(vonage: FakeVonage) -> None:
    with pytest.raises(VerificationError, match="VONAGE_SIGNATURE_SECRET"):
        WebhookVerifier(None).verify(vonage.sign(EVENT), EVENT)


# -- the answer webhook and its NCCO ------------------------------------------------------------


def test_answer_webhook_as_get_query() -> None:
    answer = parse_answer(
        {
            "to": "447700900000",
            "from": "34600111222",
            "uuid": "63f61863-4a51-4f6b-86e1-46edebio0391",
            "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
            "region_url": "https://api-eu-1.vonage.com",
        },
        b"",
    )
    assert answer == AnswerRequest(
        uuid="63f61863-4a51-4f6b-86e1-46edebio0391",
        conversation_uuid="CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
        from_number="+34600111222",
        to_number="+447700900000",
        region_url="https://api-eu-1.vonage.com",
    )


def test_answer_webhook_as_post_json() -> None:
    body = json.dumps(
        {"to": "447700900000", "from": "34600111222", "uuid": "u-1", "conversation_uuid": "CON-1"}
    ).encode()
    answer = parse_answer({}, body)
    assert (answer.uuid, answer.from_number, answer.region_url) == ("u-1", "+34600111222", None)


@pytest.mark.parametrize("body", [b"{}", b'{"uuid": ""}', b"[1]", b"not json"])
def test_answer_webhook_without_a_call_is_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        parse_answer({}, body)


def test_connect_ncco_is_what_vonage_accepts() -> None:
    answer = AnswerRequest("u-1", "CON-1", "+34600111222", "+447700900000", None)
    ncco = connect_ncco(
        "wss://buddy.example.com/calls/vonage/media-stream?token=abc.def",
        "https://buddy.example.com/calls/vonage/events",
        call_headers(answer),
        caller=answer.from_number,
    )
    assert check_ncco(ncco) == []
    assert ncco == [
        {
            "action": "connect",
            "eventType": "synchronous",
            "eventUrl": ["https://buddy.example.com/calls/vonage/events"],
            "from": "34600111222",
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": "wss://buddy.example.com/calls/vonage/media-stream?token=abc.def",
                    "content-type": "audio/l16;rate=16000",
                    "headers": {"call_uuid": "u-1", "conversation_uuid": "CON-1"},
                }
            ],
        }
    ]


def test_ncco_headers_stay_within_512_bytes() -> None:
    answer = AnswerRequest("u" * 36, "CON-" + "c" * 36, None, None, None)
    room = MAX_HEADERS_BYTES - len(json.dumps(call_headers(answer, note=""), separators=(",", ":")))
    fits = call_headers(answer, note="n" * room)
    assert len(json.dumps(fits, separators=(",", ":")).encode()) == MAX_HEADERS_BYTES
    with pytest.raises(ValueError, match="512"):
        call_headers(answer, note="n" * (room + 1))


def test_talk_ncco_speaks_the_learners_language() -> None:
    assert talk_ncco("Lo siento", "es") == [
        {"action": "talk", "text": "Lo siento", "language": "es-ES"}
    ]
    assert check_ncco(talk_ncco("x" * 2000)) == []  # cut to Vonage's 1500 characters


# -- events -------------------------------------------------------------------------------------


def test_completed_phone_leg_ends_the_call_with_its_duration() -> None:
    event = parse_event(EVENT)
    assert event is not None
    assert (event.status, event.leg, event.duration_seconds) == ("completed", "phone", 34)
    assert event.call_ended and not event.socket_failed
    assert event.call_uuid == "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
    assert event.from_number == "+447700900001"


@pytest.mark.parametrize(
    ("status", "ended"),
    [
        ("started", False),
        ("ringing", False),
        ("answered", False),
        ("busy", True),
        ("cancelled", True),
        ("failed", True),
        ("rejected", True),
        ("timeout", True),
        ("unanswered", True),
    ],
)
def test_which_phone_statuses_end_the_call(status: str, ended: bool) -> None:
    body = json.dumps({"uuid": "u-1", "status": status, "to": "447700900000"}).encode()
    event = parse_event(body)
    assert event is not None and event.call_ended is ended


def test_socket_leg_events_name_the_phone_call_in_their_headers() -> None:
    body = json.dumps(
        {
            "from": "34600111222",
            "to": "wss://buddy.example.com/calls/vonage/media-stream?token=abc",
            "uuid": "socket-leg",
            "conversation_uuid": "CON-1",
            "status": "disconnected",
            "direction": "outbound",
            "timestamp": "2026-12-02T10:00:34.000Z",
            "headers": {"call_uuid": "phone-leg", "conversation_uuid": "CON-1"},
        }
    ).encode()
    event = parse_event(body)
    assert event is not None
    assert (event.leg, event.call_uuid, event.to_number) == ("websocket", "phone-leg", None)
    assert not event.call_ended and not event.socket_failed  # only the socket went


def test_a_socket_that_never_connected_is_reported() -> None:
    body = json.dumps(
        {"to": "wss://x/calls/vonage/media-stream", "uuid": "s", "status": "failed"}
    ).encode()
    event = parse_event(body)
    assert event is not None and event.socket_failed and not event.call_ended


def test_bodies_without_a_call_status_are_ignored() -> None:
    assert parse_event(b'{"type": "transfer", "uuid": "u-1"}') is None
    assert parse_event(b'{"status": "answered"}') is None


def test_an_event_that_is_not_json_is_bad_payload() -> None:
    with pytest.raises(BadPayload):
        parse_event(b"status=completed")


# -- the application JWT and key ----------------------------------------------------------------


def test_application_jwt_carries_the_sdks_claims(vonage: FakeVonage) -> None:
    key = load_private_key(str(vonage.private_key_path))
    token = application_jwt(vonage.application_id, key, now=1_700_000_000)
    claims = jwt.decode(
        token, vonage.public_key, algorithms=["RS256"], options={"verify_exp": False}
    )
    assert claims["application_id"] == vonage.application_id
    assert claims["iat"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_000 + JWT_TTL_SECONDS
    assert claims["jti"] != application_jwt(vonage.application_id, key)  # a new one each time
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


def test_private_key_problems_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VONAGE_PRIVATE_KEY_PATH: not set"):
        load_private_key(None)
    with pytest.raises(ConfigError, match="cannot read"):
        load_private_key(str(tmp_path / "missing.key"))
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        load_private_key(str(garbage))
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="not an RSA key"):
        load_private_key(str(ec_key))


# -- REST against the fake ----------------------------------------------------------------------


@pytest.fixture
async def control(vonage: FakeVonage) -> AsyncIterator[VonageControl]:
    control = VonageControl(load_settings(**vonage.settings()), retry=RetryPolicy(base_delay=0.01))
    yield control
    await control.aclose()


async def test_hang_up_goes_to_the_calls_region_with_a_valid_jwt(
    vonage: FakeVonage, control: VonageControl
) -> None:
    call = vonage.live_call()
    await control.hang_up(call.uuid, region_url=vonage.region.base_url)
    assert [(r["action"], r["host"]) for r in call.rest] == [("hangup", "region")]
    await asyncio_wait(lambda: call.ended.is_set())
    assert call.event_statuses("phone")[-1] == "completed"


async def test_hang_up_without_region_uses_the_base_url(
    vonage: FakeVonage, control: VonageControl
) -> None:
    call = vonage.live_call()
    await control.hang_up(call.uuid)
    assert [(r["action"], r["host"]) for r in call.rest] == [("hangup", "api")]


async def test_hanging_up_an_ended_call_counts_as_success(
    vonage: FakeVonage, control: VonageControl
) -> None:
    call = vonage.live_call()
    await control.hang_up(call.uuid)
    await asyncio_wait(lambda: call.ended.is_set())
    await control.hang_up(call.uuid)  # 404 from the fake: already over
    await control.hang_up("no-such-call")


async def test_hang_up_retries_a_server_error(vonage: FakeVonage, control: VonageControl) -> None:
    call = vonage.live_call()
    vonage.faults.add(503, {"title": "Service Unavailable"}, count=2, path_contains=call.uuid)
    await control.hang_up(call.uuid)
    assert [r["action"] for r in call.rest] == ["hangup"]


async def test_a_lasting_server_error_is_a_retryable_delivery_error(
    vonage: FakeVonage, control: VonageControl
) -> None:
    call = vonage.live_call()
    vonage.faults.add(500, {"title": "Internal Error"}, count=5, path_contains=call.uuid)
    with pytest.raises(DeliveryError) as failed:
        await control.hang_up(call.uuid)
    assert failed.value.retryable and failed.value.code == "500"
    vonage.faults.clear()


async def test_rate_limited_transfer_waits_and_retries(
    vonage: FakeVonage, control: VonageControl
) -> None:
    call = vonage.live_call()
    vonage.faults.add(
        429, {"title": "Too Many Requests"}, headers={"retry-after": "0"}, path_contains=call.uuid
    )
    await control.transfer(call.uuid, talk_ncco("Goodbye!"))
    await asyncio_wait(lambda: call.ended.is_set())
    assert call.talks[-1]["text"] == "Goodbye!"


async def test_a_key_vonage_does_not_know_is_refused_for_good(
    vonage: FakeVonage, tmp_path: Path
) -> None:
    other_key = tmp_path / "other.key"
    other_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    stranger = VonageControl(
        load_settings(**{**vonage.settings(), "vonage_private_key_path": str(other_key)})
    )
    call = vonage.live_call()
    refused_before = len(vonage.refused)
    with pytest.raises(DeliveryError) as failed:
        await stranger.hang_up(call.uuid)
    await stranger.aclose()
    assert not failed.value.retryable and failed.value.code == "401"
    assert len(vonage.refused) == refused_before + 1
    assert call.rest == []


async def test_say_speaks_into_the_call(vonage: FakeVonage, control: VonageControl) -> None:
    call = vonage.live_call()
    seconds = await control.say(call.uuid, "Lo siento, hay un problema.", "es")
    assert seconds > 1.0
    assert call.rest[-1]["body"] == {"text": "Lo siento, hay un problema.", "language": "es-ES"}


async def test_region_urls_are_trusted_only_on_vonage_hosts(
    vonage: FakeVonage, control: VonageControl
) -> None:
    base = vonage.server.base_url
    assert control.api_base("https://api-us-3.vonage.com") == "https://api-us-3.vonage.com"
    assert control.api_base("https://api-ap-4.nexmo.com/") == "https://api-ap-4.nexmo.com"
    assert control.api_base(vonage.region.base_url) == vonage.region.base_url  # the base's host
    for untrusted in (
        "https://evil.example.com",
        "http://api-us-3.vonage.com",  # not https
        "https://vonage.com.evil.example",
        "https://evilvonage.com",
        "file:///etc/passwd",
    ):
        assert control.api_base(untrusted) == base
    assert control.api_base(None) == base


def test_control_needs_the_application_id(vonage: FakeVonage) -> None:
    settings = load_settings(**{**vonage.settings(), "vonage_application_id": None})
    with pytest.raises(ConfigError, match="VONAGE_APPLICATION_ID"):
        VonageControl(settings)


async def asyncio_wait(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait for something the fake does on its own thread."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# -- doctor -------------------------------------------------------------------------------------


async def test_doctor_says_vonage_accepts_the_application(vonage: FakeVonage) -> None:
    checks = await check_vonage(load_settings(**vonage.settings()))
    assert checks == [("vonage", True, "application JWT accepted by the Voice API")]


async def test_doctor_names_what_is_wrong_with_vonage(vonage: FakeVonage, tmp_path: Path) -> None:
    assert await check_vonage(load_settings(vonage_application_id=None)) == []
    other_key = tmp_path / "other.key"
    other_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    wrong = {
        **vonage.settings(),
        "vonage_private_key_path": str(other_key),
        "vonage_signature_secret": None,
    }
    checks = await check_vonage(load_settings(**wrong))
    assert [ok for _, ok, _ in checks] == [False, False]
    assert "VONAGE_SIGNATURE_SECRET" in checks[0][2]
    assert "401" in checks[1][2] and "same application" in checks[1][2]
    missing = {**vonage.settings(), "vonage_private_key_path": str(tmp_path / "nope.key")}
    checks = await check_vonage(load_settings(**missing))
    assert checks == [("vonage", False, checks[0][2])] and "VONAGE_PRIVATE_KEY_PATH" in checks[0][2]
