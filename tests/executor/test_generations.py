"""Generations: every applied bundle kept under STATE/generations, the
current and previous one switched by a successful run, rollback to a kept one."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from executor import canonical, generations
from executor.apply import ApplyStatus, apply_bundle
from executor.bundle import read_envelope
from executor.errors import BundleError, RollbackError, StateError
from executor.generations import Generation
from executor.records import read_audit, read_status
from executor.state import SerialChange, load_state
from tests.deployments import apply_options, build_bundles, deployment, verified

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
    """Versions 1, 2, 3 (serials 100, 200, 300) and a broken one (serial 250)."""
    root = tmp_path_factory.mktemp("generations")
    builds = {
        "1": (APP.replace("VERSION", "1"), 100),
        "2": (APP.replace("VERSION", "2"), 200),
        "3": (APP.replace("VERSION", "3"), 300),
        "broken": (BROKEN, 250),
    }
    bundles = {}
    for name, (code, serial) in builds.items():
        repo = deployment(root / name, components={"app": code}, environments={"prod": ENV})
        build_bundles("prod", repo, serial=serial)
        bundles[name] = repo / "bundles/prod/web1.bundle"
    return bundles


def apply(bundle: Path, tmp_path: Path, **kw: Any) -> Any:
    return apply_bundle(apply_options(bundle, tmp_path, **kw))


def conf(tmp_path: Path) -> str:
    return (tmp_path / "target/work/app/app.conf").read_text()


def digest(bundle: Path) -> str:
    return read_envelope(str(bundle)).digest


def test_an_apply_keeps_its_bundle_as_generation_1_and_makes_it_current(
    built: dict[str, Path], tmp_path: Path
) -> None:
    before = int(time.time())
    result = apply(built["1"], tmp_path)

    assert result.status is ApplyStatus.OK
    assert result.generation == 1
    state = tmp_path / "state"
    directory = state / "generations/1"
    assert sorted(os.listdir(directory)) == ["bundle", "generation.json"]
    assert (directory / "bundle").read_bytes() == built["1"].read_bytes()
    assert (directory / "bundle").stat().st_mode & 0o777 == 0o400
    assert (directory / "generation.json").stat().st_mode & 0o777 == 0o400
    manifest = verified(built["1"]).manifest
    info = json.loads((directory / "generation.json").read_text())
    received = info.pop("received")
    assert before <= received <= time.time()
    repo, runtime = manifest.blob("repo"), manifest.blob("runtime")
    assert repo is not None and runtime is not None
    assert info == {
        "number": 1,
        "digest": digest(built["1"]),
        "host": "web1",
        "environment": "prod",
        "serial": 100,
        "build_time": manifest.build_time,
        "commit": None,
        "dirty": True,
        "repo": repo.sha256,
        "runtime": runtime.sha256,
    }
    host = load_state(str(state))
    assert (host.current, host.previous, host.failed) == (1, None, ())
    assert os.readlink(state / "current") == "generations/1"
    assert not os.path.lexists(state / "previous")
    assert not [p for p in (state / "generations").iterdir() if p.name.startswith(".")]


def test_a_newer_bundle_becomes_current_and_the_old_one_previous(
    built: dict[str, Path], tmp_path: Path
) -> None:
    apply(built["1"], tmp_path)
    result = apply(built["2"], tmp_path)

    assert (result.status, result.generation) == (ApplyStatus.OK, 2)
    state = tmp_path / "state"
    host = load_state(str(state))
    assert (host.current, host.previous, host.highest_serial) == (2, 1, 200)
    assert os.readlink(state / "current") == "generations/2"
    assert os.readlink(state / "previous") == "generations/1"
    assert [g.serial for g in generations.generations(str(state))] == [100, 200]
    assert conf(tmp_path) == "version=2\n"


def test_reapplying_a_kept_bundle_creates_no_new_generation(
    built: dict[str, Path], tmp_path: Path
) -> None:
    apply(built["1"], tmp_path)
    again = apply(built["1"], tmp_path)

    assert (again.status, again.generation, again.changed) == (ApplyStatus.OK, 1, ())
    state = tmp_path / "state"
    host = load_state(str(state))
    # The same generation again: it stays current, and is not its own previous.
    assert (host.current, host.previous) == (1, None)
    assert os.listdir(state / "generations") == ["1"]

    apply(built["2"], tmp_path)
    older = apply(built["1"], tmp_path, allow_downgrade=True)
    assert older.generation == 1
    assert sorted(os.listdir(state / "generations")) == ["1", "2"]
    host = load_state(str(state))
    assert (host.current, host.previous, host.highest_serial) == (1, 2, 200)


def test_a_failed_run_keeps_its_generation_but_does_not_make_it_current(
    built: dict[str, Path], tmp_path: Path
) -> None:
    apply(built["1"], tmp_path)
    failed = apply(built["broken"], tmp_path)

    assert failed.status is ApplyStatus.FAILED
    assert failed.generation == 2
    state = tmp_path / "state"
    assert sorted(os.listdir(state / "generations/2")) == ["bundle", "generation.json"]
    host = load_state(str(state))
    assert (host.current, host.previous) == (1, None)
    assert host.failed == (digest(built["broken"]),)
    assert os.readlink(state / "current") == "generations/1"
    status = read_status(str(state))
    assert status.last_run is not None and status.last_success is not None
    assert (status.last_run["result"], status.last_run["generation"]) == ("failed", 2)
    assert status.last_run["error"]["message"] == "RuntimeError: the update broke"
    assert (status.last_success["result"], status.last_success["generation"]) == ("ok", 1)
    assert status.last_success["bundle"] == digest(built["1"])

    # Failing again is remembered once; a later good bundle switches as usual.
    apply(built["broken"], tmp_path)
    assert load_state(str(state)).failed == (digest(built["broken"]),)
    fixed = apply(built["3"], tmp_path)
    assert (fixed.status, fixed.generation) == (ApplyStatus.OK, 3)
    host = load_state(str(state))
    assert (host.current, host.previous, host.failed) == (3, 1, (digest(built["broken"]),))


def test_rollback_applies_the_previous_generation_again_and_records_it(
    built: dict[str, Path], tmp_path: Path
) -> None:
    apply(built["1"], tmp_path)
    apply(built["2"], tmp_path)
    now = int(time.time())

    # The bundle named is replaced by the kept generation's.
    back = apply(Path("unused"), tmp_path, rollback=True, now=now)

    assert (back.status, back.kind, back.generation) == (ApplyStatus.OK, "rollback", 1)
    assert back.to_json()["kind"] == "rollback"
    assert conf(tmp_path) == "version=1\n"
    state = tmp_path / "state"
    host = load_state(str(state))
    # Generation 2, rolled back from, does not become previous.
    assert (host.current, host.previous) == (1, None)
    # The serial floor stays at the newest accepted.
    assert host.highest_serial == 200
    assert host.history == (SerialChange("rollback", now, 200, 100, digest(built["1"])),)
    last = read_audit(str(state))[-1]
    assert (last["kind"], last["result"], last["generation"]) == ("rollback", "ok", 1)
    assert last["bundle_path"] == str(state / "generations/1/bundle")
    assert sorted(os.listdir(state / "generations")) == ["1", "2"]

    # A second rollback does not go back to what was rolled back from ...
    with pytest.raises(StateError) as caught:
        apply(Path("unused"), tmp_path, rollback=True, now=now)
    assert caught.value.message == "there is no previous generation to roll back to"
    # ... naming it does.
    forth = apply(Path("unused"), tmp_path, rollback=True, rollback_to=2, now=now)
    assert (forth.generation, conf(tmp_path)) == (2, "version=2\n")
    host = load_state(str(state))
    assert (host.current, host.previous, host.highest_serial) == (2, None, 200)
    assert [c.kind for c in host.history] == ["rollback", "rollback"]


def test_rollback_to_a_named_generation(built: dict[str, Path], tmp_path: Path) -> None:
    for name in ("1", "2", "3"):
        apply(built[name], tmp_path)

    result = apply(Path("unused"), tmp_path, rollback=True, rollback_to=1)

    assert (result.status, result.generation) == (ApplyStatus.OK, 1)
    assert conf(tmp_path) == "version=1\n"
    host = load_state(str(tmp_path / "state"))
    # Previous stays what it was (2); 3, rolled back from, is not it.
    assert (host.current, host.previous, host.highest_serial) == (1, 2, 300)


@pytest.mark.parametrize(
    ("applied", "to", "message", "hint"),
    [
        (
            [],
            None,
            "there is no previous generation to roll back to",
            "'executor status' lists the generations kept; name one: executor rollback N",
        ),
        (
            ["1"],
            None,
            "there is no previous generation to roll back to",
            "'executor status' lists the generations kept; name one: executor rollback N",
        ),
        (
            ["1", "2"],
            7,
            "there is no generation 7 in {state}",
            "the generations kept are: 1, 2 ('executor status' lists them)",
        ),
    ],
)
def test_rollback_refuses_what_it_cannot_do(
    built: dict[str, Path],
    tmp_path: Path,
    applied: list[str],
    to: int | None,
    message: str,
    hint: str,
) -> None:
    for name in applied:
        apply(built[name], tmp_path)
    state = tmp_path / "state"
    before = load_state(str(state))

    with pytest.raises(StateError) as caught:
        apply(Path("unused"), tmp_path, rollback=True, rollback_to=to)

    assert caught.value.message == message.format(state=state)
    assert caught.value.hint == hint
    assert load_state(str(state)) == before
    last = read_audit(str(state))[-1]
    assert (last["kind"], last["result"]) == ("rollback", "failed")


# -- the generations module ----------------------------------------------------------


def test_a_bundle_changed_after_verification_never_becomes_a_generation(
    built: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "web1.bundle"
    shutil.copy(built["1"], path)
    bundle = verified(path)
    # Swapped for another valid bundle between verification and keeping.
    shutil.copy(built["2"], path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)

    with pytest.raises(BundleError) as caught:
        generations.record(bundle, str(state), int(time.time()))

    assert caught.value.message == f"{path} changed while it was applied"
    assert os.listdir(state / "generations") == []


def test_record_reuses_the_generation_of_an_equal_digest(
    built: dict[str, Path], tmp_path: Path
) -> None:
    state = str(tmp_path)
    first = generations.record(verified(built["1"]), state, 1_700_000_000)
    second = generations.record(verified(built["2"]), state, 1_700_000_001)
    again = generations.record(verified(built["1"]), state, 1_700_000_002)

    assert (first.number, second.number) == (1, 2)
    assert again == first
    assert generations.by_digest(state, digest(built["2"])) == second
    assert generations.by_digest(state, "0" * 64) is None
    assert generations.find(state, 2) == second
    assert generations.generations(state) == [first, second]


GOOD: dict[str, Any] = {
    "number": 1,
    "digest": "d" * 64,
    "host": "web1",
    "environment": "prod",
    "serial": 7,
    "build_time": 1_700_000_000,
    "commit": None,
    "dirty": False,
    "repo": "a" * 64,
    "runtime": "b" * 64,
    "received": 1_700_000_001,
}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            b"{not json",
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (b"[1]", "not a JSON object"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "serial"}).encode(),
            "Generation.__init__() missing 1 required positional argument: 'serial'",
        ),
        (
            json.dumps({**GOOD, "extra": 1}).encode(),
            "Generation.__init__() got an unexpected keyword argument 'extra'",
        ),
        (json.dumps({**GOOD, "serial": "7"}).encode(), "serial is not int"),
        (json.dumps({**GOOD, "digest": None}).encode(), "digest is not str"),
        (json.dumps({**GOOD, "dirty": "no"}).encode(), "dirty is not bool"),
        (json.dumps({**GOOD, "number": 2}).encode(), "it says generation 2"),
    ],
)
def test_a_damaged_generation_file_is_named_with_what_is_wrong(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    info = tmp_path / "generations/1/generation.json"
    info.parent.mkdir(parents=True)
    info.write_bytes(content)

    with pytest.raises(StateError) as caught:
        generations.generations(str(tmp_path))

    assert caught.value.message == f"{info} is damaged: {problem}"


def test_work_directories_and_other_names_are_not_generations(tmp_path: Path) -> None:
    base = tmp_path / "generations"
    for name in ("1", ".work-abc/", "notes/", "2/"):
        (base / name.rstrip("/")).mkdir(parents=True)
    (base / "1/generation.json").write_text(json.dumps(GOOD))
    (base / ".work-abc/generation.json").write_text(json.dumps({**GOOD, "number": 5}))

    found = generations.generations(str(tmp_path))

    # 2 has no generation.json (not complete): not a generation either.
    assert found == [Generation(**GOOD)]
    assert generations.generations(str(tmp_path / "nothing")) == []


def test_find_names_the_generations_kept(tmp_path: Path) -> None:
    for number in (3, 5):
        info = tmp_path / f"generations/{number}/generation.json"
        info.parent.mkdir(parents=True)
        info.write_text(json.dumps({**GOOD, "number": number}))

    with pytest.raises(StateError) as caught:
        generations.find(str(tmp_path), 4)

    assert caught.value.message == f"there is no generation 4 in {tmp_path}"
    assert caught.value.hint == "the generations kept are: 3, 5 ('executor status' lists them)"
    with pytest.raises(StateError) as none:
        generations.find(str(tmp_path / "empty"), 1)
    assert none.value.hint == "the generations kept are: none ('executor status' lists them)"


def test_link_points_at_a_generation_replaces_and_removes(tmp_path: Path) -> None:
    generations.link(str(tmp_path), "current", 3)
    assert os.readlink(tmp_path / "current") == "generations/3"
    generations.link(str(tmp_path), "current", 4)
    assert os.readlink(tmp_path / "current") == "generations/4"
    assert os.listdir(tmp_path) == ["current"]

    generations.link(str(tmp_path), "current", None)
    generations.link(str(tmp_path), "previous", None)
    assert os.listdir(tmp_path) == []


def test_remove_takes_a_read_only_generation_away_whole(
    built: dict[str, Path], tmp_path: Path
) -> None:
    state = str(tmp_path)
    first = generations.record(verified(built["1"]), state, 1_700_000_000)
    second = generations.record(verified(built["2"]), state, 1_700_000_000)
    os.chmod(first.directory(state), 0o500)

    generations.remove(state, first)

    assert os.listdir(tmp_path / "generations") == ["2"]
    assert generations.generations(state) == [second]


def test_a_host_with_a_version_1_state_starts_its_generations_on_the_next_apply(
    built: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    # What an executor before generations wrote: no current, previous, failed.
    old = {"version": 1, "environment": "prod", "highest_serial": 150, "bundle": "e" * 64}
    (state / "state.msgpack").write_bytes(canonical.pack({**old, "history": []}))

    result = apply(built["2"], tmp_path)

    assert (result.status, result.generation) == (ApplyStatus.OK, 1)
    host = load_state(str(state))
    assert (host.current, host.previous, host.highest_serial) == (1, None, 200)
    assert canonical.unpack((state / "state.msgpack").read_bytes())["version"] == 2
    # The floor of the old state still holds.
    with pytest.raises(RollbackError):
        apply(built["1"], tmp_path)


def test_the_next_apply_repairs_links_a_crash_left_behind(
    built: dict[str, Path], tmp_path: Path
) -> None:
    apply(built["1"], tmp_path)
    apply(built["2"], tmp_path)
    state = tmp_path / "state"
    # As if the executor died after saving the state, before the links.
    os.unlink(state / "previous")
    os.unlink(state / "current")
    os.symlink("generations/1", state / "current")

    again = apply(built["2"], tmp_path)

    assert (again.status, again.generation, again.changed) == (ApplyStatus.OK, 2, ())
    assert os.readlink(state / "current") == "generations/2"
    assert os.readlink(state / "previous") == "generations/1"
    assert not [p.name for p in state.iterdir() if p.name.endswith(".tmp")]


def test_the_next_apply_removes_what_an_interrupted_one_left(
    built: dict[str, Path], tmp_path: Path
) -> None:
    apply(built["1"], tmp_path)
    state = tmp_path / "state"
    leftovers = [
        state / "generations/.work-3kq0p1",
        state / "generations/.work-removed-7",
        state / "store/.0123456789ab-zz91",
    ]
    for leftover in leftovers:
        (leftover / "tree").mkdir(parents=True)
        (leftover / "tree/file").write_text("half")
        os.chmod(leftover / "tree", 0o555)

    result = apply(built["2"], tmp_path)

    assert result.status is ApplyStatus.OK
    assert [p for p in leftovers if p.exists()] == []
    assert sorted(os.listdir(state / "generations")) == ["1", "2"]


def test_rollback_to_the_current_generation_applies_it_again(
    built: dict[str, Path], tmp_path: Path
) -> None:
    for name in ("1", "2"):
        apply(built[name], tmp_path)
    conf(tmp_path)  # written by generation 2
    (tmp_path / "target/work/app/app.conf").write_text("edited by hand\n")

    result = apply(Path("unused"), tmp_path, rollback=True, rollback_to=2)

    assert (result.status, result.generation) == (ApplyStatus.OK, 2)
    assert conf(tmp_path) == "version=2\n"
    host = load_state(str(tmp_path / "state"))
    assert (host.current, host.previous) == (2, 1)


def test_after_a_failed_apply_rollback_goes_back_to_what_ran(
    built: dict[str, Path], tmp_path: Path
) -> None:
    apply(built["1"], tmp_path)
    failed = apply(built["broken"], tmp_path)
    assert failed.status is ApplyStatus.FAILED
    (tmp_path / "target/work/app/app.conf").write_text("half way into the broken bundle\n")

    result = apply(Path("unused"), tmp_path, rollback=True)

    assert (result.status, result.generation, result.kind) == (ApplyStatus.OK, 1, "rollback")
    assert conf(tmp_path) == "version=1\n"
    host = load_state(str(tmp_path / "state"))
    assert (host.current, host.previous) == (1, None)
    assert host.bundle == digest(built["1"])
    assert digest(built["broken"]) in host.failed
    # The broken bundle's serial stays the floor: rollback is recorded, not a downgrade.
    assert host.highest_serial == 250
    assert host.history[-1].kind == "rollback"
