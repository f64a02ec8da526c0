"""What the host knows about itself and how it is kept tidy: ``executor
status``, ``gc``, ``init`` and ``rollback``, through the API and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from executor import generations
from executor.apply import ApplyOptions, apply_bundle
from executor.cli import app
from executor.console import size
from executor.errors import LockedError, StateError
from executor.host import collect_garbage, host_status
from executor.lock import state_lock
from executor.state import load_state
from tests.deployments import apply_options, build_bundles, deployment, git_commit
from tests.keys import signing_key

runner = CliRunner()

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="version=VERSION\\n")
    """

BROKEN = """
    from batou.component import Component

    class App(Component):
        def verify(self):
            raise AssertionError("out of date")

        def update(self):
            raise RuntimeError("the update broke")
    """

ENV = "[environment]\ntarget_directory = /srv/app\n[hosts]\nweb1 = app\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Versions 1 to 5 (serial 100 to 500) committed to git, and a broken
    build (serial 150)."""
    root = tmp_path_factory.mktemp("host")
    repo = root / "repo"
    bundles = {}
    for version in range(1, 6):
        deployment(
            repo,
            components={"app": APP.replace("VERSION", str(version))},
            environments={"prod": ENV},
        )
        git_commit(repo, f"version {version}", when=1_700_000_000 + version)
        out = root / "out" / str(version)
        build_bundles("prod", repo, serial=100 * version, dirty=False, out=out)
        bundles[str(version)] = out / "prod/web1.bundle"
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (out / "commit").write_text(commit)
    broken = deployment(root / "broken", components={"app": BROKEN}, environments={"prod": ENV})
    build_bundles("prod", broken, serial=150)
    bundles["broken"] = broken / "bundles/prod/web1.bundle"
    return bundles


def commit_of(bundle: Path) -> str:
    """The git commit a version was built from."""
    return (bundle.parents[1] / "commit").read_text()


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def host_options(tmp_path: Path) -> list[str]:
    return [
        "--host", "web1",
        "--target-dir", str(tmp_path / "target"),
        "--state-dir", str(tmp_path / "state"),
        "--trust", str(signing_key().trust),
    ]  # fmt: skip


def cli_apply(bundle: Path, tmp_path: Path, *extra: str) -> Result:
    result = invoke("apply", str(bundle), *host_options(tmp_path), *extra)
    return result


def when(seconds: float | None) -> str:
    if not seconds:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def conf(tmp_path: Path) -> str:
    return (tmp_path / "target/work/app/app.conf").read_text()


# -- status ----------------------------------------------------------------------------


def test_status_json_names_the_current_generation_and_the_last_runs(
    built: dict[str, Path], tmp_path: Path
) -> None:
    assert cli_apply(built["1"], tmp_path).exit_code == 0

    result = invoke("status", "--state-dir", str(tmp_path / "state"), "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["host"] == "web1"
    assert data["environment"] == "prod"
    assert data["state_directory"] == str(tmp_path / "state")
    assert data["highest_serial"] == 100
    current = data["current"]
    assert (current["number"], current["serial"], current["dirty"]) == (1, 100, False)
    assert current["commit"] == commit_of(built["1"])
    assert current["digest"] == data["last_run"]["bundle"]
    assert data["previous"] is None
    assert data["generations"] == [current]
    last_run = data["last_run"]
    assert (last_run["result"], last_run["kind"], last_run["generation"]) == ("ok", "apply", 1)
    assert len(last_run["changed"]) == 2
    assert sorted(last_run["phases"]) == ["lock", "run", "runtime", "unpack", "verify"]
    assert last_run["duration_s"] > 0
    assert last_run["commit"] == commit_of(built["1"])
    assert data["last_success"] == last_run
    assert data["failed_bundles"] == []
    assert data["locked_by"] is None
    assert data["history"] == []
    assert "recent" not in data


def test_status_text_says_what_runs_and_how_the_last_run_went(
    built: dict[str, Path], tmp_path: Path
) -> None:
    assert cli_apply(built["1"], tmp_path).exit_code == 0
    assert cli_apply(built["broken"], tmp_path, "--allow-downgrade").exit_code == 1
    state = tmp_path / "state"
    data = json.loads(invoke("status", "--state-dir", str(state), "--json").stdout)
    run, success = data["last_run"], data["last_success"]
    first, second = data["generations"]

    result = invoke("status", "--state-dir", str(state))

    assert result.exit_code == 0, result.output
    phases = ", ".join(
        f"{name} {run['phases'][name]:.2f}s"
        for name in ("lock", "verify", "unpack", "runtime", "run")
    )
    assert result.stdout.splitlines() == [
        f"web1 (prod), state {state}",
        f"  current      generation 1: serial 100, bundle {first['digest'][:12]}, "
        f"source {commit_of(built['1'])}",
        "  serial floor 150",
        f"  last run     failed (apply, {when(run['started'])}, {run['duration_s']:.2f}s, "
        "1 component changed)",
        "               RuntimeError: the update broke",
        f"               {phases}",
        f"  last success {when(success['started'])} (generation 1)",
        "  generations",
        f"       1  serial 100, bundle {first['digest'][:12]}, received "
        f"{when(first['received'])} (current)",
        f"       2  serial 150, bundle {second['digest'][:12]}, received "
        f"{when(second['received'])} failed",
    ]
    assert data["failed_bundles"] == [second["digest"]]


def test_status_of_a_missing_state_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke("status", "--state-dir", str(tmp_path / "nothing"))

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: the state directory {tmp_path}/nothing does not exist: nothing was applied "
        "here yet\n"
        "  hint: apply a bundle first, or pass --state-dir with the directory the executor uses\n"
    )


def test_status_of_a_host_that_never_succeeded(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o700)

    result = invoke("status", "--state-dir", str(tmp_path / "state"))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"? (no environment yet), state {tmp_path}/state",
        "  current      none: no apply succeeded here yet",
        "  serial floor -",
        "  last success never",
    ]


def test_status_with_a_damaged_status_file_says_the_next_apply_fixes_it(
    built: dict[str, Path], tmp_path: Path
) -> None:
    assert cli_apply(built["1"], tmp_path).exit_code == 0
    (tmp_path / "state/status.json").write_text("[]")

    result = invoke("status", "--state-dir", str(tmp_path / "state"))

    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path}/state/status.json is damaged: not a JSON object\n")


def test_status_recent_lists_the_last_runs_of_the_audit_log(
    built: dict[str, Path], tmp_path: Path
) -> None:
    for extra in ((), (), ("--dry-run",), ("--host", "web2"), ()):
        cli_apply(built["1"], tmp_path, *extra)
    assert cli_apply(built["2"], tmp_path).exit_code == 0
    state = tmp_path / "state"
    audit = [json.loads(line) for line in (state / "audit.log").read_text().splitlines()]
    assert len(audit) == 6

    data = json.loads(invoke("status", "--state-dir", str(state), "--json", "--recent", "5").stdout)
    text = invoke("status", "--state-dir", str(state), "--recent", "5").stdout

    assert data["recent"] == audit[-5:]
    assert [(e["kind"], e["result"]) for e in data["recent"]] == [
        ("apply", "ok"),
        ("dry-run", "ok"),
        ("apply", "refused"),
        ("apply", "ok"),
        ("apply", "ok"),
    ]
    assert text.splitlines()[-5:] == [
        f"  {when(e['started'])} {e['kind']} {e['result']} {e['bundle_path']}" for e in audit[-5:]
    ]
    assert host_status(str(state), recent=2).recent == tuple(audit[-2:])


def test_status_names_who_holds_the_lock(built: dict[str, Path], tmp_path: Path) -> None:
    assert cli_apply(built["1"], tmp_path).exit_code == 0
    state = tmp_path / "state"

    with state_lock(str(state), "gc --keep 3", wait=0) as holder:
        data = json.loads(invoke("status", "--state-dir", str(state), "--json").stdout)
        text = invoke("status", "--state-dir", str(state)).stdout

    assert data["locked_by"] == {
        "pid": os.getpid(),
        "started": holder.started,
        "purpose": "gc --keep 3",
    }
    assert (
        f"  locked       by pid {os.getpid()} (gc --keep 3, started {when(holder.started)})\n"
        in text
    )
    assert host_status(str(state)).holder is None


# -- rollback through the CLI ---------------------------------------------------------


def test_rollback_goes_to_the_previous_generation_and_forward_only_by_number(
    built: dict[str, Path], tmp_path: Path
) -> None:
    assert cli_apply(built["1"], tmp_path).exit_code == 0
    assert cli_apply(built["2"], tmp_path).exit_code == 0
    state = tmp_path / "state"

    back = invoke("rollback", *host_options(tmp_path))

    assert back.exit_code == 0, back.output
    last = back.stdout.splitlines()[-1]
    assert last.startswith("ok: 1 component changed in ")
    assert last.endswith("s; web1 rolled back to generation 1")
    assert conf(tmp_path) == "version=1\n"
    data = json.loads(invoke("status", "--state-dir", str(state), "--json").stdout)
    assert (data["current"]["number"], data["previous"], data["highest_serial"]) == (1, None, 200)
    digest_1 = data["current"]["digest"]
    assert [(h["kind"], h["from"], h["to"], h["bundle"]) for h in data["history"]] == [
        ("rollback", 200, 100, digest_1)
    ]
    assert (data["last_run"]["kind"], data["last_success"]["kind"]) == ("rollback", "rollback")

    # Generation 2, rolled back from, is not "previous": a second rollback
    # without a number does not undo the first.
    again = invoke("rollback", *host_options(tmp_path))
    assert again.exit_code == 1
    assert "there is no previous generation to roll back to" in again.stderr

    forth = invoke("rollback", "2", *host_options(tmp_path), "--json")

    assert forth.exit_code == 0, forth.output
    result = json.loads(forth.stdout)
    assert (result["kind"], result["generation"], result["status"]) == ("rollback", 2, "ok")
    assert conf(tmp_path) == "version=2\n"
    host = load_state(str(state))
    assert (host.current, host.previous, host.highest_serial) == (2, None, 200)
    assert [c.kind for c in host.history] == ["rollback", "rollback"]


def test_rollback_to_a_named_generation_through_the_cli(
    built: dict[str, Path], tmp_path: Path
) -> None:
    for version in ("1", "2", "3"):
        assert cli_apply(built[version], tmp_path).exit_code == 0

    result = invoke("rollback", "1", *host_options(tmp_path))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].endswith("; web1 rolled back to generation 1")
    assert conf(tmp_path) == "version=1\n"
    host = load_state(str(tmp_path / "state"))
    assert (host.current, host.previous, host.highest_serial) == (1, 2, 300)


@pytest.mark.parametrize(
    ("versions", "arguments", "stderr"),
    [
        (
            ["1"],
            [],
            "error: there is no previous generation to roll back to\n"
            "  hint: 'executor status' lists the generations kept; name one: executor rollback N\n",
        ),
        (
            ["1", "2"],
            ["9"],
            "error: there is no generation 9 in {state}\n"
            "  hint: the generations kept are: 1, 2 ('executor status' lists them)\n",
        ),
    ],
)
def test_rollback_errors_through_the_cli(
    built: dict[str, Path], tmp_path: Path, versions: list[str], arguments: list[str], stderr: str
) -> None:
    for version in versions:
        assert cli_apply(built[version], tmp_path).exit_code == 0
    before = conf(tmp_path)

    result = invoke("rollback", *arguments, *host_options(tmp_path))

    assert result.exit_code == 1
    assert result.stderr == stderr.format(state=tmp_path / "state")
    assert conf(tmp_path) == before


def test_rollback_generation_must_be_positive(tmp_path: Path) -> None:
    result = invoke("rollback", "0", *host_options(tmp_path))

    assert result.exit_code == 2
    assert not (tmp_path / "state").exists()


# -- gc --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host that applied versions 1 to 5 (runtimes in its state directory),
    then rolled back to 2: current 2, previous 4 (5, rolled back from, is not)."""
    root = tmp_path_factory.mktemp("five")
    for version in ("1", "2", "3", "4", "5"):
        result = apply_bundle(apply_options(built[version], root, runtime_directory=None))
        assert result.error is None, result.error
    apply_bundle(
        apply_options(Path("unused"), root, runtime_directory=None, rollback=True, rollback_to=2)
    )
    host = load_state(str(root / "state"))
    assert (host.current, host.previous) == (2, 4)
    return root / "state"


@pytest.fixture
def state(five: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of `five`, runtimes included, with leftovers of interrupted runs
    and a runtime no generation uses."""
    copy = tmp_path / "state"
    shutil.copytree(five, copy, symlinks=True)
    for leftover in (
        "generations/.work-k2j3h4",
        "generations/.work-removed-99",
        "store/.0123456789ab-x1y2",
        "runtimes/.0123456789ab-x1y2",
    ):
        (copy / leftover).mkdir()
        (copy / leftover / "part").write_bytes(b"x" * 100)
    unused = copy / "runtimes" / ("f" * 64)
    (unused / "venv/bin").mkdir(parents=True)
    (unused / "venv/bin/python").write_bytes(b"y" * 1000)
    # The runtimes of this state directory are its own (no shared directory).
    monkeypatch.delenv("CONSIGN_RUNTIME_DIR")
    return copy


def tree_size(path: Path) -> int:
    return sum(
        os.lstat(os.path.join(root, name)).st_size
        for root, _dirs, files in os.walk(path)
        for name in files
    )


Entry = tuple[str, int, bytes]


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path below `root`: kind and mode, and content or link target."""
    entries: dict[str, Entry] = {}
    for directory, names, files in os.walk(root):
        for name in sorted(names + files):
            path = Path(directory, name)
            status = path.lstat()
            relative = str(path.relative_to(root))
            mode = stat.S_IMODE(status.st_mode)
            if stat.S_ISLNK(status.st_mode):
                entries[relative] = ("link", mode, os.readlink(path).encode())
            elif stat.S_ISDIR(status.st_mode):
                entries[relative] = ("dir", mode, b"")
            else:
                entries[relative] = ("file", mode, path.read_bytes())
    return entries


def expected_removal(state: Path) -> tuple[list[Path], int]:
    """What gc --keep 1 removes from `state` (besides leftovers), and its size."""
    every = {g.number: g for g in generations.generations(str(state))}
    kept = [every[n] for n in (2, 4, 5)]
    doomed = [every[1].directory(str(state)), every[3].directory(str(state))]
    doomed += [state / "store" / every[n].repo for n in (1, 3)]
    doomed.append(state / "runtimes" / ("f" * 64))
    assert {g.runtime for g in kept} == {every[1].runtime}
    assert len({g.repo for g in every.values()}) == 5
    return doomed, sum(tree_size(p) for p in doomed)


def test_gc_keeps_current_previous_and_the_newest_others(state: Path) -> None:
    doomed, freed = expected_removal(state)
    runtime = generations.generations(str(state))[0].runtime
    leftovers = sorted(p for place in ("generations", "store", "runtimes")
                       for p in (state / place).iterdir() if p.name.startswith("."))  # fmt: skip
    before = load_state(str(state))

    result = invoke("gc", "--keep", "1", "--state-dir", str(state), "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kept"] == [2, 4, 5]
    assert data["removed_generations"] == [1, 3]
    assert data["freed_bytes"] == freed
    assert data["notes"] == []
    assert data["dry_run"] is False
    assert sorted(data["removed_paths"]) == sorted(str(p) for p in doomed + leftovers)
    assert sorted(os.listdir(state / "generations")) == ["2", "4", "5"]
    kept = generations.generations(str(state))
    assert sorted(os.listdir(state / "store")) == sorted(g.repo for g in kept)
    assert os.listdir(state / "runtimes") == [runtime]
    assert load_state(str(state)) == before
    assert os.readlink(state / "current") == "generations/2"
    assert os.readlink(state / "previous") == "generations/4"


def test_gc_text_output_says_what_went(state: Path) -> None:
    doomed, freed = expected_removal(state)

    result = invoke("gc", "--keep", "1", "--state-dir", str(state))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == (
        f"ok: removed 2 generations and {len(lines) - 3} other entries, {size(freed)}; "
        "kept generations 2, 4, 5"
    )
    for path in doomed:
        assert f"  removed {path}" in lines


def test_gc_dry_run_removes_nothing_and_says_what_would_go(state: Path) -> None:
    doomed, freed = expected_removal(state)
    before = snapshot(state)

    result = invoke("gc", "--keep", "1", "--state-dir", str(state), "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["dry_run"], data["kept"], data["removed_generations"]) == (True, [2, 4, 5], [1, 3])
    assert sorted(data["removed_paths"]) == sorted(str(p) for p in doomed)
    assert data["freed_bytes"] == freed
    assert snapshot(state) == before
    text = invoke("gc", "--keep", "1", "--state-dir", str(state), "--dry-run").stdout
    assert text.splitlines()[-1] == (
        f"ok: would remove 2 generations and 3 other entries, {size(freed)}; "
        "kept generations 2, 4, 5"
    )
    assert snapshot(state) == before


def test_gc_keep_0_keeps_only_current_and_previous(state: Path) -> None:
    result = collect_garbage(str(state), 0)

    assert (result.kept, result.removed_generations) == ((2, 4), (1, 3, 5))
    assert sorted(os.listdir(state / "generations")) == ["2", "4"]
    assert len(os.listdir(state / "store")) == 2


def test_gc_leaves_a_runtime_directory_outside_the_state_directory_alone(
    state: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-runtimes"
    entries = [shared / ("e" * 64), shared / ".0123456789ab-fresh"]
    for entry in entries:
        entry.mkdir(parents=True)
        (entry / "file").write_text("runtime")
    # Another executor's work this old is abandoned, even in a shared directory.
    abandoned = shared / ".0123456789ab-old"
    abandoned.mkdir()
    os.utime(abandoned, (time.time() - 7200, time.time() - 7200))

    result = invoke("gc", "--keep", "1", "--state-dir", str(state), "--runtime-dir", str(shared))

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"note: runtimes in {shared} were kept: that directory is outside the state "
        "directory and may be shared with other state directories\n"
    )
    assert sorted(shared.iterdir()) == sorted(entries)
    assert (state / "runtimes" / ("f" * 64)).is_dir()


def test_gc_keep_must_not_be_negative(state: Path) -> None:
    with pytest.raises(StateError) as caught:
        collect_garbage(str(state), -1)
    assert caught.value.message == "--keep must be 0 or more, got -1"

    result = invoke("gc", "--keep", "-1", "--state-dir", str(state))
    assert result.exit_code == 2


def test_gc_holds_the_lock_against_apply(
    state: Path, built: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    removing, finish = threading.Event(), threading.Event()
    remove = generations.remove

    def slow_remove(state_directory: str, generation: generations.Generation) -> None:
        removing.set()
        assert finish.wait(30)
        remove(state_directory, generation)

    monkeypatch.setattr(generations, "remove", slow_remove)
    results: list[Any] = []
    gc = threading.Thread(target=lambda: results.append(collect_garbage(str(state), 1)))
    gc.start()
    try:
        assert removing.wait(30)
        with pytest.raises(LockedError) as caught:
            apply_bundle(
                ApplyOptions(
                    bundle=str(built["5"]),
                    host="web1",
                    state_directory=str(state),
                    target_directory=str(state.parent / "target"),
                    trust_file=str(signing_key().trust),
                    wait=0.2,
                )
            )
    finally:
        finish.set()
        gc.join(30)

    assert f"is busy: pid {os.getpid()} (gc --keep 1, started " in caught.value.message
    assert results[0].removed_generations == (1, 3)


def test_gc_waits_for_an_apply_to_finish(state: Path) -> None:
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with state_lock(str(state), "apply web1.bundle", wait=0):
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(30)
    results: list[Any] = []
    gc = threading.Thread(target=lambda: results.append(collect_garbage(str(state), 1, wait=30)))
    gc.start()
    try:
        with pytest.raises(LockedError):
            collect_garbage(str(state), 1, wait=0.1)
        gc.join(0.5)
        assert gc.is_alive() and results == []
    finally:
        release.set()
        holder.join(30)
        gc.join(30)

    assert results[0].removed_generations == (1, 3)


# -- init ------------------------------------------------------------------------------


def test_init_writes_the_config_and_creates_the_state_directory(tmp_path: Path) -> None:
    config = tmp_path / "etc/consign/executor.toml"

    result = invoke(
        "init", "--host", "web1",
        "--trust", str(tmp_path / "allowed_signers"),
        "--state-dir", str(tmp_path / "state"),
        "--target-dir", str(tmp_path / "target"),
        "--metrics", str(tmp_path / "consign.prom"),
        "--config", str(config),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    text = (
        "# consign executor settings; written by 'executor init'.\n"
        'host = "web1"\n'
        f'trust = "{tmp_path}/allowed_signers"\n'
        f'state_dir = "{tmp_path}/state"\n'
        f'target_dir = "{tmp_path}/target"\n'
        f'metrics = "{tmp_path}/consign.prom"\n'
    )
    assert config.read_text() == text
    assert config.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert result.stdout.startswith(f"wrote {config}:\n{text}")
    assert result.stderr == (
        f"note: the trust file {tmp_path}/allowed_signers does not exist yet: put the "
        "builder's allowed_signers line there ('bundle keys generate' prints it) before the "
        "first apply\n"
    )


def test_init_has_no_note_when_the_trust_file_exists(tmp_path: Path) -> None:
    config = tmp_path / "executor.toml"

    result = invoke(
        "init", "--host", "web1", "--trust", str(signing_key().trust),
        "--state-dir", str(tmp_path / "state"), "--config", str(config),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert config.read_text().splitlines()[1:] == [
        'host = "web1"',
        f'trust = "{signing_key().trust}"',
        f'state_dir = "{tmp_path}/state"',
    ]


def test_init_refuses_to_replace_a_config_without_force(tmp_path: Path) -> None:
    config = tmp_path / "executor.toml"
    config.write_text('host = "old"\n')
    command = [
        "init", "--host", "web1", "--trust", str(signing_key().trust),
        "--state-dir", str(tmp_path / "state"), "--config", str(config),
    ]  # fmt: skip

    refused = invoke(*command)

    assert refused.exit_code == 1
    assert refused.stderr == (
        f"error: the executor config {config} exists\n"
        f"  hint: pass --force to replace it (read it first: cat {config})\n"
    )
    assert config.read_text() == 'host = "old"\n'

    forced = invoke(*command, "--force")
    assert forced.exit_code == 0, forced.output
    assert 'host = "web1"\n' in config.read_text()


def test_a_refused_init_creates_no_state_directory(tmp_path: Path) -> None:
    config = tmp_path / "executor.toml"
    config.write_text('host = "old"\n')

    refused = invoke(
        "init", "--host", "web1", "--trust", str(signing_key().trust),
        "--state-dir", str(tmp_path / "state"), "--config", str(config),
    )  # fmt: skip

    assert refused.exit_code == 1
    # Refused: nothing on the host changed, no state directory appeared.
    assert sorted(os.listdir(tmp_path)) == ["executor.toml"]


@pytest.mark.parametrize("option", ["--trust", "--state-dir", "--target-dir", "--metrics"])
def test_init_refuses_relative_paths(
    tmp_path: Path, option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "executor.toml"
    given = {"--trust": "/etc/consign/allowed_signers", "--state-dir": str(tmp_path / "state")}
    given[option] = "relative/path"
    options = [part for item in given.items() for part in item]

    result = invoke("init", "--host", "web1", *options, "--config", str(config))

    assert result.exit_code == 2
    assert result.stderr == f"error: {option} must be an absolute path, got relative/path\n"
    assert sorted(os.listdir(tmp_path)) == []


def test_init_writes_what_load_reads_back(tmp_path: Path) -> None:
    from executor.hostconfig import load_host_config

    odd = tmp_path / 'dir "quoted" \\ back'
    config = tmp_path / "executor.toml"

    result = invoke(
        "init", "--host", "web1", "--trust", str(odd / "trust"),
        "--state-dir", str(odd / "state"), "--config", str(config),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    loaded = load_host_config(str(config))
    assert (loaded.host, loaded.trust, loaded.state_dir, loaded.path) == (
        "web1",
        str(odd / "trust"),
        str(odd / "state"),
        str(config),
    )
