"""Crash safety: ``executor apply`` killed with SIGKILL at its worst moments.

A host runs version 1 of a deployment (a small file and a large one); the
``executor`` console script applying version 2 is killed while it unpacks
the repository, while it makes the runtime, while the runtime writes the
large managed file, and after the state recorded version 2 as accepted but
before the run ended. After each kill the host must be consistent: the state
decodes and points at complete generations, nothing half-made has a final
name, every managed file holds the old or the new content, nothing the
executor started still runs, and the next apply converges.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from executor import generations
from executor.bundle import read_envelope
from executor.runtime import READY
from executor.state import load_state
from tests.deployments import build_bundles, deployment, verified
from tests.keys import signing_key

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
BIG = 32 << 20

APP = """
    import os, time
    from batou.component import Component
    from batou.lib.file import BinaryFile, File

    class Gate(Component):
        \"\"\"With CRASH_GATE set: say so in that file, then block (to be killed).\"\"\"

        def verify(self):
            gate = os.environ.get("CRASH_GATE")
            if gate:
                with open(gate + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.rename(gate + ".tmp", gate)
                time.sleep(1000)

    class App(Component):
        def configure(self):
            self += File("app.conf", content="version=VERSION\\n")
            self += BinaryFile("big.dat", source="big.dat")
            self += Gate()
    """

ENV = "[environment]\ntarget_directory = /srv/app\n[hosts]\nweb1 = app\n"


def big(version: str) -> bytes:
    line = (version * 1023 + "\n").encode()
    return line * (BIG // len(line))


@dataclass(frozen=True)
class Version:
    bundle: Path
    files: dict[str, bytes]
    repo: str  # the store entry of its repository snapshot


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Version]:
    root = tmp_path_factory.mktemp("crash")
    built = {}
    for version, serial in (("1", 100), ("2", 200)):
        repo = deployment(
            root / version,
            components={"app": APP.replace("VERSION", version)},
            environments={"prod": ENV},
            files={"components/app/big.dat": big(version)},
        )
        build_bundles("prod", repo, serial=serial)
        bundle = repo / "bundles/prod/web1.bundle"
        entry = verified(bundle).manifest.blob("repo")
        assert entry is not None
        files = {"app.conf": f"version={version}\n".encode(), "big.dat": big(version)}
        built[version] = Version(bundle, files, entry.sha256)
    return built


# -- processes -------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, state) of every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            table[int(name)] = (int(fields[1]), fields[19], fields[0])
    return table


def descendants(pid: int) -> dict[int, str]:
    """The processes below `pid`: pid -> start time (to tell a reused pid)."""
    table = process_table()
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, started, _state) in table.items():
            if ppid == parent and child not in found:
                found[child] = started
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def survivors(processes: dict[int, str], within: float = 1.0) -> dict[int, str]:
    """Those of `processes` still running after `within` seconds (SIGKILL
    from PR_SET_PDEATHSIG takes milliseconds)."""
    deadline = time.monotonic() + within
    while True:
        table = process_table()
        running = {
            pid: cmdline(pid)
            for pid, started in processes.items()
            if pid in table and table[pid][1] == started and table[pid][2] not in ("Z", "X")
        }
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.02)


def wait_until(condition: Callable[[], bool], what: str, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {within:g}s"
        time.sleep(0.0005)


# -- the host --------------------------------------------------------------------------


@dataclass
class Host:
    root: Path
    started: list[subprocess.Popen[bytes]]

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def work(self) -> Path:
        return self.root / "target/work/app"

    def command(self, bundle: Path, shared_runtimes: bool) -> tuple[list[str], dict[str, str]]:
        command = [
            str(BIN / "executor"), "apply", str(bundle), "--host", "web1",
            "--trust", str(signing_key().trust),
            "--target-dir", str(self.root / "target"),
            "--state-dir", str(self.state),
            "--json",
        ]  # fmt: skip
        environment = {**os.environ, "TMPDIR": str(self.root / "tmp")}
        if not shared_runtimes:
            # Runtimes in STATE/runtimes, made by this apply.
            del environment["CONSIGN_RUNTIME_DIR"]
        return command, environment

    def apply(self, bundle: Path, shared_runtimes: bool = True) -> dict[str, object]:
        command, environment = self.command(bundle, shared_runtimes)
        completed = subprocess.run(
            command, capture_output=True, text=True, env=environment, check=False, timeout=300
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        data: dict[str, object] = json.loads(completed.stdout)
        return data

    def start(self, bundle: Path, shared_runtimes: bool, **extra: str) -> subprocess.Popen[bytes]:
        command, environment = self.command(bundle, shared_runtimes)
        with open(self.root / "killed.err", "wb") as err:
            process = subprocess.Popen(
                command,
                env={**environment, **extra},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.started.append(process)
        return process


@pytest.fixture
def host(versions: dict[str, Version], tmp_path: Path) -> Iterator[Host]:
    """A host that applied version 1."""
    (tmp_path / "tmp").mkdir()
    running = Host(tmp_path, [])
    assert running.apply(versions["1"].bundle)["status"] == "ok"
    yield running
    for process in running.started:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=30)


FINAL_NAMES = {
    "lock", "state.msgpack", "status.json", "audit.log",
    "generations", "store", "runtimes", "current", "previous",
}  # fmt: skip


def digest_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def assert_consistent(host: Host, versions: dict[str, Version], own_runtimes: bool) -> None:
    """What must hold on the host after any crash."""
    state_directory = str(host.state)
    state = load_state(state_directory)
    # The killed apply of version 2 never became current.
    assert (state.current, state.previous) == (1, None)
    for number in (state.current, state.previous):
        if number is None:
            continue
        generation = generations.find(state_directory, number)
        directory = generation.directory(state_directory)
        assert sorted(os.listdir(directory)) == ["bundle", "generation.json"]
        assert read_envelope(str(directory / "bundle")).digest == generation.digest
    assert os.readlink(host.state / "current") == "generations/1"

    for entry in host.state.iterdir():
        assert entry.name in FINAL_NAMES or entry.name.startswith("."), entry
    for entry in (host.state / "generations").iterdir():
        if not entry.name.startswith("."):
            # A generation is complete or absent.
            assert entry.name.isdigit()
            assert sorted(os.listdir(entry)) == ["bundle", "generation.json"]
    repos = {v.repo: v for v in versions.values()}
    for entry in (host.state / "store").iterdir():
        if not entry.name.startswith("."):
            # A store entry is the whole snapshot of a repository, or absent.
            assert entry.name in repos, entry
            expected = repos[entry.name].files["big.dat"]
            assert (entry / "components/app/big.dat").read_bytes() == expected
    if own_runtimes and (host.state / "runtimes").is_dir():
        for entry in (host.state / "runtimes").iterdir():
            if not entry.name.startswith("."):
                assert (entry / READY).is_file(), entry
                assert (entry / "venv/bin/python").exists(), entry

    # Every managed file holds the old content or the new, never a part.
    for name in ("app.conf", "big.dat"):
        content = (host.work / name).read_bytes()
        assert content in (versions["1"].files[name], versions["2"].files[name]), (
            f"{name} is torn: {len(content)} bytes"
        )


def assert_recovers(host: Host, versions: dict[str, Version], own_runtimes: bool) -> None:
    """The next apply succeeds and converges, and leaves no leftovers."""
    result = host.apply(versions["2"].bundle, shared_runtimes=not own_runtimes)
    assert (result["status"], result["generation"]) == ("ok", 2)
    state = load_state(str(host.state))
    assert (state.current, state.previous, state.highest_serial) == (2, 1, 200)
    for name, content in versions["2"].files.items():
        assert (host.work / name).read_bytes() == content
    places = ["generations", "store"] + (["runtimes"] if own_runtimes else [])
    for place in places:
        leftovers = [p.name for p in (host.state / place).iterdir() if p.name.startswith(".")]
        assert leftovers == [], place
    again = host.apply(versions["2"].bundle, shared_runtimes=not own_runtimes)
    assert (again["status"], again["changed"]) == ("ok", [])


def kill(process: subprocess.Popen[bytes]) -> dict[int, str]:
    """SIGKILL `process`; what it had started."""
    children = descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    return children


def runtime_child(process: subprocess.Popen[bytes]) -> int | None:
    for pid in descendants(process.pid):
        if "executor.child" in cmdline(pid):
            return pid
    return None


# -- the crashes -----------------------------------------------------------------------


def test_killed_while_unpacking_the_repository(versions: dict[str, Version], host: Host) -> None:
    store = host.state / "store"
    work = re.compile(rf"^\.{versions['2'].repo[:12]}-")
    process = host.start(versions["2"].bundle, shared_runtimes=True)

    wait_until(lambda: any(work.match(p.name) for p in store.iterdir()), "unpacking into the store")
    # Frozen mid-unpack, so that what is seen is what the kill leaves.
    os.kill(process.pid, signal.SIGSTOP)
    mid_unpack = any(work.match(p.name) for p in store.iterdir())
    children = kill(process)

    assert mid_unpack, "the unpacking finished before the executor was stopped"
    assert survivors(children) == {}
    # The half-unpacked snapshot never got its final name.
    assert not (store / versions["2"].repo).exists()
    assert_consistent(host, versions, own_runtimes=False)
    assert_recovers(host, versions, own_runtimes=False)


def test_killed_while_making_the_runtime(versions: dict[str, Version], host: Host) -> None:
    process = host.start(versions["2"].bundle, shared_runtimes=False)

    wait_until(
        lambda: any(" venv " in cmdline(pid) for pid in descendants(process.pid)),
        "making the runtime environment",
    )
    children = kill(process)
    left = survivors(children)
    for pid in left:
        # Not to race the checks below; reported at the end.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    assert children
    assert_consistent(host, versions, own_runtimes=True)
    assert_recovers(host, versions, own_runtimes=True)
    # Nothing the killed executor started went on writing into its state.
    assert left == {}, "these outlived the killed executor"


def test_killed_while_the_runtime_writes_a_large_managed_file(
    versions: dict[str, Version], host: Host
) -> None:
    process = host.start(versions["2"].bundle, shared_runtimes=True)
    child: list[int] = []
    staged: list[Path] = []

    def writing() -> bool:
        if not child:
            found = runtime_child(process)
            if found is not None:
                child.append(found)
            return False
        with contextlib.suppress(FileNotFoundError), os.scandir(host.work) as entries:
            for entry in entries:
                if entry.name.startswith(".consign-") and entry.stat().st_size > 1 << 20:
                    staged.append(Path(entry.path))
                    return True
        return False

    wait_until(writing, "the runtime writing big.dat")
    # Frozen mid-write, so that what is seen is what the kill leaves.
    os.kill(child[0], signal.SIGSTOP)
    mid_write = (
        staged[0].exists()
        and (host.work / "big.dat").read_bytes() == versions["1"].files["big.dat"]
    )
    children = kill(process)

    assert mid_write, "the write finished before the runtime was stopped"
    assert survivors(children) == {}
    assert_consistent(host, versions, own_runtimes=False)
    assert (host.work / "big.dat").read_bytes() == versions["1"].files["big.dat"]
    assert_recovers(host, versions, own_runtimes=False)
    # The next run removed what the killed one had staged.
    assert not [p.name for p in host.work.iterdir() if p.name.startswith(".consign-")]


def test_killed_after_the_state_accepted_the_bundle_before_the_run_ended(
    versions: dict[str, Version], host: Host
) -> None:
    gate = host.root / "gate"
    process = host.start(versions["2"].bundle, shared_runtimes=True, CRASH_GATE=str(gate))

    wait_until(gate.exists, "the runtime reaching the gate")
    children = kill(process)

    assert survivors(children) == {}
    state = load_state(str(host.state))
    # Accepted and kept, but not current: the run did not end.
    assert state.highest_serial == 200
    assert (
        generations.find(str(host.state), 2).digest
        == read_envelope(str(versions["2"].bundle)).digest
    )
    for name, content in versions["2"].files.items():
        assert (host.work / name).read_bytes() == content
    assert_consistent(host, versions, own_runtimes=False)
    assert_recovers(host, versions, own_runtimes=False)
