"""`languagebuddy chat` as a learner runs it: a real subprocess, the fake OpenAI over HTTP."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.audio_samples import INBOUND_FORMATS, decoded, voice_note
from tests.fakes.openai import FakeOpenAI

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:")  # in process, the service logs to stdout


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "languagebuddy.cli", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_chat_message_answers_from_the_model(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        env = {
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": fake.api_key,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}",
        }
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

        exported = run_cli(["learner", "export", "1"], env, tmp_path)
        assert exported.returncode == 0, exported.stderr
        assert '"target_language": "es"' in exported.stdout


def test_chat_image_goes_to_the_vision_model(tmp_path: Path) -> None:
    photo = tmp_path / "market.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 60, 30)).save(buffer, "JPEG")
    photo.write_bytes(buffer.getvalue())
    with FakeOpenAI() as fake:
        env = {
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": fake.api_key,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}",
        }
        result = run_cli(
            ["chat", "--image", str(photo), "--message", "¿Qué es?", "--user", "kai"], env, tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert "foto" in result.stdout
        content = fake.chat_bodies()[-1]["messages"][-1]["content"]
        urls = [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
        assert urls and urls[0].startswith("data:image/jpeg;base64,")


def test_chat_apologises_when_the_model_stays_down(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        fake.fail(500, times=None)
        env = {
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": fake.api_key,
            "LB_OPENAI_MAX_RETRIES": "0",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}",
        }
        result = run_cli(["chat", "--message", "Hallo", "--user", "jo"], env, tmp_path)
        assert result.returncode == 1
        assert result.stdout.strip()  # the apology, in words
        assert "answer this message next time" in result.stderr
        fake.reset()
        retry = run_cli(["chat", "--message", "Noch da?", "--user", "jo"], env, tmp_path)
        assert retry.returncode == 0, retry.stderr
        # The kept event is answered first, then the new one: nothing was lost.
        assert "Hallo" in retry.stdout and "Noch da?" in retry.stdout


def test_chat_voice_prints_what_was_heard_and_saves_the_voice_reply(tmp_path: Path) -> None:
    note = tmp_path / "nota.ogg"
    note.write_bytes(voice_note("ogg_opus"))
    with FakeOpenAI() as fake:
        env = {
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": fake.api_key,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}",
        }
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
    from languagebuddy.cli_chat import run_chat
    from languagebuddy.config import load_settings

    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'lb.db'}",
        openai_base_url=fake_openai.base_url,
        openai_api_key=fake_openai.api_key,
    )
    for fmt, spec in sorted(INBOUND_FORMATS.items()):
        path = tmp_path / spec.filename
        path.write_bytes(voice_note(fmt))
        fake_openai.audio.transcript(f"Nota en {fmt}.")
        fake_openai.reply("Muy bien. Sigue así.")
        code = asyncio.run(run_chat(settings, "lee", message=None, image=None, voice=path))
        out = [line for line in capsys.readouterr().out.splitlines() if not LOG_LINE.match(line)]
        assert code == 0
        assert out[:2] == [f"You said: “Nota en {fmt}.”", "Muy bien. Sigue así."], fmt
        assert out[2].startswith("(voice reply, ")
    assert len(list(tmp_path.glob("languagebuddy-reply-*.ogg"))) == len(INBOUND_FORMATS)
