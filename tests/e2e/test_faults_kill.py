"""A sample of the crash campaign in the suite: bench/faults/kill.py with a
few trials (the full campaign runs 100; its figures are in
bench/results/faults-kill.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "faults" / "kill.py"


def test_sigkill_at_random_moments_never_tears_a_file_and_the_next_apply_converges() -> None:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--trials", "6", "--seed", "7", "--files", "40",
         "--big-mb", "4", "--no-save", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the campaign and every apply it started
        process.communicate()
        raise
    assert process.returncode in (0, 1) and stdout, stderr[-3000:]
    data = json.loads(stdout)
    assert data["failures"] == [], data["failures"]
    assert data["trials"] == 6
    # At least one kill hit an apply that was running, not one that had ended.
    assert data["killed_before_end"] >= 1, data
