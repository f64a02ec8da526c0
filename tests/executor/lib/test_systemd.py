"""systemd.Unit against a fake systemctl on PATH that records its arguments
and answers is-enabled / is-active from a state directory. Unit files land
in a VFS sandbox; systemd-analyze (where installed) checks what was made."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from executor.component import Component, UpdateNeeded, platform
from executor.environment import Environment, Host
from executor.errors import ConfigurationError, DeployError
from executor.lib import systemd
from executor.lib.file import File
from executor.lib.systemd import Unit, WithoutSystemd, check_unit
from executor.model import EnvironmentRecord, HostRecord, VfsMode, VfsRules
from executor.run import Level, RunContext, running

from .helpers import FAKE_SYSTEMCTL, apply_twice, configure, deploy, workdir

SERVICE = """\
[Unit]
Description=consign test app on {{component.port}}

[Service]
ExecStart=/bin/sleep {{component.port}}

[Install]
WantedBy=multi-user.target
"""

TIMER = """\
[Unit]
Description=nightly backup

[Timer]
OnCalendar=daily

[Install]
WantedBy=timers.target
"""

BACKUP = """\
[Service]
Type=oneshot
ExecStart=/bin/true
"""


ACTIONS = ("daemon-reload", "enable", "start", "restart", "stop", "disable")


class Systemd:
    """The fake host: systemctl's calls and state, the unit directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.state = tmp_path / "systemctl"
        self.units = tmp_path / "units"
        self.vfs = VfsRules(VfsMode.MAP, (("/etc/systemd/system", str(self.units)),))

    def calls(self) -> list[str]:
        path = self.state / "calls"
        calls = path.read_text().splitlines() if path.exists() else []
        path.unlink(missing_ok=True)
        return calls

    def actions(self) -> list[str]:
        """The calls that change something (queries left out)."""
        return [
            call
            for call in self.calls()
            if any(word in ACTIONS for word in call.split() if not word.startswith("-"))
        ]

    def set(self, unit: str, what: str, manager: str = "system") -> None:
        (self.state / f"{manager}-{unit}.{what}").touch()


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Systemd:
    fake = Systemd(tmp_path)
    fake.state.mkdir()
    fake.units.mkdir()
    (tmp_path / "srv").mkdir()  # App's /srv, in the sandbox
    runtime = tmp_path / "run-systemd-system"
    runtime.mkdir()
    monkeypatch.setattr(systemd, "SYSTEMD_RUNTIME_DIR", str(runtime))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(FAKE_SYSTEMCTL)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SYSTEMCTL", str(fake.state))
    return fake


class App(Component):
    """A service, configured by a file it restarts on."""

    port = 8080
    config = "v1\n"

    def configure(self) -> None:
        self += File("/srv/app.conf", content=self.config)
        self += Unit("app.service", content=SERVICE, restart_on=self._)


def sandboxed(tmp_path: Path, host: Systemd) -> VfsRules:
    """The unit directory and /srv in the sandbox."""
    return VfsRules(VfsMode.MAP, (*host.vfs.rules, ("/srv", str(tmp_path / "srv"))))


def run_app(tmp_path: Path, host: Systemd, root: type[Component] = App, **kw: Any) -> Any:
    outcome, run = deploy(root, tmp_path, vfs=sandboxed(tmp_path, host), **kw)
    assert outcome.error is None, outcome.error
    return outcome, run


def root_with(*makers: Callable[[], Component]) -> type[Component]:
    class Root(Component):
        def configure(self) -> None:
            for make in makers:
                self += make()

    return Root


# -- the command sequence --------------------------------------------------------


def test_first_install_reloads_enables_and_starts(tmp_path: Path, host: Systemd) -> None:
    outcome, run = run_app(tmp_path, host)

    assert host.calls() == [
        "is-enabled app.service",
        "is-active app.service",
        "daemon-reload",
        "enable app.service",
        "start app.service",
        # verify again after the update
        "is-enabled app.service",
        "is-active app.service",
        "show --property=NeedDaemonReload --value app.service",
    ]
    assert (host.units / "app.service").read_text() == SERVICE.replace("{{component.port}}", "8080")
    assert oct((host.units / "app.service").stat().st_mode & 0o777) == "0o644"
    assert "Root > Unit('app.service')" not in outcome.changed  # root is App
    assert "App > Unit('app.service')" in outcome.changed
    assert [e.message for e in run.log if e.level is Level.INFO] == [
        "daemon-reload (the system's service manager)",
        "enable: is-enabled says disabled",
        "start: is-active says inactive",
    ]


def test_the_second_run_changes_nothing(tmp_path: Path, host: Systemd) -> None:
    run_app(tmp_path, host)
    host.calls()

    outcome, _ = run_app(tmp_path, host)

    assert outcome.changed == ()
    assert host.actions() == []


def test_a_changed_unit_file_reloads_once_and_restarts(tmp_path: Path, host: Systemd) -> None:
    run_app(tmp_path, host)
    host.calls()

    class Slower(App):
        port = 9090

    outcome, run = run_app(tmp_path, host, Slower)

    assert host.actions() == ["daemon-reload", "restart app.service"]
    assert "Slower > Unit('app.service') > UnitFile('app.service')" in outcome.changed
    assert [d.path for d in run.diffs] == [str(host.units / "app.service")]
    assert "+ExecStart=/bin/sleep 9090" in (run.diffs[0].diff or "")


def test_a_changed_dependency_restarts_without_a_reload(tmp_path: Path, host: Systemd) -> None:
    run_app(tmp_path, host)
    host.calls()

    class Reconfigured(App):
        config = "v2\n"

    run_app(tmp_path, host, Reconfigured)

    assert host.actions() == ["restart app.service"]


def test_a_stopped_unit_is_started_not_restarted(tmp_path: Path, host: Systemd) -> None:
    run_app(tmp_path, host)
    (host.state / "system-app.service.active").unlink()
    host.calls()

    class Changed(App):
        port = 9090
        config = "v2\n"

    run_app(tmp_path, host, Changed)

    assert host.actions() == ["daemon-reload", "start app.service"]


def test_unit_files_changed_one_after_the_other_share_one_reload(
    tmp_path: Path, host: Systemd
) -> None:
    root = root_with(
        lambda: Unit("backup.service", content=BACKUP, enable=False, start=False),
        lambda: Unit("backup.timer", content=TIMER),
    )

    apply_twice(root, tmp_path, vfs=host.vfs)

    assert host.actions() == ["daemon-reload", "enable backup.timer", "start backup.timer"]


def test_units_without_actions_reload_at_the_last_unit(tmp_path: Path, host: Systemd) -> None:
    root = root_with(
        lambda: Unit("one.service", content=BACKUP, enable=False, start=False),
        lambda: Unit("two.service", content=BACKUP, enable=False, start=False),
    )

    first, _ = apply_twice(root, tmp_path, vfs=host.vfs)

    assert host.actions() == ["daemon-reload"]
    assert "Root > Unit('two.service')" in first.changed


def test_each_restart_sees_its_own_new_unit_file(tmp_path: Path, host: Systemd) -> None:
    # Two running units changed one after the other: the second needs a
    # reload after its file was written, else it would restart with the old one.
    def units(command: str) -> type[Component]:
        content = f"[Service]\nExecStart={command}\n"
        return root_with(
            lambda: Unit("a.service", content=content), lambda: Unit("b.service", content=content)
        )

    apply_twice(units("/bin/sleep 1"), tmp_path, vfs=host.vfs)
    host.calls()

    apply_twice(units("/bin/sleep 2"), tmp_path, vfs=host.vfs)

    assert host.actions() == [
        "daemon-reload",
        "restart a.service",
        "daemon-reload",
        "restart b.service",
    ]


def test_a_reload_left_over_by_a_failed_run_is_made_up(tmp_path: Path, host: Systemd) -> None:
    run_app(tmp_path, host)
    (host.state / "system-need-reload").touch()
    host.calls()

    run_app(tmp_path, host)

    assert host.actions() == ["daemon-reload"]


def test_a_dry_run_only_asks(tmp_path: Path, host: Systemd) -> None:
    outcome, run = run_app(tmp_path, host, predicting=True)

    assert host.actions() == []
    assert not (host.units / "app.service").exists()
    assert [e.message for e in run.log if e.level is Level.INFO] == [
        "would daemon-reload: unit files changed",
        "would enable: new unit",
        "would start: new unit",
    ]
    assert "App > Unit('app.service') > UnitFile('app.service')" in outcome.changed


def test_a_dry_run_of_a_changed_running_unit(tmp_path: Path, host: Systemd) -> None:
    run_app(tmp_path, host)
    host.calls()

    class Changed(App):
        port = 9090

    _, run = run_app(tmp_path, host, Changed, predicting=True)

    assert host.actions() == []
    assert [e.message for e in run.log if e.level is Level.INFO] == [
        "would daemon-reload: unit files changed",
        "would restart: UnitFile('app.service') changed",
    ]


def test_content_from_a_source_template(tmp_path: Path, host: Systemd) -> None:
    defdir = tmp_path / "component"
    defdir.mkdir()
    (defdir / "app.service").write_text(SERVICE)

    class Root(Component):
        port = 1234

        def configure(self) -> None:
            self += Unit("app.service", source="app.service", enable=False)

    apply_twice(Root, tmp_path, vfs=host.vfs, defdir=defdir)

    assert "ExecStart=/bin/sleep 1234\n" in (host.units / "app.service").read_text()
    assert host.actions() == ["daemon-reload", "start app.service"]


def test_a_template_unit_is_only_written(tmp_path: Path, host: Systemd) -> None:
    content = "[Service]\nExecStart=/bin/sleep %i\n"

    apply_twice(
        root_with(lambda: Unit("worker@.service", content=content, enable=False, start=False)),
        tmp_path,
        vfs=host.vfs,
    )

    assert (host.units / "worker@.service").read_text() == content
    assert host.actions() == ["daemon-reload"]


def test_a_masked_unit_is_a_clear_error(tmp_path: Path, host: Systemd) -> None:
    host.set("app.service", "masked")

    outcome, _ = deploy(App, tmp_path, vfs=sandboxed(tmp_path, host))

    assert isinstance(outcome.error, DeployError)
    assert "unit app.service is masked, so it cannot be enabled" in str(outcome.error)
    assert "App > Unit('app.service')" in str(outcome.error)


def test_systemctl_without_an_answer_is_a_clear_error(tmp_path: Path, host: Systemd) -> None:
    (host.state / "broken").touch()

    outcome, _ = deploy(App, tmp_path, vfs=sandboxed(tmp_path, host))

    assert isinstance(outcome.error, DeployError)
    assert (
        "systemctl is-enabled app.service gave no answer: "
        "Failed to connect to bus: No medium found" in str(outcome.error)
    )


# -- user units ------------------------------------------------------------------


def test_a_user_unit_of_another_user(tmp_path: Path, host: Systemd) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this host has no user nobody")
    if pwd.getpwuid(os.geteuid()).pw_name == "nobody":
        pytest.skip("runs as nobody")
    home = tmp_path / "home"
    home.mkdir()
    vfs = VfsRules(VfsMode.MAP, ((nobody.pw_dir, str(home)),))
    content = "[Service]\nExecStart=/bin/sleep 60\n[Install]\nWantedBy=default.target\n"

    apply_twice(
        root_with(lambda: Unit("agent.service", content=content, user="nobody")),
        tmp_path,
        vfs=vfs,
    )

    machine = "--user --machine=nobody@.host"
    assert host.actions() == [
        f"{machine} daemon-reload",
        f"{machine} enable agent.service",
        f"{machine} start agent.service",
    ]
    unit = home / ".config" / "systemd" / "user" / "agent.service"
    assert unit.read_text() == content
    if os.geteuid() == 0:
        for path in (unit, unit.parent, unit.parent.parent, home / ".config"):
            assert (path.stat().st_uid, path.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)


def test_a_user_unit_of_the_executors_own_user(
    tmp_path: Path, host: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = pwd.getpwuid(os.geteuid())
    home = tmp_path / "home"
    home.mkdir()
    vfs = VfsRules(VfsMode.MAP, ((me.pw_dir, str(home)),))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)

    apply_twice(
        root_with(lambda: Unit("agent.service", content=BACKUP, enable=False, user=me.pw_name)),
        tmp_path,
        vfs=vfs,
    )

    assert host.actions() == ["--user daemon-reload", "--user start agent.service"]


def test_a_user_unit_of_a_missing_user(tmp_path: Path, host: Systemd) -> None:
    root = root_with(lambda: Unit("agent.service", content=BACKUP, user="cst-no-such-user"))

    outcome, _ = deploy(root, tmp_path)
    dry, run = deploy(root, tmp_path, predicting=True)

    assert isinstance(outcome.error, DeployError)
    assert "user cst-no-such-user of unit agent.service does not exist" in str(outcome.error)
    assert "Root > Unit('agent.service') > UnitFile('agent.service')" in str(outcome.error)
    assert dry.error is None
    assert "Root > Unit('agent.service')" in dry.changed


# -- hosts without systemd -------------------------------------------------------


def test_a_host_without_systemd_fails_before_writing(
    tmp_path: Path, host: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "SYSTEMD_RUNTIME_DIR", str(tmp_path / "no-such-dir"))

    for predicting in (False, True):
        outcome, _ = deploy(App, tmp_path, vfs=sandboxed(tmp_path, host), predicting=predicting)

        assert isinstance(outcome.error, DeployError)
        assert (
            f"this host has no systemd ({tmp_path}/no-such-dir does not exist), so unit "
            "app.service cannot be installed" in str(outcome.error)
        )
        assert "App > Unit('app.service') > UnitFile('app.service')" in str(outcome.error)
        assert "hint: deploy systemd units only to hosts that boot with systemd" in str(
            outcome.error
        )
    assert not (host.units / "app.service").exists()
    assert host.calls() == []


def test_a_sandboxed_environment_decides_through_its_vfs_whether_systemd_runs(
    tmp_path: Path, host: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real marker as the code knows it, absent here; the sandbox maps it.
    monkeypatch.setattr(systemd, "SYSTEMD_RUNTIME_DIR", "/consign-test/run/systemd/system")
    marker = tmp_path / "sandbox-run"
    vfs = VfsRules(
        VfsMode.MAP, (*sandboxed(tmp_path, host).rules, ("/consign-test/run", str(marker)))
    )

    outcome, _ = deploy(App, tmp_path, vfs=vfs)
    assert isinstance(outcome.error, DeployError)
    assert f"({marker}/systemd/system does not exist)" in str(outcome.error)

    (marker / "systemd/system").mkdir(parents=True)
    outcome, _ = deploy(App, tmp_path, vfs=vfs)
    assert outcome.error is None, outcome.error
    assert (host.units / "app.service").exists()


def test_the_variant_for_platforms_without_systemd_fails_the_build(tmp_path: Path) -> None:
    platform("consign-test-no-systemd", Unit)(WithoutSystemd)
    environment = Environment(EnvironmentRecord(name="test", target_directory=str(tmp_path)))
    host = Host(
        HostRecord(name="box1", fqdn="box1.example.com", platform="consign-test-no-systemd"), None
    )
    root = App()

    with pytest.raises(ConfigurationError) as raised:
        root.prepare_root(name="app", host=host, environment=environment, defdir=str(tmp_path))

    assert (
        "host box1 has platform 'consign-test-no-systemd', which has no systemd: "
        "Unit('app.service') cannot be deployed there" in str(raised.value)
    )
    assert "App > Unit('app.service') > WithoutSystemd" in str(raised.value)


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"name": "app"}, "unit name 'app' does not end in a unit type this component knows"),
        ({"name": "app.conf"}, "unit name 'app.conf' does not end in a unit type"),
        ({"name": "a/b.service"}, "unit name 'a/b.service' is invalid"),
        ({"name": "a b.service"}, "unit name 'a b.service' is invalid"),
        (
            {"content": None},
            "unit app.service needs exactly one of content= and source=, got neither",
        ),
        ({"source": "x"}, "unit app.service needs exactly one of content= and source=, got both"),
        (
            {"content": None, "source": "missing.service"},
            "/missing.service of unit app.service does not exist",
        ),
        (
            {"content": "[Service]\nType=simple\n"},
            "unit app.service is invalid: a .service unit needs ExecStart= (or ExecStop=) in its "
            "[Service] section",
        ),
        (
            {"content": "ExecStart=/bin/true\n"},
            "unit app.service is invalid at line 1: expected a section header like [Unit] before",
        ),
        (
            {"content": "[Service]\nExecStart /bin/true\n"},
            "unit app.service is invalid at line 2: expected 'Key=value' or '[Section]', got "
            "'ExecStart /bin/true'",
        ),
        (
            {"content": "[Service\n"},
            "is invalid at line 1: expected a section header like [Service]",
        ),
        ({"content": "[Service]\nExecStart={{nothing}}\n"}, "template uses an undefined name"),
        ({"name": "w@.service"}, "w@.service is a template unit: it cannot be enabled, started"),
        ({"user": "Bad User"}, "user name 'Bad User' (user=) is invalid"),
        ({"restart_on": "app.conf"}, "restart_on must be a component or a non-empty list"),
    ],
)
def test_bad_arguments_are_configuration_errors(
    tmp_path: Path, kw: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"name": "app.service", "content": "[Service]\nExecStart=/x\n"}
    arguments.update(kw)

    with pytest.raises(ConfigurationError) as raised:
        configure(root_with(lambda: Unit(**arguments)), tmp_path)

    assert message in str(raised.value)
    assert f"Root > Unit('{arguments['name']}')" in str(raised.value)


def test_is_template_false_keeps_the_text(tmp_path: Path, host: Systemd) -> None:
    content = "[Service]\nExecStart=/bin/echo {{ not rendered }}\n"

    apply_twice(
        root_with(
            lambda: Unit(
                "raw.service", content=content, is_template=False, start=False, enable=False
            )
        ),
        tmp_path,
        vfs=host.vfs,
    )

    assert (host.units / "raw.service").read_text() == content


# -- the unit check against systemd-analyze --------------------------------------

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)

UNITS = [
    ("app.service", "[Service]\nExecStart=/bin/true\n", True),
    ("app.service", "[Unit]\nDescription=x\n[Service]\nType=simple\n", False),
    ("app.service", "[Unit]\nSuccessAction=exit\n[Service]\nType=oneshot\n", True),
    ("app.service", "[Unit]\nSuccessAction=none\n[Service]\nType=oneshot\n", False),
    ("app.service", "[Service]\nExecStart=\n", False),
    ("app.service", "# comment\n[Service]\nExecStart=/bin/echo a \\\n  b\n", True),
    ("app.timer", "[Timer]\nOnCalendar=daily\n", True),
    ("app.timer", "[Timer]\nPersistent=true\n", False),
    ("app.socket", "[Socket]\nListenStream=127.0.0.1:9\n", True),
    ("app.socket", "[Socket]\nAccept=no\n", False),
    ("app.path", "[Path]\nPathChanged=/etc/hostname\n", True),
    ("app.path", "[Path]\nMakeDirectory=yes\n", False),
    ("app.target", "[Unit]\nDescription=group\n", True),
    ("srv-data.mount", "[Mount]\nWhat=tmpfs\nWhere=/srv/data\nType=tmpfs\n", True),
    ("srv-data.mount", "[Mount]\nWhere=/srv/data\nType=tmpfs\n", False),
]


def _analyze(directory: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    path = directory / name
    path.write_text(text)
    if name.endswith((".timer", ".path", ".socket")):
        # What they trigger must exist for the verify to pass.
        (directory / "app.service").write_text("[Service]\nExecStart=/bin/true\n")
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@needs_analyze
@pytest.mark.parametrize(("name", "text", "valid"), UNITS)
def test_the_unit_check_agrees_with_systemd_analyze(
    tmp_path: Path, name: str, text: str, valid: bool
) -> None:
    result = _analyze(tmp_path, name, text)
    assert (result.returncode == 0) == valid, result.stderr
    if valid:
        check_unit(name, text)
    else:
        with pytest.raises(ConfigurationError, match=f"unit {name} is invalid"):
            check_unit(name, text)


@needs_analyze
def test_generated_units_pass_systemd_analyze(tmp_path: Path, host: Systemd) -> None:
    run_app(tmp_path, host)
    apply_twice(
        root_with(
            lambda: Unit("backup.service", content=BACKUP, enable=False, start=False),
            lambda: Unit("backup.timer", content=TIMER),
        ),
        tmp_path,
        vfs=host.vfs,
    )

    for name in ("app.service", "backup.service", "backup.timer"):
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(host.units / name)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert result.returncode == 0, (name, result.stderr)


def test_run_state_is_kept_per_run(tmp_path: Path, host: Systemd) -> None:
    first, second = RunContext(), RunContext()

    with running(first):
        systemd._managers().reload.add(None)
        assert None in systemd._managers().reload
    with running(second):
        assert systemd._managers().reload == set()


# -- a restart owed by a failed run ------------------------------------------------

# Fails `systemctl restart` while $FAKE_SYSTEMCTL/fail-restart exists, else
# hands over to the fake systemctl.
FAILING_RESTART = r"""#!/bin/sh
for arg in "$@"; do
    if [ "$arg" = restart ] && [ -e "$FAKE_SYSTEMCTL/fail-restart" ]; then
        echo "$*" >> "$FAKE_SYSTEMCTL/calls"
        echo "Job for app.service failed because the control process exited" >&2
        exit 1
    fi
done
exec "$(dirname "$0")/fake-systemctl" "$@"
"""


@pytest.fixture
def failing_restart(tmp_path: Path, host: Systemd) -> Path:
    """The flag file that makes restarts fail."""
    bin_dir = tmp_path / "bin"
    (bin_dir / "systemctl").rename(bin_dir / "fake-systemctl")
    (bin_dir / "systemctl").write_text(FAILING_RESTART)
    (bin_dir / "systemctl").chmod(0o755)
    return host.state / "fail-restart"


def restart_markers(tmp_path: Path) -> list[Path]:
    return sorted(workdir(tmp_path).glob(".consign-pending-restart-*"))


class Reconfigured(App):
    config = "v2\n"


class Replaced(App):
    port = 9090


@pytest.mark.parametrize("changed", [Reconfigured, Replaced], ids=["dependency", "unit-file"])
def test_a_restart_that_failed_is_made_up_by_the_next_run(
    tmp_path: Path, host: Systemd, failing_restart: Path, changed: type[Component]
) -> None:
    run_app(tmp_path, host)
    host.calls()
    failing_restart.touch()

    failed, _ = deploy(changed, tmp_path, vfs=sandboxed(tmp_path, host))

    assert failed.error is not None
    assert "restart app.service" in host.actions()
    assert len(restart_markers(tmp_path)) == 1
    failing_restart.unlink()

    # Nothing changes any more, but the restart is still owed.
    _, dry = run_app(tmp_path, host, changed, predicting=True)
    assert [e.message for e in dry.log if e.level is Level.INFO] == [
        "would restart: a restart was pending from an earlier run"
    ]
    outcome, _ = run_app(tmp_path, host, changed)
    assert host.actions() == ["restart app.service"]
    assert outcome.changed == (f"{changed.__name__} > Unit('app.service')",)
    assert restart_markers(tmp_path) == []
    run_app(tmp_path, host, changed)
    assert host.actions() == []


def test_a_run_that_dies_before_the_unit_leaves_the_restart_owed(
    tmp_path: Path, host: Systemd
) -> None:
    class Failing(Component):
        fail = False

        def verify(self) -> None:
            if self.fail:
                raise UpdateNeeded()

        def update(self) -> None:
            raise DeployError("broken")

    def app(config: str, fail: bool) -> type[Component]:
        class Root(App):
            def configure(self) -> None:
                self += File("/srv/app.conf", content=config)
                dependency = self._
                self += Failing(fail=fail)
                self += Unit("app.service", content=SERVICE, restart_on=dependency)

        return Root

    run_app(tmp_path, host, app("v1\n", False))
    failed, _ = deploy(app("v2\n", True), tmp_path, vfs=sandboxed(tmp_path, host))
    assert isinstance(failed.error, DeployError)
    host.calls()

    run_app(tmp_path, host, app("v2\n", False))

    assert host.actions() == ["restart app.service"]
    assert restart_markers(tmp_path) == []


def test_a_restart_owed_to_a_unit_that_no_longer_runs_is_dropped(
    tmp_path: Path, host: Systemd, failing_restart: Path
) -> None:
    class Idle(App):
        def configure(self) -> None:
            self += File("/srv/app.conf", content=self.config)
            self += Unit("app.service", content=SERVICE, restart_on=self._, start=False)

    class IdleReconfigured(Idle):
        config = "v2\n"

    run_app(tmp_path, host, Idle)
    host.set("app.service", "active")  # started by hand (or by a timer)
    failing_restart.touch()
    failed, _ = deploy(IdleReconfigured, tmp_path, vfs=sandboxed(tmp_path, host))
    assert failed.error is not None
    failing_restart.unlink()
    (host.state / "system-app.service.active").unlink()  # stopped by hand
    host.calls()

    _, run = run_app(tmp_path, host, IdleReconfigured)

    assert host.actions() == []
    assert restart_markers(tmp_path) == []
    assert [e.message for e in run.log if e.level is Level.INFO] == [
        "drop the pending restart: app.service does not run"
    ]
    outcome, _ = run_app(tmp_path, host, IdleReconfigured)
    assert outcome.changed == ()


def test_a_dry_run_owes_no_restart(tmp_path: Path, host: Systemd) -> None:
    run_app(tmp_path, host)

    run_app(tmp_path, host, Reconfigured, predicting=True)

    assert restart_markers(tmp_path) == []


# -- user units below a home the user controls ---------------------------------------


@pytest.fixture
def nobody(tmp_path: Path) -> tuple[pwd.struct_passwd, Path, VfsRules]:
    """User nobody, its home mapped to tmp_path/home (empty)."""
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this host has no user nobody")
    if pwd.getpwuid(os.geteuid()).pw_name == "nobody":
        pytest.skip("runs as nobody")
    home = tmp_path / "home"
    home.mkdir()
    return entry, home, VfsRules(VfsMode.MAP, ((entry.pw_dir, str(home)),))


AGENT = "[Service]\nExecStart=/bin/sleep 60\n[Install]\nWantedBy=default.target\n"


def deploy_agent(tmp_path: Path, vfs: VfsRules, predicting: bool = False) -> Any:
    root = root_with(lambda: Unit("agent.service", content=AGENT, user="nobody"))
    outcome, run = deploy(root, tmp_path, vfs=vfs, predicting=predicting)
    return outcome.error, run


def test_a_symlinked_config_directory_is_refused(
    tmp_path: Path, host: Systemd, nobody: tuple[pwd.struct_passwd, Path, VfsRules]
) -> None:
    _, home, vfs = nobody
    elsewhere = tmp_path / "etc-systemd"  # where the user wants root to write
    elsewhere.mkdir()
    (home / ".config").symlink_to(elsewhere)

    for predicting in (True, False):
        error, _ = deploy_agent(tmp_path, vfs, predicting)

        assert isinstance(error, DeployError)
        assert (
            f"{home}/.config is a symbolic link; refusing to use it for the user unit "
            "agent.service of nobody" in str(error)
        )
        assert "Root > Unit('agent.service') > UnitFile('agent.service')" in str(error)
    assert list(elsewhere.iterdir()) == []
    assert host.actions() == []


def test_a_symlinked_unit_file_is_neither_read_nor_written(
    tmp_path: Path, host: Systemd, nobody: tuple[pwd.struct_passwd, Path, VfsRules]
) -> None:
    _, home, vfs = nobody
    units = home / ".config" / "systemd" / "user"
    units.mkdir(parents=True)
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret-hash:19000::::::\n")
    (units / "agent.service").symlink_to(secret)

    error, run = deploy_agent(tmp_path, vfs)

    assert isinstance(error, DeployError)
    assert f"{units}/agent.service is a symbolic link; refusing to use it" in str(error)
    assert run.diffs == []
    assert all("secret-hash" not in entry.message for entry in run.log)
    assert secret.read_text() == "root:$6$secret-hash:19000::::::\n"
    assert (units / "agent.service").is_symlink()


def test_a_hard_linked_unit_file_is_not_read(
    tmp_path: Path, host: Systemd, nobody: tuple[pwd.struct_passwd, Path, VfsRules]
) -> None:
    _, home, vfs = nobody
    units = home / ".config" / "systemd" / "user"
    units.mkdir(parents=True)
    secret = tmp_path / "shadow"
    secret.write_text("secret-hash\n")
    os.link(secret, units / "agent.service")

    error, run = deploy_agent(tmp_path, vfs)

    assert isinstance(error, DeployError)
    assert f"{units}/agent.service has 2 hard links; refusing to use it" in str(error)
    assert run.diffs == []


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@needs_root
@pytest.mark.parametrize("step", [".config", ".config/systemd", ".config/systemd/user"])
def test_a_directory_owned_by_another_user_is_refused(
    tmp_path: Path, host: Systemd, nobody: tuple[pwd.struct_passwd, Path, VfsRules], step: str
) -> None:
    entry, home, vfs = nobody
    (home / ".config" / "systemd" / "user").mkdir(parents=True)
    for path in (home / ".config", home / ".config/systemd", home / ".config/systemd/user"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chown(home / step, 4242, 4242)

    error, _ = deploy_agent(tmp_path, vfs)

    assert isinstance(error, DeployError)
    assert f"{home}/{step} is owned by uid 4242, not by nobody or root; refusing to use it" in str(
        error
    )
    assert "hint: below the home of nobody, consign follows no symbolic link" in str(error)
    assert not (home / ".config/systemd/user/agent.service").exists()


@needs_root
def test_directories_of_the_user_or_root_are_used(
    tmp_path: Path, host: Systemd, nobody: tuple[pwd.struct_passwd, Path, VfsRules]
) -> None:
    entry, home, vfs = nobody
    (home / ".config").mkdir()  # root's
    (home / ".config" / "systemd").mkdir()
    os.chown(home / ".config" / "systemd", entry.pw_uid, entry.pw_gid)

    error, _ = deploy_agent(tmp_path, vfs)

    assert error is None, error
    unit = home / ".config/systemd/user/agent.service"
    assert unit.read_text() == AGENT
    assert (unit.stat().st_uid, unit.parent.stat().st_uid) == (entry.pw_uid, entry.pw_uid)
    assert (home / ".config").stat().st_uid == 0
    assert [p.name for p in unit.parent.iterdir()] == ["agent.service"]
