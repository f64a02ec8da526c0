"""executor apply: check the bundle, refuse other hosts, configure, deploy."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from executor.apply import ApplyOptions, ApplyStatus, apply_bundle
from executor.outcome import RootStatus
from executor.errors import BundleError, WrongTargetError
from tests.deployments import apply_options, build_bundles, deployment

APP = """
    from batou.component import Component, Attribute
    from batou.lib.file import File

    class App(Component):
        workers = Attribute(int, default=2)

        def configure(self):
            self += File("app.conf", content="workers={{component.workers}}\\n")
            self += File("/etc/app/alias", content="{{host.data['alias']}}\\n", leading=True)
    """

ENV = """
    [environment]
    target_directory = /srv/app

    [host:web1]
    components = app, !extra
    data-alias = www.example.com

    [host:web2]
    components = app
    data-alias = shop.example.com

    [component:app]
    workers = 4

    [vfs]
    sandbox = Developer
    """


@pytest.fixture
def built(tmp_path: Path) -> Path:
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": APP,
            "extra": "from batou.component import Component\nclass Extra(Component):\n    pass\n",
        },
        environments={"prod": ENV},
    )
    build_bundles("prod", repo)
    return repo / "bundles" / "prod"


def options(bundles: Path, tmp_path: Path, host: str = "web1", **kw: Any) -> ApplyOptions:
    return apply_options(bundles / f"{host}.bundle", tmp_path, host=host, **kw)


def test_apply_deploys_then_changes_nothing_the_second_time(built: Path, tmp_path: Path) -> None:
    first = apply_bundle(options(built, tmp_path))

    assert first.status is ApplyStatus.OK
    assert (tmp_path / "target/work/app/app.conf").read_text() == "workers=4\n"
    # Developer sandbox: absolute paths land below work/_.
    assert (tmp_path / "target/work/_/etc/app/alias").read_text() == "www.example.com\n"
    assert len(first.changed) == 4
    assert first.skipped[0].name == "extra"

    second = apply_bundle(options(built, tmp_path))
    assert second.status is ApplyStatus.OK
    assert second.changed == ()
    assert second.to_json()["changed"] == []


def test_dry_run_after_an_edit_names_the_component_and_changes_nothing(
    built: Path, tmp_path: Path
) -> None:
    apply_bundle(options(built, tmp_path))
    conf = tmp_path / "target/work/app/app.conf"
    conf.write_text("workers=1\n")
    os.utime(conf, (1_000_000, 1_000_000))

    predicted = apply_bundle(options(built, tmp_path, dry_run=True))

    assert predicted.status is ApplyStatus.OK
    assert predicted.dry_run
    assert predicted.changed == (
        f"App > File('{tmp_path}/target/work/app/app.conf') > Content('{tmp_path}/target/work/app/app.conf')",
    )
    assert predicted.diffs[0].diff is not None
    assert "-workers=1\n+workers=4\n" in predicted.diffs[0].diff
    assert conf.read_text() == "workers=1\n"
    assert conf.stat().st_mtime == 1_000_000

    restored = apply_bundle(options(built, tmp_path))
    assert restored.changed == predicted.changed
    assert conf.read_text() == "workers=4\n"


def test_a_bundle_for_another_host_is_refused_naming_both(built: Path, tmp_path: Path) -> None:
    with pytest.raises(WrongTargetError) as caught:
        apply_bundle(
            apply_options(built / "web2.bundle", tmp_path, host="web1")
        )

    assert caught.value.message == (
        "this bundle is for host 'web2' (web2), but this host is 'web1'"
    )
    assert not (tmp_path / "target").exists()
    assert_only_recorded(tmp_path / "state", "wrong-target")


def assert_only_recorded(state: Path, code: str) -> None:
    """The state directory holds the refusal's record and nothing else: no
    state, no store, no generation."""
    assert sorted(p.name for p in state.iterdir()) == ["audit.log", "lock", "status.json"]
    (line,) = (state / "audit.log").read_text().splitlines()
    record = json.loads(line)
    assert (record["result"], record["error"]["code"]) == ("refused", code)
    assert json.loads((state / "status.json").read_text())["last_success"] is None


def test_the_default_identity_is_the_machine_hostname(built: Path, tmp_path: Path) -> None:
    with pytest.raises(WrongTargetError) as caught:
        apply_bundle(
            apply_options(built / "web1.bundle", tmp_path, host=None)
        )

    assert f"but this host is {socket.gethostname()!r}" in caught.value.message


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-10], "is truncated"),
        (lambda data: b"hello world, no bundle here", "is not a consign bundle"),
        (lambda data: data + b"x", "bytes of trailing data"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "does not match its sha256"),
    ],
    ids=["truncated", "not-a-bundle", "trailing", "flipped-byte"],
)
def test_a_damaged_bundle_is_refused_before_anything_changes(
    built: Path, tmp_path: Path, damage: object, message: str
) -> None:
    path = built / "web1.bundle"
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]

    with pytest.raises(BundleError) as caught:
        apply_bundle(options(built, tmp_path))

    assert message in caught.value.message
    assert not (tmp_path / "target").exists()
    assert_only_recorded(tmp_path / "state", "bad-bundle")


def test_a_failing_component_fails_the_run_and_later_roots_do_not_run(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "first": """
                from batou.component import Component

                class First(Component):
                    def verify(self):
                        raise AssertionError("needs work")

                    def update(self):
                        raise RuntimeError("disk on fire")
                """,
            "second": "from batou.component import Component\nclass Second(Component):\n    pass\n",
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = first, second\n"},
    )
    build_bundles("prod", repo)

    result = apply_bundle(options(repo / "bundles/prod", tmp_path))

    assert result.status is ApplyStatus.FAILED
    assert result.error is not None
    assert result.error.message == "RuntimeError: disk on fire"
    assert result.error.where == "First (components/first/component.py:8)"
    assert [(r.name, r.status) for r in result.roots] == [
        ("first", RootStatus.FAILED),
        ("second", RootStatus.NOT_RUN),
    ]
    assert result.to_json()["status"] == "failed"


def test_the_run_timeout_stops_a_slow_command(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "slow": """
                from batou.component import Component

                class Slow(Component):
                    def verify(self):
                        raise AssertionError()

                    def update(self):
                        self.cmd("sleep 30")
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = slow\n"},
    )
    build_bundles("prod", repo)

    result = apply_bundle(options(repo / "bundles/prod", tmp_path, timeout=0.5))

    assert result.status is ApplyStatus.FAILED
    assert result.error is not None
    # The command's own limit and the run's alarm end together; either may report.
    assert result.error.message in (
        "the run exceeded its time limit",
        "command timed out after 0.5s: sleep 30",
    )
    # Where exactly the alarm lands (in update, or just after) varies.
    assert result.error.where is not None and result.error.where.startswith("Slow")
    assert result.duration_s < 10


def test_the_run_timeout_stops_python_code_too(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "slow": """
                import time
                from batou.component import Component

                class Slow(Component):
                    def verify(self):
                        raise AssertionError()

                    def update(self):
                        try:
                            time.sleep(30)
                        except Exception:
                            pass  # deployment code that swallows errors cannot stop the alarm
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = slow\n"},
    )
    build_bundles("prod", repo)

    result = apply_bundle(options(repo / "bundles/prod", tmp_path, timeout=0.5))

    assert result.status is ApplyStatus.FAILED
    assert result.error is not None
    assert result.error.message == "the run exceeded its time limit"
    assert result.error.where == "Slow (components/slow/component.py:10)"
    assert result.duration_s < 10


def test_configure_that_depends_on_the_host_is_caught_before_any_update(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    repo = deployment(
        tmp_path / "repo",
        components={
            "sneaky": f"""
                import os
                from batou.component import Component
                from batou.lib.file import File

                class Sneaky(Component):
                    def configure(self):
                        self += File("always")
                        if os.path.exists({str(flag)!r}):
                            self += File("only-on-some-hosts")
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = sneaky\n"},
    )
    build_bundles("prod", repo)
    flag.write_text("")

    result = apply_bundle(options(repo / "bundles/prod", tmp_path))

    assert result.status is ApplyStatus.FAILED
    assert result.error is not None
    assert "configure on this host built another tree than the build did" in result.error.message
    assert "only-on-some-hosts" in result.error.message
    assert not (tmp_path / "target/work/sneaky/always").exists()


def test_the_runtime_and_its_commands_do_not_see_python_pex_or_consign_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen, commands = tmp_path / "environment.json", tmp_path / "command-environment"
    repo = deployment(
        tmp_path / "repo",
        components={
            "spy": f"""
                import json, os, sys
                from batou.component import Component

                class Spy(Component):
                    def verify(self):
                        assert os.path.exists({str(commands)!r})

                    def update(self):
                        with open({str(seen)!r}, "w") as f:
                            json.dump({{"environ": dict(os.environ), "path": sys.path}}, f)
                        self.cmd("env > {commands}")
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = spy\n"},
    )
    build_bundles("prod", repo)
    # What an executor started from a virtualenv, a pex or a shell with
    # Python settings would carry.
    monkeypatch.setenv("PYTHONPATH", "/evil")
    monkeypatch.setenv("PEX_INHERIT_PATH", "prefer")
    monkeypatch.setenv("VIRTUAL_ENV", "/evil/venv")
    monkeypatch.setenv("CONSIGN_SIGN_KEY", "/secret/builder-key")
    monkeypatch.setenv("FOO", "bar")

    result = apply_bundle(options(repo / "bundles/prod", tmp_path))

    assert result.status is ApplyStatus.OK, result.error
    data = json.loads(seen.read_text())
    listed = dict(
        line.split("=", 1) for line in commands.read_text().splitlines() if "=" in line
    )
    for environment in (data["environ"], listed):
        for name in ("PYTHONPATH", "PEX_INHERIT_PATH", "VIRTUAL_ENV", "CONSIGN_SIGN_KEY"):
            assert name not in environment
        assert environment["FOO"] == "bar"
        assert environment["PATH"] == os.environ["PATH"]
    assert "/evil" not in data["path"]
