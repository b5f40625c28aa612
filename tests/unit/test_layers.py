"""The layering rule of DESIGN.md, checked on the source: the lower layers (inbox, ai, media,
channels, store and the shared modules) import nothing from the layers built on them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "languagebuddy"
LOWER = ("inbox", "ai", "media", "channels", "store", "events.py", "errors.py", "config.py")
UPPER = (
    "tutor",
    "pipeline",
    "voice",
    "indicator",
    "photo_sets",
    "side_events",
    "services",
    "startup",
    "web",
    "calls",
    "cli",
    "cli_chat",
    "doctor",
)


def _modules(entry: str) -> list[Path]:
    path = PACKAGE / entry
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize(
    "module", [m for entry in LOWER for m in _modules(entry)], ids=lambda p: p.name
)
def test_lower_layers_import_no_upper_layer(module: Path) -> None:
    upward = sorted(
        name
        for name in _imported(module)
        if name.startswith("languagebuddy.") and name.split(".")[1] in UPPER
    )
    assert upward == [], f"{module.relative_to(PACKAGE)} imports {upward}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from languagebuddy.tutor.api import TutorInput\n")
    assert "languagebuddy.tutor.api" in _imported(bad)
