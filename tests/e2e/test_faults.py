"""Faults of the host's file systems (issue 11): a full disk while the
repository is unpacked and while the run writes files, a read-only state
directory, and a state directory on another file system than the target.

Each uses a real small file system: tmpfs mounted in the test's directory
(needs CAP_SYS_ADMIN, i.e. root outside a restricted container; else the
test is skipped, saying why). A full disk must give a clear error
and leave the previous generation intact: the state, the current
generation, the deployed files, and no half-made entry in the store.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import executor.apply
from executor.apply import ApplyResult, ApplyStatus, apply_bundle
from executor.errors import StateError
from executor.state import load_state
from tests.deployments import apply_options, build_bundles, deployment

pytestmark = pytest.mark.e2e

APP = """
    from batou.component import Component
    from batou.lib.file import BinaryFile, File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="version {version}\\n")
            self += BinaryFile("data.bin", content=bytes([{version}]) * {size})
    """


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {completed.stderr.strip()}")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    mounted: list[Path] = []
    yield mounted
    for path in reversed(mounted):
        done = subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            warnings.warn(f"cannot unmount {path}: {done.stderr.strip()}", stacklevel=1)


def small_fs(mounts: list[Path], path: Path, size: str) -> Path:
    mount_tmpfs(path, size)
    mounts.append(path)
    return path


def fill(directory: Path, leave: int) -> None:
    """Fill the file system of `directory` until `leave` bytes are free."""
    status = os.statvfs(directory)
    free = status.f_bavail * status.f_frsize
    with open(directory / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def versions(tmp_path: Path, *, size: int = 1000, repo_blob: int = 0) -> tuple[Path, Path]:
    """Bundles of version 1 and 2 of one deployment (serials 1 and 2)."""
    built = []
    for version in (1, 2):
        files = {"files/blob.bin": os.urandom(repo_blob)} if repo_blob and version == 2 else {}
        repo = deployment(
            tmp_path / f"v{version}",
            components={"app": APP.format(version=version, size=size)},
            environments={"prod": "[hosts]\nweb1 = app\n"},
            files=files,
        )
        built.append(build_bundles("prod", repo, serial=version).hosts[0].path)
    return built[0], built[1]


def apply_to(bundle: Path, tmp_path: Path, state: Path, target: Path) -> ApplyResult:
    return apply_bundle(
        apply_options(bundle, tmp_path, state_directory=str(state), target_directory=str(target))
    )


def host_view(state: Path, target: Path) -> tuple[object, ...]:
    """What must not change when an apply fails: the accepted state, the
    generations and the store's entries, the deployed files."""
    host_state = load_state(str(state))
    store = sorted(p.name for p in (state / "store").iterdir()) if (state / "store").exists() else []
    generations = sorted(p.name for p in (state / "generations").iterdir())
    files = {p.name: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}
    return (host_state.highest_serial, host_state.current, generations, store, files)


def test_a_full_disk_is_refused_before_unpacking(tmp_path: Path, mounts: list[Path]) -> None:
    v1, v2 = versions(tmp_path)
    state = small_fs(mounts, tmp_path / "state", "64m")
    target = tmp_path / "target"
    assert apply_to(v1, tmp_path, state, target).status is ApplyStatus.OK
    before = host_view(state, target)
    fill(state, 4 << 20)

    with pytest.raises(StateError) as raised:
        apply_to(v2, tmp_path, state, target)

    assert "not enough space in" in raised.value.message
    assert "executor gc" in (raised.value.hint or "")
    (state / "filler").unlink()
    assert host_view(state, target) == before


def test_a_disk_that_fills_while_unpacking_leaves_no_half_entry(
    tmp_path: Path, mounts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Version 2 carries 6 MB in its repository; 3 MB are free. The space
    # check is made to pass, so the disk really fills during extraction.
    v1, v2 = versions(tmp_path, repo_blob=6 << 20)
    state = small_fs(mounts, tmp_path / "state", "64m")
    target = tmp_path / "target"
    assert apply_to(v1, tmp_path, state, target).status is ApplyStatus.OK
    before = host_view(state, target)
    fill(state, 3 << 20)
    monkeypatch.setattr(executor.apply, "_free_bytes", lambda path: 1 << 40)

    with pytest.raises(StateError) as raised:
        apply_to(v2, tmp_path, state, target)

    assert "No space left on device" in raised.value.message
    assert "nothing was applied" in (raised.value.hint or "")
    (state / "filler").unlink()
    assert host_view(state, target) == before
    assert not [p for p in (state / "store").iterdir() if p.name.startswith(".")]


def test_a_target_disk_that_fills_during_the_run_keeps_the_old_files(
    tmp_path: Path, mounts: list[Path]
) -> None:
    v1, v2 = versions(tmp_path, size=3 << 20)
    state = tmp_path / "state"
    # Another file system than the state's: renames stay within the target's.
    target = small_fs(mounts, tmp_path / "target", "16m")
    assert apply_to(v1, tmp_path, state, target).status is ApplyStatus.OK
    before = host_view(state, target)
    fill(target, 1 << 20)

    result = apply_to(v2, tmp_path, state, target)

    assert result.status is ApplyStatus.FAILED
    assert result.error is not None
    assert "No space left on device" in result.error.render()
    (target / "filler").unlink()
    after = host_view(state, target)
    # The state accepted serial 2, but the current generation is still 1's.
    assert after[0] == 2
    assert after[1] == before[1]
    # Every deployed file is whole: the one that did not fit is version 1's,
    # the small one written before it may be either version's.
    files = after[4]
    assert isinstance(files, dict)
    assert files["data.bin"] == bytes([1]) * (3 << 20)
    assert files["app.conf"] in (b"version 1\n", b"version 2\n")
    leftovers = [p.name for p in target.rglob("*") if p.name.startswith(".consign")]
    assert leftovers == []
    # With space again, the next apply converges.
    fixed = apply_to(v2, tmp_path, state, target)
    assert fixed.status is ApplyStatus.OK
    assert (target / "work" / "app" / "data.bin").read_bytes() == bytes([2]) * (3 << 20)


def test_a_read_only_state_directory_is_a_clear_error(tmp_path: Path, mounts: list[Path]) -> None:
    v1, v2 = versions(tmp_path)
    state = small_fs(mounts, tmp_path / "state", "64m")
    target = tmp_path / "target"
    assert apply_to(v1, tmp_path, state, target).status is ApplyStatus.OK
    before = host_view(state, target)
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(state)], capture_output=True, text=True, check=False)
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount a tmpfs read-only here: {remounted.stderr.strip()}")

    with pytest.raises(StateError) as raised:
        apply_to(v2, tmp_path, state, target)

    assert "Read-only file system" in raised.value.render()
    assert host_view(state, target) == before


def test_a_missing_state_directory_is_made(tmp_path: Path) -> None:
    v1, _v2 = versions(tmp_path)
    state = tmp_path / "not" / "yet" / "state"
    result = apply_bundle(apply_options(v1, tmp_path, state_directory=str(state)))
    assert result.status is ApplyStatus.OK
    assert load_state(str(state)).highest_serial == 1
