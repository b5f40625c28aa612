"""`languagebuddy chat` as a learner runs it: a real subprocess, the fake OpenAI over HTTP."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.fakes.openai import FakeOpenAI


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
