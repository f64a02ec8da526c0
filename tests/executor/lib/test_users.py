"""User and Group: verified by the passwd and group databases, changed with
useradd / usermod / groupadd. Real users and groups are made only as root,
with unique names, and removed again even when a test fails."""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from executor.component import Component
from executor.errors import CommandError, ConfigurationError, DeployError
from executor.lib.users import Group, User

from .helpers import apply_twice, configure, deploy

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creating users and groups needs root")


def root_with(*makers: Callable[[], Component]) -> Callable[[], Component]:
    class Root(Component):
        def configure(self) -> None:
            for make in makers:
                self += make()

    return Root


class Names:
    """Unique user and group names, removed from the host at the end."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self) -> str:
        name = "cst" + secrets.token_hex(4)
        self.made.append(name)
        return name

    def remove(self) -> None:
        for name in reversed(self.made):
            # Users first: a group that is someone's primary group stays.
            subprocess.run(["userdel", name], capture_output=True, check=False)
        for name in reversed(self.made):
            subprocess.run(["groupdel", name], capture_output=True, check=False)


@pytest.fixture
def names() -> Iterator[Names]:
    made = Names()
    try:
        yield made
    finally:
        made.remove()


def members(group: str) -> list[str]:
    return list(grp.getgrnam(group).gr_mem)


# -- real users and groups (root) ----------------------------------------------


@needs_root
def test_group_and_user_are_created_once(tmp_path: Path, names: Names) -> None:
    group, extra, user = names(), names(), names()
    home = tmp_path / "home"

    first, _ = apply_twice(
        root_with(
            lambda: Group(group),
            lambda: Group(extra, gid=None),
            lambda: User(user, home=str(home), shell="/bin/sh", group=group, groups=[extra]),
        ),
        tmp_path,
    )

    entry = pwd.getpwnam(user)
    assert entry.pw_dir == str(home)
    assert entry.pw_shell == "/bin/sh"
    assert entry.pw_gid == grp.getgrnam(group).gr_gid
    assert members(extra) == [user]
    assert home.is_dir()
    assert entry.pw_uid < 1000  # a system user
    assert first.changed == (
        f"Root > Group('{group}')",
        f"Root > Group('{extra}')",
        f"Root > User('{user}')",
    )


@needs_root
def test_a_user_gets_a_group_named_like_it(tmp_path: Path, names: Names) -> None:
    user = names()

    apply_twice(root_with(lambda: User(user)), tmp_path)

    assert grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name == user


@needs_root
def test_an_existing_group_named_like_the_user_becomes_its_primary_group(
    tmp_path: Path, names: Names
) -> None:
    name = names()

    apply_twice(root_with(lambda: Group(name), lambda: User(name)), tmp_path)

    assert pwd.getpwnam(name).pw_gid == grp.getgrnam(name).gr_gid


@needs_root
def test_an_existing_user_is_changed_with_usermod(tmp_path: Path, names: Names) -> None:
    user, extra = names(), names()
    apply_twice(root_with(lambda: User(user, shell="/bin/sh")), tmp_path)

    first, _ = apply_twice(
        root_with(
            lambda: Group(extra),
            lambda: User(user, shell="/bin/bash", home=str(tmp_path / "elsewhere"), groups=extra),
        ),
        tmp_path,
    )

    entry = pwd.getpwnam(user)
    assert entry.pw_shell == "/bin/bash"
    assert entry.pw_dir == str(tmp_path / "elsewhere")
    assert members(extra) == [user]
    assert f"Root > User('{user}')" in first.changed


@needs_root
def test_other_group_memberships_are_left_alone(tmp_path: Path, names: Names) -> None:
    user, one, two = names(), names(), names()
    apply_twice(
        root_with(lambda: Group(one), lambda: Group(two), lambda: User(user, groups=[one, two])),
        tmp_path,
    )

    apply_twice(root_with(lambda: User(user, groups=[two])), tmp_path)

    assert members(one) == [user]
    assert members(two) == [user]


@needs_root
def test_a_group_with_a_fixed_gid(tmp_path: Path, names: Names) -> None:
    group = names()
    gid = next(g for g in range(64000, 65000) if not _gid_taken(g))

    apply_twice(root_with(lambda: Group(group, gid=str(gid))), tmp_path)

    assert grp.getgrnam(group).gr_gid == gid


def _gid_taken(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


@needs_root
def test_a_group_with_another_gid_is_not_renumbered(tmp_path: Path, names: Names) -> None:
    group = names()
    apply_twice(root_with(lambda: Group(group)), tmp_path)
    gid = grp.getgrnam(group).gr_gid

    outcome, _ = deploy(root_with(lambda: Group(group, gid=gid + 1)), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert f"group {group} has gid {gid}, want {gid + 1}" in str(outcome.error)
    assert f"Root > Group('{group}')" in str(outcome.error)
    assert grp.getgrnam(group).gr_gid == gid


@needs_root
def test_a_dry_run_creates_nothing(tmp_path: Path, names: Names) -> None:
    group, user = names(), names()

    outcome, _ = deploy(
        root_with(lambda: Group(group), lambda: User(user, group=group)), tmp_path, predicting=True
    )

    assert outcome.error is None
    assert outcome.changed == (f"Root > Group('{group}')", f"Root > User('{user}')")
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    with pytest.raises(KeyError):
        grp.getgrnam(group)


# -- errors (no root needed) ----------------------------------------------------


def test_a_missing_group_is_a_clear_error(tmp_path: Path) -> None:
    outcome, _ = deploy(root_with(lambda: User("cstnobody", group="cst-no-such-group")), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert "user cstnobody needs groups that do not exist: cst-no-such-group" in str(outcome.error)
    assert "Root > User('cstnobody')" in str(outcome.error)


@pytest.fixture
def failing_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """useradd and groupadd that fail like the real ones without root."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("useradd", "groupadd"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool}: Permission denied." >&2\nexit 1\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_a_failing_useradd_is_a_clear_error(tmp_path: Path, failing_tools: Path) -> None:
    name = "cst" + secrets.token_hex(4)

    outcome, _ = deploy(root_with(lambda: User(name)), tmp_path)

    error = outcome.error
    assert isinstance(error, CommandError)
    assert error.returncode == 1
    assert (
        f"useradd failed with exit code 1: useradd --system --no-create-home --user-group {name}"
        "\n  stderr: useradd: Permission denied." in str(error)
    )
    assert f"Root > User('{name}')" in str(error)
    assert "needs root" in str(error)


def test_a_failing_groupadd_is_a_clear_error(tmp_path: Path, failing_tools: Path) -> None:
    name = "cst" + secrets.token_hex(4)

    outcome, _ = deploy(root_with(lambda: Group(name, gid=4242)), tmp_path)

    assert isinstance(outcome.error, CommandError)
    assert f"groupadd failed with exit code 1: groupadd --system --gid 4242 {name}" in str(
        outcome.error
    )
    assert f"Root > Group('{name}')" in str(outcome.error)


def test_a_missing_useradd_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("executor.lib.users._SBIN", str(tmp_path))

    outcome, _ = deploy(root_with(lambda: User("cst" + secrets.token_hex(4))), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert "useradd is not installed" in str(outcome.error)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: User("App"), "user name 'App' (name=) is invalid: expected a lowercase letter"),
        (lambda: User("1app"), "user name '1app' (name=) is invalid"),
        (lambda: User("a" * 33), f"user name '{'a' * 33}' (name=) is too long"),
        (lambda: User("app;rm"), "user name 'app;rm' (name=) is invalid"),
        (lambda: User("app", group="Web"), "group name 'Web' (group=) is invalid"),
        (
            lambda: User("app", groups=["ok", "no good"]),
            "group name 'no good' (groups=) is invalid",
        ),
        (lambda: User("app", groups=5), "groups must be a list of group names, got 5"),
        (lambda: User("app", home="srv/app"), "home must be an absolute path, got 'srv/app'"),
        (lambda: User("app", shell="bash"), "shell must be an absolute path, got 'bash'"),
        (lambda: Group("-x"), "group name '-x' (name=) is invalid"),
        (lambda: Group("app", gid="many"), "gid must be a number from 0 to 4294967294, got 'many'"),
        (lambda: Group("app", gid=-1), "gid must be a number from 0 to 4294967294, got -1"),
    ],
)
def test_bad_names_and_values_are_configuration_errors(
    tmp_path: Path, make: Callable[[], Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        configure(root_with(make), tmp_path)

    assert message in str(raised.value)
    assert "Root > " in str(raised.value)


def test_good_names(tmp_path: Path) -> None:
    component = configure(
        root_with(
            lambda: User("_app-worker1", groups="adm, www-data"),
            lambda: User("host$"),
            lambda: Group("a" * 32),
        ),
        tmp_path,
    )

    assert component.sub_components[0]._groups == ["adm", "www-data"]


def fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tool: str, code: int) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / tool
    script.write_text(f'#!/bin/sh\necho "{tool}: it failed" >&2\nexit {code}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.parametrize(
    ("tool", "code", "hint"),
    [
        ("useradd", 9, "useradd says: the user name is already in use"),
        ("useradd", 6, "useradd says: a group it names does not exist: create it first"),
        ("useradd", 4, "useradd says: the uid is already in use"),
        ("useradd", 12, "useradd says: it cannot create the home directory"),
        ("useradd", 1, "useradd says: it cannot update the password or group file: it needs root"),
        ("useradd", 42, "see useradd's message above"),
        ("groupadd", 4, "groupadd says: the gid is already used by another group"),
        ("groupadd", 9, "groupadd says: the group name is already in use"),
        ("usermod", 8, "usermod says: the user is logged in or has processes running"),
    ],
)
def test_a_failing_tools_hint_explains_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tool: str, code: int, hint: str
) -> None:
    fake_tool(tmp_path, monkeypatch, tool, code)
    monkeypatch.setattr("executor.lib.users._running_as_root", lambda: True)
    name = "cst" + secrets.token_hex(4)
    make: Callable[[], Component]
    if tool == "groupadd":
        make = lambda: Group(name, gid=4242)
    elif tool == "usermod":
        name = pwd.getpwuid(os.geteuid()).pw_name  # exists; a shell it does not have
        make = lambda: User(name, shell="/cst/no/such/shell")
    else:
        make = lambda: User(name)

    outcome, _ = deploy(root_with(make), tmp_path)

    error = outcome.error
    assert isinstance(error, CommandError)
    assert error.returncode == code
    assert f"{tool} failed with exit code {code}" in str(error)
    assert f"hint: {hint}" in str(error)
    if code != 1:
        assert "needs root" not in str(error)


def test_not_running_as_root_is_named_in_every_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tool(tmp_path, monkeypatch, "useradd", 9)
    monkeypatch.setattr("executor.lib.users._running_as_root", lambda: False)

    outcome, _ = deploy(root_with(lambda: User("cst" + secrets.token_hex(4))), tmp_path)

    assert isinstance(outcome.error, CommandError)
    assert (
        "hint: useradd says: the user name is already in use (or a group of that name exists "
        "and --user-group cannot create it); useradd needs root, and the executor does not "
        "run as root" in str(outcome.error)
    )
