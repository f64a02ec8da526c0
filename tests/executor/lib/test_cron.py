"""CronJob and CronTab: jobs of several roots collected into one crontab per
user and host, installed through a fake ``crontab`` on PATH.

Roots configure against the builder's live registry (the configure fixpoint
of :mod:`builder.discovery`) and deploy in-process; one test builds and
applies a real bundle, where the host sees the values the build recorded.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from builder.discovery import LiveResources, configure_all
from executor.apply import ApplyStatus, apply_bundle
from executor.component import Component
from executor.configure import ConfiguredRoot
from executor.deploy import deploy_roots
from executor.environment import Environment, Host
from executor.errors import ConfigurationError, ConsignError, DeployError, ErrorList
from executor.lib.cron import HEADER, CronJob, CronTab, check_timing
from executor.model import EnvironmentRecord, HostRecord, RootRecord
from executor.outcome import DeployOutcome
from executor.run import RunContext
from tests.deployments import apply_options, build_bundles, deployment

HOST = "host1"
ME = pwd.getpwuid(os.geteuid()).pw_name
# Another user that exists on every Debian host, for crontabs of others.
OTHER = "nobody"

FAKE_CRONTAB = """#!/bin/sh
# A fake crontab(1): one file per user in {store}, every call logged.
store='{store}'
echo "$*" >> "$store/calls"
user=$(id -un)
if [ "$1" = "-u" ]; then user="$2"; shift 2; fi
case "$1" in
  -l) if [ -f "$store/tab.$user" ]; then cat "$store/tab.$user"; exit 0; fi
      echo "no crontab for $user" >&2; exit 1 ;;
  -r) if [ -f "$store/tab.$user" ]; then rm "$store/tab.$user"; exit 0; fi
      echo "no crontab for $user" >&2; exit 1 ;;
  *)  if [ -n "$(tail -c1 "$1")" ]; then echo "$1: premature EOF" >&2; exit 1; fi
      cat "$1" > "$store/tab.$user" ;;
esac
"""


class FakeCrontab:
    """The crontabs the fake `crontab` keeps, and the calls it got."""

    def __init__(self, store: Path) -> None:
        self.store = store

    def read(self, user: str = ME) -> str | None:
        path = self.store / f"tab.{user}"
        return path.read_text() if path.exists() else None

    def write(self, text: str, user: str = ME) -> None:
        (self.store / f"tab.{user}").write_text(text)

    def calls(self) -> list[str]:
        """The arguments of each call since the last look."""
        path = self.store / "calls"
        lines = path.read_text().splitlines() if path.exists() else []
        path.unlink(missing_ok=True)
        return lines


def install_fake_crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCrontab:
    store = tmp_path / "crontabs"
    store.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "crontab"
    script.write_text(FAKE_CRONTAB.format(store=store))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return FakeCrontab(store)


@pytest.fixture
def crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCrontab]:
    yield install_fake_crontab(tmp_path, monkeypatch)


needs_other_user = pytest.mark.skipif(
    not any(p.pw_name == OTHER for p in pwd.getpwall()) or ME == OTHER,
    reason=f"needs a user {OTHER!r} other than the one running the tests",
)


# -- several roots, configured as the builder does ------------------------------------


Roots = Mapping[str, Callable[[], Component]]


def configure_roots(
    roots: Roots, tmp_path: Path, *, service_user: str | None = None
) -> list[ConfiguredRoot]:
    """Configure `roots` (name -> factory) of one host against a live
    registry until their provisions settle; ErrorList when any failed.
    Returns them in deploy order."""
    record = EnvironmentRecord(
        name="test", target_directory=str(tmp_path / "target"), service_user=service_user
    )
    environment = Environment(record)
    host = Host(HostRecord(name=HOST, fqdn=f"{HOST}.example.com"), service_user)
    ids = [(HOST, name) for name in roots]
    resources = LiveResources(ids)
    environment.resources = resources

    def configure(root: tuple[str, str]) -> Component:
        component = roots[root[1]]()
        component.prepare_root(
            name=root[1], host=host, environment=environment, defdir=str(tmp_path)
        )
        return component

    outcome = configure_all(ids, configure, resources, lambda root: root[1])
    if outcome.errors:
        raise ErrorList([error for _root, error in outcome.errors], "configure failed")
    return [
        ConfiguredRoot(RootRecord(name), outcome.components[(h, name)])
        for h, name in outcome.order
    ]


def deploy(
    roots: Roots, tmp_path: Path, *, predicting: bool = False, service_user: str | None = None
) -> tuple[DeployOutcome, RunContext]:
    configured = configure_roots(roots, tmp_path, service_user=service_user)
    run = RunContext(predicting=predicting)
    return deploy_roots(configured, run), run


def apply_twice(
    roots: Roots, tmp_path: Path, *, service_user: str | None = None
) -> tuple[DeployOutcome, RunContext]:
    first, run = deploy(roots, tmp_path, service_user=service_user)
    assert first.error is None, first.error
    second, second_run = deploy(roots, tmp_path, service_user=service_user)
    assert second.error is None, second.error
    assert second.changed == (), f"the second run changed {second.changed}"
    assert second_run.diffs == []
    return first, run


def root(name: str, *makers: Callable[[], Component]) -> Callable[[], Component]:
    """A root class called `name` adding a fresh component from each maker."""

    def configure(self: Component) -> None:
        for make in makers:
            self += make()

    return type(name, (Component,), {"configure": configure})


def configure_error(roots: Roots, tmp_path: Path, **kw: str) -> ConsignError:
    with pytest.raises(ErrorList) as info:
        configure_roots(roots, tmp_path, **kw)
    [error] = info.value.errors
    return error


def crontab_of(*lines: str) -> str:
    return HEADER + "".join(f"{line}\n" for line in lines)


TWO_APPS: Roots = {
    "web": root("Web", lambda: CronJob("/srv/web/bin/purge-cache", timing="*/10 * * * *")),
    "shop": root(
        "Shop",
        lambda: CronJob("/srv/shop/bin/report", timing="0 7 * * mon-fri", comment="daily report"),
        lambda: CronJob("/srv/shop/bin/backup", timing="@daily", args="--full", logger="backup"),
    ),
    "cron": root("Cron", lambda: CronTab()),
}


# -- collecting and installing -------------------------------------------------------


def test_jobs_of_several_roots_become_one_sorted_crontab(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    first, _run = apply_twice(TWO_APPS, tmp_path)

    # Sorted by timing, then command, as strings.
    assert crontab.read() == crontab_of(
        "*/10 * * * * /srv/web/bin/purge-cache",
        "# daily report",
        "0 7 * * mon-fri /srv/shop/bin/report",
        "@daily /srv/shop/bin/backup --full 2>&1 | logger -t backup",
    )
    assert first.changed == ("Cron > CronTab",)
    # The second run only listed the crontab.
    calls = crontab.calls()
    assert calls[-1] == "-l"
    assert sum(1 for call in calls if call != "-l") == 1


def test_the_crontab_deploys_after_the_roots_whose_jobs_it_collects(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    roots = {"cron": TWO_APPS["cron"], "web": TWO_APPS["web"], "shop": TWO_APPS["shop"]}

    configured = configure_roots(roots, tmp_path)

    assert [c.record.name for c in configured] == ["web", "shop", "cron"]


def test_a_changed_job_reinstalls_the_crontab_and_shows_the_diff(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    apply_twice(TWO_APPS, tmp_path)
    changed = dict(TWO_APPS)
    changed["web"] = root("Web", lambda: CronJob("/srv/web/bin/purge-cache", timing="*/5 * * * *"))

    outcome, run = deploy(changed, tmp_path)

    assert outcome.error is None, outcome.error
    assert outcome.changed == ("Cron > CronTab",)
    assert "*/5 * * * * /srv/web/bin/purge-cache\n" in (crontab.read() or "")
    [diff] = run.diffs
    assert diff.path == f"crontab of {ME}"
    assert diff.diff is not None
    assert "-*/10 * * * * /srv/web/bin/purge-cache" in diff.diff
    assert "+*/5 * * * * /srv/web/bin/purge-cache" in diff.diff


def test_a_crontab_edited_by_hand_is_put_back(crontab: FakeCrontab, tmp_path: Path) -> None:
    apply_twice(TWO_APPS, tmp_path)
    wanted = crontab.read()
    crontab.write((wanted or "") + "* * * * * rm -rf /tmp/x\n")

    outcome, _run = deploy(TWO_APPS, tmp_path)

    assert outcome.changed == ("Cron > CronTab",)
    assert crontab.read() == wanted


def test_a_crontab_without_jobs_is_still_managed(crontab: FakeCrontab, tmp_path: Path) -> None:
    crontab.write("* * * * * leftover\n")

    apply_twice({"cron": root("Cron", lambda: CronTab())}, tmp_path)

    assert crontab.read() == HEADER


def test_mailto_and_env_come_before_the_jobs(crontab: FakeCrontab, tmp_path: Path) -> None:
    roots: Roots = {
        "app": root("App", lambda: CronJob("run", timing="@hourly")),
        "cron": root(
            "Cron", lambda: CronTab(mailto="ops@example.com", env={"PATH": "/bin", "LANG": "C"})
        ),
    }

    apply_twice(roots, tmp_path)

    assert crontab.read() == crontab_of(
        "MAILTO=ops@example.com", "LANG=C", "PATH=/bin", "@hourly run"
    )


def test_a_dry_run_installs_nothing_and_reports_the_change(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    outcome, run = deploy(TWO_APPS, tmp_path, predicting=True)

    assert outcome.error is None, outcome.error
    assert outcome.changed == ("Cron > CronTab",)
    assert crontab.read() is None
    assert crontab.calls() == ["-l"]
    assert len(run.diffs) == 1


def test_no_temporary_file_is_left_when_crontab_refuses(
    crontab: FakeCrontab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing = crontab.store.parent / "bin" / "crontab"
    refusing.write_text(
        refusing.read_text().replace('cat "$1" >', 'echo "bad minute" >&2; exit 1; cat "$1" >')
    )

    outcome, _run = deploy(TWO_APPS, tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert "bad minute" in str(outcome.error)
    assert outcome.error.where == "Cron > CronTab"
    workdir = tmp_path / "target" / "work" / "cron"
    assert sorted(p.name for p in workdir.iterdir()) == []


# -- users -------------------------------------------------------------------------------


@needs_other_user
def test_the_service_users_crontab_is_installed_with_dash_u(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    apply_twice(TWO_APPS, tmp_path, service_user=OTHER)

    assert crontab.read(OTHER) is not None
    assert crontab.read() is None
    assert crontab.calls()[-1] == f"-u {OTHER} -l"


@needs_other_user
def test_jobs_go_to_the_crontab_of_their_user(crontab: FakeCrontab, tmp_path: Path) -> None:
    roots: Roots = {
        "app": root(
            "App",
            lambda: CronJob("mine", timing="@daily"),
            lambda: CronJob("theirs", timing="@daily", user=OTHER),
        ),
        "cron": root("Cron", lambda: CronTab(), lambda: CronTab(user=OTHER)),
    }

    apply_twice(roots, tmp_path)

    assert crontab.read() == crontab_of("@daily mine")
    assert crontab.read(OTHER) == crontab_of("@daily theirs")


def test_a_crontab_of_a_user_that_does_not_exist_is_a_clear_error(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    outcome, _run = deploy({"cron": root("Cron", lambda: CronTab(user="no-such-user-x"))}, tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == (
        "cannot manage the crontab of user 'no-such-user-x': no such user on this host"
    )
    assert outcome.error.where == "Cron > CronTab"


# -- purge -------------------------------------------------------------------------------


def test_purge_removes_the_crontab_and_then_finds_nothing_to_do(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    crontab.write("* * * * * old job\n")

    first, _run = apply_twice({"cron": root("Cron", lambda: CronTab(purge=True))}, tmp_path)

    assert first.changed == ("Cron > CronTab",)
    assert crontab.read() is None
    assert crontab.calls()[-1] == "-l"


def test_a_job_for_a_purged_crontab_is_an_error(crontab: FakeCrontab, tmp_path: Path) -> None:
    error = configure_error(
        {
            "app": root("App", lambda: CronJob("run", timing="@daily")),
            "cron": root("Cron", lambda: CronTab(purge=True)),
        },
        tmp_path,
    )

    assert error.message == (
        f"the CronTab of the user running the executor on host {HOST!r} purges that crontab, "
        "so this job would never be installed"
    )
    assert error.where == "App > CronJob('run')"


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        (None, "a cron job needs a timing, got None"),
        ("", "a cron job needs a timing, got ''"),
        ("@dayly", "cron timing '@dayly' is no known @keyword"),
        ("* * * *", "cron timing '* * * *' has 4 fields, expected 5"),
        ("0 0 * * * root", "cron timing '0 0 * * * root' has 6 fields, expected 5"),
        ("every day", "cron timing 'every day' has 2 fields, expected 5"),
    ],
)
def test_timings_of_the_wrong_shape_are_refused(timing: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_timing(timing)

    assert info.value.message == message
    assert info.value.hint is not None and "five fields" in info.value.hint


@pytest.mark.parametrize(
    ("timing", "problem"),
    [
        ("60 * * * *", "'60' is out of range for the minute (0-59)"),
        ("* 24 * * *", "'24' is out of range for the hour (0-23)"),
        ("* * 0 * *", "'0' is out of range for the day of month (1-31)"),
        ("* * * 13 *", "'13' is out of range for the month (1-12 or jan-dec)"),
        ("* * * * 8", "'8' is out of range for the day of week (0-7 or sun-sat)"),
        (
            "* * * * fry",
            "'fry' is no day of week: expected *, a number 0-7 or sun-sat, or a range",
        ),
        ("30-10 * * * *", "the range '30-10' (minute) runs backwards"),
        ("*/0 * * * *", "the step in '*/0' (minute) must be a number from 1 to 59"),
        ("5/15 * * * *", "the step in '5/15' (minute) needs a range or *, e.g. '5-59/15'"),
        ("1,,2 * * * *", "'' is no minute: expected *, a number 0-59, or a range"),
    ],
)
def test_bad_timing_fields_are_refused_naming_the_field(timing: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_timing(timing)

    assert info.value.message == f"cron timing {timing!r} is not valid: {problem}"
    assert info.value.hint is not None and "five fields" in info.value.hint


@pytest.mark.parametrize(
    ("timing", "normal"),
    [
        ("@reboot", "@reboot"),
        ("  15   3 * *  *  ", "15 3 * * *"),
        ("0-59/5 8-18 1,15 jan-jun,DEC sun,7", "0-59/5 8-18 1,15 jan-jun,DEC sun,7"),
        ("*/15 * * * mon-fri", "*/15 * * * mon-fri"),
    ],
)
def test_good_timings_are_normalised(timing: str, normal: str) -> None:
    assert check_timing(timing) == normal


def test_a_bad_timing_fails_configure_with_the_jobs_breadcrumb(tmp_path: Path) -> None:
    error = configure_error(
        {
            "app": root("App", lambda: CronJob("run", timing="61 * * * *")),
            "cron": root("Cron", lambda: CronTab()),
        },
        tmp_path,
    )

    assert isinstance(error, ConfigurationError)
    assert error.message.startswith("cron timing '61 * * * *' is not valid: ")
    assert error.where == "App > CronJob('run')"


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (
            lambda: CronJob("a\nb", timing="@daily"),
            "the command 'a\\nb' spans several lines; a crontab entry is one line",
        ),
        (lambda: CronJob(" ", timing="@daily"), "the command must be a non-empty string, got ' '"),
        (
            lambda: CronJob("run", timing="@daily", comment="two\nlines"),
            "the comment 'two\\nlines' spans several lines; a crontab entry is one line",
        ),
        (
            lambda: CronJob("run", timing="@daily", logger="two words"),
            "logger tag 'two words' is not a single word",
        ),
    ],
    ids=["multi-line command", "empty command", "multi-line comment", "logger"],
)
def test_bad_jobs_are_configure_errors(
    tmp_path: Path, job: Callable[[], Component], message: str
) -> None:
    error = configure_error(
        {"app": root("Root", job), "cron": root("Cron", lambda: CronTab())}, tmp_path
    )

    assert error.message == message
    assert error.where is not None and error.where.startswith("Root > CronJob(")


def test_a_job_without_a_crontab_on_its_host_is_an_error(tmp_path: Path) -> None:
    error = configure_error(
        {"app": root("Root", lambda: CronJob("run", timing="@daily"))}, tmp_path
    )

    assert error.message == (
        f"no CronTab on host {HOST!r} manages the crontab of the user running the executor"
    )
    assert error.where == "Root > CronJob('run')"
    assert error.hint is not None and "add CronTab() to a root on this host" in error.hint


def test_a_job_for_a_user_without_a_crontab_is_an_error(tmp_path: Path) -> None:
    error = configure_error(
        {
            "app": root("Root", lambda: CronJob("run", timing="@daily", user="reports")),
            "cron": root("Cron", lambda: CronTab()),
        },
        tmp_path,
        service_user="app",
    )

    assert error.message == f"no CronTab on host {HOST!r} manages the crontab of user 'reports'"
    assert error.where == "Root > CronJob('run')"
    assert error.hint is not None and "add CronTab(user='reports')" in error.hint


@needs_other_user
def test_a_crontab_later_in_the_same_root_collects_the_jobs_before_it(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    roots: Roots = {
        "cron": root(
            "Cron",
            lambda: CronJob("first", timing="@daily", user=OTHER),
            lambda: CronTab(user=OTHER),
            lambda: CronJob("second", timing="@daily"),
            lambda: CronTab(),
        ),
    }

    apply_twice(roots, tmp_path)

    assert crontab.read(OTHER) == crontab_of("@daily first")
    assert crontab.read() == crontab_of("@daily second")


def test_two_crontabs_for_one_user_are_an_error(tmp_path: Path) -> None:
    error = configure_error(
        {"one": root("One", lambda: CronTab()), "two": root("Two", lambda: CronTab())},
        tmp_path,
        service_user="app",
    )

    assert error.message == (
        f"the crontab of user 'app' on host {HOST!r} "
        "is already managed by the CronTab of root 'one'"
    )
    assert error.where == "Two > CronTab"


@pytest.mark.parametrize(
    ("crontab_kw", "message"),
    [
        ({"env": {"1X": "a"}}, "env name '1X' is no variable name"),
        ({"env": "PATH=/bin"}, "env must be a dict of variable names to values, got 'PATH=/bin'"),
        ({"mailto": "a\nb"}, "mailto 'a\\nb' spans several lines; a crontab entry is one line"),
        ({"purge": "yes"}, "purge must be True or False, got 'yes'"),
    ],
    ids=["env name", "env type", "mailto", "purge"],
)
def test_bad_crontab_settings_are_configure_errors(
    tmp_path: Path, crontab_kw: dict[str, object], message: str
) -> None:
    error = configure_error({"cron": root("Root", lambda: CronTab(**crontab_kw))}, tmp_path)

    assert error.message == message
    assert error.where == "Root > CronTab"


def test_a_host_without_crontab_command_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    outcome, _run = deploy({"cron": root("Root", lambda: CronTab())}, tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == (
        "cannot manage the crontab of the user running the executor: "
        "there is no crontab command on this host"
    )
    assert "Root > CronTab" in str(outcome.error)


# -- through a real build and apply -----------------------------------------------------------


def test_a_built_bundle_installs_the_jobs_of_two_roots_on_the_host(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "web": """
                from batou.component import Component
                from batou.lib.cron import CronJob

                class Web(Component):
                    def configure(self):
                        self += CronJob(self.workdir + "/purge", timing="*/10 * * * *")
                """,
            "shop": """
                from batou.component import Component
                from batou.lib.cron import CronJob

                class Shop(Component):
                    def configure(self):
                        self += CronJob("/srv/shop/report", timing="@daily", comment="report")
                """,
            "cron": """
                from batou.component import Component
                from batou.lib.cron import CronTab

                class Cron(Component):
                    def configure(self):
                        self += CronTab(mailto="ops@example.com")
                """,
        },
        environments={
            "prod": f"""
                [environment]
                target_directory = /srv/unused
                service_user = {ME}

                [hosts]
                web1 = cron, web, shop
                """
        },
    )
    build_bundles("prod", repo)
    bundle = repo / "bundles/prod/web1.bundle"

    first = apply_bundle(apply_options(bundle, tmp_path))

    assert first.status is ApplyStatus.OK, first.error
    assert [r.name for r in first.roots] == ["web", "shop", "cron"]
    target = tmp_path / "target"
    assert crontab.read() == crontab_of(
        "MAILTO=ops@example.com",
        f"*/10 * * * * {target}/work/web/purge",
        "# report",
        "@daily /srv/shop/report",
    )
    second = apply_bundle(apply_options(bundle, tmp_path))
    assert second.status is ApplyStatus.OK, second.error
    assert second.changed == ()
