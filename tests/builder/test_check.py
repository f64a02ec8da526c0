"""bundle build --check: the same commit builds the same bytes in a fresh clone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.build import build
from builder.check import NotReproducible, check_reproducible, first_difference
from builder.cli import app
from builder.errors import BuildError
from executor.manifest import BlobEntry, Compression, Manifest, Source, Target
from tests.deployments import build_options, deployment, git_commit
from tests.keys import signing_key

runner = CliRunner()

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="{{host.name}}\\n")
    """

PROD = """
    [environment]
    target_directory = /srv/app

    [hosts]
    web1 = app
    web2 = app
    """


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return deployment(tmp_path / "repo", components={"app": APP}, environments={"prod": PROD})


def test_check_rebuilds_in_a_fresh_clone_and_finds_the_same_bytes(repo: Path) -> None:
    git_commit(repo)
    options = build_options("prod", repo, dirty=False)
    result = build(options)

    report = check_reproducible(options, result)

    assert report.startswith("2 bundles equal a rebuild of ")
    assert result.source.commit is not None and result.source.commit[:12] in report


def test_check_of_one_bundle_says_it_equals_the_rebuild(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo", components={"app": APP}, environments={"prod": "[hosts]\nweb1 = app\n"}
    )
    git_commit(repo)
    options = build_options("prod", repo, dirty=False)
    result = build(options)

    report = check_reproducible(options, result)

    assert result.source.commit is not None
    assert report == f"1 bundle equals a rebuild of {result.source.commit[:12]} in a fresh clone"


def test_check_names_what_differs_when_the_build_is_not_reproducible(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": """
                import time
                from batou.component import Component
                from batou.lib.file import File

                class App(Component):
                    def configure(self):
                        self += File(f"/tmp/consign-{time.time_ns()}")
                """
        },
        environments={"prod": "[hosts]\nweb1 = app\n"},
    )
    git_commit(repo)
    options = build_options("prod", repo, dirty=False)
    result = build(options)

    with pytest.raises(NotReproducible) as caught:
        check_reproducible(options, result)

    assert caught.value.message.startswith("web1: the rebuild differs in blob 'model'")


def test_check_refuses_a_dirty_build(repo: Path) -> None:
    options = build_options("prod", repo)
    with pytest.raises(BuildError, match="--check compares a rebuild of the commit"):
        check_reproducible(options, build(options))


def test_a_dirty_build_with_check_is_refused_before_anything_is_written(repo: Path) -> None:
    git_commit(repo)
    (repo / "components/app/component.py").write_text(APP.replace("host.name", "host.fqdn"))

    result = runner.invoke(
        app,
        ["build", "prod", "-C", str(repo), "--dirty", "--check",
         "--sign-key", str(signing_key().private)],
    )  # fmt: skip

    assert result.exit_code == 1, result.output
    assert "--check" in result.stderr
    assert not (repo / "bundles").exists()


# -- first_difference: where to look -------------------------------------------


def _blob(name: str, fill: str) -> BlobEntry:
    return BlobEntry(name, Compression.NONE, 10, fill * 64, 10, fill * 64)


MANIFEST = Manifest(
    environment="prod",
    host="web1",
    fqdn="web1.example.com",
    serial=1_700_000_000,
    build_time=1_700_000_000,
    consign_version="0.1.0",
    source=Source(commit="c" * 40, dirty=False),
    target=Target(platform=None, python="3.11"),
    blobs=(_blob("repo", "a"), _blob("runtime", "f"), _blob("model", "b")),
)

DIFFERENCES: dict[str, tuple[Manifest, str]] = {
    "a field": (
        replace(MANIFEST, build_time=1_700_000_001),
        "manifest field 'build_time': 1700000000 here, 1700000001 in the rebuild",
    ),
    "a nested field": (
        replace(MANIFEST, target=Target(platform="debian", python="3.11")),
        "manifest field 'target': "
        "{'platform': None, 'python': '3.11', 'complete_platform': None} here, "
        "{'platform': 'debian', 'python': '3.11', 'complete_platform': None} in the rebuild",
    ),
    "the runtime's target": (
        replace(MANIFEST, target=Target(python="3.11", complete_platform="c" * 64)),
        "manifest field 'target': "
        "{'platform': None, 'python': '3.11', 'complete_platform': None} here, "
        f"{{'platform': None, 'python': '3.11', 'complete_platform': '{'c' * 64}'}} in the rebuild",
    ),
    "a blob": (
        replace(MANIFEST, blobs=(_blob("repo", "a"), _blob("runtime", "f"), _blob("model", "e"))),
        "blob 'model' (sha256 bbbbbbbbbbbb here, eeeeeeeeeeee in the rebuild)",
    ),
    "the runtime blob": (
        replace(MANIFEST, blobs=(_blob("repo", "a"), _blob("runtime", "d"), _blob("model", "e"))),
        "blob 'runtime' (sha256 ffffffffffff here, dddddddddddd in the rebuild)",
    ),
}


@pytest.mark.parametrize("case", DIFFERENCES, ids=list(DIFFERENCES))
def test_first_difference_names_the_field_or_blob_that_differs(case: str) -> None:
    theirs, expected = DIFFERENCES[case]

    assert first_difference(MANIFEST, theirs) == expected


@pytest.mark.parametrize("extra_in", ["rebuild", "build"])
def test_first_difference_names_a_blob_only_one_build_has(extra_in: str) -> None:
    longer = replace(MANIFEST, blobs=(*MANIFEST.blobs, _blob("secrets", "d")))
    ours, theirs = (MANIFEST, longer) if extra_in == "rebuild" else (longer, MANIFEST)

    difference = first_difference(ours, theirs)

    assert "blob" in difference and "'secrets'" in difference, difference
