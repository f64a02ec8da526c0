"""Files, directories, links, modes and owners (``batou.lib.file``).

``File`` is composed of small components, each with a one-line verify and
update: ``Presence`` (or ``Directory`` / ``Symlink``), ``Content``,
``Owner``, ``Group`` and ``Mode``. Every write is atomic, and equal content
leaves a file and its modification time alone.

Example::

    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("/etc/app/app.conf", content="port={{component.port}}\\n",
                         mode="0640", leading=True)
            self += File("/srv/app/static", ensure="directory", source="static")
            self += File("/srv/app/current", ensure="symlink", link_to="/srv/app/v2")
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
import grp
import json
import contextlib
import os
import posixpath
import pwd
import shutil
import stat
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from executor import run as _run
from executor import template as _template
from executor.component import Component, UpdateNeeded, display_path
from executor.errors import ConfigurationError, DeployError, ModeError
from executor.fs import symlink_atomic, write_atomic

__all__ = [
    "BinaryFile",
    "Content",
    "Directory",
    "File",
    "Group",
    "JSONContent",
    "Mode",
    "Owner",
    "Presence",
    "Purge",
    "Symlink",
    "SyncDirectory",
    "YAMLContent",
]

# Longer diffs are cut to this many lines in the run's result.
DIFF_MAX_LINES = 200
# Diffs made per run; later changed files get a note instead.
DIFFS_PER_RUN = 200

_RWX = "rwxrwxrwx"
# ls(1) shows setuid/setgid/sticky in the execute positions: lowercase with
# the execute bit, uppercase without it.
_SPECIAL = {2: ("s", 0o4000), 5: ("s", 0o2000), 8: ("t", 0o1000)}
_MODE_HINT = "write 0o644, '644', '0644' or 'rw-r--r--'"


def _symbolic_mode(text: str) -> int | None:
    if len(text) == 10 and text[0] in "-dl":
        text = text[1:]
    if len(text) != 9:
        return None
    mode = 0
    for i, c in enumerate(text):
        bit = 1 << (8 - i)
        special = _SPECIAL.get(i)
        if c == _RWX[i]:
            mode |= bit
        elif special is not None and c == special[0]:
            mode |= bit | special[1]
        elif special is not None and c == special[0].upper():
            mode |= special[1]
        elif c != "-":
            return None
    return mode


def convert_mode(value: Any) -> int:
    """Accept 0o644, "644" / "0644" / "0o644", or "rw-r--r--"; return the int."""
    if isinstance(value, bool):
        raise ModeError(f"mode must be octal or rwx notation, got {value!r}", hint=_MODE_HINT)
    if isinstance(value, int):
        if 0 <= value <= 0o7777:
            return value
        raise ModeError(
            f"mode {value!r} (octal {value:#o}) is out of range 0o0..0o7777",
            hint="write it in octal: mode=0o755 or mode='755'",
        )
    if isinstance(value, str):
        text = value.strip()
        symbolic = _symbolic_mode(text)
        if symbolic is not None:
            return symbolic
        digits = text[2:] if text.lower().startswith("0o") else text
        if digits and len(digits) <= 4 and all(c in "01234567" for c in digits):
            return int(digits, 8)
    raise ModeError(f"mode {value!r} is neither octal nor rwx notation", hint=_MODE_HINT)


def _mtime(path: str, key: str = "st_mtime") -> float | None:
    try:
        return float(getattr(os.stat(path), key))
    except FileNotFoundError:
        return None


def _kind(path: str) -> str:
    """What is at `path`, for messages."""
    if os.path.islink(path):
        return "a symlink" if os.path.exists(path) else "a dangling symlink"
    if os.path.isdir(path):
        return "a directory"
    if os.path.isfile(path):
        return "a regular file"
    return "a special file"


def _ensure_parent(path: str, leading: bool | None) -> None:
    """The directory `path` goes into exists; created when `leading`
    (None: the component has no `leading` option)."""
    parent = os.path.dirname(path)
    if os.path.isdir(parent):
        return
    if not leading:
        hint = "create it first (a Directory before this component)"
        raise DeployError(
            f"directory {parent} does not exist",
            hint=hint if leading is None else hint + " or pass leading=True",
        )
    try:
        os.makedirs(parent, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DeployError(
            f"cannot create directory {parent}: a part of it is not a directory",
            hint="remove the file that is in the way",
        ) from None


def _check_directory(path: str) -> bool:
    """Whether `path` is a directory (a link to one counts, as in batou);
    False when nothing is there, an error when something else is.
    """
    if os.path.isdir(path):
        return True
    if os.path.lexists(path):
        raise DeployError(
            f"{path} is {_kind(path)}, expected a directory",
            hint="remove it, or manage it as a file (ensure='file')",
        )
    return False


class File(Component):
    """A file, directory or symlink with content, owner, group and mode.

    ``ensure`` is ``"file"`` (default), ``"directory"`` or ``"symlink"``.
    Content comes from ``content`` (a template unless ``is_template=False``),
    from ``source`` (a file next to the component, also a template), or,
    when neither is given, from a file in the component's directory named
    like the target, if there is one. ``leading=True`` creates missing
    parent directories.

    Example::

        self += File("nginx.conf", template_args={"port": 80})
        self += File("empty.log", content="")
        self += File("/srv/www", ensure="directory", source="www", exclude=["*.pyc"])
    """

    namevar = "path"
    path: str
    ensure = "file"
    content: str | bytes | None = None
    source: str | None = None
    is_template = True
    template_context: Component | None = None
    template_args: Mapping[str, Any] | None = None
    encoding: str | None = "utf-8"
    sensitive_data: bool | None = None
    owner: str | int | None = None
    group: str | int | None = None
    mode: int | str | None = None
    link_to = ""
    leading = False
    exclude: Sequence[str] = ()

    def configure(self) -> None:
        # N.B. children get the path as written and map it themselves (they
        # share this workdir): mapping an already mapped path again is not a
        # no-op under a Map sandbox such as "/ = /home/me/sandbox".
        requested = str(self.path)
        self.path = self.map(requested)
        if self.ensure == "file":
            self += Presence(requested, leading=self.leading)
        elif self.ensure == "directory":
            self += Directory(
                requested, leading=self.leading, source=self.source, exclude=self.exclude
            )
        elif self.ensure == "symlink":
            if self.mode is not None:
                raise ConfigurationError(
                    "a symlink has no mode of its own", hint="drop mode= or set it on the target"
                )
            self += Symlink(requested, source=self.link_to, leading=self.leading)
        else:
            raise ConfigurationError(
                f"ensure must be 'file', 'directory' or 'symlink', got {self.ensure!r}"
            )
        if self.owner is not None:
            self += Owner(requested, owner=self.owner)
        if self.group is not None:
            self += Group(requested, group=self.group)
        if self.mode is not None:
            self += Mode(requested, mode=self.mode)
        if self.ensure == "file":
            # N.B. after Owner, Group and Mode: new content (a secret, say)
            # is written into a file that already has its final permissions,
            # never into a world-readable one that is tightened afterwards.
            self._configure_content(requested)

    def _configure_content(self, requested: str) -> None:
        source = self.source
        if self.content is None and source is None:
            implicit = posixpath.join(self.defdir, posixpath.basename(requested))
            if not os.path.isfile(implicit):
                return
            source = implicit
        self += Content(
            requested,
            content=self.content,
            source=source,
            is_template=self.is_template,
            template_context=self.template_context or self.parent,
            template_args=self.template_args,
            encoding=self.encoding,
            sensitive_data=self.sensitive_data,
        )

    def last_updated(self, key: str = "st_mtime") -> float | None:
        return _mtime(self.path, key)


class BinaryFile(File):
    """A file with bytes content, never rendered as a template.

    Example::

        self += BinaryFile("logo.png", source="logo.png")
    """

    is_template = False
    encoding = None


class Presence(Component):
    """The path exists as a regular file (created empty if missing).

    Example::

        self += Presence("/var/log/app.log", leading=True)
    """

    namevar = "path"
    path: str
    leading = False

    def configure(self) -> None:
        self.path = self.map(self.path)

    def verify(self) -> None:
        if os.path.isdir(self.path) and not os.path.islink(self.path):
            raise DeployError(
                f"{self.path} is a directory, expected a file",
                hint="remove the directory or use ensure='directory'",
            )
        if not os.path.isfile(self.path):
            raise UpdateNeeded(f"{self.path} is missing")

    def update(self) -> None:
        _ensure_parent(self.path, self.leading)
        if os.path.islink(self.path):
            os.unlink(self.path)
        # A new, empty file: created whole or not at all (O_EXCL), so no
        # staging is needed; Content, if any, writes the bytes atomically.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))

    def last_updated(self, key: str = "st_mtime") -> float | None:
        return _mtime(self.path, key)


class Directory(Component):
    """The path exists as a directory; with ``source``, mirrors that tree.

    A symlink to a directory counts as the directory (as in batou).

    Example::

        self += Directory("/srv/app/static", source="static", exclude=["*.map"])
    """

    namevar = "path"
    path: str
    leading = False
    source: str | None = None
    exclude: Sequence[str] = ()

    def configure(self) -> None:
        requested = str(self.path)  # mapped once, by the child itself (see File)
        self.path = self.map(requested)
        if self.source:
            # Children deploy first, so the sync creates the directory itself
            # when it is missing (honouring `leading`).
            self += SyncDirectory(
                requested, source=self.source, exclude=self.exclude, leading=self.leading
            )

    def verify(self) -> None:
        if not _check_directory(self.path):
            raise UpdateNeeded(f"{self.path} is missing")

    def update(self) -> None:
        _ensure_parent(self.path, self.leading)
        os.mkdir(self.path)

    def last_updated(self, key: str = "st_mtime") -> float | None:
        return _mtime(self.path, key)


class SyncDirectory(Component):
    """Make a directory mirror ``source`` (next to the component): copy what
    differs, remove what the source lacks; names matching ``exclude``
    (shell patterns on the relative path or the basename) are left alone on
    both sides. Files get the source's executable bits; symlinks are copied
    as links.

    Example::

        self += SyncDirectory("/srv/app/static", source="static", exclude=["*.map"])
    """

    namevar = "path"
    path: str
    source: str = ""
    exclude: Sequence[str] = ()
    leading = False

    def configure(self) -> None:
        self.path = self.map(self.path)
        source = self.source
        if not source.startswith("/"):
            source = posixpath.join(self.defdir, source)
        self.source = posixpath.normpath(source)
        if not os.path.isdir(self.source):
            raise ConfigurationError(
                f"source directory {self.source} does not exist",
                hint="source= is relative to the component's directory",
            )

    def _excluded(self, relative: str) -> bool:
        name = posixpath.basename(relative)
        return any(
            fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(name, p) for p in self.exclude
        )

    def _tree(self, top: str) -> dict[str, str]:
        """Relative path -> kind ('dir', 'file', 'link') below `top`."""
        entries: dict[str, str] = {}
        if not os.path.isdir(top):
            return entries
        for current, dirs, files in os.walk(top):
            dirs.sort()
            relative_dir = posixpath.relpath(current, top)
            for name in [*dirs, *files]:
                relative = name if relative_dir == "." else posixpath.join(relative_dir, name)
                if self._excluded(relative):
                    if name in dirs:
                        dirs.remove(name)
                    continue
                full = posixpath.join(current, name)
                if os.path.islink(full):
                    entries[relative] = "link"
                    if name in dirs:
                        dirs.remove(name)
                elif os.path.isdir(full):
                    entries[relative] = "dir"
                else:
                    entries[relative] = "file"
        return entries

    def _plan(self) -> tuple[list[str], list[str]]:
        """Relative paths to copy from source, and to remove from the target."""
        want = self._tree(self.source)
        have = self._tree(self.path)
        copy: list[str] = []
        for relative, kind in sorted(want.items()):
            if have.get(relative) != kind or not self._same(relative, kind):
                copy.append(relative)
        remove = sorted(r for r in have if r not in want or have[r] != want[r])
        return copy, remove

    def _same(self, relative: str, kind: str) -> bool:
        source = posixpath.join(self.source, relative)
        target = posixpath.join(self.path, relative)
        if kind == "link":
            return os.readlink(source) == os.readlink(target)
        if kind == "dir":
            return True
        if os.path.getsize(source) != os.path.getsize(target):
            return False
        if os.stat(source).st_mode & 0o111 != os.stat(target).st_mode & 0o111:
            return False
        with open(source, "rb") as a, open(target, "rb") as b:
            return a.read() == b.read()

    def verify(self) -> None:
        _check_directory(self.path)
        copy, remove = self._plan()
        if copy or remove:
            raise UpdateNeeded(f"{len(copy)} to copy, {len(remove)} to remove")

    def update(self) -> None:
        if not _check_directory(self.path):
            _ensure_parent(self.path, self.leading)
            os.mkdir(self.path)
        copy, remove = self._plan()
        # Deepest first, so directories are empty when their turn comes.
        for relative in sorted(remove, key=lambda r: r.count("/"), reverse=True):
            target = posixpath.join(self.path, relative)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.unlink(target)
        for relative in copy:
            source = posixpath.join(self.source, relative)
            target = posixpath.join(self.path, relative)
            if os.path.islink(source):
                symlink_atomic(os.readlink(source), target)
            elif os.path.isdir(source):
                os.makedirs(target, exist_ok=True)
            else:
                self._copy_file(source, target)

    @staticmethod
    def _copy_file(source: str, target: str) -> None:
        with open(source, "rb") as f:
            data = f.read()
        executable = os.stat(source).st_mode & 0o111
        # A new file is readable by all (0o644) plus the source's executable
        # bits; an existing one keeps its mode (write_atomic) except for the
        # executable bits, which must equal the source's for _same().
        write_atomic(target, data, mode=0o644 | executable)
        current = stat.S_IMODE(os.stat(target).st_mode)
        if current & 0o111 != executable:
            os.chmod(target, (current & ~0o111) | executable)

    def last_updated(self, key: str = "st_mtime") -> float | None:
        times = [
            t
            for t in (
                _mtime(posixpath.join(self.path, r), key) for r in self._tree(self.path)
            )
            if t is not None
        ]
        own = _mtime(self.path, key)
        return max([*times, own]) if own is not None else None


class Symlink(Component):
    """``path`` is a symlink pointing at ``source``.

    A relative ``source`` is resolved against the workdir, like ``path``;
    ``leading=True`` creates missing parent directories.

    Example::

        self += Symlink("/srv/app/current", source="/srv/app/releases/42")
    """

    namevar = "path"
    path: str
    source: str = ""
    leading = False

    def configure(self) -> None:
        self.path = self.map(self.path)
        if not self.source:
            raise ConfigurationError("a symlink needs a target", hint="pass source= (or link_to=)")
        self.source = self.map(self.source)

    def verify(self) -> None:
        if os.path.isdir(self.path) and not os.path.islink(self.path):
            raise DeployError(
                f"{self.path} is a directory, expected a symlink",
                hint="remove the directory first",
            )
        if not os.path.islink(self.path) or os.readlink(self.path) != self.source:
            raise UpdateNeeded(f"{self.path} does not point at {self.source}")

    def update(self) -> None:
        _ensure_parent(self.path, self.leading)
        symlink_atomic(self.source, self.path)

    def last_updated(self, key: str = "st_mtime") -> float | None:
        try:
            return float(getattr(os.lstat(self.path), key))
        except FileNotFoundError:
            return None


def _missing(path: str, what: str) -> NoReturn:
    """A path Mode/Owner/Group should manage is missing: fine in a dry run
    (an earlier component would create it), an error otherwise."""
    if _run.current().predicting:
        raise UpdateNeeded(f"{path} is missing")
    raise DeployError(
        f"cannot set the {what} of {path}: it does not exist",
        hint="create it first (File, Directory or Presence before this component)",
    )


class Mode(Component):
    """The path's permission bits equal ``mode`` (0o644, "644" or "rw-r--r--").

    Example::

        self += Mode("/srv/app/bin/run", mode="rwxr-x---")
    """

    namevar = "path"
    path: str
    mode: int | str = 0o644

    def configure(self) -> None:
        self.path = self.map(self.path)
        self.mode = convert_mode(self.mode)

    def verify(self) -> None:
        if not os.path.exists(self.path):
            _missing(self.path, "mode")
        current = stat.S_IMODE(os.stat(self.path).st_mode)
        if current != self.mode:
            raise UpdateNeeded(f"mode is {current:o}, want {int(self.mode):o}")

    def update(self) -> None:
        os.chmod(self.path, int(self.mode))


def _lookup_id(kind: str, name: str | int) -> int:
    """The uid of user `name` or the gid of group `name` (kind: "user" / "group")."""
    if isinstance(name, int):
        return name
    lookup = pwd.getpwnam if kind == "user" else grp.getgrnam
    try:
        # pw_uid and gr_gid are both the third field.
        return int(lookup(name)[2])
    except KeyError:
        # An override gives every value as text: "1000" means the id.
        if name.isascii() and name.isdigit():
            return int(name)
        raise DeployError(
            f"{kind} {name!r} does not exist on this host",
            hint=f"create the {kind} first (a component before this one), "
            f"or give a {kind[0]}id",
        ) from None


class _Ownership(Component):
    """The owning user or group of a path; a symlink itself is changed, not
    what it points at."""

    namevar = "path"
    path: str
    _kind = "user"

    def _wanted(self) -> str | int:
        raise NotImplementedError

    def configure(self) -> None:
        self.path = self.map(self.path)

    def _current(self) -> int:
        if not os.path.lexists(self.path):
            _missing(self.path, "owner" if self._kind == "user" else "group")
        st = os.lstat(self.path)
        return st.st_uid if self._kind == "user" else st.st_gid

    def verify(self) -> None:
        wanted = _lookup_id(self._kind, self._wanted())
        current = self._current()
        if current != wanted:
            letter = self._kind[0]
            raise UpdateNeeded(
                f"{self._kind} is {letter}id {current}, want {self._wanted()} ({letter}id {wanted})"
            )

    def update(self) -> None:
        wanted = _lookup_id(self._kind, self._wanted())
        if self._kind == "user":
            os.lchown(self.path, wanted, -1)
        else:
            os.lchown(self.path, -1, wanted)


class Owner(_Ownership):
    """The path belongs to user ``owner`` (name or uid).

    Example::

        self += Owner("/srv/app/data", owner="app")
    """

    owner: str | int = ""

    def _wanted(self) -> str | int:
        return self.owner


class Group(_Ownership):
    """The path belongs to group ``group`` (name or gid).

    Example::

        self += Group("/srv/app/data", group="www-data")
    """

    _kind = "group"
    group: str | int = ""

    def _wanted(self) -> str | int:
        return self.group


def _text(data: bytes, encoding: str) -> list[str] | None:
    """`data` as lines for a diff, or None when it is not text."""
    if b"\0" in data:
        return None
    try:
        return data.decode(encoding).splitlines(keepends=True)
    except (UnicodeDecodeError, LookupError):
        return None


def _diff(path: str, old: bytes, new: bytes, encoding: str = "utf-8") -> tuple[str | None, str]:
    """The unified diff from `old` to `new`, cut to DIFF_MAX_LINES, and a note."""
    before, after = _text(old, encoding), _text(new, encoding)
    if before is None or after is None:
        return None, f"binary content: no diff ({len(old)} bytes, now {len(new)} bytes)"
    lines = list(difflib.unified_diff(before, after, f"{path} (current)", f"{path} (new)"))
    note = ""
    if len(lines) > DIFF_MAX_LINES:
        cut = len(lines) - DIFF_MAX_LINES
        note = f"diff truncated: {cut} of {len(lines)} lines not shown"
        lines = lines[:DIFF_MAX_LINES] + [f"... {cut} more diff lines not shown\n"]
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return text, note


class Content(Component):
    """The file at ``path`` holds exactly the given content.

    From ``content`` (str or bytes) or ``source`` (a file next to the
    component); strings are templates unless ``is_template=False``, with
    ``component`` bound to ``template_context`` (the File's parent) and
    ``template_args`` added. A change is reported as a unified diff, unless
    the content is sensitive (``sensitive_data=True``).
    """

    namevar = "path"
    path: str
    content: str | bytes | None = None
    source: str | None = None
    is_template = True
    template_context: Component | None = None
    template_args: Mapping[str, Any] | None = None
    encoding: str | None = "utf-8"
    sensitive_data: bool | None = None

    def configure(self) -> None:
        self.path = self.map(self.path)
        self._data = self.render()

    def render(self) -> bytes:
        """The bytes the file must hold."""
        context = self.template_context or self.parent or self
        args = dict(self.template_args or {})
        if self.content is not None:
            if isinstance(self.content, bytes):
                return self.content
            text = self.content
            if self.is_template:
                text = _template.render(
                    text,
                    self._template_context(context, args),
                    name=f"content of {self._breadcrumb}",
                )
            return self._encode(text, f"content of {self._breadcrumb}")
        if self.source is None:
            raise ConfigurationError("Content needs content= or source=")
        source = self.source
        if not source.startswith("/"):
            source = posixpath.join(self.defdir, source)
        try:
            with open(source, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise ConfigurationError(
                f"source file {source} does not exist",
                hint="source= is relative to the component's directory",
            ) from None
        if not self.is_template or self.encoding is None:
            return raw
        name = display_path(source, self.environment.base_dir)
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"source file {name} is not {self.encoding} text: {exc.reason} at byte {exc.start}",
                hint="pass the file's encoding=, or is_template=False (BinaryFile) to copy bytes",
            ) from None
        rendered = _template.render(text, self._template_context(context, args), name=name)
        return self._encode(rendered, name)

    def _encode(self, text: str, what: str) -> bytes:
        encoding = self.encoding or "utf-8"
        try:
            return text.encode(encoding)
        except UnicodeEncodeError as exc:
            raise ConfigurationError(
                f"{what} cannot be written as {encoding}: "
                f"{exc.object[exc.start:exc.end]!r} at character {exc.start}",
                hint="pass an encoding= that can represent it (utf-8, say)",
            ) from None
        except LookupError:
            raise ConfigurationError(
                f"unknown encoding {encoding!r} for {what}",
                hint="use a Python codec name such as 'utf-8' or 'latin-1'",
            ) from None

    def verify(self) -> None:
        try:
            with open(self.path, "rb") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        except IsADirectoryError:
            raise DeployError(
                f"{self.path} is a directory, expected a file",
                hint="remove the directory, or manage it with ensure='directory'",
            ) from None
        if current == self._data:
            return
        self._report(current or b"")
        raise UpdateNeeded(f"content of {self.path} differs")

    def _report(self, current: bytes) -> None:
        crumbs = self._breadcrumbs
        run = _run.current()
        diffs = run.diffs
        if len(diffs) >= DIFFS_PER_RUN:
            # A first deploy of 10,000 files: nobody reads 10,000 diffs, and
            # making them costs seconds and megabytes.
            note = f"diff not made: more than {DIFFS_PER_RUN} files changed in this run"
            change = _run.FileDiff(crumbs, self.path, None, note)
        elif self.sensitive_data:
            change = _run.FileDiff(crumbs, self.path, None, "sensitive content: diff withheld")
        elif any(run.holds_secret(data, self.encoding or "utf-8") for data in (current, self._data)):
            change = _run.FileDiff(
                crumbs, self.path, None, "content holds a secret value: diff withheld"
            )
        else:
            diff, note = _diff(self.path, current, self._data, self.encoding or "utf-8")
            change = _run.FileDiff(crumbs, self.path, diff, note)
        diffs.append(change)

    def update(self) -> None:
        _ensure_parent(self.path, None)
        write_atomic(self.path, self._data)

    def last_updated(self, key: str = "st_mtime") -> float | None:
        return _mtime(self.path, key)


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return override


class _DataContent(Content):
    """A file of structured ``data`` (or a JSON ``source`` file) merged with
    ``override``; subclasses say how it is written."""

    data: Any = None
    override: Any = None
    is_template = False

    def render(self) -> bytes:
        data = self.data
        if data is None and self.source is not None:
            raw = super().render()
            try:
                data = json.loads(raw)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                raise self._bad_source(exc) from None
        if data is None:
            name = type(self).__name__
            raise ConfigurationError(
                f"{name} needs data= or source=", hint="pass data={...} or source='x.json'"
            )
        if self.override is not None:
            data = _merge(data, self.override)
        return self.dump(data).encode("utf-8")

    def _bad_source(self, exc: ValueError) -> ConfigurationError:
        return ConfigurationError(
            f"source file {self.source} is not valid JSON: {exc}",
            hint="fix the file, or pass the data as data=",
        )

    def dump(self, data: Any) -> str:
        raise NotImplementedError


class JSONContent(_DataContent):
    """A JSON file from ``data`` (or a ``source`` JSON file) merged with ``override``.

    Keys are sorted and the output indented, so equal data gives equal bytes.

    Example::

        self += JSONContent("config.json", data={"port": 8080}, override={"debug": False})
    """

    def dump(self, data: Any) -> str:
        try:
            # N.B. allow_nan=False: NaN and Infinity are no JSON; readers reject them.
            text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"data is not JSON serialisable: {exc}",
                hint="use dicts with str keys, lists, str, int, finite float, bool and None",
            ) from None
        return text + "\n"


# -- YAML -----------------------------------------------------------------------------
# The runtime has no YAML library: a small, strict emitter for JSON-like
# data. Block style, two-space indent, sorted keys; a string is written
# plain only when every YAML 1.1 and 1.2 reader reads it back as that same
# string, else double-quoted with escapes.

# A plain scalar may not start with these.
_YAML_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
# Read as null, booleans, merge keys and the like (compared lowercased).
_YAML_WORDS = frozenset(
    {"", "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n", "<<", "="}
)
# What numbers (0x1F, 1_000, 1e3, .inf, 12:30:00) and dates are made of.
_YAML_NUMBERISH = frozenset("0123456789_.:+-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_YAML_ESCAPES = {
    "\0": "\\0",
    "\a": "\\a",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\v": "\\v",
    "\f": "\\f",
    "\r": "\\r",
    "\x1b": "\\e",
    '"': '\\"',
    "\\": "\\\\",
    "\x85": "\\N",
    "\u2028": "\\L",
    "\u2029": "\\P",
}
# Implicit keys are limited to 1024 characters.
_YAML_MAX_KEY = 1024
_YAML_HINT = "use dicts with str keys, lists, str, int, float, bool and None"


def _yaml_printable(c: str) -> bool:
    """Characters YAML allows unescaped (line breaks and BOM aside)."""
    return (
        " " <= c <= "~"
        or ("\xa0" <= c <= "\ud7ff" and c not in "\u2028\u2029")
        or ("\ue000" <= c <= "\ufffd" and c != "\ufeff")
        or c >= "\U00010000"
    )


def _yaml_plain_ok(text: str) -> bool:
    if text.lower() in _YAML_WORDS or text != text.strip():
        return False
    if text[0] in _YAML_INDICATORS or text.startswith(("---", "...")):
        return False
    if ": " in text or " #" in text or text.endswith(":"):
        return False
    if not all(_yaml_printable(c) for c in text):
        return False
    digits = text[1:] if text[0] in "+-" else text
    if digits and (digits[0] in "0123456789." and all(c in _YAML_NUMBERISH for c in text)):
        return False  # a number, or close enough to one to be read as such somewhere
    # A YAML 1.1 timestamp may hold spaces: 2001-12-14 21:59:43.10 -5.
    return not (text[:4].isdigit() and text[:4].isascii() and text[4:5] == "-")


def _yaml_quoted(text: str) -> str:
    out = []
    for c in text:
        if c in _YAML_ESCAPES:
            out.append(_YAML_ESCAPES[c])
        elif _yaml_printable(c):
            out.append(c)
        elif c <= "\xff":
            out.append(f"\\x{ord(c):02x}")
        elif c <= "\uffff":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def _yaml_scalar(value: Any, where: str) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        # N.B. YAML 1.1 (PyYAML) reads 1e+20 as a string: it wants the dot.
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, str):
        return value if value and _yaml_plain_ok(value) else _yaml_quoted(value)
    raise ConfigurationError(
        f"YAML data at {where} is a {type(value).__module__}.{type(value).__qualname__}, "
        "which YAMLContent cannot write",
        hint=_YAML_HINT,
    )


def _yaml_lines(value: Any, indent: int, where: str, seen: tuple[int, ...]) -> list[str]:
    """`value` as block lines at `indent`; a scalar or empty collection is one line."""
    pad = " " * indent
    if isinstance(value, (Mapping, list, tuple)) and value:
        if id(value) in seen:
            raise ConfigurationError(f"YAML data at {where} contains itself", hint=_YAML_HINT)
        seen = (*seen, id(value))
    else:
        if isinstance(value, Mapping):
            return [pad + "{}"]
        if isinstance(value, (list, tuple)):
            return [pad + "[]"]
        return [pad + _yaml_scalar(value, where)]
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise ConfigurationError(
                    f"YAML data at {where} has the key {key!r} ({type(key).__name__}): "
                    "keys must be strings",
                    hint=_YAML_HINT,
                )
            if len(key) > _YAML_MAX_KEY:
                raise ConfigurationError(
                    f"YAML data at {where} has a key of {len(key)} characters; "
                    f"YAML keys are limited to {_YAML_MAX_KEY}",
                    hint="shorten the key, or make it a value",
                )
        for key in sorted(value):
            item = value[key]
            inner = f"{where}[{key!r}]"
            head = f"{pad}{_yaml_scalar(key, inner)}:"
            if isinstance(item, (Mapping, list, tuple)) and item:
                lines.append(head)
                lines.extend(_yaml_lines(item, indent + 2, inner, seen))
            else:
                lines.append(f"{head} {_yaml_lines(item, 0, inner, seen)[0]}")
        return lines
    for index, item in enumerate(value):
        inner = f"{where}[{index}]"
        # The item's block, its first line moved up beside the dash:
        # "- a: 1" / "  b: 2", or "- - x" / "  - y".
        block = _yaml_lines(item, indent + 2, inner, seen)
        lines.append(f"{pad}- {block[0][indent + 2 :]}")
        lines.extend(block[1:])
    return lines


def dump_yaml(data: Any) -> str:
    """`data` (JSON-like) as a YAML document: block style, sorted keys, and
    strings quoted wherever a YAML reader could take them for anything else.

    ``dump_yaml({"b": [1, "yes"], "a": None})`` is ``'a: null\\nb:\\n  - 1\\n  - "yes"\\n'``.
    """
    return "\n".join(_yaml_lines(data, 0, "data", ())) + "\n"


class YAMLContent(_DataContent):
    """A YAML file from ``data`` (or a JSON ``source`` file) merged with ``override``.

    Keys are sorted and the output is block style with a two-space indent,
    so equal data gives equal bytes. Strings a YAML reader could take for
    something else (``yes``, ``1e3``, ``2024-01-01``, ``~``, ``a: b``) are
    quoted. consign's runtime has no YAML parser: a ``source`` must be JSON,
    which is valid YAML too.

    Example::

        self += YAMLContent("config.yaml", data={"port": 8080, "hosts": ["a", "b"]},
                            override={"debug": False})
    """

    def _bad_source(self, exc: ValueError) -> ConfigurationError:
        if str(self.source).lower().endswith((".yaml", ".yml")):
            return ConfigurationError(
                f"source file {self.source} is no JSON ({exc}); YAMLContent reads only "
                "JSON-compatible YAML sources, as consign's runtime has no YAML parser",
                hint="write the source in JSON syntax (which is YAML as well), "
                "or pass the data as data=",
            )
        return super()._bad_source(exc)

    def dump(self, data: Any) -> str:
        return dump_yaml(data)


class Purge(Component):
    """Nothing matches the glob ``pattern`` (files and directories removed).

    Example::

        self += Purge("/srv/app/releases/*.tmp")
    """

    namevar = "pattern"
    pattern: str

    def configure(self) -> None:
        self.pattern = self.map(self.pattern)

    def _matches(self) -> list[str]:
        return sorted(glob.glob(self.pattern))

    def verify(self) -> None:
        matches = self._matches()
        if matches:
            raise UpdateNeeded(f"{len(matches)} paths match {self.pattern}")

    def update(self) -> None:
        for path in self._matches():
            if not os.path.lexists(path):
                continue  # inside a match removed before it
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
