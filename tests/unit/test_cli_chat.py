"""The console's own commands, told apart from what goes to the buddy."""

from __future__ import annotations

from pathlib import Path

import pytest

from languagebuddy.cli_chat import parse_line


def test_console_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my photo.jpg").write_bytes(b"x")
    (tmp_path / "note.ogg").write_bytes(b"x")
    assert parse_line("   ").action == "nothing"
    assert parse_line("/help").action == "help"
    assert parse_line("/quit").action == "quit"
    image = parse_line('/image "my photo.jpg" ¿qué es esto?')
    assert (image.action, image.image, image.event_text) == (
        "send",
        Path("my photo.jpg"),
        "¿qué es esto?",
    )
    assert parse_line("/image").error.startswith("usage")
    assert parse_line("/image gone.jpg").error == "no such file: gone.jpg"
    assert parse_line("/voice note.ogg").voice == Path("note.ogg")
    assert parse_line("/voice gone/hola.ogg").action == "error"
    # The learner commands, /voice on|off among them, go to the buddy as typed.
    for typed in ("/voice on", "/voice off", "/level B1", "/forget-me", "Hola, ¿qué tal?"):
        line = parse_line(typed)
        assert (line.action, line.event_text) == ("send", typed)
