"""Crash campaign (issue 11): `executor apply` killed with SIGKILL at random
moments, each kill followed by an apply that must converge.

    .venv/bin/python bench/faults/kill.py [--trials 100] [--seed 1] [--files 300]
        [--big-mb 16] [--no-save]

A host alternates between two versions of a deployment (FILES small files
and one BIG-MB file, all with version-specific content). Each trial starts
`executor apply` of the other version, kills it with SIGKILL after a random
delay between 0 and 1.2 times a normal apply's duration, then checks:

- no torn file: every managed file holds exactly version 1's or version 2's
  content (or, before it was ever written, does not exist);
- the state decodes (`executor status --json` works);
- the next `executor apply` of the same bundle succeeds and leaves every
  file with the bundle's content, and no `.consign-*` temporary file stays
  in the target.

Writes bench/results/faults-kill.json and .md. tests/e2e/test_faults_kill.py
runs a few trials of this script in the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from executor.fs import die_with_parent  # noqa: E402
from tests.deployments import build_bundles, deployment  # noqa: E402
from tests.keys import signing_key  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent

APP = """
from batou.component import Component
from batou.lib.file import BinaryFile, File

class App(Component):
    def configure(self):
        for i in range({files}):
            self += File(f"f/{{i:04d}}.conf", content=f"version {version} file {{i}}\\n", leading=True)
        self += BinaryFile("big.bin", content=bytes([{version}]) * ({big_mb} << 20))
"""


def expected(version: int, files: int, big_mb: int) -> dict[str, bytes]:
    found = {f"f/{i:04d}.conf": f"version {version} file {i}\n".encode() for i in range(files)}
    found["big.bin"] = bytes([version]) * (big_mb << 20)
    return found


class Host:
    def __init__(self, work: Path) -> None:
        self.state = work / "state"
        self.target = work / "target"
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    def argv(self, bundle: Path) -> list[str]:
        return [
            str(BIN / "executor"), "apply", str(bundle), "--host", "web1", "--allow-downgrade",
            "--target-dir", str(self.target), "--state-dir", str(self.state),
            "--trust", str(signing_key().trust), "--json",
        ]

    def apply(self, bundle: Path) -> dict[str, Any]:
        completed = subprocess.run(self.argv(bundle), capture_output=True, text=True, env=self.env, check=False)
        try:
            data: dict[str, Any] = json.loads(completed.stdout)
        except json.JSONDecodeError:
            data = {"status": "no-json", "stderr": completed.stderr[-2000:]}
        return data

    def files(self) -> dict[str, bytes]:
        base = self.target / "work" / "app"
        if not base.is_dir():
            return {}
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.target.rglob(".consign*"))

    def status_ok(self) -> bool:
        completed = subprocess.run(
            [str(BIN / "executor"), "status", "--state-dir", str(self.state), "--json"],
            capture_output=True, text=True, env=self.env, check=False,
        )
        try:
            return completed.returncode == 0 and bool(json.loads(completed.stdout))
        except json.JSONDecodeError:
            return False


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, at any depth (from /proc)."""
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            pending += children
    return found


def gone(pids: list[int], timeout: float = 30.0) -> bool:
    """Wait until none of `pids` runs any more (the runtime dies with its
    parent, PR_SET_PDEATHSIG, but may be inside a long write)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.02)
    return False


def torn(found: dict[str, bytes], versions: list[dict[str, bytes]]) -> list[str]:
    """Managed files whose content is neither version's (a file being
    written has another name until it is whole: see staging())."""
    return sorted(
        name for name, data in found.items()
        if not _STAGING.search(name) and all(v.get(name) != data for v in versions)
    )


# A file written atomically is staged as ".consign-NAME.XXXXXXXX" beside
# its target (executor/fs.py); a kill leaves it, the next write there removes it.
_STAGING = re.compile(r"(^|/)\.consign-[^/]+$")


def staging(found: dict[str, bytes]) -> list[str]:
    return sorted(name for name in found if _STAGING.search(name))


def campaign(trials: int, seed: int, files: int, big_mb: int, work: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    bundles = []
    for version in (1, 2):
        repo = deployment(
            work / f"repo{version}",
            components={"app": APP.format(version=version, files=files, big_mb=big_mb)},
            environments={"prod": "[hosts]\nweb1 = app\n"},
        )
        bundles.append(build_bundles("prod", repo, serial=version).hosts[0].path)
    contents = [expected(1, files, big_mb), expected(2, files, big_mb)]
    host = Host(work)
    first = host.apply(bundles[0])
    assert first["status"] == "ok", first
    started = time.perf_counter()
    assert host.apply(bundles[1])["status"] == "ok"
    normal = time.perf_counter() - started
    current = 1
    failures: list[dict[str, Any]] = []
    delays = []
    killed_before_end = 0
    killed_with_runtime = 0
    staged_after_kill = 0
    campaign_started = time.perf_counter()
    for trial in range(trials):
        other = 1 - current
        delay = rng.uniform(0, 1.2 * normal)
        delays.append(delay)
        process = subprocess.Popen(host.argv(bundles[other]), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=host.env, preexec_fn=die_with_parent)
        time.sleep(delay)
        children: list[int] = []
        if process.poll() is None:
            children = descendants(process.pid)
            killed_before_end += 1
            # The executor had started the runtime (or a tool making it): mid-apply.
            killed_with_runtime += bool(children)
            process.send_signal(signal.SIGKILL)
        process.wait()
        problem: dict[str, Any] = {"trial": trial, "delay_s": round(delay, 3)}
        if not gone(children):
            problem["survivors"] = children
        after_kill = host.files()
        bad = torn(after_kill, contents)
        if bad:
            problem["torn"] = bad[:5]
        staged_after_kill += bool(staging(after_kill))
        if not host.status_ok():
            problem["status"] = "executor status failed after the kill"
        result = host.apply(bundles[other])
        if result.get("status") != "ok":
            problem["converge"] = result.get("error") or result
        elif host.files() != contents[other]:
            problem["converge"] = "files differ from the bundle's after the next apply"
        if host.leftovers():
            problem["leftovers"] = host.leftovers()[:5]
        if len(problem) > 2:
            failures.append(problem)
        current = other
    return {
        "trials": trials,
        "seed": seed,
        "files": files + 1,
        "big_mb": big_mb,
        "normal_apply_s": round(normal, 3),
        "killed_before_end": killed_before_end,
        "killed_with_runtime": killed_with_runtime,
        "delay_bound_s": round(1.2 * normal, 3),
        "staging_files_after_kill": staged_after_kill,
        "delay_max_s": round(max(delays), 3) if delays else 0,
        "campaign_s": round(time.perf_counter() - campaign_started, 1),
        "failures": failures,
    }


def render(data: dict[str, Any]) -> str:
    lines = [
        "# Crash campaign: SIGKILL during `executor apply` (issue 11)",
        "",
        f"`{data['command']}`, commit {data['commit']}, {data['date']}.",
        "",
        f"- {data['trials']} trials (seed {data['seed']}), {data['files']} managed files "
        f"({data['big_mb']} MB in one), a normal apply takes {data['normal_apply_s']} s;",
        f"- killed before the apply ended: {data['killed_before_end']} of {data['trials']} "
        f"(delays uniform in 0..{data['delay_bound_s']} s), of which {data['killed_with_runtime']} while "
        "the executor had started a child (the runtime, or a tool making it): the rest in start-up "
        "or verification;",
        f"- kills that left a staging file (`.consign-NAME.XXXXXXXX`, the file being written, never "
        f"the file itself): {data['staging_files_after_kill']}; the next apply removed every one;",
        f"- failures (torn file, unreadable state, no convergence, files left over after the next "
        f"apply): {len(data['failures'])};",
        f"- campaign time {data['campaign_s']} s.",
        "",
    ]
    for failure in data["failures"]:
        lines.append(f"  - {json.dumps(failure)}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--big-mb", type=int, default=16)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="consign-kill-") as work:
        data = campaign(args.trials, args.seed, args.files, args.big_mb, Path(work))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    data.update(command="python bench/faults/kill.py " + " ".join(sys.argv[1:]), commit=commit,
                date=time.strftime("%Y-%m-%d"))
    print(json.dumps(data) if args.json else render(data))
    if not args.no_save:
        (RESULTS / "faults-kill.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        (RESULTS / "faults-kill.md").write_text(render(data))
    return 1 if data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
