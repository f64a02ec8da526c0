"""Unpacking tar and zip archives (``batou.lib.archive``).

``Extract`` picks ``Untar`` or ``Unzip`` by the archive's suffix. Both are
pure Python (tarfile, zipfile): no ``tar`` or ``unzip`` on the host. Before
anything is written, every member is checked to land inside the target;
an archive with an absolute path, a ``..`` component, a link leaving the
target or a device file is refused whole. verify compares every member
with the disk, so a file changed by hand is put back by the next run, and
an unchanged tree is left alone.

Example::

    from batou.component import Component
    from batou.lib.archive import Extract
    from batou.lib.download import Download

    class App(Component):
        def configure(self):
            self += Download("https://example.com/app-1.4.tar.gz", checksum="sha256:...")
            self += Extract("app-1.4.tar.gz", target="app", strip=1)
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Generator
from dataclasses import dataclass
from typing import IO, Any

from executor import run as _run
from executor.component import Attribute, Component, UpdateNeeded
from executor.errors import ConfigurationError, DeployError
from executor.fs import (
    NotRegularFile,
    fsync_directory,
    make_work_directory,
    open_regular,
    symlink_atomic,
    sync_filesystem,
)

__all__ = ["SUFFIXES", "Extract", "Extractor", "Untar", "Unzip"]

CHUNK = 1 << 20
# Differences named in verify's message; the rest are counted.
SHOWN_DIFFERENCES = 5
# Symlinks followed when resolving one link's target inside the archive.
MAX_LINK_HOPS = 40

_UNSAFE_HINT = (
    "nothing was extracted; Extract refuses members that would land outside the target "
    "(absolute paths, '..', links leaving the target) and device files: "
    "use an archive without them"
)
# What a failed read of a damaged or truncated archive raises, by format.
_READ_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    OSError,  # bz2: "Invalid data stream"
    RuntimeError,  # zip: an encrypted member
    NotImplementedError,  # zip: an unsupported compression method
)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A member as the archive lists it."""

    name: str
    # "file", "dir", "symlink", "hardlink", or what else it is ("a FIFO").
    kind: str
    mode: int
    size: int
    mtime: float
    link: str
    ref: Any


@dataclass(frozen=True, slots=True)
class _Member:
    """A member to extract: where it lands below the target, and as what."""

    path: str
    # "file", "dir" or "symlink" (a hard link is extracted as a copy).
    kind: str
    mode: int
    # None when the archive does not say (a hard link's).
    size: int | None
    link: str
    entry: _Entry


class _Archive:
    """An open archive: its entries and their content; read errors name it."""

    format = "archive"

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    def entries(self) -> list[_Entry]:
        raise NotImplementedError

    def _open(self, entry: _Entry) -> IO[bytes]:
        raise NotImplementedError

    def damaged(self, exc: BaseException) -> DeployError:
        return DeployError(
            f"cannot read {self.format} archive {self.path}: {exc or type(exc).__name__}",
            hint="the file is damaged or no such archive; download it again "
            "(a Download with its checksum before this component catches this)",
        )

    def chunks(self, entry: _Entry) -> Generator[bytes, None, None]:
        """The content of a file member (a hard link's: its file's)."""
        try:
            with self._open(entry) as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        except _READ_ERRORS as exc:
            raise self.damaged(exc) from None


class _TarArchive(_Archive):
    format = "tar"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            # "r:*": any compression, detected from the content.
            self._tar = tarfile.open(path, "r:*")
        except _READ_ERRORS as exc:
            raise self.damaged(exc) from None

    def close(self) -> None:
        self._tar.close()

    def entries(self) -> list[_Entry]:
        try:
            infos = self._tar.getmembers()
        except _READ_ERRORS as exc:
            raise self.damaged(exc) from None
        return [
            _Entry(info.name, _tar_kind(info), info.mode, info.size, info.mtime, info.linkname, info)
            for info in infos
        ]

    def _open(self, entry: _Entry) -> IO[bytes]:
        f = self._tar.extractfile(entry.ref)
        if f is None:
            raise tarfile.ReadError(f"member {entry.name!r} has no content")
        return f


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    if info.ischr():
        return "a character device"
    if info.isblk():
        return "a block device"
    if info.isfifo():
        return "a FIFO"
    return f"an unsupported member (tar type {info.type!r})"


class _ZipArchive(_Archive):
    format = "zip"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            self._zip = zipfile.ZipFile(path)
        except _READ_ERRORS as exc:
            raise self.damaged(exc) from None

    def close(self) -> None:
        self._zip.close()

    def entries(self) -> list[_Entry]:
        return [self._entry(info) for info in self._zip.infolist()]

    def _entry(self, info: zipfile.ZipInfo) -> _Entry:
        # Unix modes sit in the high 16 bits when the archive was made on Unix.
        mode = info.external_attr >> 16 if info.create_system == 3 else 0
        # Zip times carry no zone: taken as UTC, so that every host gets the
        # same modification times from the same archive (tar's are UTC too).
        mtime = float(calendar.timegm((*info.date_time, 0, 0, 0)))
        if info.is_dir():
            return _Entry(info.filename, "dir", mode or 0o755, 0, mtime, "", info)
        kind = "file"
        link = ""
        if stat.S_ISLNK(mode):
            # Info-ZIP stores a symlink as a member whose content is its target.
            kind = "symlink"
            try:
                link = self._zip.read(info).decode("utf-8", "surrogateescape")
            except _READ_ERRORS as exc:
                raise self.damaged(exc) from None
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = "a device"
        elif stat.S_ISFIFO(mode):
            kind = "a FIFO"
        elif stat.S_ISSOCK(mode):
            kind = "a socket"
        return _Entry(info.filename, kind, mode or 0o644, info.file_size, mtime, link, info)

    def _open(self, entry: _Entry) -> IO[bytes]:
        return self._zip.open(entry.ref)


def _components(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def _escape(directory: list[str], link: str, links: dict[str, str]) -> str | None:
    """Why a symlink in `directory` (relative to the target) pointing at
    `link` does not stay inside the target, or None when it does. The
    archive's other symlinks are followed: ``a -> .`` makes ``b -> a/../x``
    leave the target, though ``a/../x`` alone does not."""
    if link.startswith("/"):
        return "points outside the target"
    resolved = list(directory)
    pending = list(reversed(link.split("/")))
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return "points outside the target"
            resolved.pop()
            continue
        resolved.append(part)
        target = links.get("/".join(resolved))
        if target is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                return "is part of a symlink loop"
            if target.startswith("/"):
                return "points outside the target"
            resolved.pop()
            pending.extend(reversed(target.split("/")))
    return None


def _plan(entries: list[_Entry], strip: int, archive: str) -> list[_Member]:
    """The members to extract, in archive order (a path listed twice: the
    last wins), after checking that each one lands inside the target."""

    def refuse(message: str) -> DeployError:
        return DeployError(f"refusing to extract {archive}: {message}", hint=_UNSAFE_HINT)

    after_strip = f" (after strip={strip})" if strip else ""
    members: dict[str, _Member] = {}
    files: set[str] = set()
    for entry in entries:
        name = entry.name
        if name.startswith("/"):
            raise refuse(f"member {name!r} is an absolute path")
        parts = _components(name)[strip:]
        if not parts:
            continue  # the top directories strip= removes
        if ".." in parts:
            raise refuse(f"member {name!r} has a '..' component{after_strip}")
        path = "/".join(parts)
        kind = entry.kind
        if kind == "dir":
            member = _Member(path, "dir", (entry.mode & 0o777) | 0o700, None, "", entry)
        elif kind == "file":
            member = _Member(path, "file", (entry.mode & 0o777) | 0o400, entry.size, "", entry)
        elif kind == "symlink":
            if not entry.link:
                raise refuse(f"symlink {name!r} has an empty target")
            member = _Member(path, "symlink", 0o777, None, entry.link, entry)
        elif kind == "hardlink":
            linked = _components(entry.link)[strip:]
            if entry.link.startswith("/") or ".." in linked:
                raise refuse(f"hard link {name!r} points outside the target ({entry.link!r})")
            if "/".join(linked) not in files:
                raise refuse(
                    f"hard link {name!r} points at {entry.link!r}, "
                    f"which is no file extracted before it{after_strip}"
                )
            member = _Member(path, "file", (entry.mode & 0o777) | 0o400, None, "", entry)
        else:
            raise refuse(f"member {name!r} is {kind}")
        members.pop(path, None)
        members[path] = member
        if member.kind == "file":
            files.add(path)
        else:
            files.discard(path)
    links = {path: m.link for path, m in members.items() if m.kind == "symlink"}
    for path, member in members.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            above = members.get("/".join(parts[:depth]))
            if above is not None and above.kind == "symlink":
                raise refuse(
                    f"member {member.entry.name!r} lies below the symlink {above.entry.name!r}"
                )
            if above is not None and above.kind == "file":
                raise refuse(
                    f"member {member.entry.name!r} lies below {above.entry.name!r}, "
                    "which is a file"
                )
        escape = _escape(parts[:-1], member.link, links) if member.kind == "symlink" else None
        if escape is not None:
            raise refuse(f"symlink {member.entry.name!r} {escape} ({member.link!r})")
    return list(members.values())


def _kind(path: str) -> str:
    """What is at `path`, for messages."""
    if os.path.islink(path):
        return "a symlink"
    if os.path.isdir(path):
        return "a directory"
    if os.path.isfile(path):
        return "a regular file"
    return "a special file"


def _same_file(chunks: Generator[bytes, None, None], path: str) -> bool:
    """Whether the file at `path` holds exactly the bytes of `chunks`."""
    try:
        disk, _status = open_regular(path)
    except (OSError, NotRegularFile):
        return False
    with disk, contextlib.closing(chunks):
        for chunk in chunks:
            if disk.read(len(chunk)) != chunk:
                return False
        return disk.read(1) == b""


def _file_chunks(path: str) -> Generator[bytes, None, None]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


_WORK_PREFIX = ".consign-extract-"


class Extractor(Component):
    """Base of Untar and Unzip: extract ``archive`` into ``target``.

    ``target`` defaults to the archive's name without its suffix, relative
    to the workdir. ``strip=N`` drops the first N path components of every
    member (members with no more than N are skipped). With
    ``create_target_dir=False`` the target must already exist.
    """

    namevar = "archive"
    archive: str
    target: str | None = None
    strip = Attribute(int, default=0)
    create_target_dir = Attribute(bool, default=True)
    suffixes: tuple[str, ...] = ()

    @classmethod
    def base_name(cls, archive: str) -> str | None:
        """`archive`'s file name without a suffix of this extractor, if it has one."""
        name = posixpath.basename(archive)
        for suffix in sorted(cls.suffixes, key=len, reverse=True):
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)]
        return None

    def configure(self) -> None:
        self.archive = self.map(str(self.archive))
        strip = self.strip
        if isinstance(strip, bool) or not isinstance(strip, int) or strip < 0:
            raise ConfigurationError(
                f"strip must be a whole number of path components (0 or more), got {strip!r}",
                hint="strip=1 drops the top directory of every member",
            )
        if not isinstance(self.create_target_dir, bool):
            raise ConfigurationError(
                f"create_target_dir must be True or False, got {self.create_target_dir!r}"
            )
        if self.target is None:
            base = self.base_name(self.archive)
            if base is None:
                raise ConfigurationError(
                    f"cannot name the target after {self.archive}: "
                    f"{type(self).__name__} knows the suffixes {', '.join(self.suffixes)}",
                    hint="pass target='directory'",
                )
            self.target = base
        self.target = self.map(str(self.target))

    def _open_archive(self) -> _Archive:
        raise NotImplementedError

    def _archive_present(self) -> bool:
        if os.path.isfile(self.archive):
            return True
        if os.path.lexists(self.archive) and not os.path.isfile(self.archive):
            raise DeployError(
                f"archive {self.archive} is {_kind(self.archive)}, expected a file",
                hint="point archive= at the archive file",
            )
        if _run.current().predicting:
            return False  # an earlier component (a Download) will make it
        raise DeployError(
            f"archive {self.archive} does not exist",
            hint="download it first (a Download before this component), or fix the path",
        )

    def _in_the_way(self, path: str, wanted: str) -> DeployError:
        return DeployError(
            f"{path} is {_kind(path)}, but {self.archive} has {wanted} there",
            hint="remove it; Extract neither writes through symlinks nor replaces directories",
        )

    # -- verify ----------------------------------------------------------------

    def verify(self) -> None:
        if not self._archive_present():
            raise UpdateNeeded(f"archive {self.archive} does not exist yet")
        target = str(self.target)
        with self._open_archive() as archive:
            members = _plan(archive.entries(), self.strip, self.archive)
            if not os.path.isdir(target):
                self._check_target_missing(target)
                raise UpdateNeeded(f"{target} is missing")
            differences: list[str] = []
            checked: set[str] = set()
            for member in members:
                reason = self._difference(archive, member, checked)
                if reason is not None:
                    differences.append(f"{member.path} ({reason})")
                    if len(differences) > SHOWN_DIFFERENCES:
                        break
        if differences:
            shown = ", ".join(differences[:SHOWN_DIFFERENCES])
            more = ", ..." if len(differences) > SHOWN_DIFFERENCES else ""
            raise UpdateNeeded(f"{target} differs from {self.archive}: {shown}{more}")

    def _check_target_missing(self, target: str) -> None:
        if os.path.lexists(target):
            raise DeployError(
                f"{target} is {_kind(target)}, expected a directory to extract into",
                hint="remove it, or pass another target=",
            )
        if not self.create_target_dir and not _run.current().predicting:
            raise DeployError(
                f"target directory {target} does not exist (create_target_dir=False)",
                hint="create it first (a Directory before this component), "
                "or leave create_target_dir=True",
            )

    def _parents(self, relative: str, checked: set[str], create: bool) -> bool:
        """Whether the directories above `relative` exist as directories
        (created when `create`); anything else in their place is an error."""
        parts = relative.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if prefix in checked:
                continue
            full = posixpath.join(str(self.target), prefix)
            try:
                status = os.lstat(full)
            except FileNotFoundError:
                if not create:
                    return False
                os.mkdir(full)
                fsync_directory(posixpath.dirname(full))
            else:
                if not stat.S_ISDIR(status.st_mode):
                    raise self._in_the_way(full, "a directory")
            checked.add(prefix)
        return True

    def _difference(self, archive: _Archive, member: _Member, checked: set[str]) -> str | None:
        """Why `member` on disk differs from the archive, or None."""
        if not self._parents(member.path, checked, create=False):
            return "missing"
        full = posixpath.join(str(self.target), member.path)
        try:
            status = os.lstat(full)
        except FileNotFoundError:
            return "missing"
        if member.kind == "dir":
            if not stat.S_ISDIR(status.st_mode):
                raise self._in_the_way(full, "a directory")
            checked.add(member.path)
            return None
        if stat.S_ISDIR(status.st_mode):
            raise self._in_the_way(full, f"a {'file' if member.kind == 'file' else 'symlink'}")
        if member.kind == "symlink":
            if not stat.S_ISLNK(status.st_mode):
                return "not a symlink"
            if os.readlink(full) != member.link:
                return "symlink target"
            return None
        if not stat.S_ISREG(status.st_mode):
            return "not a regular file"
        if member.size is not None and status.st_size != member.size:
            return "content"
        if status.st_mode & 0o111 != member.mode & 0o111:
            return "executable bit"
        if not _same_file(archive.chunks(member.entry), full):
            return "content"
        return None

    # -- update ----------------------------------------------------------------

    def update(self) -> None:
        self._archive_present()
        target = str(self.target)
        with self._open_archive() as archive:
            # Every member is checked before anything is written.
            members = _plan(archive.entries(), self.strip, self.archive)
            self._make_target(target)
            work = self._work_directory(target)
            try:
                staged = self._stage(archive, members, work)
                self._place(members, staged)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        self.log("extracted %s into %s", self.archive, target)

    def _make_target(self, target: str) -> None:
        if os.path.isdir(target):
            return
        self._check_target_missing(target)
        try:
            os.makedirs(target)
        except (FileExistsError, NotADirectoryError):
            raise DeployError(
                f"cannot create {target}: a part of it is not a directory",
                hint="remove the file that is in the way",
            ) from None
        fsync_directory(posixpath.dirname(target))

    def _work_directory(self, target: str) -> str:
        """A new directory beside the target to extract into (inside it when
        the parent is not ours to write), after removing what an
        interrupted run left there. One apply runs at a time."""
        prefix = f"{_WORK_PREFIX}{posixpath.basename(target)[:100]}."
        try:
            return make_work_directory(posixpath.dirname(target), prefix)
        except OSError:
            return make_work_directory(target, prefix)

    def _stage(self, archive: _Archive, members: list[_Member], work: str) -> dict[str, str]:
        """Write every file member to `work`; return relative path -> staged file."""
        staged: dict[str, str] = {}
        for index, member in enumerate(members):
            if member.kind != "file":
                continue
            path = posixpath.join(work, str(index))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                for chunk in archive.chunks(member.entry):
                    f.write(chunk)
                os.fchmod(f.fileno(), member.mode)
            os.utime(path, (member.entry.mtime, member.entry.mtime))
            staged[member.path] = path
        return staged

    def _place(self, members: list[_Member], staged: dict[str, str]) -> None:
        """Move what differs into place, parents first: each file by one
        rename, so an interrupted run leaves whole files only."""
        target = str(self.target)
        checked: set[str] = set()
        touched: set[str] = set()
        new_files = False
        for member in sorted(members, key=lambda m: m.path):
            self._parents(member.path, checked, create=True)
            full = posixpath.join(target, member.path)
            try:
                status: os.stat_result | None = os.lstat(full)
            except FileNotFoundError:
                status = None
            if status is not None and stat.S_ISDIR(status.st_mode):
                if member.kind != "dir":
                    raise self._in_the_way(full, f"a {member.kind}")
                checked.add(member.path)
                continue
            if member.kind == "dir":
                if status is not None:
                    raise self._in_the_way(full, "a directory")
                os.mkdir(full)
                os.chmod(full, member.mode)
                touched.add(posixpath.dirname(full))
                checked.add(member.path)
            elif member.kind == "symlink":
                if status is None or not stat.S_ISLNK(status.st_mode) or (
                    os.readlink(full) != member.link
                ):
                    symlink_atomic(member.link, full)
            elif self._place_file(member, staged[member.path], full, status):
                touched.add(posixpath.dirname(full))
                # _place_file fsyncs what replaces a non-empty file.
                flushed = status is not None and stat.S_ISREG(status.st_mode) and status.st_size > 0
                new_files = new_files or not flushed
        if new_files:
            # New files went in unflushed (there was nothing to lose): one
            # flush of the file system instead of a fsync per file.
            sync_filesystem(target)
        for directory in sorted(touched):
            fsync_directory(directory)

    @staticmethod
    def _place_file(
        member: _Member, source: str, full: str, status: os.stat_result | None
    ) -> bool:
        """Put the staged file at `full` unless it is there already; whether it moved."""
        executable = member.mode & 0o111
        if status is not None and stat.S_ISREG(status.st_mode):
            if _same_file(_file_chunks(source), full):
                if status.st_mode & 0o111 != executable:
                    os.chmod(full, (stat.S_IMODE(status.st_mode) & ~0o111) | executable)
                return False
            # Like write_atomic: a replaced file keeps its mode, but for the
            # executable bits, which verify compares with the archive's.
            os.chmod(source, (stat.S_IMODE(status.st_mode) & ~0o111) | executable)
            if status.st_size > 0:
                fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _move(source, full)
        return True


def _move(source: str, destination: str) -> None:
    """Rename `source` over `destination`; across file systems (a target
    that is a mount point), copy it beside `destination` first."""
    try:
        os.rename(source, destination)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    directory = posixpath.dirname(destination)
    fd, temporary = tempfile.mkstemp(
        prefix=f".consign-{posixpath.basename(destination)[:128]}.", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as f:
            shutil.copyfileobj(f, out, CHUNK)
            out.flush()
            os.fchmod(out.fileno(), stat.S_IMODE(os.stat(source).st_mode))
            os.fsync(out.fileno())
        shutil.copystat(source, temporary)
        os.rename(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class Untar(Extractor):
    """Extract a tar archive (uncompressed, gzip, bzip2 or xz) into ``target``.

    Regular files (with their permission bits, less setuid/setgid/sticky),
    directories and symlinks are extracted; a hard link becomes a copy of
    its file. Modification times come from the archive.

    Example::

        self += Untar("node-v20.tar.xz", target="node", strip=1)
    """

    suffixes = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

    def _open_archive(self) -> _Archive:
        return _TarArchive(self.archive)


class Unzip(Extractor):
    """Extract a zip archive into ``target``.

    Unix permission bits and symlinks stored by Info-ZIP are honoured;
    members of archives made elsewhere get mode 0644 (directories 0755).

    Example::

        self += Unzip("static.zip", target="htdocs", create_target_dir=False)
    """

    suffixes = (".zip",)

    def _open_archive(self) -> _Archive:
        return _ZipArchive(self.archive)


#: Archive suffixes Extract knows, and the extractor for each.
SUFFIXES: dict[str, type[Extractor]] = {
    suffix: extractor for extractor in (Untar, Unzip) for suffix in extractor.suffixes
}


class Extract(Component):
    """Extract ``archive`` into ``target`` with the extractor its suffix names.

    ``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2`` and ``.tar.xz`` go to
    ``Untar``, ``.zip`` to ``Unzip``. ``target`` defaults to the archive's
    name without the suffix, relative to the workdir; ``strip=N`` drops the
    first N path components of each member; with ``create_target_dir=False``
    the target must exist.

    verify compares every member with the disk: a regular file's content
    and executable bit, directories, symlink targets. Files the archive does
    not have are left alone. update extracts beside the target and renames
    each file into place, so an interrupted run never leaves a torn file.

    Example::

        self += Extract("app-1.4.tar.gz", target="releases/1.4", strip=1)
    """

    namevar = "archive"
    archive: str
    target: str | None = None
    strip = Attribute(int, default=0)
    create_target_dir = Attribute(bool, default=True)

    def configure(self) -> None:
        requested = str(self.archive)
        self.archive = self.map(requested)
        name = posixpath.basename(self.archive).lower()
        matches = [s for s in SUFFIXES if name.endswith(s) and len(name) > len(s)]
        if not matches:
            raise ConfigurationError(
                f"cannot tell the format of {self.archive} from its name; "
                f"Extract knows {', '.join(SUFFIXES)}",
                hint="rename the file, or use Untar or Unzip directly with target=",
            )
        extractor = SUFFIXES[max(matches, key=len)]
        # N.B. the child gets the paths as written and maps them itself.
        child = extractor(
            requested,
            target=self.target,
            strip=self.strip,
            create_target_dir=self.create_target_dir,
        )
        self += child
        self.target = child.target
