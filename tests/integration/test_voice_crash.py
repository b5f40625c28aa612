"""A worker killed with SIGKILL in the middle of a voice reply: after recovery the learner has
exactly one "You said", one text and one voice note, and nothing paid for is done twice.

Real processes, as in test_worker_crash.py: the running service accepts the webhook, a
`languagebuddy worker` subprocess takes the event and is killed at the chosen moment (the fakes
hold the request that marks it), a second worker takes the item over once the lease expires.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from languagebuddy.config import load_settings
from languagebuddy.tutor.phrases import phrase
from tests.audio_samples import decoded, voice_note
from tests.fakes.openai import FakeOpenAI
from tests.fakes.whatsapp import FakeWhatsApp, new_wamid, whatsapp_audio_webhook, whatsapp_headers
from tests.service import running_service

USER = "5511900001111"
TRANSCRIPT = "Hola, ayer fui al mercado con mi hermana."
REPLY = (
    "¡Qué bien que fuiste al mercado con tu hermana! Me encanta la fruta fresca de allí. "
    "¿Qué fruta comprasteis las dos?"
)


def _env(ai: FakeOpenAI, wa: FakeWhatsApp, db_url: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": db_url,
        "OPENAI_BASE_URL": ai.base_url,
        "OPENAI_API_KEY": ai.api_key,
        "LB_OPENAI_MAX_RETRIES": "0",
        "LB_LEASE_SECONDS": "2",
        "LB_WORKER_CONCURRENCY": "1",
        "WHATSAPP_ACCESS_TOKEN": wa.access_token,
        "WHATSAPP_PHONE_NUMBER_ID": wa.phone_number_id,
        "WHATSAPP_APP_SECRET": wa.app_secret,
        "WHATSAPP_VERIFY_TOKEN": wa.verify_token,
        "WHATSAPP_API_BASE_URL": wa.base_url,
    }


@contextmanager
def worker(env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "languagebuddy.cli", "worker"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeWhatsApp]]:
    with FakeOpenAI() as ai, FakeWhatsApp() as wa:
        yield ai, wa


def _post_voice_note(ai: FakeOpenAI, wa: FakeWhatsApp, env: dict[str, str]) -> None:
    settings = load_settings(**{k.lower(): v for k, v in env.items() if k != "PATH"})
    ai.audio.transcript(TRANSCRIPT)
    ai.reply(REPLY)
    media_id = wa.add_media(voice_note(), "audio/ogg")
    body = whatsapp_audio_webhook(media_id, wa_id=USER, message_id=new_wamid())
    with running_service(settings, run_worker=False) as service:
        response = httpx.post(
            f"{service.base_url}/webhooks/whatsapp",
            content=body,
            headers=whatsapp_headers(body, wa.app_secret),
        )
        assert response.status_code == 200


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _stored_notes(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT count(*) FROM outbox WHERE kind = 'voice' AND audio IS NOT NULL"
        ).fetchone()[0]


def _delivered(wa: FakeWhatsApp) -> list[str]:
    return [m["type"] for m in wa.sent if m.get("to") == USER]


def _check_one_of_each(ai: FakeOpenAI, wa: FakeWhatsApp) -> None:
    texts = wa.texts_to(USER)
    assert texts == [phrase("you_said", "en", text=TRANSCRIPT), REPLY]
    assert _delivered(wa) == ["text", "text", "audio"]
    [audio] = [m for m in wa.sent if m.get("type") == "audio"]
    data, _ = wa.uploads[audio["audio"]["id"]]
    container, codec, rate, _, seconds = decoded(data)
    assert (container, codec, rate) == ("ogg", "opus", 48_000)
    assert len(ai.audio.transcriptions) == 1  # never transcribed twice
    assert len(ai.chat_bodies()) == 1  # never asked the chat model twice
    spoken = sum(s.duration_s for s in ai.audio.speeches[-3:])
    assert seconds == pytest.approx(spoken, rel=0.05)


def test_sigkill_between_synthesis_and_upload_sends_one_voice_note(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeWhatsApp]
) -> None:
    ai, wa = fakes
    env = _env(ai, wa, f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}")
    _post_voice_note(ai, wa, env)
    wa.upload_delay = 60.0  # the first worker's upload hangs: the note is made and stored
    db = tmp_path / "lb.db"
    with worker(env, tmp_path) as first:
        wait_until(lambda: bool(wa.server.recorded("/media", "POST")), "the upload")
        wait_until(lambda: _stored_notes(db) == 1, "the note stored beside the upload")
        _kill(first)
    assert _delivered(wa) == ["text", "text"]  # "You said" and the text went before
    wa.upload_delay = 0.0
    with worker(env, tmp_path):
        wait_until(lambda: "audio" in _delivered(wa), "the voice note")
        time.sleep(1.5)  # room for a duplicate to show up, were there one
    _check_one_of_each(ai, wa)
    assert len(ai.audio.speeches) == 3  # the stored note was sent: no second synthesis


def test_sigkill_while_speaking_synthesises_again_from_the_stored_text(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeWhatsApp]
) -> None:
    ai, wa = fakes
    env = _env(ai, wa, f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}")
    _post_voice_note(ai, wa, env)
    ai.audio.speech_first_byte = 60.0  # the speech model hangs: the note is never finished
    with worker(env, tmp_path) as first:
        wait_until(lambda: len(_delivered(wa)) == 2, "the reply's text")
        wait_until(lambda: len(ai.audio.speeches) == 3, "the speech requests")
        _kill(first)
    ai.audio.speech_first_byte = 0.0
    with worker(env, tmp_path):
        wait_until(lambda: "audio" in _delivered(wa), "the voice note")
        time.sleep(1.5)
    _check_one_of_each(ai, wa)
    assert len(ai.audio.speeches) == 6  # spoken again, from the stored reply
    again = sorted(s.input for s in ai.audio.speeches[3:])  # in parallel: any order
    assert again == sorted(s.input for s in ai.audio.speeches[:3])
    assert all(sentence in REPLY for sentence in again)
