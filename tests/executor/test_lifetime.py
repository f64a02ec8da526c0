"""Nothing an apply started outlives it: not when it is killed, not when it is stopped.

The runtime child and the commands deployment code runs get SIGKILL when
their parent dies (PR_SET_PDEATHSIG, :func:`executor.fs.die_with_parent`);
``executor apply`` turns SIGTERM into an orderly exit that kills the
runtime and removes its temporary files. The parents here are real
processes (a python script, the ``executor`` console script), so that the
test process itself survives what is done to them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deployments import build_bundles, deployment
from tests.keys import signing_key

BIN = Path(sys.executable).parent


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def wait_for(path: Path, within: float = 120.0) -> int:
    """The pid written to `path`, once it is there."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"nothing wrote {path} within {within:g}s")


# -- die_with_parent --------------------------------------------------------------------

PARENT = """
    import os, subprocess, sys, time
    from executor.fs import die_with_parent

    pid_file, mechanism = sys.argv[1], sys.argv[2]
    child = subprocess.Popen(
        ["sleep", "1000"],
        start_new_session=True,
        preexec_fn=die_with_parent if mechanism == "die_with_parent" else None,
    )
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.rename(pid_file + ".tmp", pid_file)
    time.sleep(1000)
    """


@pytest.fixture
def start_parent(tmp_path: Path) -> Iterator[Callable[[str], tuple[subprocess.Popen[bytes], int]]]:
    """Start a python parent that starts `sleep 1000` (with `mechanism`);
    the parent and its pid. Both are killed when the test ends."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(PARENT).lstrip("\n"))
    pid_file = tmp_path / "child.pid"
    parents: list[subprocess.Popen[bytes]] = []

    def start(mechanism: str) -> tuple[subprocess.Popen[bytes], int]:
        parent = subprocess.Popen(
            [sys.executable, str(script), str(pid_file), mechanism], stdin=subprocess.DEVNULL
        )
        parents.append(parent)
        return parent, wait_for(pid_file, within=30)

    yield start
    for parent in parents:
        parent.kill()
        parent.wait(timeout=30)
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_child_started_with_die_with_parent_dies_when_its_parent_is_killed(
    start_parent: Callable[[str], tuple[subprocess.Popen[bytes], int]],
) -> None:
    parent, child = start_parent("die_with_parent")
    assert alive(child)

    parent.kill()
    assert parent.wait(timeout=10) == -signal.SIGKILL

    assert gone(child), f"sleep {child} outlived its killed parent"


def test_without_die_with_parent_the_child_outlives_its_parent(
    start_parent: Callable[[str], tuple[subprocess.Popen[bytes], int]],
) -> None:
    # What the mechanism prevents: a new session alone keeps the child running.
    parent, child = start_parent("none")

    parent.kill()
    parent.wait(timeout=10)

    assert not gone(child, within=1.0)


# -- executor apply, killed or stopped ------------------------------------------------

SLOW = """
    import os, time
    from pathlib import Path
    from batou.component import Component

    class Slow(Component):
        def verify(self):
            raise AssertionError()

        def update(self):
            where = Path(os.environ["LIFETIME_DIR"])
            (where / "runtime.pid.tmp").write_text(str(os.getpid()))
            (where / "runtime.pid.tmp").rename(where / "runtime.pid")
            if os.environ["LIFETIME_WAIT"] == "python":
                time.sleep(1000)
            else:
                self.cmd(
                    f"echo $$ > {where}/command.pid.tmp && mv {where}/command.pid.tmp "
                    f"{where}/command.pid && exec sleep 1000"
                )
    """


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = deployment(
        tmp_path_factory.mktemp("lifetime") / "repo",
        components={"slow": SLOW},
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = slow\n"},
    )
    build_bundles("prod", repo)
    return repo / "bundles/prod/web1.bundle"


@dataclass
class Apply:
    """`executor apply` of the slow bundle, running in its own process."""

    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def runtime_pid(self) -> Path:
        return self.directory / "runtime.pid"

    @property
    def command_pid(self) -> Path:
        return self.directory / "command.pid"

    @property
    def temporary(self) -> Path:
        return self.directory / "tmp"

    def output(self) -> str:
        return (self.directory / "stderr").read_text(errors="replace")


@pytest.fixture
def start_apply(slow_bundle: Path, tmp_path: Path) -> Iterator[Callable[[str], Apply]]:
    started: list[Apply] = []

    def start(wait: str) -> Apply:
        directory = tmp_path / "run"
        (directory / "tmp").mkdir(parents=True)
        environment = {
            **os.environ,
            "TMPDIR": str(directory / "tmp"),
            "LIFETIME_DIR": str(directory),
            "LIFETIME_WAIT": wait,
        }
        with open(directory / "stdout", "wb") as out, open(directory / "stderr", "wb") as err:
            process = subprocess.Popen(
                [
                    str(BIN / "executor"), "apply", str(slow_bundle), "--host", "web1",
                    "--trust", str(signing_key().trust),
                    "--target-dir", str(tmp_path / "target"),
                    "--state-dir", str(tmp_path / "state"),
                    "--runtime-dir", os.environ["CONSIGN_RUNTIME_DIR"],
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=environment,
            )  # fmt: skip
        run = Apply(process, directory)
        started.append(run)
        return run

    yield start
    for run in started:
        with contextlib.suppress(ProcessLookupError):
            run.process.kill()
        run.process.wait(timeout=30)
        for pid_file in (run.runtime_pid, run.command_pid):
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_killing_apply_kills_the_runtime_and_the_command_it_runs(
    start_apply: Callable[[str], Apply],
) -> None:
    run = start_apply("command")
    runtime = wait_for(run.runtime_pid)
    command = wait_for(run.command_pid)
    assert alive(runtime) and alive(command)

    run.process.send_signal(signal.SIGKILL)
    assert run.process.wait(timeout=30) == -signal.SIGKILL

    assert gone(runtime), "the runtime outlived the killed executor"
    assert gone(command), "the command outlived the killed executor"


@pytest.mark.parametrize("wait", ["command", "python"])
def test_sigterm_stops_apply_with_143_and_leaves_nothing_behind(
    start_apply: Callable[[str], Apply], wait: str
) -> None:
    run = start_apply(wait)
    runtime = wait_for(run.runtime_pid)
    command = wait_for(run.command_pid) if wait == "command" else None

    run.process.send_signal(signal.SIGTERM)
    returncode = run.process.wait(timeout=30)

    assert returncode == 128 + signal.SIGTERM, run.output()
    assert "Traceback" not in run.output()
    assert gone(runtime), "the runtime outlived the stopped executor"
    if command is not None:
        assert gone(command), "the command outlived the stopped executor"
    left = sorted(p.name for p in run.temporary.iterdir())
    # Request, report and output of the run went with it ...
    assert not [name for name in left if name.startswith("consign-run-")], left
    # ... and so did what the runtime made for its deploy.
    assert left == []
