"""Atomic writes and work directories: what a killed run left is removed by the next one."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

import executor.fs as fs
from executor.fs import write_atomic


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test is a new run: no directory cleaned yet.
    monkeypatch.setattr(fs, "_cleaned", set())


def test_a_staged_file_a_killed_run_left_is_removed_by_the_next_write(tmp_path: Path) -> None:
    leftover = tmp_path / ".consign-app.conf.k3x9_a0q"
    leftover.write_bytes(b"half of the new cont")
    other = tmp_path / ".consign-other.conf.abcdefgh"
    other.write_bytes(b"half")
    # Names that only look alike stay: the user's own files.
    kept = [
        tmp_path / ".consign-notes",
        tmp_path / ".consign-app.conf.toolong123",
        tmp_path / "app.conf.k3x9_a0q",
    ]
    for path in kept:
        path.write_text("mine\n")

    write_atomic(str(tmp_path / "app.conf"), b"new\n")

    assert (tmp_path / "app.conf").read_bytes() == b"new\n"
    assert not leftover.exists() and not other.exists()
    assert all(path.read_text() == "mine\n" for path in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["app.conf", *(p.name for p in kept)]
    )


def test_a_directory_is_cleaned_once_per_process(tmp_path: Path) -> None:
    write_atomic(str(tmp_path / "a"), b"a")
    # Staged later by this same process (another file of a set, say): kept.
    staged = tmp_path / ".consign-b.12345678"
    staged.write_bytes(b"b")

    write_atomic(str(tmp_path / "c"), b"c")

    assert staged.exists()


def test_a_long_name_stays_within_the_file_system_s_limit(tmp_path: Path) -> None:
    name = "x" * 250
    write_atomic(str(tmp_path / name), b"data")

    assert (tmp_path / name).read_bytes() == b"data"


def test_directory_syncs_in_a_batch_happen_once_each_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    monkeypatch.setattr(fs, "_fsync_directory", synced.append)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    with fs.deferred_sync():
        for name in ("a/1", "a/2", "b/1", "a/3"):
            write_atomic(str(tmp_path / name), b"x")
        # Nested batches belong to the outer one.
        with fs.deferred_sync():
            write_atomic(str(tmp_path / "b/2"), b"y")
        assert synced == []

    assert synced == [str(tmp_path / "a"), str(tmp_path / "b")]
    # Outside a batch, every rename is made durable at once.
    write_atomic(str(tmp_path / "a/4"), b"z")
    assert synced[-1] == str(tmp_path / "a")


def _count_flushes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    calls: dict[str, list[Any]] = {"fsync": [], "syncfs": []}
    real_fsync = os.fsync
    monkeypatch.setattr(fs.os, "fsync", lambda fd: calls["fsync"].append(fd) or real_fsync(fd))
    monkeypatch.setattr(fs, "sync_filesystem", calls["syncfs"].append)
    monkeypatch.setattr(fs, "_fsync_directory", lambda path: None)
    return calls


def test_a_batch_flushes_new_files_once_at_the_end_and_replacements_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "old").write_bytes(b"previous version")
    (tmp_path / "empty").write_bytes(b"")
    calls = _count_flushes(monkeypatch)

    with fs.deferred_sync():
        write_atomic(str(tmp_path / "new1"), b"a")
        write_atomic(str(tmp_path / "new2"), b"b")
        write_atomic(str(tmp_path / "empty"), b"c")
        # New files wait for the end of the batch ...
        assert calls == {"fsync": [], "syncfs": []}
        # ... a file with content to lose is flushed before its rename.
        write_atomic(str(tmp_path / "old"), b"new version")
        assert len(calls["fsync"]) == 1
        assert calls["syncfs"] == []

    # One flush of the one file system, at the end.
    assert calls["syncfs"] == [str(tmp_path)]
    assert len(calls["fsync"]) == 1
    assert [(tmp_path / n).read_bytes() for n in ("new1", "new2", "empty", "old")] == [
        b"a", b"b", b"c", b"new version",
    ]  # fmt: skip


def test_a_batch_flushes_even_when_its_block_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_flushes(monkeypatch)

    with pytest.raises(RuntimeError), fs.deferred_sync():
        write_atomic(str(tmp_path / "new"), b"a")
        raise RuntimeError("the run failed")

    assert calls["syncfs"] == [str(tmp_path)]


def test_outside_a_batch_a_new_file_is_flushed_before_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_flushes(monkeypatch)

    write_atomic(str(tmp_path / "new"), b"a")

    assert (len(calls["fsync"]), calls["syncfs"]) == (1, [])


# -- work directories ----------------------------------------------------------


@pytest.mark.parametrize(
    ("umask", "mode"), [(0o022, 0o755), (0o027, 0o750), (0o077, 0o700)], ids=["022", "027", "077"]
)
def test_a_work_directory_gets_the_mode_mkdir_would_give(
    tmp_path: Path, umask: int, mode: int
) -> None:
    previous = os.umask(umask)
    try:
        work = fs.make_work_directory(str(tmp_path), ".consign-app.clone.")
    finally:
        os.umask(previous)

    # Not mkdtemp's 0700: a tree renamed into place keeps this mode.
    assert stat.S_IMODE(os.stat(work).st_mode) == mode
    assert os.path.basename(work).startswith(".consign-app.clone.")
    assert os.listdir(work) == []


def test_a_work_directory_replaces_what_a_killed_run_left(tmp_path: Path) -> None:
    prefix = ".consign-app.venv."
    (tmp_path / f"{prefix}k3x9_a0q" / "bin").mkdir(parents=True)
    (tmp_path / f"{prefix}k3x9_a0q" / "bin" / "python").write_text("half a venv")
    # Names that only look alike stay: the user's own, or another prefix's.
    kept = [f"{prefix}notes", f"{prefix}toolong123", ".consign-app.clone.abcdefgh", "app"]
    for name in kept:
        (tmp_path / name).mkdir()
    (tmp_path / f"{prefix}abcd1234").write_text("a file, not a work directory")
    (tmp_path / f"{prefix}zzzz9999").symlink_to(tmp_path / "app")
    kept += [f"{prefix}abcd1234", f"{prefix}zzzz9999"]

    work = fs.make_work_directory(str(tmp_path), prefix)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, os.path.basename(work)])
