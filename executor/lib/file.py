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
import os
import posixpath
import pwd
import shutil
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from executor import run as _run
from executor import template as _template
from executor.component import Component, UpdateNeeded
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
]

# Longer diffs are cut to this many lines in the run's result.
DIFF_MAX_LINES = 200

_RWX = "rwxrwxrwx"


def convert_mode(value: Any) -> int:
    """Accept 0o644, "644" / "0644" / "0o644", or "rw-r--r--"; return the int."""
    if isinstance(value, bool):
        raise ModeError(f"mode must be octal or rwx notation, got {value!r}")
    if isinstance(value, int):
        if 0 <= value <= 0o7777:
            return value
        raise ModeError(
            f"mode {value} is out of range",
            hint="write it in octal: mode=0o755 or mode='755'",
        )
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10 and text[0] in "-dl":
            text = text[1:]
        if len(text) == 9 and all(c == "-" or c == _RWX[i] for i, c in enumerate(text)):
            return sum(1 << (8 - i) for i, c in enumerate(text) if c != "-")
        digits = text[2:] if text.lower().startswith("0o") else text
        if digits and len(digits) <= 4 and all(c in "01234567" for c in digits):
            return int(digits, 8)
    raise ModeError(
        f"mode {value!r} is neither octal nor rwx notation",
        hint="write 0o644, '644', '0644' or 'rw-r--r--'",
    )


def _mtime(path: str, key: str = "st_mtime") -> float | None:
    try:
        return float(getattr(os.stat(path), key))
    except FileNotFoundError:
        return None


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
        self.path = self.map(self.path)
        if self.ensure == "file":
            self += Presence(self.path, leading=self.leading)
            self._configure_content()
        elif self.ensure == "directory":
            self += Directory(
                self.path, leading=self.leading, source=self.source, exclude=self.exclude
            )
        elif self.ensure == "symlink":
            if self.mode is not None:
                raise ConfigurationError(
                    "a symlink has no mode of its own", hint="drop mode= or set it on the target"
                )
            self += Symlink(self.path, source=self.link_to)
        else:
            raise ConfigurationError(
                f"ensure must be 'file', 'directory' or 'symlink', got {self.ensure!r}"
            )
        if self.owner is not None:
            self += Owner(self.path, owner=self.owner)
        if self.group is not None:
            self += Group(self.path, group=self.group)
        if self.mode is not None:
            self += Mode(self.path, mode=self.mode)

    def _configure_content(self) -> None:
        source = self.source
        if self.content is None and source is None:
            implicit = posixpath.join(self.defdir, posixpath.basename(self.path))
            if not os.path.isfile(implicit):
                return
            source = implicit
        self += Content(
            self.path,
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
    """The path exists as a regular file (created empty if missing)."""

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
        parent = os.path.dirname(self.path)
        if self.leading:
            os.makedirs(parent, exist_ok=True)
        elif not os.path.isdir(parent):
            raise DeployError(
                f"directory {parent} does not exist",
                hint="create it first or pass leading=True",
            )
        if os.path.islink(self.path):
            os.unlink(self.path)
        write_atomic(self.path, b"")

    def last_updated(self, key: str = "st_mtime") -> float | None:
        return _mtime(self.path, key)


class Directory(Component):
    """The path exists as a directory; with ``source``, mirrors that tree.

    Example::

        self += Directory("/srv/app/static", source="static", exclude=["*.map"])
    """

    namevar = "path"
    path: str
    leading = False
    source: str | None = None
    exclude: Sequence[str] = ()

    def configure(self) -> None:
        self.path = self.map(self.path)
        if self.source:
            self += SyncDirectory(self.path, source=self.source, exclude=self.exclude)

    def verify(self) -> None:
        if os.path.islink(self.path) or (
            os.path.exists(self.path) and not os.path.isdir(self.path)
        ):
            raise DeployError(
                f"{self.path} exists but is not a directory",
                hint="remove it, or manage it as a file",
            )
        if not os.path.isdir(self.path):
            raise UpdateNeeded(f"{self.path} is missing")

    def update(self) -> None:
        if self.leading:
            os.makedirs(self.path, exist_ok=True)
        else:
            os.mkdir(self.path)

    def last_updated(self, key: str = "st_mtime") -> float | None:
        return _mtime(self.path, key)


class SyncDirectory(Component):
    """Make a directory mirror ``source`` (next to the component): copy what
    differs, remove what the source lacks; names matching ``exclude``
    (shell patterns on the relative path or the basename) are left alone.
    """

    namevar = "path"
    path: str
    source: str = ""
    exclude: Sequence[str] = ()

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
        if stat.S_IMODE(os.stat(source).st_mode) & 0o111 != stat.S_IMODE(
            os.stat(target).st_mode
        ) & 0o111:
            return False
        with open(source, "rb") as a, open(target, "rb") as b:
            return a.read() == b.read()

    def verify(self) -> None:
        copy, remove = self._plan()
        if copy or remove:
            raise UpdateNeeded(f"{len(copy)} to copy, {len(remove)} to remove")

    def update(self) -> None:
        os.makedirs(self.path, exist_ok=True)
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
                with open(source, "rb") as f:
                    data = f.read()
                executable = os.stat(source).st_mode & 0o111
                write_atomic(target, data, mode=0o755 if executable else 0o644)
                if executable != os.stat(target).st_mode & 0o111:
                    os.chmod(target, 0o755 if executable else 0o644)
                    # write_atomic keeps an existing file's mode; the source's
                    # executable bit decides here.

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

    Example::

        self += Symlink("/srv/app/current", source="/srv/app/releases/42")
    """

    namevar = "path"
    path: str
    source: str = ""

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
        symlink_atomic(self.source, self.path)

    def last_updated(self, key: str = "st_mtime") -> float | None:
        try:
            return float(getattr(os.lstat(self.path), key))
        except FileNotFoundError:
            return None


class Mode(Component):
    """The path's permission bits equal ``mode`` (0o644, "644" or "rw-r--r--")."""

    namevar = "path"
    path: str
    mode: int | str = 0o644

    def configure(self) -> None:
        self.path = self.map(self.path)
        self.mode = convert_mode(self.mode)

    def verify(self) -> None:
        try:
            current = stat.S_IMODE(os.stat(self.path).st_mode)
        except FileNotFoundError:
            if _run.current().predicting:
                raise UpdateNeeded(f"{self.path} is missing") from None
            raise DeployError(f"cannot set the mode of {self.path}: it does not exist") from None
        if current != self.mode:
            raise UpdateNeeded(f"mode is {current:o}, want {int(self.mode):o}")

    def update(self) -> None:
        os.chmod(self.path, int(self.mode))


def _lookup_uid(owner: str | int) -> int:
    if isinstance(owner, int):
        return owner
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise DeployError(
            f"user {owner!r} does not exist on this host",
            hint="create the user first (a component before this one)",
        ) from None


def _lookup_gid(group: str | int) -> int:
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise DeployError(
            f"group {group!r} does not exist on this host",
            hint="create the group first (a component before this one)",
        ) from None


class Owner(Component):
    """The path belongs to user ``owner`` (name or uid)."""

    namevar = "path"
    path: str
    owner: str | int = ""

    def configure(self) -> None:
        self.path = self.map(self.path)

    def verify(self) -> None:
        try:
            current = os.lstat(self.path).st_uid
        except FileNotFoundError:
            raise UpdateNeeded(f"{self.path} is missing") from None
        if current != _lookup_uid(self.owner):
            raise UpdateNeeded(f"owner is uid {current}, want {self.owner}")

    def update(self) -> None:
        os.lchown(self.path, _lookup_uid(self.owner), -1)


class Group(Component):
    """The path belongs to group ``group`` (name or gid)."""

    namevar = "path"
    path: str
    group: str | int = ""

    def configure(self) -> None:
        self.path = self.map(self.path)

    def verify(self) -> None:
        try:
            current = os.lstat(self.path).st_gid
        except FileNotFoundError:
            raise UpdateNeeded(f"{self.path} is missing") from None
        if current != _lookup_gid(self.group):
            raise UpdateNeeded(f"group is gid {current}, want {self.group}")

    def update(self) -> None:
        os.lchown(self.path, -1, _lookup_gid(self.group))


def _diff(path: str, old: bytes, new: bytes) -> str:
    before = old.decode("utf-8", errors="replace").splitlines(keepends=True)
    after = new.decode("utf-8", errors="replace").splitlines(keepends=True)
    lines = list(difflib.unified_diff(before, after, f"{path} (current)", f"{path} (new)"))
    if len(lines) > DIFF_MAX_LINES:
        cut = len(lines) - DIFF_MAX_LINES
        lines = lines[:DIFF_MAX_LINES] + [f"... {cut} more diff lines not shown\n"]
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


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
            return text.encode(self.encoding or "utf-8")
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
        name = source
        base = self.environment.base_dir
        if base and source.startswith(base.rstrip("/") + "/"):
            name = source[len(base.rstrip("/")) + 1 :]
        text = raw.decode(self.encoding)
        return _template.render(text, self._template_context(context, args), name=name).encode(
            self.encoding
        )

    def verify(self) -> None:
        try:
            with open(self.path, "rb") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        except IsADirectoryError:
            raise DeployError(f"{self.path} is a directory, expected a file") from None
        if current == self._data:
            return
        self._report(current or b"")
        raise UpdateNeeded(f"content of {self.path} differs")

    def _report(self, current: bytes) -> None:
        run = _run.current()
        if self.sensitive_data:
            run.diffs.append(
                _run.FileDiff(self._breadcrumbs, self.path, None, "sensitive content: diff withheld")
            )
            return
        run.diffs.append(_run.FileDiff(self._breadcrumbs, self.path, _diff(self.path, current, self._data)))

    def update(self) -> None:
        if not os.path.isdir(os.path.dirname(self.path)):
            raise DeployError(
                f"directory {os.path.dirname(self.path)} does not exist",
                hint="create it first or pass leading=True",
            )
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


class JSONContent(Content):
    """A JSON file from ``data`` (or a ``source`` JSON file) merged with ``override``.

    Keys are sorted and the output indented, so equal data gives equal bytes.

    Example::

        self += JSONContent("config.json", data={"port": 8080}, override={"debug": False})
    """

    data: Any = None
    override: Any = None
    is_template = False

    def render(self) -> bytes:
        data = self.data
        if data is None and self.source is not None:
            data = json.loads(super().render())
        if data is None:
            raise ConfigurationError("JSONContent needs data= or source=")
        if self.override is not None:
            data = _merge(data, self.override)
        try:
            text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False)
        except TypeError as exc:
            raise ConfigurationError(f"data is not JSON serialisable: {exc}") from None
        return (text + "\n").encode("utf-8")


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
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
