"""RotatedLogfile and Logrotate: logfiles of several roots collected into one
logrotate configuration, run daily by a job in the host's crontab.

The crontab is the fake of test_cron; `logrotate -d` checks the generated
configuration when logrotate is installed (Debian package logrotate).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from executor.apply import ApplyStatus, apply_bundle
from executor.component import Component
from executor.errors import ConfigurationError, DeployError, ErrorList
from executor.lib.cron import CronTab
from executor.lib.logrotate import HEADER, Logrotate, RotatedLogfile
from tests.deployments import apply_options, build_bundles, deployment

from .test_cron import (
    HEADER as CRON_HEADER,
    FakeCrontab,
    Roots,
    apply_twice,
    configure_error,
    crontab,
    deploy,
    root,
)

__all__ = ["crontab"]  # the fixture, imported for the tests below

LOGROTATE = shutil.which("logrotate") or (
    "/usr/sbin/logrotate" if os.access("/usr/sbin/logrotate", os.X_OK) else None
)
needs_logrotate = pytest.mark.skipif(LOGROTATE is None, reason="logrotate is not installed")


def housekeeping(**kw: object) -> Callable[[], Component]:
    return root("Housekeeping", lambda: Logrotate(**kw), lambda: CronTab())


def workdir(tmp_path: Path, name: str) -> Path:
    return tmp_path / "target" / "work" / name


TWO_ROOTS: Roots = {
    "web": root("Web", lambda: RotatedLogfile("log/web.log")),
    "shop": root(
        "Shop",
        lambda: RotatedLogfile(
            "/var/log/shop app/*.log",
            args=("weekly", "rotate 4", "copytruncate"),
            postrotate="kill -USR1 $(cat /run/shop.pid)\necho rotated",
        ),
    ),
    "housekeeping": housekeeping(),
}


def test_logfiles_of_two_roots_are_one_config_run_from_the_crontab(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    first, _run = apply_twice(TWO_ROOTS, tmp_path)

    home = workdir(tmp_path, "housekeeping")
    assert (home / "logrotate.conf").read_text() == HEADER + (
        "\n"
        '"/var/log/shop app/*.log" {\n'
        "    weekly\n"
        "    rotate 4\n"
        "    copytruncate\n"
        "    postrotate\n"
        "        kill -USR1 $(cat /run/shop.pid)\n"
        "        echo rotated\n"
        "    endscript\n"
        "}\n"
        "\n"
        f"{workdir(tmp_path, 'web')}/log/web.log {{\n"
        "    daily\n"
        "    rotate 14\n"
        "    create\n"
        "    missingok\n"
        "    notifempty\n"
        "    compress\n"
        "    delaycompress\n"
        "}\n"
    )
    assert (home / "logrotate.conf").stat().st_mode & 0o777 == 0o644
    assert crontab.read() == CRON_HEADER + (
        "# logrotate: the RotatedLogfiles of this host\n"
        f"@daily /usr/sbin/logrotate --state {home}/logrotate.state {home}/logrotate.conf\n"
    )
    assert first.changed == (
        f"Housekeeping > Logrotate > LogrotateConfig('{home}/logrotate.conf')",
        "Housekeeping > CronTab",
    )


def test_common_directives_come_first(crontab: FakeCrontab, tmp_path: Path) -> None:
    roots: Roots = {
        "app": root("App", lambda: RotatedLogfile("/srv/app.log", args="rotate 7, weekly")),
        "housekeeping": housekeeping(common=("compress", "dateext"), common_config=b"maxage 30\n"),
    }

    apply_twice(roots, tmp_path)

    assert (workdir(tmp_path, "housekeeping") / "logrotate.conf").read_text() == HEADER + (
        "compress\ndateext\nmaxage 30\n\n/srv/app.log {\n    rotate 7\n    weekly\n}\n"
    )


def test_a_changed_logfile_rewrites_the_config_only(crontab: FakeCrontab, tmp_path: Path) -> None:
    apply_twice(TWO_ROOTS, tmp_path)
    changed = dict(TWO_ROOTS)
    changed["web"] = root("Web", lambda: RotatedLogfile("log/web.log", args=("monthly",)))

    outcome, run = deploy(changed, tmp_path)

    assert outcome.error is None, outcome.error
    config = workdir(tmp_path, "housekeeping") / "logrotate.conf"
    assert outcome.changed == (f"Housekeeping > Logrotate > LogrotateConfig('{config}')",)
    assert "/log/web.log {\n    monthly\n}\n" in config.read_text()
    [diff] = run.diffs
    assert diff.diff is not None and "+    monthly" in diff.diff


def test_a_config_writable_by_others_is_rewritten_readable_only(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    apply_twice(TWO_ROOTS, tmp_path)
    config = workdir(tmp_path, "housekeeping") / "logrotate.conf"
    config.chmod(0o666)

    outcome, _run = deploy(TWO_ROOTS, tmp_path)

    assert outcome.error is None, outcome.error
    assert outcome.changed == (f"Housekeeping > Logrotate > LogrotateConfig('{config}')",)
    assert config.stat().st_mode & 0o777 == 0o644


def test_a_dry_run_writes_no_config(crontab: FakeCrontab, tmp_path: Path) -> None:
    outcome, _run = deploy(TWO_ROOTS, tmp_path, predicting=True)

    assert outcome.error is None, outcome.error
    assert len(outcome.changed) == 2
    assert not workdir(tmp_path, "housekeeping").exists()
    assert crontab.read() is None


# -- with logrotate itself ----------------------------------------------------------------


@needs_logrotate
def test_logrotate_refuses_a_bad_directive_and_the_old_config_stays(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    apply_twice(TWO_ROOTS, tmp_path)
    config = workdir(tmp_path, "housekeeping") / "logrotate.conf"
    before = config.read_text()
    bad = dict(TWO_ROOTS)
    bad["web"] = root("Web", lambda: RotatedLogfile("log/web.log", args=("rotatex 3",)))

    outcome, _run = deploy(bad, tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == (
        f"logrotate rejects {config}: error: {config}:14 unknown option 'rotatex' -- ignoring line"
    )
    assert outcome.error.where == f"Housekeeping > Logrotate > LogrotateConfig('{config}')"
    assert config.read_text() == before
    assert sorted(p.name for p in config.parent.iterdir()) == ["logrotate.conf"]


@needs_logrotate
def test_the_cron_job_rotates_the_logs(crontab: FakeCrontab, tmp_path: Path) -> None:
    roots: Roots = {
        "web": root("Web", lambda: RotatedLogfile("web.log", args=("size 1", "rotate 2"))),
        "housekeeping": housekeeping(logrotate=LOGROTATE),
    }
    apply_twice(roots, tmp_path)
    log = workdir(tmp_path, "web") / "web.log"
    log.write_text("a line to rotate\n")
    [job] = [line for line in (crontab.read() or "").splitlines() if line.startswith("@daily ")]

    subprocess.run(["sh", "-c", job.removeprefix("@daily ")], check=True, timeout=30)

    assert (log.parent / "web.log.1").read_text() == "a line to rotate\n"
    assert (workdir(tmp_path, "housekeeping") / "logrotate.state").exists()


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logfile", "message"),
    [
        (
            lambda: RotatedLogfile("/x.log", args=("rotate 3 {",)),
            "args: the directive 'rotate 3 {' holds a brace or a line break",
        ),
        (
            lambda: RotatedLogfile("/x.log", args=("postrotate",)),
            "args: the directive 'postrotate' opens a script block",
        ),
        (
            lambda: RotatedLogfile("/x.log", args=5),
            "args must be a list of logrotate directives, got 5",
        ),
        (
            lambda: RotatedLogfile("/x.log", prerotate="a\nendscript\nb"),
            "prerotate contains a line 'endscript', which would end the script early",
        ),
        (
            lambda: RotatedLogfile('/x"y.log'),
            "logfile path '/x\"y.log' contains '\"', which a logrotate configuration cannot hold",
        ),
    ],
    ids=["brace", "script word", "args type", "endscript", "quote"],
)
def test_bad_logfiles_are_configure_errors(
    tmp_path: Path, logfile: Callable[[], Component], message: str
) -> None:
    error = configure_error(
        {"app": root("Root", logfile), "housekeeping": housekeeping()}, tmp_path
    )

    assert isinstance(error, ConfigurationError)
    assert error.message == message
    assert error.where is not None and error.where.startswith("Root > RotatedLogfile(")


def test_a_logfile_without_logrotate_on_its_host_is_an_error(tmp_path: Path) -> None:
    error = configure_error({"app": root("Root", lambda: RotatedLogfile("/x.log"))}, tmp_path)

    assert error.message == "no Logrotate on host 'host1' collects /x.log"
    assert error.where == "Root > RotatedLogfile('/x.log')"


def test_a_path_rotated_twice_is_an_error(tmp_path: Path) -> None:
    error = configure_error(
        {
            "one": root("One", lambda: RotatedLogfile("/x.log")),
            "two": root("Two", lambda: RotatedLogfile("/x.log")),
            "housekeeping": housekeeping(),
        },
        tmp_path,
    )

    assert error.message == "/x.log is rotated by root 'one' already"
    assert error.where == "Two > RotatedLogfile('/x.log')"


def test_a_path_rotated_twice_by_one_root_is_written_once_or_refused(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    same = {
        "one": root("One", lambda: RotatedLogfile("/x.log"), lambda: RotatedLogfile("/x.log")),
        "housekeeping": housekeeping(),
    }
    apply_twice(same, tmp_path)
    assert (workdir(tmp_path, "housekeeping") / "logrotate.conf").read_text().count("/x.log") == 1

    different = {
        "one": root(
            "One",
            lambda: RotatedLogfile("/x.log"),
            lambda: RotatedLogfile("/x.log", args=("weekly",)),
        ),
        "housekeeping": housekeeping(),
    }
    with pytest.raises(ErrorList) as info:
        deploy(different, tmp_path)
    assert [e.message for e in info.value.errors if e.where == "Housekeeping > Logrotate"] == [
        "/x.log is rotated twice, with different settings, by root 'one'"
    ]


def test_two_logrotates_on_one_host_are_an_error(tmp_path: Path) -> None:
    error = configure_error(
        {"one": housekeeping(), "two": root("Two", lambda: Logrotate())}, tmp_path
    )

    assert error.message == "host 'host1' has a Logrotate in root 'one' already"
    assert error.where == "Two > Logrotate"


def test_logrotate_without_a_crontab_is_an_error(tmp_path: Path) -> None:
    error = configure_error({"housekeeping": root("Root", lambda: Logrotate())}, tmp_path)

    assert error.message == (
        "no CronTab on host 'host1' manages the crontab of the user running the executor"
    )
    assert error.where == "Root > Logrotate"


def test_a_bad_logrotate_timing_is_an_error(tmp_path: Path) -> None:
    error = configure_error({"housekeeping": housekeeping(timing="daily")}, tmp_path)

    assert error.message == "cron timing 'daily' has 1 fields, expected 5"
    assert error.where == "Housekeeping > Logrotate"


# -- through a real build and apply -----------------------------------------------------------


def test_a_built_bundle_rotates_the_logfiles_of_two_roots(
    crontab: FakeCrontab, tmp_path: Path
) -> None:
    component = """
        from batou.component import Component
        from batou.lib.logrotate import RotatedLogfile

        class {name}(Component):
            def configure(self):
                self += RotatedLogfile("{name}.log")
        """
    repo = deployment(
        tmp_path / "repo",
        components={
            "web": component.format(name="Web"),
            "shop": component.format(name="Shop"),
            "housekeeping": """
                from batou.component import Component
                from batou.lib.cron import CronTab
                from batou.lib.logrotate import Logrotate

                class Housekeeping(Component):
                    def configure(self):
                        self += Logrotate(common=("su root root",))
                        self += CronTab()
                """,
        },
        environments={
            "prod": """
                [environment]
                target_directory = /srv/elsewhere

                [hosts]
                web1 = housekeeping, web, shop
                """
        },
    )
    build_bundles("prod", repo)
    bundle = repo / "bundles/prod/web1.bundle"

    first = apply_bundle(apply_options(bundle, tmp_path))

    assert first.status is ApplyStatus.OK, first.error
    work = tmp_path / "target" / "work"
    config = (work / "housekeeping" / "logrotate.conf").read_text()
    assert f"\n{work}/shop/Shop.log {{\n" in config
    assert f"\n{work}/web/Web.log {{\n" in config
    assert "/srv/elsewhere" not in config
    assert f"--state {work}/housekeeping/logrotate.state" in (crontab.read() or "")
    second = apply_bundle(apply_options(bundle, tmp_path))
    assert second.status is ApplyStatus.OK, second.error
    assert second.changed == ()
