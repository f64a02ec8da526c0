"""The builder's command line: output and exit codes."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from builder.cli import app
from tests.deployments import deployment
from tests.keys import signing_key

runner = CliRunner()
# Test repositories are not committed; every build is signed.
SIGNED = ["--dirty", "--sign-key", str(signing_key().private)]

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="{{host.data['port']}}\\n")
    """


def test_build_lists_bundles_and_skipped_hosts(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        components={"app": APP},
        environments={
            "prod": """
                [host:web1]
                components = app
                data-port = 80

                [host:web2]
                components = app
                data-port = 81
                """
        },
    )

    result = runner.invoke(app, ["build", "prod", "-C", str(repo), "--skip-host", "web2", *SIGNED])

    assert result.exit_code == 0, result.output
    assert "built    web1:" in result.stdout
    assert "skipped  web2: skipped by --skip-host" in result.stdout
    assert "ok: 1 bundle for environment prod" in result.stdout


def test_build_errors_exit_1_and_are_listed_each(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        components={"app": APP},
        environments={"prod": "[hosts]\nweb1 = app\nweb2 = app, nginx\n"},
    )

    result = runner.invoke(app, ["build", "prod", "-C", str(repo), *SIGNED])

    assert result.exit_code == 1
    assert result.stderr.count("error:") == 2
    assert "'port'" in result.stderr
    assert "on web1, web2" in result.stderr
    assert "environments/prod/environment.cfg:3: host 'web2' names component 'nginx'" in result.stderr
    assert "the build found 2 errors; nothing was written" in result.stderr


def test_a_missing_environment_exits_1_listing_the_known_ones(tmp_path: Path) -> None:
    repo = deployment(tmp_path, components={"app": APP}, environments={"prod": "[hosts]\nw = app\n"})

    result = runner.invoke(app, ["build", "staging", "-C", str(repo), *SIGNED])

    assert result.exit_code == 1
    assert "environment 'staging' not found; existing environments: prod" in result.stderr
    assert "pick one of the existing environments or create environments/staging/environment.cfg" in result.stderr


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])

    assert result.exit_code == 2
    assert "build" in result.output


def test_verbose_shows_the_traceback_of_deployment_code(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        components={
            "app": """
                from batou.component import Component

                def helper():
                    return {}["missing"]

                class App(Component):
                    def configure(self):
                        helper()
                """
        },
        environments={"prod": "[hosts]\nweb1 = app\n"},
    )

    quiet = runner.invoke(app, ["build", "prod", "-C", str(repo), *SIGNED])
    loud = runner.invoke(app, ["build", "prod", "-C", str(repo), "--verbose", *SIGNED])

    assert "App (components/app/component.py:4)" in quiet.stderr
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr
    assert 'return {}["missing"]' in loud.stderr
