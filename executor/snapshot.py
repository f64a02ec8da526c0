"""The repository snapshot: a deterministic tar, and its safe extraction.

Writing: members sorted by path, mtime fixed by the caller, uid/gid 0 with
empty names, modes normalised to 0644 / 0755 (directories 0755), symlinks
kept as links, no pax timestamps. Same files, same bytes.

Extraction refuses, before writing anything, members that would leave the
tree or are not plain files, directories or links inside the tree:
absolute paths, ``..``, links pointing outside, hard links, device files,
fifos, and duplicate names.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from .errors import BundleError
from .fs import sync_filesystem


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """One file of the snapshot: its path in the tree and where to read it."""

    name: str
    source: str


def _info(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _directories(names: Iterable[str]) -> list[str]:
    dirs: set[str] = set()
    for name in names:
        parent = posixpath.dirname(name)
        while parent:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    return sorted(dirs)


def _check_writable(files: Sequence[SnapshotFile]) -> None:
    # A tar that extract_tar refuses would fail on every host: a caller bug.
    seen: set[str] = set()
    for entry in files:
        name = entry.name
        if (
            not name
            or name in (".", "..")
            or name.startswith(("/", "../"))
            or posixpath.normpath(name) != name
        ):
            raise ValueError(f"snapshot path {name!r} is not a normalised relative path")
        if name in seen:
            raise ValueError(f"snapshot path {name!r} is listed twice")
        seen.add(name)


def write_tar(files: Sequence[SnapshotFile], mtime: int, out: BinaryIO) -> None:
    """Write a deterministic tar of `files` (paths relative, '/'-separated) to `out`.

    File contents stream from disk; nothing is held in memory.
    """
    _check_writable(files)
    entries = sorted(files, key=lambda f: f.name)
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        wanted = {f.name for f in entries}
        members: list[tuple[str, SnapshotFile | None]] = [
            (d, None) for d in _directories(wanted) if d not in wanted
        ]
        members.extend((f.name, f) for f in entries)
        for name, entry in sorted(members, key=lambda m: m[0]):
            if entry is None:
                tar.addfile(_info(name, tarfile.DIRTYPE, 0o755, mtime))
                continue
            st = os.lstat(entry.source)
            if stat.S_ISLNK(st.st_mode):
                info = _info(name, tarfile.SYMTYPE, 0o777, mtime)
                info.linkname = os.readlink(entry.source)
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                # N.B. git records only the owner's execute bit: follow it, so that
                # a fresh clone (another umask) gives the same bytes.
                mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                with open(entry.source, "rb") as f:
                    info = _info(name, tarfile.REGTYPE, mode, mtime)
                    info.size = os.fstat(f.fileno()).st_size
                    tar.addfile(info, f)
            elif stat.S_ISDIR(st.st_mode):
                # Listed directories (empty ones, git submodules) keep their
                # entry, so that their children's parents are not missing.
                tar.addfile(_info(name, tarfile.DIRTYPE, 0o755, mtime))
            # Anything else (sockets, fifos) has no place in a repository.


def tar_bytes(files: Sequence[SnapshotFile], mtime: int) -> bytes:
    """write_tar into memory (small trees, tests)."""
    buffer = io.BytesIO()
    write_tar(files, mtime, buffer)
    return buffer.getvalue()


def _check_name(member: tarfile.TarInfo) -> str:
    name = member.name
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        raise BundleError(f"snapshot member {name!r} has an absolute or invalid path")
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../") or "/../" in f"/{name}/":
        raise BundleError(f"snapshot member {name!r} leaves the tree")
    if normal == "." and not member.isdir():
        raise BundleError(f"snapshot member {name!r} names the tree itself but is no directory")
    return normal


# Linux follows at most 40 links in one lookup; a longer chain is a loop.
MAX_LINK_HOPS = 40


def _check_link(name: str, target: str, links: Mapping[str, str]) -> None:
    """Refuse a link that resolves, following the tree's own links, outside it.

    Resolving lexically is not enough: with ``x/s -> ..``, the link
    ``x/l -> s/../..`` looks like it stays inside but points above the tree.
    """
    if not target:
        raise BundleError(f"snapshot member {name!r} is a symlink with an empty target")
    if target.startswith("/"):
        raise BundleError(f"snapshot member {name!r} links to an absolute path {target!r}")
    parts = [p for p in posixpath.dirname(name).split("/") if p]
    pending = list(reversed(target.split("/")))
    followed: list[str] = []
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                through = f" through the symlink {followed[-1]!r}" if followed else ""
                raise BundleError(
                    f"snapshot member {name!r} links outside the tree ({target!r}{through})"
                )
            parts.pop()
            continue
        parts.append(part)
        current = "/".join(parts)
        if current in links:
            followed.append(current)
            if len(followed) > MAX_LINK_HOPS:
                raise BundleError(f"snapshot member {name!r} is part of a symlink loop")
            parts.pop()
            # An absolute or empty target is refused when that link is checked.
            pending.extend(reversed(links[current].split("/")))


def check_members(members: Sequence[tarfile.TarInfo]) -> None:
    """Refuse a snapshot that could write outside its tree or hold odd files."""
    seen: set[str] = set()
    directories: set[str] = set()
    links: dict[str, str] = {}
    for member in members:
        name = _check_name(member)
        if name in seen:
            raise BundleError(f"snapshot member {name!r} appears twice")
        seen.add(name)
        if member.isdir():
            directories.add(name)
        if member.islnk():
            raise BundleError(f"snapshot member {name!r} is a hard link")
        if member.issym():
            links[name] = member.linkname
        elif not (member.isreg() or member.isdir()):
            raise BundleError(f"snapshot member {name!r} is a device, fifo or other special file")
    for name, target in sorted(links.items()):
        _check_link(name, target, links)
    # A member below a symlink would be written through the link.
    for name in sorted(seen):
        parent = posixpath.dirname(name)
        while parent:
            if parent in links:
                raise BundleError(f"snapshot member {name!r} lies below the symlink {parent!r}")
            if parent in seen and parent not in directories:
                # Extraction could not create it: refuse it here, with the rest.
                raise BundleError(
                    f"snapshot member {name!r} lies below {parent!r}, which is not a directory"
                )
            parent = posixpath.dirname(parent)


def _check_end(source: BinaryIO, offset: int) -> None:
    # tarfile quietly ends the archive at a truncated or damaged header after
    # the first member: insist on the end-of-archive marker (zero blocks,
    # then nothing but zero padding) where the last member ends.
    source.seek(offset)
    rest_size = 0
    while chunk := source.read(1 << 16):
        if chunk.count(0) != len(chunk):
            rest_size = -1
            break
        rest_size += len(chunk)
    if rest_size < 2 * tarfile.BLOCKSIZE:
        raise BundleError(
            "the repository snapshot is not a valid tar: no end-of-archive marker "
            f"at byte {offset} (the tar is truncated or damaged)"
        )


def extract_tar(source: str | bytes, destination: str, *, durable: bool = False) -> None:
    """Extract a snapshot (a tar file's path, or its bytes) into the new,
    empty directory `destination`; everything is checked before anything is
    written. With `durable`, the tree is on disk when this returns.
    """
    fileobj: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    try:
        with fileobj, tarfile.open(fileobj=fileobj, mode="r:") as tar:
            members = tar.getmembers()
            _check_end(fileobj, tar.offset)
            check_members(members)
            _extract(tar, members, destination)
    except tarfile.TarError as exc:
        raise BundleError(f"the repository snapshot is not a valid tar: {exc}") from None
    if durable:
        # Nothing refers to the tree until it is renamed into place; one
        # flush of its file system makes all of it durable first.
        sync_filesystem(destination)


def _extract(tar: tarfile.TarFile, members: Sequence[tarfile.TarInfo], destination: str) -> None:
    os.makedirs(destination)
    os.chmod(destination, 0o755)
    for member in sorted(members, key=lambda m: posixpath.normpath(m.name)):
        name = posixpath.normpath(member.name)
        target = os.path.join(destination, name)
        if member.isdir():
            os.makedirs(target, mode=0o755, exist_ok=True)
            # The umask must not change what the store holds.
            os.chmod(target, 0o755)
            continue
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if member.issym():
            os.symlink(member.linkname, target)
            continue
        source = tar.extractfile(member)
        assert source is not None  # a regular member always has data
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        mode = 0o755 if member.mode & 0o111 else 0o644
        fd = os.open(target, flags, mode)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            while chunk := source.read(1 << 20):
                out.write(chunk)
