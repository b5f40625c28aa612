"""`languagebuddy chat` as a learner runs it: a real subprocess, the fake OpenAI over HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import sqlite3
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.audio_samples import INBOUND_FORMATS, decoded
from tests.audio_samples import voice_note as sample_note
from tests.cli import run_cli, start_cli
from tests.fakes.openai import FakeOpenAI

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:")  # in process, the service logs to stdout


def chat_env(fake: FakeOpenAI, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": fake.api_key,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}",
        **extra,
    }


def photo(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 60, 30)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue())
    return path


def voice_note(path: Path) -> Path:
    """Half a second of a 440 Hz tone as Ogg/Opus, the way Telegram and WhatsApp send notes."""
    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        t = np.arange(24000) / 48000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.rate = 48000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_chat_message_answers_from_the_model(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        env = chat_env(fake, tmp_path)
        fake.reply_tools(
            ("set_target_language", {"language": "es"}), text="¡Hola! ¿Qué nivel tienes?"
        )
        first = run_cli(
            ["chat", "--message", "Hola, quiero practicar", "--user", "ana"], env, tmp_path
        )
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == "¡Hola! ¿Qué nivel tienes?"
        sent = fake.chat_bodies()[0]
        assert any("Hola, quiero practicar" in str(m.get("content")) for m in sent["messages"])

        second = run_cli(["chat", "--message", "Creo que B1", "--user", "ana"], env, tmp_path)
        assert second.returncode == 0, second.stderr
        assert "Creo que B1" in second.stdout  # the fake's default reply quotes the learner
        history = str(fake.chat_bodies()[-1]["messages"])
        assert "Hola, quiero practicar" in history  # memory of the first turn
        assert "¡Hola! ¿Qué nivel tienes?" in history

    # The operator names the learner the way the channel does, and reads real times.
    exported = run_cli(["learner", "export", "console:ana"], env, tmp_path)
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert data["learner"]["target_language"] == "es"
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    assert iso.match(data["learner"]["created_at"]) and iso.match(data["turns"][0]["created_at"])
    unknown = run_cli(["learner", "delete", "+15550000000"], env, tmp_path)
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1
    assert "telegram:" in unknown.stderr  # says which forms it accepts
    erased = run_cli(["learner", "delete", "console:ana"], env, tmp_path)
    assert erased.returncode == 0 and "erased" in erased.stdout


def test_chat_image_goes_to_the_vision_model(tmp_path: Path) -> None:
    picture = photo(tmp_path / "market.jpg")
    with FakeOpenAI() as fake:
        result = run_cli(
            ["chat", "--image", str(picture), "--message", "¿Qué es?", "--user", "kai"],
            chat_env(fake, tmp_path),
            tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "foto" in result.stdout
        content = fake.chat_bodies()[-1]["messages"][-1]["content"]
        urls = [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
        assert urls and urls[0].startswith("data:image/jpeg;base64,")


def test_a_console_session_answers_only_its_own_learner(tmp_path: Path) -> None:
    """A message a failed run left behind is announced and answered by its own learner's next
    run (or dropped on request), never printed in another learner's session."""
    with FakeOpenAI() as fake:
        env = chat_env(fake, tmp_path, LB_OPENAI_MAX_RETRIES="0")
        fake.fail(500, times=None)
        failed = run_cli(["chat", "--message", "Hallo", "--user", "jo"], env, tmp_path)
        assert failed.returncode == 1
        assert failed.stdout.strip()  # the apology, in words
        assert "model provider error 500" in failed.stderr
        assert "answered next time" in failed.stderr
        fake.reset()

        other = run_cli(["chat", "--message", "Bonjour", "--user", "bo"], env, tmp_path)
        assert other.returncode == 0, other.stderr
        assert "Bonjour" in other.stdout and "Hallo" not in other.stdout
        assert "earlier" not in other.stderr

        again = run_cli(["chat", "--message", "Noch da?", "--user", "jo"], env, tmp_path)
        assert again.returncode == 0, again.stderr
        assert "(answering 1 earlier message first)" in again.stderr
        assert again.stdout.index("Hallo") < again.stdout.index("Noch da?")  # nothing lost

        fake.fail(500, times=None)
        assert run_cli(["chat", "--message", "Eins", "--user", "jo"], env, tmp_path).returncode
        fake.reset()
        fresh = run_cli(
            ["chat", "--message", "Zwei", "--user", "jo", "--drop-earlier"], env, tmp_path
        )
        assert fresh.returncode == 0, fresh.stderr
        assert "(dropped 1 earlier message)" in fresh.stderr
        assert "Zwei" in fresh.stdout and "Eins" not in fresh.stdout


def test_interactive_chat_commands(tmp_path: Path) -> None:
    picture = photo(tmp_path / "p.jpg")
    note = voice_note(tmp_path / "hola.ogg")
    typed = "\n".join(
        [
            "/help",
            "/image missing.jpg",
            f"/image {picture} ¿Qué es?",
            f"/voice {note}",
            "Hola",
            "/quit",
        ]
    )
    with FakeOpenAI() as fake:
        env = chat_env(fake, tmp_path)
        result = run_cli(["chat", "--user", "mia"], env, tmp_path, stdin=typed + "\n")
    assert result.returncode == 0, result.stderr
    assert "/image PATH [caption]" in result.stdout and "/voice PATH" in result.stdout
    assert "(no such file: missing.jpg)" in result.stderr
    assert "foto" in result.stdout and "Hola" in result.stdout
    with sqlite3.connect(tmp_path / "lb.db") as db:
        kinds = [
            json.loads(payload)["kind"]
            for (payload,) in db.execute("SELECT payload FROM inbox ORDER BY id")
        ]
    assert kinds == ["image", "voice", "text"]  # the voice note took the --voice event path


def test_ctrl_c_quits_at_once_and_keeps_the_message(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        env = chat_env(fake, tmp_path)
        # While waiting for the learner to type:
        idle = start_cli(["chat", "--user", "lu"], env, tmp_path, stdin=subprocess.PIPE)
        assert idle.stdout is not None
        assert idle.stdout.readline().startswith("LanguageBuddy")
        idle.send_signal(signal.SIGINT)
        assert idle.wait(timeout=20) == 130

        # While waiting for a reply the model is slow to give:
        fake.slow(4, "too late")  # longer than the SIGINT takes; short for the fake to stop
        busy = start_cli(["chat", "--user", "lu"], env, tmp_path, stdin=subprocess.PIPE)
        assert busy.stdin is not None and busy.stdout is not None
        assert busy.stdout.readline().startswith("LanguageBuddy")
        busy.stdin.write("Hola\n")
        busy.stdin.flush()
        fake.server.wait_for("/v1/chat/completions", timeout=30)
        busy.send_signal(signal.SIGINT)
        assert busy.wait(timeout=20) == 130
        fake.reset()

        # The interrupted message went back to the inbox and is answered next time.
        later = run_cli(["chat", "--message", "¿Sigues ahí?", "--user", "lu"], env, tmp_path)
    assert later.returncode == 0, later.stderr
    assert "(answering 1 earlier message first)" in later.stderr
    assert "Hola" in later.stdout and "¿Sigues ahí?" in later.stdout


def test_chat_voice_prints_what_was_heard_and_saves_the_voice_reply(tmp_path: Path) -> None:
    note = tmp_path / "nota.ogg"
    note.write_bytes(sample_note("ogg_opus"))
    with FakeOpenAI() as fake:
        env = chat_env(fake, tmp_path)
        fake.audio.transcript("Hola, me llamo Kai.")
        fake.reply("¡Hola, Kai! Encantado de conocerte. ¿De dónde eres?")
        result = run_cli(["chat", "--voice", str(note), "--user", "kai"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert lines[0] == "You said: “Hola, me llamo Kai.”"
        assert lines[1] == "¡Hola, Kai! Encantado de conocerte. ¿De dónde eres?"
        assert lines[2].startswith("(voice reply, ")
        saved = Path(lines[2].rsplit(": ", 1)[1].rstrip(")"))
        assert saved.parent == tmp_path and saved.suffix == ".ogg"
        container, codec, rate, _, seconds = decoded(saved.read_bytes())
        assert (container, codec, rate) == ("ogg", "opus", 48_000)
        assert seconds == pytest.approx(sum(s.duration_s for s in fake.audio.speeches), rel=0.05)


def test_chat_voice_reads_every_inbound_format(
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The console's own path (in process, for speed) with each format a learner may have."""
    from languagebuddy.cli_chat import make_event, run_once
    from languagebuddy.config import load_settings

    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}",
        openai_base_url=fake_openai.base_url,
        openai_api_key=fake_openai.api_key,
    )
    for fmt, spec in sorted(INBOUND_FORMATS.items()):
        path = tmp_path / spec.filename
        path.write_bytes(sample_note(fmt))
        fake_openai.audio.transcript(f"Nota en {fmt}.")
        fake_openai.reply("Muy bien. Sigue así.")
        event = make_event("lee", None, voice=path)
        code = asyncio.run(run_once(settings, "lee", event, drop_earlier=False))
        out = [line for line in capsys.readouterr().out.splitlines() if not LOG_LINE.match(line)]
        assert code == 0
        assert out[:2] == [f"You said: “Nota en {fmt}.”", "Muy bien. Sigue así."], fmt
        assert out[2].startswith("(voice reply, ")
    assert len(list(tmp_path.glob("languagebuddy-reply-*.ogg"))) == len(INBOUND_FORMATS)
