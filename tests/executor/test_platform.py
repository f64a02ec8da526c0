"""executor inspect-platform: this host's Python as pex sees it, for exact runtime builds."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from builder.runtime import host_target
from executor.apply import ApplyStatus, apply_bundle
from executor.cli import app
from executor.platform import complete_platform
from tests.deployments import apply_options, build_bundles, deployment, verified

PEX3 = Path(sys.executable).parent / "pex3"


@pytest.fixture(scope="module")
def pex_says() -> dict[str, Any]:
    completed = subprocess.run(
        [str(PEX3), "interpreter", "inspect", "--markers", "--tags", "--python", sys.executable],
        capture_output=True,
        text=True,
        check=True,
    )
    document: dict[str, Any] = json.loads(completed.stdout)
    return document


def test_the_platform_is_this_python(pex_says: dict[str, Any]) -> None:
    platform = complete_platform()

    markers = platform["marker_environment"]
    assert markers["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert markers["python_full_version"].startswith(markers["python_version"] + ".")
    assert markers == pex_says["marker_environment"]
    assert platform["path"] == sys.executable


def test_the_tags_are_the_ones_pex_finds(pex_says: dict[str, Any]) -> None:
    tags = complete_platform()["compatible_tags"]

    assert len(tags) == len(set(tags))
    assert set(tags) == set(pex_says["compatible_tags"])
    # Most specific first: this interpreter's own ABI before abi3 before none.
    own = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert tags[0].startswith(f"{own}-{own}-")
    assert tags[-1].startswith("py")


def test_manylinux_comes_before_the_generic_linux_tag_of_each_group() -> None:
    groups: dict[tuple[str, str], list[str]] = {}
    for tag in complete_platform()["compatible_tags"]:
        interpreter, abi, platform = tag.split("-")
        groups.setdefault((interpreter, abi), []).append(platform)
    checked = 0
    for platforms in groups.values():
        generic = [n for n, p in enumerate(platforms) if p.startswith("linux_")]
        many = [n for n, p in enumerate(platforms) if p.startswith("manylinux")]
        if generic and many:
            assert max(many) < min(generic), platforms
            checked += 1
    if sys.platform == "linux":
        assert checked > 0


def test_inspect_platform_prints_the_platform_as_json() -> None:
    result = CliRunner().invoke(app, ["inspect-platform"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == complete_platform()


def test_a_build_for_a_platform_file_records_it_and_the_host_applies_it(tmp_path: Path) -> None:
    printed = CliRunner().invoke(app, ["inspect-platform"]).stdout.encode()
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": """
                from batou.component import Component
                from batou.lib.file import File

                class App(Component):
                    def configure(self):
                        self += File("app.conf", content="x\\n")
                """
        },
        environments={
            "prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = app\nweb2 = app\n"
        },
        files={"environments/prod/platforms/web1.json": printed},
    )

    build_bundles("prod", repo)

    web1 = verified(repo / "bundles/prod/web1.bundle").manifest
    web2 = verified(repo / "bundles/prod/web2.bundle").manifest
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    # The digest of the file as the builder normalised it (no kernel release).
    normalised = host_target(repo, "prod", "web1", None).platform_json
    assert normalised is not None and normalised != printed
    assert web1.target.complete_platform == hashlib.sha256(normalised).hexdigest()
    assert web1.target.python == own
    assert web2.target.complete_platform is None
    assert web2.target.python == own

    result = apply_bundle(apply_options(repo / "bundles/prod/web1.bundle", tmp_path))
    assert result.status is ApplyStatus.OK, result.error
    assert (tmp_path / "target/work/app/app.conf").read_text() == "x\n"
