"""One apply at a time: the state directory's lock, across real processes.

The lock is flock(2) on STATE/lock (executor.lock). The holders here are
real processes (a python script that takes the lock and says so on its
stdout, or the ``executor`` console script), so that killing one shows
what the kernel does, not what the test process does.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from executor import generations
from executor.cli import app
from executor.errors import LockedError
from executor.lock import lock_holder, state_lock
from executor.records import read_audit
from executor.state import load_state
from tests.deployments import build_bundles, deployment
from tests.keys import signing_key

BIN = Path(sys.executable).parent
runner = CliRunner()

HOLD = """
    import subprocess, sys
    from executor.lock import state_lock

    directory, purpose, child = sys.argv[1], sys.argv[2], sys.argv[3]
    print("waiting", flush=True)
    with state_lock(directory, purpose, wait=60):
        if child == "sleep":
            # close_fds=False: only close-on-exec keeps the lock from sleep.
            sleeper = subprocess.Popen(["sleep", "1000"], close_fds=False)
            print(sleeper.pid, flush=True)
        print("locked", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
    """


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@dataclass
class Holder:
    """A python process that takes the lock of `directory` and holds it
    until its stdin closes; its stdout lines, read with a deadline."""

    process: subprocess.Popen[bytes]
    buffer: bytes = b""
    children: list[int] = field(default_factory=list)

    def line(self, within: float = 30.0) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + within
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line from pid {self.process.pid} within {within:g}s"
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 4096)
                assert chunk, f"pid {self.process.pid} closed its stdout: {self.buffer!r}"
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def nothing_within(self, seconds: float) -> bool:
        """Whether the holder says nothing more for `seconds` (a negative check)."""
        assert self.process.stdout is not None
        if b"\n" in self.buffer:
            return False
        ready, _, _ = select.select([self.process.stdout.fileno()], [], [], seconds)
        return not ready

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()


Hold = Callable[..., Holder]


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    """Start holders: hold(directory, purpose, child="") -> Holder; all are
    killed (with any sleep they started) when the test ends."""
    script = tmp_path / "hold.py"
    script.write_text(textwrap.dedent(HOLD).lstrip("\n"))
    started: list[Holder] = []

    def start(directory: Path, purpose: str, child: str = "") -> Holder:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        process = subprocess.Popen(
            [sys.executable, str(script), str(directory), purpose, child],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        holder = Holder(process)
        started.append(holder)
        assert holder.line() == "waiting"
        return holder

    yield start
    for holder in started:
        with contextlib.suppress(ProcessLookupError):
            holder.process.kill()
        holder.process.wait(timeout=30)
        for pid in holder.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for stream in (holder.process.stdin, holder.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def busy(state: Path, pid: int, purpose: str, started: int, wait: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
    return (
        f"the state directory {state} is busy: pid {pid} ({purpose}, started {when}) "
        f"holds {state}/lock, and it did not finish within {wait} s"
    )


HINT = (
    "wait for it to finish and run again, or give --wait SECONDS; "
    "the lock goes away by itself when its holder exits"
)


# -- the lock itself -------------------------------------------------------------------


def test_a_second_holder_waits_and_gets_the_lock_when_the_first_releases(
    hold: Hold, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = hold(state, "apply first.bundle")
    assert first.line() == "locked"
    second = hold(state, "apply second.bundle")

    # The second one is waiting: no "locked" while the first holds on.
    assert second.nothing_within(0.5)
    holder = lock_holder(str(state))
    assert holder is not None
    assert (holder.pid, holder.purpose) == (first.process.pid, "apply first.bundle")

    first.release()
    assert first.line() == "released"
    assert second.line() == "locked"
    holder = lock_holder(str(state))
    assert holder is not None
    assert (holder.pid, holder.purpose) == (second.process.pid, "apply second.bundle")
    second.release()
    assert second.line() == "released"
    assert first.process.wait(timeout=30) == 0
    assert second.process.wait(timeout=30) == 0
    assert lock_holder(str(state)) is None


def test_a_waiter_gives_up_after_wait_naming_the_holder_pid_and_purpose(
    hold: Hold, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = hold(state, "apply /srv/bundles/web1.bundle")
    assert first.line() == "locked"
    holder = lock_holder(str(state))
    assert holder is not None

    started = time.monotonic()
    with pytest.raises(LockedError) as caught:
        with state_lock(str(state), "apply other.bundle", wait=0.2):
            raise AssertionError("got the lock that another process holds")
    waited = time.monotonic() - started

    assert caught.value.message == busy(
        state, first.process.pid, "apply /srv/bundles/web1.bundle", holder.started, "0.2"
    )
    assert caught.value.hint == HINT
    assert caught.value.code == "locked"
    assert 0.2 <= waited < 5
    # Giving up changed nothing: the holder still holds, described as before.
    assert lock_holder(str(state)) == holder


def test_a_holder_killed_with_sigkill_releases_the_lock_at_once(hold: Hold, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = hold(state, "apply web1.bundle")
    assert first.line() == "locked"

    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(timeout=30) == -signal.SIGKILL

    # No stale lock: the kernel dropped it with the process (wait=0: no waiting).
    assert lock_holder(str(state)) is None
    with state_lock(str(state), "apply after the crash", wait=0) as holder:
        assert holder.pid == os.getpid()
        assert json.loads((state / "lock").read_text())["purpose"] == "apply after the crash"
    # Released: the holder's description is gone from the file.
    assert (state / "lock").read_text() == ""


def test_a_process_started_under_the_lock_does_not_inherit_it(hold: Hold, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = hold(state, "apply web1.bundle", child="sleep")
    sleeper = int(first.line())
    first.children.append(sleeper)
    assert first.line() == "locked"
    lock = os.path.realpath(state / "lock")
    inherited = [
        fd
        for fd in os.listdir(f"/proc/{sleeper}/fd")
        if os.path.realpath(f"/proc/{sleeper}/fd/{fd}") == lock
    ]
    assert inherited == []

    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=30)

    # sleep still runs, and the lock is free all the same.
    assert alive(sleeper)
    assert lock_holder(str(state)) is None
    with state_lock(str(state), "apply after", wait=0):
        pass


def test_lock_holder_is_none_without_a_lock_file(tmp_path: Path) -> None:
    assert lock_holder(str(tmp_path)) is None
    assert lock_holder(str(tmp_path / "missing")) is None


def test_the_lock_file_is_private_to_the_executor(tmp_path: Path) -> None:
    with state_lock(str(tmp_path), "apply x", wait=0):
        assert (tmp_path / "lock").stat().st_mode & 0o777 == 0o600


# -- executor apply while locked -----------------------------------------------------

APP = """
    import os, time
    from batou.component import Component
    from batou.lib.file import File

    class Gate(Component):
        \"\"\"With GATE_DIR set: say so in entered-<executor pid>, then wait for
        release-<executor pid>. The run holds the lock meanwhile.\"\"\"

        def verify(self):
            gate = os.environ.get("GATE_DIR")
            if not gate:
                return
            executor = os.getppid()
            entered = os.path.join(gate, f"entered-{executor}")
            with open(entered + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(entered + ".tmp", entered)
            deadline = time.monotonic() + 120
            while not os.path.exists(os.path.join(gate, f"release-{executor}")):
                assert time.monotonic() < deadline, "never released"
                time.sleep(0.01)

    class App(Component):
        def configure(self):
            self += File("app.conf", content="version=VERSION\\n")
            self += Gate()
    """

ENV = "[environment]\ntarget_directory = /srv/app\n[hosts]\nweb1 = app\n"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two builds with the same serial: either is accepted after the other."""
    root = tmp_path_factory.mktemp("lock-bundles")
    built = {}
    for version in ("a", "b"):
        repo = deployment(
            root / version,
            components={"app": APP.replace("VERSION", version)},
            environments={"prod": ENV},
        )
        build_bundles("prod", repo, serial=100)
        built[version] = repo / "bundles/prod/web1.bundle"
    return built


def cli_apply(bundle: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "apply", str(bundle), "--host", "web1",
        "--target-dir", str(tmp_path / "target"),
        "--state-dir", str(tmp_path / "state"),
        "--trust", str(signing_key().trust),
        *extra,
    ]  # fmt: skip


def test_apply_while_another_process_holds_the_lock_exits_5_naming_it(
    hold: Hold, bundles: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = hold(state, "apply /srv/other.bundle")
    assert first.line() == "locked"
    holder = lock_holder(str(state))
    assert holder is not None

    result = runner.invoke(app, cli_apply(bundles["a"], tmp_path, "--wait", "0.2"))

    assert result.exit_code == 5, result.output
    message = busy(state, first.process.pid, "apply /srv/other.bundle", holder.started, "0.2")
    assert result.stderr == f"error: {message}\n  hint: {HINT}\n"
    assert result.stdout == ""
    assert not (tmp_path / "target").exists()
    # The holder owns status and state; the audit log takes one line.
    assert sorted(p.name for p in state.iterdir()) == ["audit.log", "lock"]
    (line,) = (state / "audit.log").read_text().splitlines()
    entry = json.loads(line)
    assert entry["result"] == "locked"
    assert entry["kind"] == "apply"
    assert entry["host"] == "web1"
    assert entry["bundle_path"] == str(bundles["a"])
    assert entry["bundle"] is None
    assert entry["error"]["code"] == "locked"
    assert entry["error"]["message"] == message
    assert entry["pid"] == os.getpid()


def test_apply_json_while_locked_says_status_locked(
    hold: Hold, bundles: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = hold(state, "gc --keep 3")
    assert first.line() == "locked"
    holder = lock_holder(str(state))
    assert holder is not None

    result = runner.invoke(app, cli_apply(bundles["a"], tmp_path, "--wait", "0", "--json"))

    assert result.exit_code == 5
    data = json.loads(result.stdout)
    assert data["status"] == "locked"
    assert data["kind"] == "apply"
    assert data["host"] == "web1"
    assert data["error"]["code"] == "locked"
    assert data["error"]["message"] == busy(
        state, first.process.pid, "gc --keep 3", holder.started, "0"
    )
    assert data["error"]["hint"] == HINT
    assert [e["result"] for e in read_audit(str(state))] == ["locked"]


def test_rollback_gc_and_reset_serial_give_up_with_exit_5_too(hold: Hold, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = hold(state, "apply web1.bundle")
    assert first.line() == "locked"
    holder = lock_holder(str(state))
    assert holder is not None
    message = busy(state, first.process.pid, "apply web1.bundle", holder.started, "0.1")

    for command in (
        ["rollback", "--host", "web1", "--trust", str(signing_key().trust)],
        ["gc", "--keep", "1"],
        ["reset-serial", "7"],
    ):
        result = runner.invoke(app, [*command, "--state-dir", str(state), "--wait", "0.1"])
        assert result.exit_code == 5, (command, result.output)
        assert result.stderr == f"error: {message}\n  hint: {HINT}\n", command
    # Only the rollback is a run (it has an audit line); nothing else was written.
    assert [(e["kind"], e["result"]) for e in read_audit(str(state))] == [("rollback", "locked")]
    assert sorted(p.name for p in state.iterdir()) == ["audit.log", "lock"]


def test_a_dry_run_waits_for_the_lock_when_there_is_a_state(
    hold: Hold, bundles: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = hold(state, "apply web1.bundle")
    assert first.line() == "locked"

    result = runner.invoke(
        app, cli_apply(bundles["a"], tmp_path, "--dry-run", "--wait", "0", "--json")
    )

    assert result.exit_code == 5, result.output
    assert json.loads(result.stdout)["status"] == "locked"
    assert [(e["kind"], e["result"]) for e in read_audit(str(state))] == [("dry-run", "locked")]


def test_a_dry_run_without_a_state_directory_takes_no_lock(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    result = runner.invoke(app, cli_apply(bundles["a"], tmp_path, "--dry-run"))

    assert result.exit_code == 0, result.output
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "target").exists()


# -- two real applies at once ------------------------------------------------------------


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    output: Path
    bundle: Path

    def result(self) -> dict[str, object]:
        assert self.process.wait(timeout=120) == 0, self.output.with_suffix(".err").read_text()
        data: dict[str, object] = json.loads(self.output.read_text())
        return data


def start_apply(bundle: Path, tmp_path: Path, gate: Path, name: str) -> Run:
    output = tmp_path / f"{name}.json"
    with open(output, "wb") as out, open(output.with_suffix(".err"), "wb") as err:
        process = subprocess.Popen(
            [
                str(BIN / "executor"), *cli_apply(bundle, tmp_path, "--json"),
                "--runtime-dir", os.environ["CONSIGN_RUNTIME_DIR"],
            ],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env={**os.environ, "GATE_DIR": str(gate)},
        )  # fmt: skip
    return Run(process, output, bundle)


def wait_for(predicate: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {within:g}s"
        time.sleep(0.01)


def entered(gate: Path, runs: list[Run]) -> Run:
    """The run whose runtime reached the gate (waited for)."""
    found: list[Run] = []

    def reached() -> bool:
        found[:] = [r for r in runs if (gate / f"entered-{r.process.pid}").exists()]
        return bool(found)

    wait_for(reached, "a run reaching the gate")
    assert len(found) == 1, "two runs were inside the lock at once"
    return found[0]


def has_lock_open(run: Run, state: Path) -> bool:
    """Whether `run` opened STATE/lock (and so waits for it, while another holds it)."""
    lock = os.path.realpath(state / "lock")
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{run.process.pid}/fd"):
            with contextlib.suppress(FileNotFoundError):
                if os.path.realpath(f"/proc/{run.process.pid}/fd/{fd}") == lock:
                    return True
    return False


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        with contextlib.suppress(ProcessLookupError):
            run.process.kill()
        run.process.wait(timeout=30)


def one_after_the_other(tmp_path: Path, gate: Path, both: list[Run]) -> tuple[Run, Run, float]:
    """Let the run that got the lock finish while the other waits for it,
    then the other; (first, second, how long the second surely waited)."""
    state = tmp_path / "state"
    first = entered(gate, both)
    second = next(r for r in both if r is not first)
    wait_for(lambda: has_lock_open(second, state), "the second run opening the lock")
    seen = time.monotonic()
    holder = lock_holder(str(state))
    assert holder is not None
    assert (holder.pid, holder.purpose) == (first.process.pid, f"apply {first.bundle}")
    # The second is held back for as long as the first holds on (a negative check).
    while time.monotonic() - seen < 0.3:
        assert second.process.poll() is None
        assert not (gate / f"entered-{second.process.pid}").exists()
        time.sleep(0.01)
    waited = time.monotonic() - seen
    (gate / f"release-{first.process.pid}").touch()
    first.process.wait(timeout=120)
    assert entered(gate, [second]) is second
    (gate / f"release-{second.process.pid}").touch()
    return first, second, waited


def test_two_applies_of_the_same_bundle_at_once_run_one_after_the_other(
    bundles: dict[str, Path], tmp_path: Path, runs: list[Run]
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    runs += [start_apply(bundles["a"], tmp_path, gate, name) for name in ("one", "two")]

    first, second, waited = one_after_the_other(tmp_path, gate, runs)

    one, two = first.result(), second.result()
    assert one["status"] == two["status"] == "ok"
    assert one["generation"] == two["generation"] == 1
    assert len(one["changed"]) == 2  # type: ignore[arg-type]
    assert two["changed"] == []
    state = tmp_path / "state"
    assert [g.number for g in generations.generations(str(state))] == [1]
    host = load_state(str(state))
    assert (host.current, host.previous, host.highest_serial, host.failed) == (1, None, 100, ())
    assert (tmp_path / "target/work/app/app.conf").read_text() == "version=a\n"
    audit = read_audit(str(state))
    assert [(e["pid"], e["result"]) for e in audit] == [
        (first.process.pid, "ok"),
        (second.process.pid, "ok"),
    ]
    # The second waited at least as long as the first held on after it came.
    assert audit[1]["phases"]["lock"] >= waited
    assert lock_holder(str(state)) is None


def test_two_different_bundles_at_once_apply_in_turn_and_the_last_one_is_current(
    bundles: dict[str, Path], tmp_path: Path, runs: list[Run]
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    runs += [start_apply(bundles[name], tmp_path, gate, name) for name in ("a", "b")]

    first, second, _waited = one_after_the_other(tmp_path, gate, runs)

    one, two = first.result(), second.result()
    assert one["status"] == two["status"] == "ok"
    assert (one["generation"], two["generation"]) == (1, 2)
    last = "a" if second is runs[0] else "b"
    state = tmp_path / "state"
    every = generations.generations(str(state))
    assert [g.number for g in every] == [1, 2]
    assert every[1].digest == two["bundle"]
    host = load_state(str(state))
    assert (host.current, host.previous, host.bundle) == (2, 1, two["bundle"])
    assert os.readlink(state / "current") == "generations/2"
    assert os.readlink(state / "previous") == "generations/1"
    assert (tmp_path / "target/work/app/app.conf").read_text() == f"version={last}\n"
    for generation in every:
        assert sorted(os.listdir(generation.directory(str(state)))) == ["bundle", "generation.json"]
    assert not [p for p in (state / "generations").iterdir() if p.name.startswith(".")]
    assert [e["result"] for e in read_audit(str(state))] == ["ok", "ok"]
