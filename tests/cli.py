"""The real `languagebuddy` command in a subprocess, as an operator or a learner runs it.

The child sees only PATH and the settings a test gives (its working directory is the test's
temporary folder, so no `.env` is read), never the developer's shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COMMAND = [sys.executable, "-m", "languagebuddy.cli"]


def cli_env(env: dict[str, str]) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}


def run_cli(
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    *,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        env=cli_env(env),
        cwd=cwd,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(args: list[str], env: dict[str, str], cwd: Path, **popen: object) -> subprocess.Popen:
    """The command left running (a server, an interactive chat); the caller stops it."""
    options: dict[str, object] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.STDOUT,
        "text": True,
        **popen,
    }
    return subprocess.Popen([*COMMAND, *args], env=cli_env(env), cwd=cwd, **options)  # type: ignore[call-overload]
