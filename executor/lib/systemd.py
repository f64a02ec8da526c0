"""systemd units (``executor.lib.systemd``; consign's own, batou has none).

``Unit`` writes a unit file, reloads systemd after unit files changed, and
enables, starts and restarts the unit. It is made of ``UnitFile`` (the file,
written atomically, its change shown as a diff) and its own step, which
asks ``systemctl`` (``is-enabled``, ``is-active``) and acts.

Example::

    from batou.component import Component
    from batou.lib.file import File
    from executor.lib.systemd import Unit

    class App(Component):
        def configure(self):
            self += File("/srv/app/app.conf", content="port=8080\\n")
            self += Unit("app.service", source="app.service", restart_on=self._)
            self += Unit("backup.service", source="backup.service", enable=False, start=False)
            self += Unit("backup.timer", source="backup.timer")
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import pwd
import re
import secrets
import stat
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from executor import run as _run
from executor import template as _template
from executor.component import Component, UpdateNeeded, handle_event
from executor.errors import ConfigurationError, DeployError
from executor.fs import write_atomic
from executor.lib.command import PendingMarker, check_dependencies
from executor.lib.file import DIFFS_PER_RUN, _diff
from executor.lib.users import check_name

__all__ = ["Unit", "UnitFile", "WithoutSystemd", "check_unit"]

# Exists on hosts that booted with systemd (sd_booted(3)); tests point it elsewhere.
SYSTEMD_RUNTIME_DIR = "/run/systemd/system"
# Where system units go (mapped through the environment's VFS rules).
SYSTEM_UNIT_DIR = "/etc/systemd/system"
# Where user units go, below the user's home.
USER_UNIT_DIR = ".config/systemd/user"

UNIT_SUFFIXES = (".service", ".timer", ".socket", ".path", ".mount", ".target")
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?")

# The action of a Unit owed a restart (by a failed run) that does not run:
# no systemctl call, only the pending marker goes.
_FORGET = "drop the pending restart"

# is-enabled answers that need no `systemctl enable`.
_ENABLED = frozenset({"enabled", "static", "alias", "indirect", "generated", "transient"})
# is-active answers of a unit that runs (or is on its way).
_ACTIVE = frozenset({"active", "activating", "reloading"})

# What each unit type must set, as systemd refuses to load it otherwise:
# (section, keys of which one is needed, what to tell the user).
_REQUIRED: dict[str, tuple[str, tuple[str, ...], str]] = {
    ".service": ("Service", ("ExecStart", "ExecStop"), "ExecStart= (or ExecStop=)"),
    ".timer": (
        "Timer",
        (
            "OnActiveSec",
            "OnBootSec",
            "OnStartupSec",
            "OnUnitActiveSec",
            "OnUnitInactiveSec",
            "OnCalendar",
            "OnClockChange",
            "OnTimezoneChange",
        ),
        "a trigger such as OnCalendar= or OnBootSec=",
    ),
    ".socket": (
        "Socket",
        (
            "ListenStream",
            "ListenDatagram",
            "ListenSequentialPacket",
            "ListenFIFO",
            "ListenSpecial",
            "ListenNetlink",
            "ListenMessageQueue",
            "ListenUSBFunction",
        ),
        "a Listen*= setting such as ListenStream=",
    ),
    ".path": (
        "Path",
        ("PathExists", "PathExistsGlob", "PathChanged", "PathModified", "DirectoryNotEmpty"),
        "a path setting such as PathChanged=",
    ),
    ".mount": ("Mount", ("What",), "What= and Where="),
}
_LINE = re.compile(r"([A-Za-z0-9_.-]+)\s*=(.*)")


def check_unit(name: str, text: str) -> None:
    """ConfigurationError unless `text` is a unit file systemd would load:
    ``[Section]`` and ``Key=value`` lines, and the settings the unit's type
    cannot do without. (A first check; ``systemd-analyze verify`` is the
    full one.)"""
    # Section -> settings with a non-empty value (an empty one resets a list).
    sections: dict[str, set[str]] = {}
    section: str | None = None
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        start = number + 1
        line = lines[number].strip()
        number += 1
        while line.endswith("\\") and number < len(lines):
            line = line[:-1] + " " + lines[number].strip()
            number += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not (line.endswith("]") and len(line) > 2 and "[" not in line[1:-1]):
                _invalid(name, start, line, "a section header like [Service]")
            section = line[1:-1]
            sections.setdefault(section, set())
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            _invalid(name, start, line, "'Key=value' or '[Section]'")
        if section is None:
            _invalid(name, start, line, "a section header like [Unit] before the first setting")
        key, value = match.group(1), match.group(2).strip()
        if value and not (key == "SuccessAction" and value == "none"):
            sections[section].add(key)
        else:
            sections[section].discard(key)
    suffix = "." + name.rsplit(".", 1)[-1]
    required = _REQUIRED.get(suffix)
    if required is None:
        return
    wanted_section, keys, what = required
    found = sections.get(wanted_section, set())
    missing = not any(key in found for key in keys)
    if suffix == ".service" and "SuccessAction" in sections.get("Unit", set()):
        missing = False
    if suffix == ".mount" and "Where" not in found:
        missing = True
    if missing:
        raise ConfigurationError(
            f"unit {name} is invalid: a {suffix} unit needs {what} in its [{wanted_section}] "
            "section; systemd would refuse to load it",
            hint=f"add it (see systemd{suffix}(5)); 'systemd-analyze verify FILE' checks a unit "
            "file in full",
        )


def _invalid(name: str, number: int, line: str, expected: str) -> NoReturn:
    raise ConfigurationError(
        f"unit {name} is invalid at line {number}: expected {expected}, got {line!r}",
        hint="unit files are [Section] headers and Key=value lines (see systemd.syntax(7))",
    )


def require_systemd(component: Component, what: str) -> None:
    """DeployError unless this host runs systemd. The marker directory goes
    through the environment's VFS rules like every path, so a sandboxed
    environment ([vfs] sandbox = Map) decides what its host runs."""
    marker = component.map(SYSTEMD_RUNTIME_DIR)
    if not os.path.isdir(marker):
        raise DeployError(
            f"this host has no systemd ({marker} does not exist), so {what} cannot be installed",
            hint="deploy systemd units only to hosts that boot with systemd: leave this "
            "component out there (a feature, or a platform variant), or use the host's "
            "own service manager; a container needs systemd as its init",
        )


# -- one run's systemctl bookkeeping ------------------------------------------


@dataclass
class _Managers:
    """Per run: the service managers (None: the system's; else a user's)
    that must reload before their next systemctl action, and each root's
    last Unit per manager."""

    reload: set[str | None] = field(default_factory=set)
    last: dict[int, dict[str | None, Unit]] = field(default_factory=dict)


# Keyed by the RunContext's identity (it is an unhashable dataclass); an
# entry goes when its run does.
_RUNS: dict[int, tuple[weakref.ref[_run.RunContext], _Managers]] = {}


def _managers() -> _Managers:
    run = _run.current()
    key = id(run)
    entry = _RUNS.get(key)
    if entry is not None and entry[0]() is run:
        return entry[1]
    state = _Managers()
    _RUNS[key] = (weakref.ref(run, lambda _ref: _RUNS.pop(key, None)), state)
    return state


def _manager_text(user: str | None) -> str:
    return "the system's service manager" if user is None else f"the user manager of {user}"


def _home(user: str, what: str) -> str | None:
    """The home of `user`; None in a dry run when the user does not exist
    yet (a User before the Unit would create it)."""
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        if _run.current().predicting:
            return None
        raise DeployError(
            f"user {user} of {what} does not exist",
            hint="create the user first (executor.lib.users.User before this Unit)",
        ) from None


# -- the unit file -------------------------------------------------------------


class UnitFile(Component):
    """The unit file of ``name``: in /etc/systemd/system, or for ``user``
    in ~user/.config/systemd/user (created as needed, owned by the user).
    Used by ``Unit``; a changed file makes the unit's manager reload.

    Below a user's home everything is the user's to change, so the way
    there is walked one directory at a time (``O_NOFOLLOW``): a symlink
    (``.config``, ``systemd``, ``user``, the unit file), a directory owned
    by someone other than the user or root, or a unit file that is not a
    plain file with one link is refused, so that root never reads, writes
    or chowns through a path the user planted.

    Example::

        self += UnitFile("app.service", data=b"[Service]\\nExecStart=/srv/app/run\\n")
    """

    namevar = "name"
    name: str
    data: bytes = b""
    user: str | None = None

    def configure(self) -> None:
        self._system_path = None
        if self.user is None:
            self._system_path = self.map(posixpath.join(SYSTEM_UNIT_DIR, self.name))

    def path(self) -> str | None:
        """Where the file goes (None: the user does not exist yet, dry run)."""
        if self._system_path is not None:
            return self._system_path
        assert self.user is not None
        home = _home(self.user, f"unit {self.name}")
        if home is None:
            return None
        return self.map(posixpath.join(home, USER_UNIT_DIR, self.name))

    def verify(self) -> None:
        require_systemd(self, f"unit {self.name}")
        path = self.path()
        if path is None:
            raise UpdateNeeded(f"user {self.user} does not exist yet")
        current = self._read(path)
        if current == self.data:
            return
        _managers().reload.add(self.user)
        self._report(path, current or b"")
        raise UpdateNeeded(f"unit file {path} differs")

    def _read(self, path: str) -> bytes | None:
        """The unit file's content; None: it does not exist."""
        if self.user is None:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None
        directory = self._user_directory(path, create=False)
        if directory is None:
            return None
        try:
            try:
                fd = os.open(
                    self.name,
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    dir_fd=directory,
                )
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._unsafe(path, "is a symbolic link") from None
                raise
            with open(fd, "rb") as f:
                self._check_owned(path, os.fstat(f.fileno()), directory=False)
                return f.read()
        finally:
            os.close(directory)

    def _report(self, path: str, current: bytes) -> None:
        diffs = _run.current().diffs
        if len(diffs) >= DIFFS_PER_RUN:
            note = f"diff not made: more than {DIFFS_PER_RUN} files changed in this run"
            diffs.append(_run.FileDiff(self._breadcrumbs, path, None, note))
            return
        diff, note = _diff(path, current, self.data)
        diffs.append(_run.FileDiff(self._breadcrumbs, path, diff, note))

    def update(self) -> None:
        path = self.path()
        assert path is not None
        if self.user is None:
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            write_atomic(path, self.data, mode=0o644)
            return
        directory = self._user_directory(path, create=True)
        assert directory is not None
        try:
            self._write_in(directory)
        finally:
            os.close(directory)

    def _write_in(self, directory: int) -> None:
        """Write the file atomically in the (open, checked) `directory`:
        staged under a new name, owned by the user, renamed into place."""
        staged = f".consign-{self.name[:128]}.{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(staged, flags, 0o644, dir_fd=directory)
        try:
            with open(fd, "wb") as f:
                f.write(self.data)
                f.flush()
                if self._owner is not None:
                    os.fchown(f.fileno(), *self._owner)
                os.fchmod(f.fileno(), 0o644)
                os.fsync(f.fileno())
            os.rename(staged, self.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged, dir_fd=directory)
            raise
        os.fsync(directory)

    # -- the way to a user's unit directory --------------------------------

    @property
    def _owner(self) -> tuple[int, int] | None:
        """Who owns what is created for a user unit (None: not root, the
        executor's own user does)."""
        assert self.user is not None
        if os.geteuid() != 0:
            return None
        entry = pwd.getpwnam(self.user)
        return entry.pw_uid, entry.pw_gid

    def _user_directory(self, path: str, create: bool) -> int | None:
        """An open descriptor of the directory of the user unit `path`,
        reached from the user's home one step at a time, each step checked
        (see the class); with `create`, missing directories are made (owned
        by the user). None: a directory is missing (without `create`)."""
        assert self.user is not None
        home = self.map(pwd.getpwnam(self.user).pw_dir)
        directory = posixpath.dirname(path)
        if directory.startswith(home.rstrip("/") + "/"):
            base = home
        else:  # The VFS rules map the unit directory elsewhere: check all of it.
            base = "/"
        parts = [p for p in directory[len(base) :].split("/") if p]
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            fd = os.open(base, flags)
        except (FileNotFoundError, NotADirectoryError):
            if not create:
                return None
            raise DeployError(
                f"home directory {home} of user {self.user} does not exist",
                hint="create it first (User(..., home=...) creates a new user's home)",
            ) from None
        current = base
        try:
            for part in parts:
                current = posixpath.join(current, part)
                try:
                    child = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
                    if self._owner is not None and os.fstat(child).st_uid != self._owner[0]:
                        os.fchown(child, *self._owner)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    what = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISLNK(what.st_mode):
                        raise self._unsafe(current, "is a symbolic link") from None
                    raise self._unsafe(current, "is not a directory") from None
                os.close(fd)
                fd = child
                self._check_owned(current, os.fstat(fd), directory=True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_owned(self, path: str, info: os.stat_result, directory: bool) -> None:
        """DeployError unless `info` (of `path`) is something root may use
        on the user's behalf: owned by the user, root or the executor's own
        user; a unit file a plain file without other links."""
        assert self.user is not None
        allowed = {0, os.geteuid(), pwd.getpwnam(self.user).pw_uid}
        if info.st_uid not in allowed:
            raise self._unsafe(path, f"is owned by uid {info.st_uid}, not by {self.user} or root")
        if directory:
            return
        if not stat.S_ISREG(info.st_mode):
            raise self._unsafe(path, "is not a regular file")
        if info.st_nlink != 1:
            raise self._unsafe(path, f"has {info.st_nlink} hard links")

    def _unsafe(self, path: str, why: str) -> DeployError:
        return DeployError(
            f"{path} {why}; refusing to use it for the user unit {self.name} of {self.user}",
            hint=f"below the home of {self.user}, consign follows no symbolic link and uses "
            f"only directories owned by {self.user} or root, and a unit file that is a plain "
            "file: remove or fix that path (as root), then deploy again",
        )

    def last_updated(self, key: str = "st_mtime") -> float | None:
        with contextlib.suppress(DeployError, FileNotFoundError):
            path = self.path()
            if path is not None:
                return float(getattr(os.lstat(path), key))
        return None


# -- the unit ------------------------------------------------------------------


class Unit(Component):
    """A systemd unit: its file, enabled, started, restarted on change.

    ``name`` ends in .service, .timer, .socket, .path, .mount or .target.
    The file comes from ``content`` or from ``source`` (a file next to the
    component); both are templates (unless ``is_template=False``) with
    ``component`` bound to the component that adds the Unit. It is checked
    for the settings its type needs (a .service needs ExecStart=, say).

    - ``enable`` (True): ``systemctl enable`` unless ``is-enabled`` says
      enabled (or static, alias, indirect, generated, transient).
    - ``start`` (True): ``systemctl start`` unless ``is-active`` says active.
    - restart: ``systemctl restart`` when the unit runs and its file or a
      component in ``restart_on`` (added before the Unit) changed in this
      run, or changed in an earlier run that failed before the restart (a
      marker file in the workdir remembers that until the unit restarted
      or started).
    - ``daemon-reload`` runs after unit files changed, once before the next
      systemctl action of the same manager: unit files that change one after
      the other share one reload (a Unit without actions leaves it to the
      next Unit of its root). It also runs when systemd says a unit file
      changed on disk (``NeedDaemonReload``), e.g. after a failed run.
    - ``user``: a user unit in ~user/.config/systemd/user, handled with
      ``systemctl --user`` (as that user) or ``systemctl --user
      --machine=USER@.host`` (as root; systemd 248 or later). The user's
      manager must run: ``loginctl enable-linger USER``.

    A template unit (``name@.service``) is only written: enable and start
    its instances (``name@x.service``) in another way. A host without
    systemd fails at verify, before anything is written.

    Example::

        self += Unit("app.service", content=\"\"\"\\
        [Unit]
        Description=app on {{component.port}}
        [Service]
        ExecStart=/srv/app/bin/app --port {{component.port}}
        [Install]
        WantedBy=multi-user.target
        \"\"\", restart_on=self.config)
    """

    namevar = "name"
    name: str
    content: str | None = None
    source: str | None = None
    enable = True
    start = True
    restart_on: Component | Sequence[Component] | None = None
    user: str | None = None
    is_template = True

    def configure(self) -> None:
        self._check_name()
        if self.user is not None:
            check_name("user", self.user, "user")
        self._template_unit = "@." in self.name
        if self._template_unit and (self.enable or self.start or self.restart_on is not None):
            raise ConfigurationError(
                f"{self.name} is a template unit: it cannot be enabled, started or restarted "
                "itself, only its instances",
                hint=f"pass enable=False, start=False (and no restart_on) for {self.name}",
            )
        self._restart_on = check_dependencies(self, self.restart_on, "restart_on", "Unit")
        text = self._render()
        check_unit(self.name, text)
        self._file = UnitFile(self.name, data=text.encode("utf-8"), user=self.user)
        self += self._file
        self._pending = PendingMarker(self, "restart")

    def _check_name(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.endswith(UNIT_SUFFIXES):
            raise ConfigurationError(
                f"unit name {name!r} does not end in a unit type this component knows",
                hint=f"end it in one of {', '.join(UNIT_SUFFIXES)}: Unit('app.service')",
            )
        stem = name.rsplit(".", 1)[0]
        if not _UNIT_NAME.fullmatch(stem) or len(name) > 255:
            raise ConfigurationError(
                f"unit name {name!r} is invalid: expected letters, digits, ':', '_', '.', "
                "'-' and '\\' and at most one '@', at most 255 characters",
                hint="write Unit('app.service') or Unit('app@.service')",
            )

    def _render(self) -> str:
        context = self._template_context(self.parent or self, {})
        if (self.content is None) == (self.source is None):
            raise ConfigurationError(
                f"unit {self.name} needs exactly one of content= and source=, got "
                + ("both" if self.content is not None else "neither"),
                hint="pass the unit file's text as content=, or a file next to the "
                "component as source=",
            )
        if self.content is not None:
            if not isinstance(self.content, str):
                raise ConfigurationError(
                    f"content of unit {self.name} must be text, got {type(self.content).__name__}",
                    hint="pass a str",
                )
            if not self.is_template:
                return self.content
            return _template.render(self.content, context, name=f"content of {self._breadcrumb}")
        assert self.source is not None
        shown, text = self._read_text(self.source, "source file", f" of unit {self.name}")
        if not self.is_template:
            return text
        return _template.render(text, context, name=shown)

    def _prefix(self) -> list[str]:
        if self.user is None:
            return ["systemctl"]
        try:
            me = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            me = None
        if me == self.user:
            return ["systemctl", "--user"]
        return ["systemctl", "--user", f"--machine={self.user}@.host"]

    # -- verify and update -------------------------------------------------

    @handle_event("before-update", "precursor")
    def _note_pending(self, updating: Component) -> None:
        # Before the file or a restart_on component changes: a run that dies
        # before this Unit restarts must leave the restart to the next run.
        if not self._template_unit:
            self._pending.watch(updating, [self._file, *self._restart_on])

    def _systemctl(self, *args: str) -> tuple[str, str]:
        env = None
        if self.user is not None and "XDG_RUNTIME_DIR" not in os.environ:
            # systemctl --user finds the user's manager through it; a login
            # sets it, su and cron do not.
            env = {"XDG_RUNTIME_DIR": f"/run/user/{os.geteuid()}"}
        result: tuple[str, str] = self.cmd(
            [*self._systemctl_prefix, *args], expand=False, ignore_returncode=True, env=env
        )
        return result

    def _query(self, verb: str, *options: str) -> str:
        """The first word systemctl answers; a failure to answer is an error."""
        stdout, stderr = self._systemctl(verb, *options, self.name)
        answer = stdout.strip().split("\n")[0].strip()
        if not answer:
            hint = "look at systemctl's message"
            if self.user is not None:
                hint += (
                    f"; the user manager of {self.user} must run (loginctl enable-linger "
                    f"{self.user}), and reaching another user's manager needs root and "
                    "systemd 248 or later"
                )
            raise DeployError(
                f"{' '.join(self._systemctl_prefix)} {verb} {self.name} gave no answer: "
                f"{stderr.strip() or '(no message)'}",
                hint=hint,
            )
        return answer

    def _is_last_of_manager(self) -> bool:
        """Whether no later Unit of this root shares this Unit's manager."""
        managers = _managers()
        last = managers.last.get(id(self.root))
        if last is None:
            last = {}
            for component in self.root.recursive_sub_components:
                if isinstance(component, Unit):
                    last[component.user] = component
            managers.last[id(self.root)] = last
        return last.get(self.user) is self

    def _plan(self) -> list[tuple[str, str]]:
        """The systemctl actions needed, each with why."""
        actions: list[tuple[str, str]] = []
        path = self._file.path()
        if path is None or not os.path.exists(path):
            # A dry run on a new unit: systemctl does not know it yet.
            if self.enable:
                actions.append(("enable", "new unit"))
            if self.start:
                actions.append(("start", "new unit"))
        elif not self._template_unit:
            if self.enable:
                state = self._query("is-enabled")
                if state.startswith("masked"):
                    raise DeployError(
                        f"unit {self.name} is masked, so it cannot be enabled",
                        hint=f"unmask it (systemctl unmask {self.name}) if it should run, "
                        "or pass enable=False, start=False",
                    )
                if state not in _ENABLED:
                    actions.append(("enable", f"is-enabled says {state}"))
            state = self._query("is-active")
            if state not in _ACTIVE:
                if self.start:
                    actions.append(("start", f"is-active says {state}"))
            elif not self._consign.reverifying:
                # After update() these changes are what it answered.
                changed: list[Component] = [self._file] if self._file.changed else []
                changed += [c for c in self._restart_on if c.changed]
                if changed:
                    reasons = ", ".join(c._breadcrumb for c in changed)
                    actions.append(("restart", f"{reasons} changed"))
                elif self._pending.exists():
                    actions.append(("restart", "a restart was pending from an earlier run"))
        reload = _managers().reload
        why = "unit files changed"
        # (systemctl show refuses the name of a template unit.)
        exists = path is not None and os.path.exists(path) and not self._template_unit
        if self.user not in reload and exists:
            if self._query("show", "--property=NeedDaemonReload", "--value") == "yes":
                why = f"systemd says {self.name} changed on disk"
                reload.add(self.user)
        if self.user in reload and (actions or self._is_last_of_manager()):
            actions.insert(0, ("daemon-reload", why))
        return actions

    def verify(self, predicting: bool = False) -> None:
        require_systemd(self, f"unit {self.name}")
        # On the host, not in configure: who the executor runs as decides.
        self._systemctl_prefix = self._prefix()
        self._actions = self._plan()
        if not self._actions:
            if self._consign.reverifying or not self._pending.exists():
                return
            # Owed a restart but nothing to do: the unit does not run (a
            # running one would restart), so it is owed nothing any more.
            self._actions = [(_FORGET, f"{self.name} does not run")]
        if predicting:
            for action, why in self._actions:
                self.log("would %s: %s", action, why)
        raise UpdateNeeded(", ".join(f"{action} ({why})" for action, why in self._actions))

    def update(self) -> None:
        if any(action == "restart" for action, _why in self._actions):
            self._pending.set()  # Already set unless nothing updated before.
        for action, why in self._actions:
            self._act(action, why)
        # Restarted, started, or not running: no restart is owed any more.
        self._pending.clear()

    def _act(self, action: str, why: str) -> None:
        if action == _FORGET:
            if not self._pending.set_in_this_run:  # Else nothing to tell.
                self.log("%s: %s", action, why)
            return
        managers = _managers()
        if self.user in managers.reload:
            # N.B. before every action: systemd acts on the unit files it
            # loaded, not on what is on disk.
            self._checked("daemon-reload")
            self.log("daemon-reload (%s)", _manager_text(self.user))
            managers.reload.discard(self.user)
        if action == "daemon-reload":
            return
        self._checked(action, self.name)
        self.log("%s: %s", action, why)

    def _checked(self, *args: str) -> None:
        self.cmd([*self._systemctl_prefix, *args], expand=False)


class WithoutSystemd(Component):
    """Unit's variant for a platform whose hosts have no systemd: the build
    fails for those hosts with a clear message, before anything is shipped.

    consign cannot know which platforms lack systemd (platform names are the
    deployment's own); register the variant for yours. Hosts that turn out
    to have no systemd fail at verify anyway.

    Example::

        from batou.component import platform
        from executor.lib.systemd import Unit, WithoutSystemd

        platform("alpine", Unit)(WithoutSystemd)
    """

    def configure(self) -> None:
        parent = self.parent
        what = parent._breadcrumb if parent is not None else "a systemd unit"
        raise ConfigurationError(
            f"host {self.host.name} has platform {self.host.platform!r}, which has no "
            f"systemd: {what} cannot be deployed there",
            hint="leave the unit out for this host (a feature, or a component without it "
            "for the platform), or give the host a platform with systemd",
        )
