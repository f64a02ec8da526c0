"""A sample of the crash campaign in the suite: bench/faults/kill.py with a
few trials (the full campaign runs 100; its figures are in
bench/results/faults-kill.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "faults" / "kill.py"


def test_sigkill_at_random_moments_never_tears_a_file_and_the_next_apply_converges() -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--trials", "6", "--seed", "7", "--files", "40",
         "--big-mb", "4", "--no-save", "--json"],
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert completed.returncode in (0, 1), completed.stderr[-3000:]
    data = json.loads(completed.stdout)
    assert data["failures"] == [], data["failures"]
    assert data["trials"] == 6
