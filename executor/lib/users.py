"""System users and groups (``executor.lib.users``; consign's own).

``User`` and ``Group`` read the host's passwd and group databases (Python's
``pwd`` and ``grp``) to verify, and call ``useradd`` / ``usermod`` /
``groupadd`` (argv lists, no shell) to converge. Both need root to change
anything; the VFS rules of an environment do not apply to them (the
databases are the host's own).

Example::

    from batou.component import Component
    from executor.lib.users import Group, User

    class App(Component):
        def configure(self):
            self += Group("app")
            self += User("app", home="/srv/app", shell="/bin/bash", group="app",
                         groups=["systemd-journal"])
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
from collections.abc import Sequence
from typing import Any

from executor.component import Component, UpdateNeeded
from executor.errors import CommandError, ConfigurationError, DeployError

__all__ = ["Group", "User", "check_name"]

# POSIX-ish names as useradd accepts them by default (a trailing $ is for
# Samba machine accounts).
NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_-]*\$?")
NAME_MAX = 32

# Where the shadow tools live when the executor's PATH lacks sbin (a
# non-root login on Debian).
_SBIN = "/usr/sbin:/sbin"

# What the shadow tools' exit codes mean (useradd(8), groupadd(8), usermod's
# source: the man page lists none), as the next step to take.
_CANNOT_UPDATE = "it cannot update the password or group file: it needs root"
_EXIT_CODES: dict[str, dict[int, str]] = {
    "useradd": {
        1: _CANNOT_UPDATE,
        4: "the uid is already in use",
        6: "a group it names does not exist: create it first (a Group before the User)",
        9: "the user name is already in use (or a group of that name exists and "
        "--user-group cannot create it)",
        10: "it cannot update the group file (locked by another tool? run again)",
        12: "it cannot create the home directory: does its parent directory exist?",
    },
    "usermod": {
        1: _CANNOT_UPDATE,
        4: "the uid is already in use",
        6: "the user or a group it names does not exist",
        8: "the user is logged in or has processes running (usermod will not change it "
        "then): stop them, then deploy again",
        10: "it cannot update the group file (locked by another tool? run again)",
        12: "it cannot change the home directory",
    },
    "groupadd": {
        1: _CANNOT_UPDATE,
        4: "the gid is already used by another group: choose another gid= or leave it out",
        9: "the group name is already in use",
        10: "it cannot update the group file (locked by another tool? run again)",
    },
}


def _running_as_root() -> bool:
    return os.geteuid() == 0


def tool_hint(tool: str, returncode: int | None) -> str:
    """What a failed shadow tool's exit code means, and what to do."""
    known = _EXIT_CODES.get(tool, {}).get(returncode if returncode is not None else -1)
    hint = f"{tool} says: {known}" if known else f"see {tool}'s message above"
    if not _running_as_root() and known != _CANNOT_UPDATE:
        hint += f"; {tool} needs root, and the executor does not run as root"
    return hint


def check_name(kind: str, name: Any, attribute: str = "name") -> str:
    """`name` if it is a valid user or group name, else ConfigurationError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or len(name) > NAME_MAX:
        why = "is too long" if isinstance(name, str) and len(name) > NAME_MAX else "is invalid"
        raise ConfigurationError(
            f"{kind} name {name!r} ({attribute}=) {why}: expected a lowercase letter or _, "
            f"then lowercase letters, digits, _ or -, at most {NAME_MAX} characters",
            hint=f"write {attribute}='app' or {attribute}='app_worker'",
        )
    return name


def _check_path(what: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or ":" in value or "\n" in value:
        raise ConfigurationError(
            f"{what} must be an absolute path, got {value!r}",
            hint=f"write {what}='/srv/app'" if what == "home" else f"write {what}='/bin/bash'",
        )
    return value


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _run_tool(component: Component, argv: list[str]) -> None:
    """Run a shadow tool (useradd, ...) with a clear error when it fails."""
    tool = argv[0]
    path = shutil.which(tool) or shutil.which(tool, path=_SBIN)
    if path is None:
        raise DeployError(
            f"{tool} is not installed (looked in PATH and {_SBIN})",
            hint="install the shadow tools (Debian: passwd, Fedora: shadow-utils)",
        )
    try:
        component.cmd([path, *argv[1:]], expand=False)
    except CommandError as exc:
        if exc.returncode is None:  # timed out: the error says so already
            raise
        raise CommandError(
            f"{tool} failed with exit code {exc.returncode}: {' '.join(argv)}"
            + (f"\n  stderr: {exc.stderr.strip()}" if exc.stderr.strip() else ""),
            command=exc.command,
            returncode=exc.returncode,
            stdout=exc.stdout,
            stderr=exc.stderr,
            hint=tool_hint(tool, exc.returncode),
        ) from None


class Group(Component):
    """A group in the host's group database (created with ``groupadd``).

    ``system=True`` gives it a system gid when it is created; ``gid`` asks
    for a fixed one. An existing group with another gid is an error: consign
    does not renumber groups (files would keep the old gid).

    Example::

        self += Group("app", gid=990)
    """

    namevar = "name"
    name: str
    system = True
    gid: int | str | None = None

    def configure(self) -> None:
        check_name("group", self.name)
        gid = self.gid
        if gid is not None:
            if isinstance(gid, str) and gid.isascii() and gid.isdigit():
                gid = int(gid)
            if isinstance(gid, bool) or not isinstance(gid, int) or not 0 <= gid < 2**32 - 1:
                raise ConfigurationError(
                    f"gid must be a number from 0 to 4294967294, got {self.gid!r}",
                    hint="write gid=990, or leave it out to let groupadd choose",
                )
        self._gid: int | None = gid

    def verify(self) -> None:
        try:
            entry = grp.getgrnam(self.name)
        except KeyError:
            raise UpdateNeeded(f"group {self.name} does not exist") from None
        if self._gid is not None and entry.gr_gid != self._gid:
            raise DeployError(
                f"group {self.name} has gid {entry.gr_gid}, want {self._gid}",
                hint="consign does not renumber groups (files keep the old gid): change it "
                f"by hand (groupmod --gid {self._gid} {self.name}, then fix file owners) "
                "or drop gid=",
            )

    def update(self) -> None:
        argv = ["groupadd"]
        if self.system:
            argv.append("--system")
        if self._gid is not None:
            argv += ["--gid", str(self._gid)]
        _run_tool(self, [*argv, self.name])


class User(Component):
    """A user in the host's passwd database (``useradd``, then ``usermod``).

    ``system=True`` makes a system user (a uid below UID_MIN) when it is
    created. ``home`` and ``shell`` (absolute paths) are kept equal to the
    passwd entry; a new user's home is created (``useradd --create-home``),
    an existing user's is changed in passwd only, never moved. ``group`` is
    the primary group (default: a group named like the user, created with it
    unless it exists); ``groups`` (a list, or a comma-separated string) are
    supplementary groups the user must be in; other memberships are left
    alone. Groups must exist (a ``Group`` before the ``User``). Attributes
    left at None are not checked.

    Example::

        self += User("app", home="/srv/app", shell="/bin/bash", groups=["adm"])
    """

    namevar = "name"
    name: str
    system = True
    home: str | None = None
    shell: str | None = None
    group: str | None = None
    groups: Sequence[str] | str = ()

    def configure(self) -> None:
        check_name("user", self.name)
        self._home = _check_path("home", self.home)
        self._shell = _check_path("shell", self.shell)
        self._group = None if self.group is None else check_name("group", self.group, "group")
        groups: Any = self.groups
        if isinstance(groups, str):
            groups = [g.strip() for g in groups.split(",") if g.strip()]
        if not isinstance(groups, Sequence):
            raise ConfigurationError(
                f"groups must be a list of group names, got {groups!r}",
                hint="write groups=['adm', 'www-data']",
            )
        self._groups = sorted({check_name("group", g, "groups") for g in groups})
        # usermod options for an existing user that differs; None: no such user.
        self._changes: list[str] | None = None

    def _missing_groups(self) -> list[str]:
        wanted = [self._group] if self._group is not None else []
        return sorted(g for g in {*wanted, *self._groups} if not _group_exists(g))

    def verify(self, predicting: bool = False) -> None:
        missing = self._missing_groups()
        if missing:
            if predicting:  # A Group before this User would create them.
                raise UpdateNeeded(f"groups {', '.join(missing)} do not exist yet")
            raise DeployError(
                f"user {self.name} needs groups that do not exist: {', '.join(missing)}",
                hint="create them first (a Group before this User), or fix group=/groups=",
            )
        try:
            entry = pwd.getpwnam(self.name)
        except KeyError:
            self._changes = None
            raise UpdateNeeded(f"user {self.name} does not exist") from None
        self._changes = self._differences(entry)
        if self._changes:
            raise UpdateNeeded(f"user {self.name}: {'; '.join(self._changes)}")

    def _differences(self, entry: pwd.struct_passwd) -> list[str]:
        """The usermod options that make `entry` what is wanted."""
        changes: list[str] = []
        if self._home is not None and entry.pw_dir != self._home:
            changes += ["--home", self._home]
        if self._shell is not None and entry.pw_shell != self._shell:
            changes += ["--shell", self._shell]
        if self._group is not None and entry.pw_gid != grp.getgrnam(self._group).gr_gid:
            changes += ["--gid", self._group]
        joined = [
            g
            for g in self._groups
            if self.name not in (group := grp.getgrnam(g)).gr_mem and group.gr_gid != entry.pw_gid
        ]
        if joined:
            changes += ["--append", "--groups", ",".join(joined)]
        return changes

    def update(self) -> None:
        if self._changes:
            _run_tool(self, ["usermod", *self._changes, self.name])
            return
        argv = ["useradd"]
        if self.system:
            argv.append("--system")
        if self._home is not None:
            argv += ["--home-dir", self._home, "--create-home"]
        else:
            argv.append("--no-create-home")
        if self._shell is not None:
            argv += ["--shell", self._shell]
        if self._group is not None:
            argv += ["--gid", self._group]
        elif _group_exists(self.name):
            # useradd --user-group refuses an existing group of that name.
            argv += ["--gid", self.name]
        else:
            argv.append("--user-group")
        if self._groups:
            argv += ["--groups", ",".join(self._groups)]
        _run_tool(self, [*argv, self.name])
