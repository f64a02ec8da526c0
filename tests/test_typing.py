"""Static checks: mypy --strict and ruff stay clean (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    completed = run("mypy", "--cache-dir", str(tmp_path / "cache"))
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_ruff_is_clean() -> None:
    completed = run("ruff", "check", "--no-cache", "builder", "executor", "batou", "tests")
    assert completed.returncode == 0, completed.stdout + completed.stderr
