"""The executor's command line: output, JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from executor.cli import app
from tests.deployments import build_bundles, deployment
from tests.keys import signing_key

runner = CliRunner()


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": """
                from batou.component import Component
                from batou.lib.file import File

                class App(Component):
                    def configure(self):
                        self += File("app.conf", content="hello\\n")
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = app\n"},
    )
    build_bundles("prod", repo)
    return repo / "bundles" / "prod"


def apply(bundles: Path, tmp_path: Path, *extra: str) -> object:
    return runner.invoke(
        app,
        [
            "apply",
            str(bundles / "web1.bundle"),
            "--target-dir",
            str(tmp_path / "target"),
            "--state-dir",
            str(tmp_path / "state"),
            "--trust",
            str(signing_key().trust),
            *extra,
        ],
    )


def test_apply_reports_changes_then_none(bundles: Path, tmp_path: Path) -> None:
    first = apply(bundles, tmp_path, "--host", "web1")
    assert first.exit_code == 0, first.output
    assert "changed  App > File(" in first.stdout
    assert "+hello" in first.stdout
    assert "ok: 2 components changed" in first.stdout

    second = apply(bundles, tmp_path, "--host", "web1")
    assert second.exit_code == 0
    assert "ok: 0 components changed" in second.stdout


def test_apply_json_has_the_documented_fields(bundles: Path, tmp_path: Path) -> None:
    result = apply(bundles, tmp_path, "--host", "web1", "--json", "--dry-run")

    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {"host", "environment", "status", "changed", "duration_s"} <= set(data)
    assert data["host"] == "web1"
    assert data["environment"] == "prod"
    assert data["status"] == "ok"
    assert data["dry_run"] is True
    assert len(data["changed"]) == 2
    assert not (tmp_path / "target/work/app/app.conf").exists()


def test_a_refused_bundle_exits_3_with_the_reason(bundles: Path, tmp_path: Path) -> None:
    result = apply(bundles, tmp_path, "--host", "web2")

    assert result.exit_code == 3
    assert "this bundle is for host 'web1' (web1), but this host is 'web2'" in result.stderr


def test_a_refused_bundle_in_json_mode_prints_json(bundles: Path, tmp_path: Path) -> None:
    (bundles / "web1.bundle").write_bytes(b"junk")
    result = apply(bundles, tmp_path, "--host", "web1", "--json")

    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["status"] == "refused"
    assert data["error"]["code"] == "bad-bundle"


def test_a_missing_bundle_file_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["apply", str(tmp_path / "nope.bundle"), "--host", "web1", "--trust", str(signing_key().trust)],
    )

    assert result.exit_code == 3
    assert "cannot read the bundle" in result.stderr


def test_a_bad_option_is_a_usage_error() -> None:
    result = runner.invoke(app, ["apply", "--timeout", "soon", "x.bundle"])

    assert result.exit_code == 2


def test_a_failed_run_exits_1(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": """
                from batou.component import Component

                class App(Component):
                    def verify(self):
                        assert False, "always"

                    def update(self):
                        pass
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = app\n"},
    )
    build_bundles("prod", repo)

    result = apply(repo / "bundles/prod", tmp_path, "--host", "web1")

    assert result.exit_code == 1
    assert "update() ran but verify() still fails: always" in result.stderr
    assert "converges = False" in result.stderr
