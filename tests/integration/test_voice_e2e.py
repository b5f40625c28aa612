"""Voice notes end to end, through each channel's fake, the fake OpenAI and the real service.

Signed webhook -> inbox -> worker -> the platform's download -> PyAV checks and decodes in
memory -> /v1/audio/transcriptions -> "You said: …" at the platform (before the chat model is
even asked) -> the tutor, streamed -> /v1/audio/speech per sentence -> one encoded voice note
-> the platform's upload/send (WhatsApp media id, Telegram sendVoice, LINE's signed /media URL).

Every file is real audio made with PyAV in each format the apps send. Each outbound note is
decoded: container, codec and sample rate as the platform plays them, and its length within 5%
of the audio the speech model produced.
"""

from __future__ import annotations

import itertools
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from languagebuddy.config import Settings, load_settings
from languagebuddy.tutor.phrases import phrase, problem_phrase
from tests.audio_samples import INBOUND_FORMATS, decoded, quiet_note, voice_note
from tests.fakes.line import FakeLine, line_audio_webhook, line_headers
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import FakeServer
from tests.fakes.telegram import FakeTelegram, telegram_body, telegram_text_update, telegram_update
from tests.fakes.whatsapp import (
    FakeWhatsApp,
    new_wamid,
    whatsapp_audio_webhook,
    whatsapp_headers,
    whatsapp_text_webhook,
)
from tests.service import running_service

TRANSCRIPT = "Hola, ayer fui al mercado con mi hermana."
REPLY = (
    "¡Qué bien que fuiste al mercado con tu hermana! Me encanta la fruta fresca de allí. "
    "¿Qué fruta comprasteis las dos?"
)
PUBLIC = "https://buddy.example.test"
OPUS = ("ogg", "opus", 48_000)
M4A = ("mov,mp4,m4a,3gp,3g2,mj2", "aac", 24_000)


@dataclass
class Stack:
    service: FakeServer
    config: Settings
    db: Path
    wa: FakeWhatsApp
    tg: FakeTelegram
    line: FakeLine
    ai: FakeOpenAI

    def post(self, channel: str, body: bytes, headers: dict[str, str]) -> None:
        response = httpx.post(
            f"{self.service.base_url}/webhooks/{channel}", content=body, headers=headers
        )
        assert response.status_code == 200, response.text

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, args).fetchall()

    def wait_done(self, dedupe_key: str, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = self.query(
                "SELECT status, last_error FROM inbox WHERE dedupe_key = ?", dedupe_key
            )
            if rows and rows[0][0] == "done":
                return
            assert not rows or rows[0][0] != "dead", f"{dedupe_key} is dead: {rows[0][1]}"
            time.sleep(0.03)
        raise AssertionError(f"{dedupe_key} never got done: {rows}")

    def item_id(self, dedupe_key: str) -> int:
        [(item_id,)] = self.query("SELECT id FROM inbox WHERE dedupe_key = ?", dedupe_key)
        return item_id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = tmp_path_factory.mktemp("voice-e2e") / "lb.db"
    with FakeWhatsApp() as wa, FakeTelegram() as tg, FakeLine() as line, FakeOpenAI() as ai:
        config = load_settings(
            database_url=f"sqlite+aiosqlite:///{db}",
            public_base_url=PUBLIC,
            openai_api_key=ai.api_key,
            openai_base_url=ai.base_url,
            openai_max_retries=0,
            retry_base_seconds=0.2,
            max_attempts=4,
            worker_concurrency=2,
            voice_max_seconds=20,
            **wa.settings(),
            **tg.settings(),
            **line.settings(),
        )
        with running_service(config, run_worker=True) as service:
            yield Stack(service, config, db, wa, tg, line, ai)


@pytest.fixture(autouse=True)
def _reset(stack: Stack) -> None:
    for fake in (stack.wa, stack.tg, stack.line):
        fake.faults.clear()
        fake.server.clear()
    stack.wa.upload_delay = 0.0
    stack.ai.reset()


_numbers = itertools.count(1)


@dataclass
class Delivered:
    kind: str  # text | voice
    text: str = ""
    audio: bytes = b""
    duration: float | None = None  # what the platform was told


class Adapter:
    """One channel's fake, from the learner's side."""

    name: str
    lang: str  # the language the "You said" line and problems are phrased in
    voice_format: tuple[str, str, int]

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def new_user(self) -> str:
        raise NotImplementedError

    def post_voice(self, user: str, data: bytes, fmt: str) -> str:
        raise NotImplementedError

    def post_text(self, user: str, text: str) -> str:
        raise NotImplementedError

    def delivered(self, user: str) -> list[Delivered]:
        raise NotImplementedError


class WhatsApp(Adapter):
    name, lang, voice_format = "whatsapp", "en", OPUS

    def new_user(self) -> str:
        return f"5521{next(_numbers):09d}"

    def _post(self, body: bytes) -> None:
        self.stack.post("whatsapp", body, whatsapp_headers(body, self.stack.wa.app_secret))

    def post_voice(self, user: str, data: bytes, fmt: str) -> str:
        mime = INBOUND_FORMATS[fmt].mime
        media_id = self.stack.wa.add_media(data, mime)
        wamid = new_wamid()
        self._post(
            whatsapp_audio_webhook(
                media_id, mime=mime, voice=fmt == "ogg_opus", wa_id=user, message_id=wamid
            )
        )
        return f"whatsapp:{wamid}"

    def post_text(self, user: str, text: str) -> str:
        wamid = new_wamid()
        self._post(whatsapp_text_webhook(text, wa_id=user, message_id=wamid))
        return f"whatsapp:{wamid}"

    def delivered(self, user: str) -> list[Delivered]:
        out = []
        for message in self.stack.wa.sent:
            if message.get("to") != user:
                continue
            if message["type"] == "text":
                out.append(Delivered("text", message["text"]["body"]))
            else:
                data, _ = self.stack.wa.uploads[message["audio"]["id"]]
                out.append(Delivered("voice", audio=data))
        return out


class Telegram(Adapter):
    name, lang, voice_format = "telegram", "ja", OPUS

    def new_user(self) -> str:
        return str(700000000 + next(_numbers))

    def post_voice(self, user: str, data: bytes, fmt: str) -> str:
        """Voice notes as ``voice``, other files as ``audio`` (mp3) or a ``document``."""
        mime = INBOUND_FORMATS[fmt].mime
        key = "voice" if fmt == "ogg_opus" else "audio" if fmt == "mp3" else "document"
        file_id = self.stack.tg.add_file(data, mime, kind=key)
        media: dict[str, Any] = {
            "file_id": file_id,
            "file_unique_id": secrets.token_hex(4),
            "mime_type": mime,
            "file_size": len(data),
        }
        if key != "document":
            media["duration"] = 3
        else:
            media["file_name"] = INBOUND_FORMATS[fmt].filename
        update_id = 800000000 + next(_numbers)
        update = telegram_update({key: media}, update_id=update_id, chat_id=int(user))
        self.stack.post("telegram", telegram_body(update), self.stack.tg.headers())
        return f"telegram:{update_id}"

    def post_text(self, user: str, text: str) -> str:
        update_id = 800000000 + next(_numbers)
        body = telegram_text_update(text, update_id=update_id, chat_id=int(user))
        self.stack.post("telegram", body, self.stack.tg.headers())
        return f"telegram:{update_id}"

    def delivered(self, user: str) -> list[Delivered]:
        out = []
        for message in self.stack.tg.sent:
            if str(message.get("chat_id")) != user:
                continue
            if "voice" in message:
                duration = float(message["duration"]) if message.get("duration") else None
                out.append(Delivered("voice", audio=message["voice"], duration=duration))
            else:
                out.append(Delivered("text", message["text"]))
        return out


class Line(Adapter):
    name, lang, voice_format = "line", "en", M4A

    def new_user(self) -> str:
        return "U" + secrets.token_hex(16)

    def post_voice(self, user: str, data: bytes, fmt: str) -> str:
        message_id = self.stack.line.add_content(data, INBOUND_FORMATS[fmt].mime)
        event_id = "01J" + secrets.token_hex(12).upper()[:23]
        token = self.stack.line.issue_reply_token(user)
        body = line_audio_webhook(
            message_id,
            duration_ms=4000,
            user_id=user,
            reply_token=token,
            webhook_event_id=event_id,
        )
        self.stack.post("line", body, line_headers(body, self.stack.line.channel_secret))
        return f"line:{event_id}"

    def calls(self, user: str) -> list[tuple[str, dict[str, Any]]]:
        """("reply" | "push", body) of the learner's messages, in the order LINE got them."""
        line = self.stack.line
        out = []
        for request in line.server.recorded("/api/v2/bot/message/", "POST"):
            body = request.json()
            how = request.path.rsplit("/", 1)[1]
            target = body.get("to") if how == "push" else None
            if how == "reply":
                target = line.reply_tokens.get(body.get("replyToken"), {}).get("user")
            if target == user:
                out.append((how, body))
        return out

    def delivered(self, user: str) -> list[Delivered]:
        out = []
        for _, call in self.calls(user):
            for message in call["messages"]:
                if message["type"] == "text":
                    out.append(Delivered("text", message["text"]))
                    continue
                url = message["originalContentUrl"]
                assert url.startswith(f"{PUBLIC}/media/")
                local = url.replace(PUBLIC, self.stack.service.base_url)
                response = httpx.get(local)
                assert response.status_code == 200, response.text
                assert response.headers["content-type"] == "audio/mp4"
                out.append(
                    Delivered("voice", audio=response.content, duration=message["duration"] / 1000)
                )
        return out


ADAPTERS = {"whatsapp": WhatsApp, "telegram": Telegram, "line": Line}


@pytest.fixture(params=sorted(ADAPTERS))
def channel(request: pytest.FixtureRequest, stack: Stack) -> Adapter:
    return ADAPTERS[request.param](stack)


def check_voice_reply(adapter: Adapter, user: str, delivered: list[Delivered]) -> None:
    """ "You said", the reply's text and one voice note that plays as the platform expects and
    lasts what was synthesised."""
    stack = adapter.stack
    assert [d.kind for d in delivered] == ["text", "text", "voice"], delivered
    assert delivered[0].text == phrase("you_said", adapter.lang, text=TRANSCRIPT)
    assert delivered[1].text == REPLY
    note = delivered[2]
    container, codec, rate, channels, seconds = decoded(note.audio)
    assert (container, codec, rate, channels) == (*adapter.voice_format, 1)
    synthesised = sum(s.duration_s for s in stack.ai.audio.speeches)
    assert len(stack.ai.audio.speeches) == 3  # one request per sentence
    assert seconds == pytest.approx(synthesised, rel=0.05)
    if note.duration is not None:  # Telegram's duration (s), LINE's (ms)
        assert note.duration == pytest.approx(synthesised, abs=1.0)


# --------------------------------------------------------------------------- the happy path


@pytest.mark.parametrize("fmt", sorted(INBOUND_FORMATS))
def test_a_voice_note_comes_back_as_a_voice_note(channel: Adapter, fmt: str) -> None:
    stack = channel.stack
    user = channel.new_user()
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    key = channel.post_voice(user, voice_note(fmt), fmt)
    stack.wait_done(key)
    check_voice_reply(channel, user, channel.delivered(user))
    # The transcription got real audio it could decode, named for its format.
    [stt] = stack.ai.audio.transcriptions
    assert stt.duration_s == pytest.approx(decoded(voice_note(fmt))[4], abs=0.1)
    assert stt.filename.rsplit(".", 1)[-1] in ("ogg", "m4a", "mp3", "flac")
    [chat] = stack.ai.chat_bodies()
    assert chat["messages"][-1]["content"] == f"(voice note) {TRANSCRIPT}"
    assert chat["stream"] is True


def test_you_said_goes_out_before_the_tutor_is_asked(stack: Stack) -> None:
    adapter = WhatsApp(stack)
    user = adapter.new_user()
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    stack.wait_done(adapter.post_voice(user, voice_note(), "ogg_opus"))
    sends = [r for r in stack.wa.server.recorded("/messages", "POST") if "to" in r.json()]
    heard = sends[0]
    assert TRANSCRIPT in heard.json()["text"]["body"]
    [chat] = stack.ai.requests("/v1/chat/completions")
    [speech, *_] = stack.ai.requests("/v1/audio/speech")
    [upload] = stack.wa.server.recorded("/media", "POST")
    assert heard.at < chat.at < speech.at < upload.at
    # The first sentence was spoken while the chat model was still writing the rest: its
    # speech request left before the last sentence's.
    starts = [r.at for r in stack.ai.requests("/v1/audio/speech")]
    assert starts == sorted(starts) and len(starts) == 3


def test_telegram_shows_recording_while_the_voice_reply_is_made(stack: Stack) -> None:
    adapter = Telegram(stack)
    user = adapter.new_user()
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    stack.wait_done(adapter.post_voice(user, voice_note(), "ogg_opus"))
    actions = [a["action"] for a in stack.tg.actions if str(a["chat_id"]) == user]
    assert actions[0] == "typing" and "record_voice" in actions
    [voice] = [m for m in stack.tg.sent if "voice" in m and str(m["chat_id"]) == user]
    assert int(voice["duration"]) >= 1


def test_line_keeps_its_free_reply_for_the_answer(stack: Stack) -> None:
    """ "You said" is pushed (billed, one message); the text and the note go together in the
    free reply."""
    adapter = Line(stack)
    user = adapter.new_user()
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    stack.wait_done(adapter.post_voice(user, voice_note("m4a"), "m4a"))
    calls = adapter.calls(user)
    assert [(how, [m["type"] for m in c["messages"]]) for how, c in calls] == [
        ("push", ["text"]),
        ("reply", ["text", "audio"]),
    ]
    check_voice_reply(adapter, user, adapter.delivered(user))


def test_the_turn_usage_and_timings_are_recorded(stack: Stack) -> None:
    adapter = WhatsApp(stack)
    user = adapter.new_user()
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    key = adapter.post_voice(user, voice_note(seconds=5.0), "ogg_opus")
    stack.wait_done(key)
    item = stack.item_id(key)
    [(modality, text, transcript, timings, media)] = stack.query(
        "SELECT modality, text, transcript, timings, media FROM turns "
        "WHERE inbox_item_id = ? AND direction = 'in'",
        item,
    )
    assert (modality, text, transcript) == ("voice", TRANSCRIPT, TRANSCRIPT)
    import json

    stages = json.loads(timings)
    for stage in ("download", "decode", "transcribe", "first_token", "tutor_done", "first_audio"):
        assert stages[stage] >= 0, stage
    for stage in ("synthesis_done", "encode", "upload", "send", "heard_sent", "voice_sent"):
        assert stages[stage] >= 0, stage
    assert stages["heard_sent"] < stages["tutor_done"] < stages["voice_sent"]
    assert '"sha256"' in media and "upload" not in json.loads(media)
    learner = stack.query(
        "SELECT learner_id FROM identities WHERE channel = 'whatsapp' AND channel_user_id = ?",
        user,
    )[0][0]
    usage = dict(
        (kind, seconds)
        for kind, seconds in stack.query(
            "SELECT kind, audio_seconds FROM usage WHERE learner_id = ? AND kind != 'chat'",
            learner,
        )
    )
    assert usage["stt"] == pytest.approx(5.0, abs=0.1)
    assert usage["tts"] == pytest.approx(sum(s.duration_s for s in stack.ai.audio.speeches))
    # The delivered note is not kept: the outbox drops its audio once it is sent.
    assert stack.query(
        "SELECT kind, audio IS NULL, sent_at IS NOT NULL FROM outbox WHERE inbox_item_id = ?",
        item,
    ) == [("heard", 1, 1), ("text", 1, 1), ("voice", 1, 1)]
    metrics = httpx.get(f"{stack.service.base_url}/metrics").text
    assert 'lb_voice_milestone_seconds_count{milestone="voice_sent"}' in metrics
    assert 'lb_stage_seconds_count{stage="transcribe"}' in metrics


def test_speaking_follows_the_level(stack: Stack) -> None:
    adapter = WhatsApp(stack)
    user = adapter.new_user()
    stack.ai.reply_tools(
        ("set_target_language", {"language": "es"}), ("set_level", {"level": "A1"}), text="¡Vale!"
    )
    stack.wait_done(adapter.post_text(user, "quiero aprender español, soy principiante"))
    stack.ai.reset()
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    stack.wait_done(adapter.post_voice(user, voice_note(), "ogg_opus"))
    [stt] = stack.ai.audio.transcriptions
    assert stt.language == "es"  # the target language is the hint
    for speech in stack.ai.audio.speeches:
        assert speech.model == "gpt-4o-mini-tts" and speech.response_format == "pcm"
        assert "slowly" in (speech.instructions or "") and "Spanish" in speech.instructions


# --------------------------------------------------------------------------- preferences


def test_voice_off_answers_voice_with_text_and_voice_on_answers_text_with_voice(
    stack: Stack,
) -> None:
    adapter = WhatsApp(stack)
    user = adapter.new_user()
    stack.wait_done(adapter.post_text(user, "/voice off"))
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    stack.wait_done(adapter.post_voice(user, voice_note(), "ogg_opus"))
    assert [d.kind for d in adapter.delivered(user)] == ["text", "text", "text"]  # no note
    assert stack.ai.audio.speeches == []

    stack.ai.reset()
    stack.wa.sent.clear()
    stack.wait_done(adapter.post_text(user, "/voice on"))
    stack.ai.reply(REPLY)
    stack.wait_done(adapter.post_text(user, "Hoy hace sol."))
    kinds = [d.kind for d in adapter.delivered(user)]
    assert kinds == ["text", "text", "voice"]  # "/voice on" answered, then text + note
    assert stack.ai.audio.transcriptions == []
    assert len(stack.ai.audio.speeches) == 3


def test_text_is_answered_with_text_by_default(stack: Stack) -> None:
    adapter = Telegram(stack)
    user = adapter.new_user()
    stack.ai.reply(REPLY)
    stack.wait_done(adapter.post_text(user, "Hoy hace sol."))
    assert [d.kind for d in adapter.delivered(user)] == ["text"]
    assert stack.ai.audio.speeches == []


# --------------------------------------------------------------------------- bad audio


BAD = {
    "empty": (lambda: voice_note("ogg_opus", seconds=0.15), "audio_empty"),
    "silent": (lambda: quiet_note("ogg_opus"), "audio_silent"),
    "too_long": (lambda: voice_note("ogg_opus", seconds=25.0), "audio_too_long"),
    "corrupt": (lambda: secrets.token_bytes(30_000), "audio_corrupt"),
    "not_audio": (lambda: b"Just some text, named voice.ogg.\n" * 100, "audio_corrupt"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_audio_gets_a_clear_answer_and_no_model_call(stack: Stack, case: str) -> None:
    make, problem = BAD[case]
    adapter = WhatsApp(stack)
    user = adapter.new_user()
    stack.wait_done(adapter.post_voice(user, make(), "ogg_opus"))
    assert [d.text for d in adapter.delivered(user)] == [problem_phrase(problem, "en")]
    assert stack.ai.requests("/v1/") == []  # no transcription, chat or speech
    assert httpx.get(f"{stack.service.base_url}/healthz").status_code == 200


def test_whisper_hearing_nothing_is_answered_without_the_tutor(stack: Stack) -> None:
    adapter = WhatsApp(stack)
    user = adapter.new_user()
    stack.ai.audio.transcript("", no_speech=True)
    stack.wait_done(adapter.post_voice(user, voice_note(), "ogg_opus"))
    assert [d.text for d in adapter.delivered(user)] == [problem_phrase("audio_silent", "en")]
    assert len(stack.ai.audio.transcriptions) == 1 and stack.ai.chat_bodies() == []


def test_an_oversize_download_is_refused_kindly(stack: Stack) -> None:
    adapter = Telegram(stack)
    user = adapter.new_user()
    stack.wait_done(adapter.post_voice(user, b"\0" * (21 * 1024 * 1024), "mp3"))
    assert [d.text for d in adapter.delivered(user)] == [problem_phrase("audio_too_large", "ja")]
    assert stack.ai.requests("/v1/") == []


def test_problems_are_phrased_in_every_language() -> None:
    for code in ("audio_empty", "audio_silent", "audio_too_long", "audio_corrupt"):
        for lang in ("en", "es", "fr", "de", "it", "pt", "ja", "zh", "ko"):
            assert problem_phrase(code, lang) != problem_phrase(None, lang)


def test_a_video_note_is_refused_kindly(stack: Stack) -> None:
    adapter = Telegram(stack)
    user = adapter.new_user()
    update_id = 900000000 + next(_numbers)
    update = telegram_update(
        {"video_note": {"file_id": "x", "file_unique_id": "y", "length": 240, "duration": 3}},
        update_id=update_id,
        chat_id=int(user),
    )
    stack.post("telegram", telegram_body(update), stack.tg.headers())
    stack.wait_done(f"telegram:{update_id}")
    assert [d.text for d in adapter.delivered(user)] == [phrase("unsupported", "ja")]


# --------------------------------------------------------------------------- hosted media


def test_hosted_media_is_signed_and_expires(stack: Stack) -> None:
    adapter = Line(stack)
    user = adapter.new_user()
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    stack.wait_done(adapter.post_voice(user, voice_note("m4a"), "m4a"))
    [(_, reply)] = [c for c in adapter.calls(user) if c[0] == "reply"]
    url = reply["messages"][1]["originalContentUrl"]
    token = url.rsplit("/", 1)[1]
    base = f"{stack.service.base_url}/media"
    assert httpx.get(f"{base}/{token}").status_code == 200
    assert httpx.head(f"{base}/{token}").status_code == 200
    media_id, expires, signature = token.split(".")
    # Tampered: another file, a later expiry, a changed or missing signature.
    for forged in (
        f"{media_id[:-1]}x.{expires}.{signature}",
        f"{media_id}.{int(expires) + 3600}.{signature}",
        f"{media_id}.{expires}.{signature[:-2]}aa",
        f"{media_id}.{expires}",
        "nonsense",
    ):
        assert httpx.get(f"{base}/{forged}").status_code == 403, forged
    # Expired: the row's expiry passed (the purge then removes it).
    stack.query("UPDATE hosted_media SET expires_at = 0 WHERE id = ?", media_id)
    assert httpx.get(f"{base}/{token}").status_code == 410
    assert 15 * 60 - 5 <= int(expires) - time.time() <= 15 * 60


# --------------------------------------------------------------------------- exactly once


def test_upload_failures_retry_without_a_second_synthesis(stack: Stack) -> None:
    """Every in-call retry of the upload fails (500 x3), the event is retried later: the
    stored note is uploaded then, with no new transcription, chat or speech request."""
    adapter = WhatsApp(stack)
    user = adapter.new_user()
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    stack.wa.fail_next(500, count=3, path_contains="/media")
    key = adapter.post_voice(user, voice_note(), "ogg_opus")
    stack.wait_done(key)
    assert len(stack.wa.server.recorded("/media", "POST")) == 4
    check_voice_reply(adapter, user, adapter.delivered(user))
    assert len(stack.ai.audio.transcriptions) == 1
    assert len(stack.ai.chat_bodies()) == 1
    assert len(stack.ai.audio.speeches) == 3
    [(attempts,)] = stack.query("SELECT attempts FROM inbox WHERE dedupe_key = ?", key)
    assert attempts == 2


def test_a_failed_send_after_the_upload_does_not_upload_again(stack: Stack) -> None:
    adapter = WhatsApp(stack)
    user = adapter.new_user()
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    # "You said" and the text go through; the audio message fails three times (a rate limit
    # that outlasts the in-call retries).
    stack.wa.fail_next(429, count=3, after=2, path_contains="/messages")
    stack.wait_done(adapter.post_voice(user, voice_note(), "ogg_opus"))
    assert len(stack.wa.server.recorded("/media", "POST")) == 1
    check_voice_reply(adapter, user, adapter.delivered(user))
    assert len(stack.ai.audio.speeches) == 3


def test_speech_unavailable_still_delivers_the_text(stack: Stack) -> None:
    adapter = Telegram(stack)
    user = adapter.new_user()
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    stack.ai.audio.fail("speech", 503, times=None)
    stack.wait_done(adapter.post_voice(user, voice_note(), "ogg_opus"))
    assert [d.kind for d in adapter.delivered(user)] == ["text", "text"]
    assert adapter.delivered(user)[1].text == REPLY


def test_transcription_down_apologises_once_and_answers_later(stack: Stack) -> None:
    adapter = WhatsApp(stack)
    user = adapter.new_user()
    stack.ai.audio.fail("transcribe", 503, times=1)
    stack.ai.audio.transcript(TRANSCRIPT)
    stack.ai.reply(REPLY)
    stack.wait_done(adapter.post_voice(user, voice_note(), "ogg_opus"))
    delivered = adapter.delivered(user)
    assert delivered[0].text == phrase("apology", "en")
    check_voice_reply(adapter, user, delivered[1:])
    assert len(stack.ai.audio.transcriptions) == 2
