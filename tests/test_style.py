"""The house style is checked, not hoped for: ruff's linter and formatter, and mypy strict.

The tools come with the test extra; the settings live in pyproject.toml. A file that
drifts from ``ruff format`` or a new type error fails here, in CI as on a laptop.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import main_python_only

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["wsauth_sync", "tests", "examples", "benchmarks"]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", *CHECKED],
        ["ruff", "format", "--check", *CHECKED],
        # Each Python resolves its own mypy release; .ci/matrix runs the oldest one itself.
        pytest.param(["mypy"], marks=main_python_only("the main Python's mypy")),
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
