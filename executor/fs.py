"""File system helpers for everything the executor writes.

Writes are atomic: the new content goes to a temporary file in the target's
directory, is flushed to disk, and replaces the target by rename(2), so a
crash leaves either the old or the new file, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable


def _umask() -> int:
    # N.B. os.umask can only be read by setting it, which races with other
    # threads creating files; Linux shows it in /proc without touching it.
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically.

    An existing file keeps its mode, owner and group; a new one gets `mode`
    or the default the umask allows. When `path` is a symlink, the file it
    points at is replaced and the link stays, as an in-place write would.
    """
    if os.path.islink(path):
        path = os.path.realpath(path)
    staged = stage_file(path, [data], mode=mode)
    try:
        os.rename(staged, path)
    except BaseException:
        # Renaming over a directory, say: leave no temporary file behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise
    fsync_directory(os.path.dirname(path) or ".")


def stage_file(path: str, parts: Iterable[bytes], *, mode: int | None = None) -> str:
    """Write `parts` to a new temporary file beside `path`; return its name.

    The caller renames it over `path` (or removes it). Several staged files
    renamed at the end give an all-or-nothing write of a set of files.
    """
    directory = os.path.dirname(path) or "."
    try:
        existing: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        existing = None
    fd, temporary = tempfile.mkstemp(prefix=".consign-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            if existing is not None and stat.S_ISREG(existing.st_mode):
                # N.B. chown before chmod: chown clears the setuid and setgid
                # bits (even for root), chmod puts them back.
                with contextlib.suppress(PermissionError):
                    os.fchown(f.fileno(), existing.st_uid, existing.st_gid)
                os.fchmod(f.fileno(), stat.S_IMODE(existing.st_mode))
            else:
                os.fchmod(f.fileno(), mode if mode is not None else 0o666 & ~_umask())
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return temporary


def symlink_atomic(target: str, path: str) -> None:
    """Point the symlink `path` at `target`, replacing what is there."""
    directory = os.path.dirname(path) or "."
    for attempt in range(8):
        # No mkstemp for links: a random name, and symlink() refuses to
        # follow or replace anything already there.
        temporary = tempfile.mktemp(prefix=".consign-", dir=directory)
        try:
            os.symlink(target, temporary)
            break
        except FileExistsError:
            if attempt == 7:
                raise
    try:
        os.rename(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(directory)
