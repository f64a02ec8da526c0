"""The bundle's runtime on the builder: requirements, conflicts, targets, the cache."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import types
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import builder.runtime as runtime
from builder.cli import app
from builder.environment import load_environment
from builder.errors import BuildError, BuildFailed, RuntimeBuildError, SigningKeyError
from builder.runtime import (
    ImportAudit,
    Step,
    pip_step,
    Requirements,
    Target,
    conflicts,
    host_target,
    import_environment,
    own_python,
    pins,
    read_requirements,
    runtime_blob,
    runtime_key,
)
from executor import __version__
from executor.bundle import decode_unverified, read_envelope
from executor.errors import ConsignError
from executor.manifest import BlobEntry
from executor.platform import complete_platform
from tests.deployments import build_bundles, deployment, git_commit, write_files
from tests.keys import signing_key

runner = CliRunner()

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="x\\n")
    """

PROD = "[environment]\ntarget_directory = /srv/app\n[hosts]\nweb1 = app\n"

# A small pure-Python package that is no consign dependency: a real user requirement.
SMALL = "six==1.17.0"


def version(name: str) -> str:
    return importlib.metadata.version(name)


def requirements_of(
    tmp_path: Path, files: Mapping[str, str | bytes]
) -> tuple[Requirements, list[ConsignError]]:
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    write_files(tree, files)
    return read_requirements(tree)


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runtime cache; pex's downloads still come from the session's."""
    shared = Path(os.environ["CONSIGN_CACHE_DIR"])
    monkeypatch.setenv(
        "CONSIGN_PEX_ROOT", os.environ.get("CONSIGN_PEX_ROOT") or str(shared / "pex-root")
    )
    return tmp_path / "cache"


# -- requirements.txt ----------------------------------------------------------------


READ_CASES: dict[str, tuple[dict[str, str | bytes], tuple[str, ...], tuple[str, ...]]] = {
    "pins and comments": (
        {
            "requirements.txt": (
                "# the example's database\n"
                "SQLAlchemy==2.1.9  # pinned\n"
                "\n"
                "   \n"
                "requests>=2; python_version >= '3.8'\n"
                "pkg @ https://example.invalid/pkg-1.0.tar.gz#sha256=00\n"
            )
        },
        (
            "SQLAlchemy==2.1.9",
            "requests>=2; python_version >= '3.8'",
            "pkg @ https://example.invalid/pkg-1.0.tar.gz#sha256=00",
        ),
        (),
    ),
    "an include": (
        {"requirements.txt": "a==1\n-r more.txt\nb==2\n", "more.txt": "c==3\n"},
        ("a==1", "c==3", "b==2"),
        (),
    ),
    "nested includes relative to the including file": (
        {
            "requirements.txt": "--requirement reqs/base.txt\n",
            "reqs/base.txt": "a==1\n-r extra/more.txt\n",
            "reqs/extra/more.txt": "b==2\n",
        },
        ("a==1", "b==2"),
        (),
    ),
    "an include loop reads each file once": (
        {"requirements.txt": "a==1\n-r other.txt\n", "other.txt": "b==2\n-r requirements.txt\n"},
        ("a==1", "b==2"),
        (),
    ),
    "index options are passed on": (
        {
            "requirements.txt": (
                "--index-url https://pypi.example.invalid/simple\n"
                "-i https://mirror.example.invalid/simple\n"
                "--extra-index-url=https://extra.example.invalid/simple\n"
                "-f ./wheels\n"
                "--find-links /srv/wheels\n"
                "a==1\n"
            )
        },
        ("a==1",),
        (
            "--index-url",
            "https://pypi.example.invalid/simple",
            "--index-url",
            "https://mirror.example.invalid/simple",
            "--extra-index-url",
            "https://extra.example.invalid/simple",
            "--find-links",
            "{tree}/wheels",
            "--find-links",
            "/srv/wheels",
        ),
    ),
    # Like pip: a local --find-links is relative to the file that names it;
    # a URL is passed on as written.
    "find-links relative to the including file": (
        {
            "requirements.txt": "-r reqs/base.txt\n--find-links=wheels/../wheels\n",
            "reqs/base.txt": "-f ../vendor/wheels\n--find-links local\na==1\n",
        },
        ("a==1",),
        (
            "--find-links",
            "{tree}/vendor/wheels",
            "--find-links",
            "{tree}/reqs/local",
            "--find-links",
            "{tree}/wheels",
        ),
    ),
    "find-links URLs as written": (
        {
            "requirements.txt": (
                "-f https://wheels.example.invalid/simple/\n"
                "--find-links file:///srv/wheels\n"
            )
        },
        (),
        (
            "--find-links",
            "https://wheels.example.invalid/simple/",
            "--find-links",
            "file:///srv/wheels",
        ),
    ),
    "no requirements.txt": ({}, (), ()),
}


@pytest.mark.parametrize("case", READ_CASES, ids=list(READ_CASES))
def test_read_requirements(tmp_path: Path, case: str) -> None:
    files, lines, options = READ_CASES[case]

    requirements, errors = requirements_of(tmp_path, files)

    tree = (tmp_path / "tree").resolve()
    assert errors == []
    assert requirements.lines == lines
    assert requirements.options == tuple(o.replace("{tree}", str(tree)) for o in options)


def test_each_requirement_remembers_its_file_and_line(tmp_path: Path) -> None:
    requirements, _errors = requirements_of(
        tmp_path, {"requirements.txt": b"# x\na==1\n-r sub/more.txt\n", "sub/more.txt": b"\nb==2\n"}
    )

    assert requirements.locations == {"a==1": "requirements.txt:2", "b==2": "sub/more.txt:2"}
    assert requirements.names == ["a", "b"]


# (files, message, where, part of the hint)
BAD_CASES: dict[str, tuple[dict[str, str | bytes], str, str | None, str]] = {
    "an editable install": (
        {"requirements.txt": "a==1\n-e ./src/mypkg\n"},
        "requirements option '-e' is not supported",
        "requirements.txt:2",
        "use requirement lines, -r FILE, --index-url, --extra-index-url or --find-links",
    ),
    "a hash option": (
        {"requirements.txt": "--hash=sha256:0123\n"},
        "requirements option '--hash' is not supported",
        "requirements.txt:1",
        "--find-links",
    ),
    "a constraints file": (
        {"requirements.txt": b"\n\n-c constraints.txt\n"},
        "requirements option '-c' is not supported",
        "requirements.txt:3",
        "-r FILE",
    ),
    "an option without a value": (
        {"requirements.txt": "--index-url\n"},
        "requirements option '--index-url' is not supported",
        "requirements.txt:1",
        "--index-url",
    ),
    "an option in an included file": (
        {"requirements.txt": "-r more.txt\n", "more.txt": "a==1\n--pre\n"},
        "requirements option '--pre' is not supported",
        "more.txt:2",
        "-r FILE",
    ),
    "an invalid requirement": (
        {"requirements.txt": "a==1\nSQLAlchemy = 2.1.9\n"},
        "invalid requirement 'SQLAlchemy = 2.1.9': ",
        "requirements.txt:2",
        "write e.g. 'SQLAlchemy==2.1.9'",
    ),
    "a hash after a requirement": (
        {"requirements.txt": "a==1 --hash=sha256:0123\n"},
        "invalid requirement 'a==1 --hash=sha256:0123': ",
        "requirements.txt:1",
        "write e.g.",
    ),
    "an include outside the repository": (
        {"requirements.txt": "-r ../outside.txt\n"},
        "../outside.txt lies outside the repository",
        "requirements.txt:1",
        "",
    ),
    "a missing include": (
        {"requirements.txt": "a==1\n-r missing.txt\n"},
        "requirements file missing.txt does not exist",
        "requirements.txt:2",
        "",
    ),
    "a missing include in an included file": (
        {"requirements.txt": "-r reqs/base.txt\n", "reqs/base.txt": "a==1\n\n-r gone.txt\n"},
        "requirements file reqs/gone.txt does not exist",
        "reqs/base.txt:3",
        "",
    ),
}


@pytest.mark.parametrize("case", BAD_CASES, ids=list(BAD_CASES))
def test_bad_requirements_are_refused_naming_file_and_line(tmp_path: Path, case: str) -> None:
    files, message, where, hint = BAD_CASES[case]
    # A file beside the repository that an include must not reach.
    (tmp_path / "outside.txt").write_text("evil==1\n")

    requirements, errors = requirements_of(tmp_path, files)

    assert len(errors) == 1, [e.render() for e in errors]
    error = errors[0]
    assert isinstance(error, BuildError)
    assert error.message.startswith(message)
    assert error.where == where
    assert hint in (error.hint or "")
    assert "evil==1" not in requirements.lines


def test_an_include_through_a_link_out_of_the_repository_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("evil==1\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "requirements.txt").write_text("-r linked.txt\n")
    (tree / "linked.txt").symlink_to(tmp_path / "outside.txt")

    requirements, errors = read_requirements(tree)

    assert [(e.where, e.message) for e in errors] == [
        ("requirements.txt:1", "linked.txt lies outside the repository")
    ]
    assert requirements.lines == ()


# -- conflicts with consign's own pins ------------------------------------------------


def conflicts_of(*lines: str) -> list[ConsignError]:
    locations = {line: f"requirements.txt:{n}" for n, line in enumerate(lines, 1)}
    return conflicts(Requirements(tuple(lines), (), locations))


@pytest.mark.parametrize(
    ("line", "ours", "written"),
    [
        ("msgpack==0.6.2", "msgpack", "msgpack"),
        ("Jinja2<3", "Jinja2", "Jinja2"),
        ("jinja2 < 3", "Jinja2", "jinja2"),
        ("markupsafe==1.0", "MarkupSafe", "markupsafe"),
        ("dnspython>=99", "dnspython", "dnspython"),
    ],
)
def test_a_requirement_contradicting_consign_names_both_and_what_to_change(
    line: str, ours: str, written: str
) -> None:
    pinned = f"{ours}=={version(ours)}"

    found = conflicts_of("SQLAlchemy==2.1.9", line)

    assert len(found) == 1
    error = found[0]
    assert isinstance(error, RuntimeBuildError)
    assert error.message == (
        f"the requirements ask for {line!r}, but consign's runtime needs {pinned!r}"
    )
    assert error.where == "requirements.txt:2"
    assert error.hint == (
        f"allow {written} {version(ours)} (or drop the line: consign provides it), or run the "
        "builder with a consign that uses a version you allow"
    )


@pytest.mark.parametrize(
    "line", ["msgpack>=1", "msgpack", "Jinja2>=3.1", f"MarkupSafe=={version('MarkupSafe')}"]
)
def test_a_requirement_consign_satisfies_is_accepted(line: str) -> None:
    assert conflicts_of(line) == []


def test_unrelated_requirements_are_no_conflict() -> None:
    assert conflicts_of("SQLAlchemy==2.1.9", "six") == []


@pytest.mark.parametrize("line", ["consign", "consign==0.1.0", "Consign>=0"])
def test_consign_itself_is_no_requirement(line: str) -> None:
    found = conflicts_of(line)

    assert len(found) == 1
    assert found[0].message == (
        f"the requirements ask for {line!r}, but consign's runtime needs "
        f"'consign=={__version__}'"
    )


def test_every_conflict_is_reported() -> None:
    found = conflicts_of("msgpack==0.6.2", "Jinja2<3")

    assert [e.where for e in found] == ["requirements.txt:1", "requirements.txt:2"]


# -- pins and the cache key -----------------------------------------------------------


def test_pins_are_the_installed_versions_with_what_they_require() -> None:
    pinned = pins()

    assert f"Jinja2=={version('Jinja2')}" in pinned
    # Jinja2 requires MarkupSafe: pinned too, though nobody names it.
    assert f"MarkupSafe=={version('MarkupSafe')}" in pinned
    assert f"msgpack=={version('msgpack')}" in pinned
    assert f"dnspython=={version('dnspython')}" in pinned
    assert list(pinned) == sorted(pinned, key=str.lower)
    assert pins(["Jinja2"]) == (
        f"Jinja2=={version('Jinja2')}",
        f"MarkupSafe=={version('MarkupSafe')}",
    )


def test_the_executor_pins_hold_what_the_executor_imports() -> None:
    names = {line.split("==")[0].lower() for line in pins(runtime.EXECUTOR_DISTRIBUTIONS)}

    assert {"typer", "rich", "msgpack", "zstandard", "cryptography", "packaging"} <= names
    # ... and what those need, e.g. cryptography's cffi.
    assert "cffi" in names


def test_the_runtime_key_follows_requirements_options_and_target() -> None:
    own = Target(own_python())
    base = Requirements(("a==1", "b==2"), (), {"a==1": "requirements.txt:1"})
    key = runtime_key(base, own)

    # Where a line was written does not matter; what it says does.
    assert runtime_key(Requirements(("a==1", "b==2"), (), {}), own) == key
    assert runtime_key(Requirements(("a==1", "b==3")), own) != key
    assert runtime_key(Requirements(("a==1", "b==2"), ("--index-url", "https://x")), own) != key
    assert runtime_key(base, Target("3.99")) != key
    platform = json.dumps(complete_platform()).encode()
    assert runtime_key(base, Target(own_python(), platform, "p.json")) != key
    # The file order counts too (pex's own output does not depend on it,
    # so a reordering costs one rebuild of the same bytes).
    assert runtime_key(Requirements(("b==2", "a==1")), own) != key


# -- targets --------------------------------------------------------------------------


def platform_bytes(python_version: str = "3.12") -> bytes:
    document = complete_platform()
    document["marker_environment"]["python_version"] = python_version
    return json.dumps(document).encode()


def test_a_host_s_platform_file_comes_before_the_environment_s_and_the_python_setting(
    tmp_path: Path,
) -> None:
    host_file = platform_bytes("3.12")
    environment_file = platform_bytes("3.13")
    write_files(
        tmp_path,
        {
            "environments/prod/platforms/web1.json": host_file,
            "environments/prod/platform.json": environment_file,
        },
    )

    web1 = host_target(tmp_path, "prod", "web1", "3.99")
    web2 = host_target(tmp_path, "prod", "web2", "3.99")

    assert (web1.python, web1.platform_file) == ("3.12", "environments/prod/platforms/web1.json")
    assert web1.platform_json is not None
    assert json.loads(web1.platform_json)["marker_environment"]["python_version"] == "3.12"
    assert web1.key == "complete-platform:" + hashlib.sha256(web1.platform_json).hexdigest()
    assert (web2.python, web2.platform_file) == ("3.13", "environments/prod/platform.json")
    assert web2.describe() == "Python 3.13 (environments/prod/platform.json)"


def test_hosts_that_differ_only_in_kernel_share_a_runtime_target(tmp_path: Path) -> None:
    first, second = complete_platform(), complete_platform()
    first["marker_environment"].update(platform_release="6.1.0-1", platform_version="#1 SMP")
    second["marker_environment"].update(platform_release="6.12.0-9", platform_version="#9 SMP")
    # Key order of the file is not part of the target either.
    second = dict(reversed(list(second.items())))
    write_files(
        tmp_path,
        {
            "environments/prod/platforms/web1.json": json.dumps(first).encode(),
            "environments/prod/platforms/web2.json": json.dumps(second, indent=4).encode(),
        },
    )

    web1 = host_target(tmp_path, "prod", "web1", None)
    web2 = host_target(tmp_path, "prod", "web2", None)

    assert web1.key == web2.key
    assert web1.platform_json is not None
    markers = json.loads(web1.platform_json)["marker_environment"]
    assert "platform_release" not in markers and "platform_version" not in markers


def test_without_a_platform_file_the_host_s_python_then_the_builder_s(tmp_path: Path) -> None:
    (tmp_path / "environments/prod").mkdir(parents=True)

    assert host_target(tmp_path, "prod", "web1", "3.12") == Target("3.12")
    assert host_target(tmp_path, "prod", "web1", None) == Target(own_python())
    assert host_target(tmp_path, "prod", "web1", None).key == f"python:{own_python()}"


def test_the_host_s_python_setting_comes_before_the_environment_s(tmp_path: Path) -> None:
    deployment(
        tmp_path,
        environments={
            "prod": """
                [environment]
                python = 3.12

                [hosts]
                web1 = app

                [host:web2]
                components = app
                python = 3.13
                """
        },
    )
    config, errors = load_environment(tmp_path, "prod")
    assert config is not None, errors
    python = {host.name: host.python for host in config.hosts}

    assert host_target(tmp_path, "prod", "web1", python["web1"]) == Target("3.12")
    assert host_target(tmp_path, "prod", "web2", python["web2"]) == Target("3.13")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "is not a complete platform file"),
        (b"[]", "is not a complete platform file"),
        (b'{"compatible_tags": ["py3-none-any"]}', "is not a complete platform file"),
        (
            b'{"marker_environment": {"python_version": "3.12"}, "compatible_tags": []}',
            "is not a complete platform file: it needs python_version and compatible_tags",
        ),
        (
            b'{"marker_environment": {"python_version": 3.12}, "compatible_tags": ["x"]}',
            "is not a complete platform file: it needs python_version and compatible_tags",
        ),
    ],
)
def test_a_broken_platform_file_says_how_to_make_one(
    tmp_path: Path, content: bytes, message: str
) -> None:
    write_files(tmp_path, {"environments/prod/platforms/web1.json": content})

    with pytest.raises(RuntimeBuildError) as caught:
        host_target(tmp_path, "prod", "web1", None)

    assert caught.value.message == f"environments/prod/platforms/web1.json {message}"
    assert caught.value.hint == "make it on the host with 'executor inspect-platform > FILE'"


def test_a_broken_platform_file_fails_the_build_and_writes_nothing(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={"app": APP},
        environments={"prod": PROD},
        files={"environments/prod/platform.json": "{}"},
    )

    with pytest.raises(RuntimeBuildError, match="platform.json is not a complete platform file"):
        build_bundles("prod", repo)
    assert not (repo / "bundles/prod/web1.bundle").exists()


# -- building and the cache -----------------------------------------------------------


def test_a_second_runtime_with_the_same_inputs_is_a_cache_lookup(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requirements = Requirements(("MarkupSafe",), (), {"MarkupSafe": "requirements.txt:1"})
    target = Target(own_python())
    commands: list[list[str]] = []

    def counting(command: list[str], *args: Any, **kw: Any) -> Any:
        commands.append(command)
        return real_popen(command, *args, **kw)

    real_popen = subprocess.Popen
    said: list[Step] = []
    monkeypatch.setattr(subprocess, "Popen", counting)
    first = runtime_blob(requirements, target, fresh_cache, said.append)
    monkeypatch.setattr(subprocess, "Popen", real_popen)

    assert len(commands) == 1 and commands[0][1:3] == ["-m", "pex"]
    assert said[0].message == (
        f"Resolving the runtime for Python {own_python()}: dnspython, Jinja2, MarkupSafe, msgpack"
    )
    assert any(s.message.startswith("Installing ") and "MarkupSafe" in s.message for s in said)
    assert said[-1].final
    assert said[-1].message.startswith(f"Built the runtime for Python {own_python()} (")
    assert first.pex.parent == fresh_cache / "runtimes"
    assert first.sha256 == hashlib.sha256(first.compressed.read_bytes()).hexdigest()
    assert first.raw_sha256 == hashlib.sha256(first.pex.read_bytes()).hexdigest()

    def forbidden(command: list[str], *args: Any, **kw: Any) -> Any:
        raise AssertionError(f"ran {command} for a cached runtime")

    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    said.clear()
    assert runtime_blob(requirements, target, fresh_cache, said.append) == first
    # Quiet when nothing changes.
    assert said == []
    # A lost compressed copy is made again from the cached pex, with the same bytes.
    first.compressed.unlink()
    assert runtime_blob(requirements, target, fresh_cache, said.append) == first
    assert said == []


def test_an_unknown_package_is_a_runtime_error_naming_it(fresh_cache: Path) -> None:
    requirements = Requirements(
        ("no-such-package-consign-test==1.0",),
        (),
        {"no-such-package-consign-test==1.0": "requirements.txt:3"},
    )

    with pytest.raises(RuntimeBuildError) as caught:
        runtime_blob(requirements, Target(own_python()), fresh_cache)

    error = caught.value
    assert error.message == (
        f"no distribution of 'no-such-package-consign-test==1.0' for Python {own_python()} "
        "can be found"
    )
    assert error.where == "requirements.txt:3"
    assert error.hint is not None
    assert error.hint.startswith("check the requirement's name and version")
    assert not list((fresh_cache / "runtimes").glob("*.pex"))


def test_a_target_python_the_builder_lacks_says_what_to_install(fresh_cache: Path) -> None:
    with pytest.raises(RuntimeBuildError) as caught:
        runtime_blob(Requirements(), Target("3.99"), fresh_cache)

    assert caught.value.message == "there is no Python 3.99 here to build the runtime for"
    assert caught.value.hint == (
        "install python3.99 on the builder, or put a complete platform file made on the host "
        "('executor inspect-platform > FILE') at environments/ENV/platforms/HOST.json"
    )
    assert not list((fresh_cache / "runtimes").glob("*.pex"))


def test_two_builders_sharing_a_cache_both_get_the_import_environment(
    fresh_cache: Path,
) -> None:
    blob = runtime_blob(Requirements(), Target(own_python()), Path(os.environ["CONSIGN_CACHE_DIR"]))
    results: list[Path | Exception] = []

    def make() -> None:
        try:
            results.append(import_environment(blob.pex, fresh_cache))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            results.append(exc)

    threads = [threading.Thread(target=make) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(isinstance(r, Path) for r in results), [str(r) for r in results]
    venv = fresh_cache / "venvs" / blob.pex.stem
    assert results == [venv / f"lib/python{own_python()}/site-packages"] * 2
    assert isinstance(results[0], Path) and (results[0] / "executor/child.py").is_file()
    # One environment, no work directory of either builder left beside it.
    assert [p.name for p in venv.parent.iterdir()] == [venv.name]


def test_the_import_environment_is_made_once(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = runtime_blob(Requirements(), Target(own_python()), Path(os.environ["CONSIGN_CACHE_DIR"]))
    first = import_environment(blob.pex, fresh_cache)

    def forbidden(command: list[str], *args: Any, **kw: Any) -> Any:
        raise AssertionError(f"ran {command} for an environment that exists")

    monkeypatch.setattr(subprocess, "run", forbidden)
    assert import_environment(blob.pex, fresh_cache) == first


# -- builds with requirements ---------------------------------------------------------


def with_requirements(tmp_path: Path, requirements: str, name: str = "repo") -> Path:
    return deployment(
        tmp_path / name,
        components={"app": APP},
        environments={"prod": PROD},
        files={"requirements.txt": requirements},
    )


def test_a_contradicting_requirement_fails_the_build_before_anything_is_written(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = with_requirements(tmp_path, "SQLAlchemy==2.1.9\nmsgpack==0.6.2\n")

    def forbidden(*args: Any, **kw: Any) -> Any:
        raise AssertionError("a build with a conflict built a runtime")

    monkeypatch.setattr(runtime, "build_runtime", forbidden)
    with pytest.raises(BuildFailed) as caught:
        build_bundles("prod", repo, cache=fresh_cache)

    messages = [e.render() for e in caught.value.errors]
    assert messages == [
        f"requirements.txt:2: the requirements ask for 'msgpack==0.6.2', but consign's runtime "
        f"needs 'msgpack=={version('msgpack')}'\n"
        f"  hint: allow msgpack {version('msgpack')} (or drop the line: consign provides it), or "
        "run the builder with a consign that uses a version you allow"
    ]
    assert caught.value.message == "the build found 1 error; nothing was written"
    assert not (repo / "bundles").exists()


def test_bundle_build_with_a_contradicting_requirement_exits_1_naming_both(
    tmp_path: Path,
) -> None:
    repo = with_requirements(tmp_path, "Jinja2<3\n")

    result = runner.invoke(
        app, ["build", "prod", "-C", str(repo), "--dirty", "--sign-key", str(signing_key().private)]
    )

    assert result.exit_code == 1, result.output
    assert "the requirements ask for 'Jinja2<3'" in result.stderr
    assert f"consign's runtime needs 'Jinja2=={version('Jinja2')}'" in result.stderr
    assert "allow Jinja2" in result.stderr
    assert not (repo / "bundles").exists()


def test_bad_requirement_lines_fail_the_build_with_file_and_line(tmp_path: Path) -> None:
    repo = with_requirements(tmp_path, "six\n-e .\n")

    with pytest.raises(BuildFailed) as caught:
        build_bundles("prod", repo)

    assert [(e.where, e.message) for e in caught.value.errors] == [
        ("requirements.txt:2", "requirements option '-e' is not supported")
    ]
    assert not (repo / "bundles").exists()


def test_an_unknown_package_fails_the_build_and_writes_nothing(
    tmp_path: Path, fresh_cache: Path
) -> None:
    repo = with_requirements(tmp_path, "no-such-package-consign-test==1.0\n")

    with pytest.raises(RuntimeBuildError, match="no distribution of 'no-such-package-consign-test"):
        build_bundles("prod", repo, cache=fresh_cache)
    assert not (repo / "bundles").exists()


def runtime_entry(bundle: Path) -> BlobEntry:
    entry = decode_unverified(read_envelope(str(bundle))).blob("runtime")
    assert entry is not None
    return entry


def test_two_clones_build_the_same_runtime_bytes_and_check_passes_with_a_requirement(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clones = []
    for name in ("one/repo", "elsewhere/two/clone"):
        repo = with_requirements(tmp_path, f"{SMALL}\n", name)
        git_commit(repo)
        clones.append(repo)

    # The first clone builds its runtime in an empty cache ...
    build_bundles("prod", clones[0], dirty=False, cache=fresh_cache)
    # ... the second through the command line, which also rebuilds in a
    # fresh clone with another empty cache (--check).
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "build", "prod", "-C", str(clones[1]), "--check",
            "--sign-key", str(signing_key().private),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "reproducible: 1 bundle equals a rebuild of " in result.stdout
    one = runtime_entry(clones[0] / "bundles/prod/web1.bundle")
    two = runtime_entry(clones[1] / "bundles/prod/web1.bundle")
    assert one == two
    cached = fresh_cache / "runtimes"
    built = [
        p
        for p in cached.glob("*.pex")
        if hashlib.sha256(p.read_bytes()).hexdigest() == one.raw_sha256
    ]
    assert len(built) == 1
    # The user's requirement is in it.
    assert b"six-1.17.0" in built[0].read_bytes()


def test_hosts_with_one_target_share_one_runtime_build(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={"app": APP},
        environments={
            "prod": "[environment]\ntarget_directory = /srv/app\n[hosts]\n"
            + "".join(f"web{n} = app\n" for n in range(1, 6))
        },
    )
    builds: list[str] = []
    real: Callable[..., Any] = runtime.build_runtime

    def counting(*args: Any, **kw: Any) -> Any:
        path = real(*args, **kw)
        builds.append(str(path))
        return path

    monkeypatch.setattr(runtime, "build_runtime", counting)
    said: list[Step] = []
    build_bundles("prod", repo, cache=fresh_cache, progress=said.append)

    assert len(builds) == 1
    assert len([s for s in said if s.final and s.message.startswith("Built the runtime")]) == 1
    # What pip resolves shows while it happens: consign's pins and their own.
    resolving = {s.message for s in said if s.message.startswith("Resolving ")}
    assert {f"Resolving {pin}" for pin in pins()} <= resolving, resolving
    assert any(s.message.startswith("Installing ") for s in said), said
    entries = {runtime_entry(repo / f"bundles/prod/web{n}.bundle") for n in range(1, 6)}
    assert len(entries) == 1

    # A rebuild with nothing changed says nothing about the runtime.
    said.clear()
    build_bundles("prod", repo, cache=fresh_cache, progress=said.append)
    assert said == []


def test_configure_on_the_builder_imports_the_repository_s_requirements(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": """
                import six
                from batou.component import Component
                from batou.lib.file import File

                class App(Component):
                    def configure(self):
                        self += File("six.txt", content=six.__version__)
                """
        },
        environments={"prod": PROD},
        files={"requirements.txt": f"{SMALL}\n"},
    )
    result = build_bundles("prod", repo)

    assert [h.name for h in result.hosts] == ["web1"]
    # Nothing of the runtime stays on the builder's path.
    assert not any("venvs" in p for p in sys.path)


def wheel(
    directory: Path,
    name: str = "consign-test-local",
    version: str = "1.0",
    requires: tuple[str, ...] = (),
) -> Path:
    """A tiny wheel of a package no index has: consign-test-local 1.0 unless named."""
    package = name.replace("-", "_")
    info = f"{package}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {requirement}\n" for requirement in requires
    )
    files = {
        f"{package}/__init__.py": b"VALUE = 42\n",
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: consign-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = "".join(
        f"{entry},sha256="
        + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")
        + f",{len(data)}\n"
        for entry, data in files.items()
    )
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{package}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for entry, data in files.items():
            archive.writestr(zipfile.ZipInfo(entry, (2020, 1, 1, 0, 0, 0)), data)
    return path


def test_a_wheelhouse_beside_requirements_txt_provides_packages(
    tmp_path: Path, fresh_cache: Path
) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": """
                import consign_test_local
                from batou.component import Component
                from batou.lib.file import File

                class App(Component):
                    def configure(self):
                        self += File("value", content=str(consign_test_local.VALUE))
                """
        },
        environments={"prod": PROD},
        files={"requirements.txt": "--find-links wheels\nconsign-test-local==1.0\n"},
    )
    wheel(repo / "wheels")

    result = build_bundles("prod", repo, cache=fresh_cache)

    assert [h.name for h in result.hosts] == ["web1"]
    entry = runtime_entry(repo / "bundles/prod/web1.bundle")
    (built,) = [
        p
        for p in (fresh_cache / "runtimes").glob("*.pex")
        if hashlib.sha256(p.read_bytes()).hexdigest() == entry.raw_sha256
    ]
    assert b"consign_test_local" in built.read_bytes()


def wheelhouse_repository(root: Path) -> Path:
    repo = deployment(
        root,
        components={"app": APP},
        environments={"prod": PROD},
        files={"requirements.txt": "--find-links wheels\nconsign-test-local==1.0\n"},
    )
    wheel(repo / "wheels")
    git_commit(repo)
    return repo


def test_two_clones_with_a_wheelhouse_build_the_same_runtime_and_check_passes(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = wheelhouse_repository(tmp_path / "one/repo")
    two = wheelhouse_repository(tmp_path / "elsewhere/two/clone")

    build_bundles("prod", one, dirty=False, cache=fresh_cache)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        ["build", "prod", "-C", str(two), "--check", "--sign-key", str(signing_key().private)],
    )

    assert result.exit_code == 0, result.output
    assert "reproducible: 1 bundle equals a rebuild of " in result.stdout
    assert runtime_entry(one / "bundles/prod/web1.bundle") == runtime_entry(
        two / "bundles/prod/web1.bundle"
    )


@pytest.mark.parametrize(
    ("line", "step"),
    [
        ("2026-11-26T13:31:34,775 Collecting sqlalchemy==2.1.9", "Resolving sqlalchemy==2.1.9"),
        (
            "2026-11-26T13:31:34,855 Collecting typing-extensions>=4.6.0 (from sqlalchemy==2.1.9)",
            "Resolving typing-extensions>=4.6.0",
        ),
        (
            "2026-11-26T13:31:34,859   Downloading typing_extensions-4.16.0-py3-none-any.whl (45 kB)",
            "Downloading typing_extensions-4.16.0-py3-none-any.whl (45 kB)",
        ),
        ("2026-11-26T13:31:35,001   Building wheel for six (pyproject.toml)", "Building a wheel for six"),
        (
            "2026-11-26T13:31:34,863 Successfully downloaded sqlalchemy typing-extensions",
            "Installing sqlalchemy, typing-extensions",
        ),
        ("2026-11-26T13:31:34,845 No cache entry available", None),
        ("2026-11-26T13:31:34,845 Found index url https://pypi.org/simple/", None),
        ("", None),
    ],
)
def test_pip_s_log_lines_become_progress_steps(line: str, step: str | None) -> None:
    found = pip_step(line)
    assert (found.message if found else None) == step
    assert found is None or not found.final


# -- what configure imports on the builder ----------------------------------------------


def module_file(root: Path, name: str, text: str = "") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def forget_modules() -> Iterator[list[str]]:
    """Top-level names whose modules a test imports; removed again afterwards,
    so that the next import is a new one (the audit sees only new imports)."""
    names: list[str] = []
    yield names
    for loaded in list(sys.modules):
        if loaded.split(".", 1)[0] in names:
            del sys.modules[loaded]


def foreign_import(name: str, location: Path | str) -> str:
    return (
        f"the components import {name!r} (found at {location} here), which the bundle's "
        "runtime does not have, so the import would fail on the hosts\n"
        f"  hint: add the distribution that provides {name!r} to requirements.txt"
    )


def test_the_import_audit_puts_the_runtime_first_and_names_imports_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_modules: list[str]
) -> None:
    site = tmp_path / "runtime/lib/python3/site-packages"
    module_file(site, "audit_both.py", "WHERE = 'runtime'\n")
    module_file(site, "audit_runtime_pkg/__init__.py")
    (site / "audit_runtime_pkg-1.0.dist-info").mkdir()
    elsewhere = tmp_path / "builder/lib/python3/site-packages"
    module_file(elsewhere, "audit_both.py", "WHERE = 'builder'\n")
    module_file(elsewhere, "audit_foreign/__init__.py", "from audit_foreign import inner\n")
    module_file(elsewhere, "audit_foreign/inner.py", "import audit_dependency\n")
    dependency = module_file(elsewhere, "audit_dependency.py")
    repository = tmp_path / "repository"
    module_file(repository, "audit_repository_helper.py")
    monkeypatch.syspath_prepend(str(elsewhere))
    monkeypatch.syspath_prepend(str(repository))
    forget_modules.extend(
        ["audit_both", "audit_runtime_pkg", "audit_foreign", "audit_dependency",
         "audit_repository_helper", "colorsys"]
    )  # fmt: skip
    # The standard library counts even when imported for the first time.
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)

    audit = ImportAudit(site, repository)
    with audit:
        assert sys.path[0] == str(site)
        imported = {
            name: importlib.import_module(name)
            for name in (
                "audit_both", "audit_foreign", "audit_repository_helper", "audit_runtime_pkg",
                "colorsys",
            )
        }  # fmt: skip

    # The runtime's module came first; nothing of the runtime stays on the path.
    assert imported["audit_both"].WHERE == "runtime"
    assert str(site) not in sys.path
    assert imported["audit_runtime_pkg"].__file__ == str(site / "audit_runtime_pkg/__init__.py")
    assert imported["audit_repository_helper"].__file__ == str(
        repository / "audit_repository_helper.py"
    )
    assert imported["colorsys"].__name__ == "colorsys"
    assert [error.render() for error in audit.foreign()] == [
        foreign_import("audit_dependency", dependency),
        foreign_import("audit_foreign", elsewhere / "audit_foreign/__init__.py"),
    ]


def test_the_import_audit_leaves_the_path_as_it_was_when_configure_fails(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    before = list(sys.path)

    with pytest.raises(RuntimeError), ImportAudit(site, tmp_path / "repository"):
        raise RuntimeError("configure failed")

    assert sys.path == before


IMPORTS_ELSEWHERE = """
    import consign_test_elsewhere
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content=consign_test_elsewhere.VALUE)
    """


def test_a_component_importing_a_package_only_the_builder_has_fails_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_modules: list[str]
) -> None:
    elsewhere = tmp_path / "builder/lib/python3/site-packages"
    package = module_file(elsewhere, "consign_test_elsewhere/__init__.py", "VALUE = 'x'\n")
    monkeypatch.syspath_prepend(str(elsewhere))
    forget_modules.append("consign_test_elsewhere")
    repo = deployment(
        tmp_path / "repo", components={"app": IMPORTS_ELSEWHERE}, environments={"prod": PROD}
    )

    with pytest.raises(BuildFailed) as caught:
        build_bundles("prod", repo)

    assert [e.render() for e in caught.value.errors] == [
        foreign_import("consign_test_elsewhere", package)
    ]
    assert caught.value.message == "the build found 1 error; nothing was written"
    assert not (repo / "bundles").exists()


def test_configure_runs_with_the_runtime_s_site_packages_first(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch, forget_modules: list[str]
) -> None:
    seen = tmp_path / "seen.json"
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": f"""
                import json, sys
                from batou.component import Component

                class App(Component):
                    def configure(self):
                        import six
                        with open({str(seen)!r}, "w") as f:
                            json.dump({{"first": sys.path[0], "six": six.__file__}}, f)
                """
        },
        environments={"prod": PROD},
        files={"requirements.txt": f"{SMALL}\n"},
    )
    forget_modules.append("six")
    # Another test's build may have imported six from its own runtime.
    monkeypatch.delitem(sys.modules, "six", raising=False)

    build_bundles("prod", repo, cache=fresh_cache)

    # The environment made from the one runtime built.
    (pex,) = (fresh_cache / "runtimes").glob("*.pex")
    (venv,) = (fresh_cache / "venvs").iterdir()
    assert venv.name == pex.stem
    site = venv / f"lib/python{own_python()}/site-packages"
    assert json.loads(seen.read_text()) == {"first": str(site), "six": str(site / "six.py")}
    assert str(site) not in sys.path


def test_stdlib_repository_and_requirement_imports_pass_the_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_modules: list[str]
) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            # Loaded before app (component files load in sorted order).
            "_shared": """
                import colorsys

                def brightness(value):
                    return colorsys.rgb_to_hls(value, value, value)[1]
                """,
            "app": """
                import mailbox, syslog
                import six
                from batou.c._shared import brightness
                from batou.component import Component
                from batou.lib.file import File

                class App(Component):
                    def configure(self):
                        self += File("app.conf", content=f"{brightness(0.5)} {six.__version__}")
                """,
        },
        environments={"prod": PROD},
        files={"requirements.txt": f"{SMALL}\n"},
    )
    forget_modules.extend(["six", "colorsys", "mailbox"])
    for name in ("colorsys", "mailbox"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    result = build_bundles("prod", repo)

    assert [h.name for h in result.hosts] == ["web1"]


@pytest.mark.parametrize("name", ["typer", "rich", "packaging", "pytest"])
def test_bundle_build_refuses_components_importing_what_only_the_builder_has(
    tmp_path: Path, name: str
) -> None:
    # The real console script: the builder's own imports (typer, rich, packaging)
    # are loaded before configure runs, as they are for users.
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": f"""
                from batou.component import Component

                class App(Component):
                    def configure(self):
                        import {name}
                """
        },
        environments={"prod": PROD},
    )
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None

    completed = subprocess.run(
        [
            str(Path(sys.executable).parent / "bundle"), "build", "prod", "-C", str(repo),
            "--dirty", "--sign-key", str(signing_key().private),
        ],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert f"error: {foreign_import(name, spec.origin)}\n" in completed.stderr
    assert completed.stderr.endswith("; nothing was written\n")
    assert not (repo / "bundles").exists()


# -- the runtime's sources ---------------------------------------------------------------


def fake_package(root: Path) -> types.SimpleNamespace:
    """A package directory with its files, bytecode and a working tree's strays."""
    write_files(
        root,
        {
            "__init__.py": "",
            "mod.py": "X = 1\n",
            "py.typed": "",
            "sub/deep.py": "",
            "sub/py.typed": "",
            "__pycache__/mod.cpython-311.pyc": b"\x00bytecode",
            "__pycache__/stray.py": "",
            "sub/__pycache__/deep.cpython-311.pyc": b"\x00bytecode",
            "mod.pyc": b"\x00old bytecode",
            "mod.py~": "X = 0\n",
            "mod.py.orig": "X = 0\n",
            ".mod.py.swp": b"\x00vim",
            "notes.txt": "todo\n",
            "README": "",
            "data.py/inside.txt": "a directory named like a module\n",
        },
    )
    # An editor's lock file: a dangling symlink named like a module.
    (root / ".#mod.py").symlink_to("root@host.1234:1700000000")
    return types.SimpleNamespace(__file__=str(root / "__init__.py"))


def test_only_python_files_and_py_typed_go_into_the_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = fake_package(tmp_path / "fakepkg")
    monkeypatch.setattr(runtime, "PACKAGES", (package,))

    assert runtime.sources() == [
        (f"fakepkg/{name}", tmp_path / "fakepkg" / name)
        for name in ("__init__.py", "mod.py", "py.typed", "sub/deep.py", "sub/py.typed")
    ]


def test_stray_files_do_not_change_the_runtime_key_but_sources_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "fakepkg"
    monkeypatch.setattr(runtime, "PACKAGES", (fake_package(root),))
    before = runtime_key(Requirements(), Target(own_python()))

    write_files(
        root, {"another.txt": "x", "__pycache__/new.cpython-311.pyc": b"\x01", "mod.py.bak": ""}
    )
    assert runtime_key(Requirements(), Target(own_python())) == before
    (root / "mod.py").write_text("X = 2\n")
    assert runtime_key(Requirements(), Target(own_python())) != before


def test_the_runtime_sources_are_the_executor_and_batou_python_files() -> None:
    listed = runtime.sources()
    names = [name for name, _path in listed]

    assert all(name.endswith((".py", "/py.typed")) for name in names), names
    assert not [name for name in names if "__pycache__" in name]
    assert {name.split("/", 1)[0] for name in names} == {"executor", "batou"}
    assert {"executor/child.py", "executor/__init__.py", "batou/component.py"} <= set(names)
    for name, path in listed:
        assert path.is_file() and path.as_posix().endswith("/" + name)
    # Every module of the packages is there.
    for package in runtime.PACKAGES:
        root = Path(str(package.__file__)).parent
        modules = {
            f"{root.name}/{p.relative_to(root).as_posix()}"
            for p in root.rglob("*.py")
            if "__pycache__" not in p.parts
        }
        assert modules <= set(names)


# -- why pex failed --------------------------------------------------------------------

CONFLICT_REQUIREMENTS = Requirements(
    ("six==1.17.0", "needsoldjinja==1.0"),
    ("--find-links", "/repo/wheels"),
    {"six==1.17.0": "requirements.txt:2", "needsoldjinja==1.0": "requirements.txt:3"},
)

# pip's report of a requirement that pulls in what consign's pin forbids,
# as pip prints it, and as pex passes it on (each line of pip's prefixed).
PIP_CONFLICT = """\
ERROR: Cannot install Jinja2==3.1.6 and needsoldjinja==1.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    The user requested Jinja2==3.1.6
    needsoldjinja 1.0 depends on Jinja2<3

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip to attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
"""

PEX_CONFLICT = """\
pid 4966 -> /cache/pex-root/venvs/4/1538b37/5f1d2ee/bin/python /cache/pex-root/venvs/4/1538b37/5f1d2ee/pex --disable-pip-version-check --exists-action a --no-input --isolated --log /cache/runtimes/consign-runtime-f7y6zsbs/pip.log -q --cache-dir /cache/pex-root/pip/4/26.2.1/pip_cache download --dest /cache/pex-root/downloads/2/.tmp/resolver_download.u29ycg_0/CPython-3.11.7 dnspython==2.9.2 Jinja2==3.1.6 MarkupSafe==3.0.4 msgpack==1.2.4 six==1.17.0 needsoldjinja==1.0 --find-links /repo/wheels --retries 5 --resume-retries 3 --timeout 15 exited with 1 and STDERR:
pip: ERROR: Cannot install Jinja2==3.1.6 and needsoldjinja==1.0 because these package versions have conflicting dependencies.
pip: ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
pip:  
pip:  The conflict is caused by:
pip:      The user requested Jinja2==3.1.6
pip:      needsoldjinja 1.0 depends on Jinja2<3
pip:  
pip:  Additionally, some packages in these conflicts have no matching distributions available for your environment:
pip:      jinja2
pip:  
pip:  To fix this you could try to:
pip:  1. loosen the range of package versions you've specified
pip:  2. remove package versions to allow pip to attempt to solve the dependency conflict
"""


def conflict_hint() -> str:
    return (
        "change the requirement that pulls in the contradicting version (consign's own pins "
        f"are {', '.join(pins())}); pin versions that agree"
    )


@pytest.mark.parametrize("output", [PIP_CONFLICT, PEX_CONFLICT], ids=["pip", "pex"])
def test_a_requirement_pulling_in_a_version_consign_forbids_names_its_line(output: str) -> None:
    error = runtime._explain(output, CONFLICT_REQUIREMENTS, Target("3.11"))

    assert isinstance(error, RuntimeBuildError)
    assert error.render() == (
        "requirements.txt:3: the requirements contradict each other or consign's runtime: "
        "The user requested Jinja2==3.1.6; needsoldjinja 1.0 depends on Jinja2<3\n"
        f"  hint: {conflict_hint()}"
    )


def test_two_requirements_that_contradict_each_other_name_the_first_line() -> None:
    output = PIP_CONFLICT.replace("Jinja2==3.1.6", "six==1.17.0").replace(
        "depends on Jinja2<3", "depends on six<1.17"
    )

    error = runtime._explain(output, CONFLICT_REQUIREMENTS, Target("3.11"))

    assert error.where == "requirements.txt:2"
    assert error.message == (
        "the requirements contradict each other or consign's runtime: "
        "The user requested six==1.17.0; needsoldjinja 1.0 depends on six<1.17"
    )


def test_a_wheel_that_needs_an_older_jinja_fails_the_build_naming_its_line(
    tmp_path: Path, fresh_cache: Path
) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={"app": APP},
        environments={"prod": PROD},
        files={
            "requirements.txt": f"--find-links wheels\n{SMALL}\nneedsoldjinja==1.0\n",
        },
    )
    wheel(repo / "wheels", "needsoldjinja", "1.0", requires=("Jinja2<3",))

    with pytest.raises(RuntimeBuildError) as caught:
        build_bundles("prod", repo, cache=fresh_cache)

    assert caught.value.render() == (
        "requirements.txt:3: the requirements contradict each other or consign's runtime: "
        f"The user requested Jinja2=={version('Jinja2')}; "
        "needsoldjinja 1.0 depends on Jinja2<3\n"
        f"  hint: {conflict_hint()}"
    )
    assert not list((fresh_cache / "runtimes").glob("*.pex"))
    assert not (repo / "bundles").exists()


# -- the signing key before the runtime --------------------------------------------------


def test_a_missing_signing_key_is_reported_before_the_runtime_is_built(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSIGN_SIGN_KEY", raising=False)
    repo = with_requirements(tmp_path, f"{SMALL}\n")

    def forbidden(*args: Any, **kw: Any) -> Any:
        raise AssertionError("a build that cannot sign built a runtime")

    monkeypatch.setattr(runtime, "build_runtime", forbidden)
    with pytest.raises(SigningKeyError) as caught:
        build_bundles("prod", repo, cache=fresh_cache, sign_keys=())

    assert caught.value.render() == (
        "no signing key: every bundle must be signed\n"
        "  hint: make one with 'bundle keys generate ~/.config/consign/builder-key', then pass "
        "--sign-key, set CONSIGN_SIGN_KEY, or set sign_key in [environment]"
    )
    assert not fresh_cache.exists()
    assert not (repo / "bundles").exists()


def test_a_missing_signing_key_and_environment_errors_are_reported_together(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSIGN_SIGN_KEY", raising=False)
    repo = deployment(
        tmp_path / "repo",
        components={"app": APP},
        environments={"prod": PROD.replace("[hosts]", "colour = blue\n[hosts]")},
        files={"requirements.txt": f"{SMALL}\n"},
    )

    def forbidden(*args: Any, **kw: Any) -> Any:
        raise AssertionError("a build that cannot sign built a runtime")

    monkeypatch.setattr(runtime, "build_runtime", forbidden)
    with pytest.raises(BuildFailed) as caught:
        build_bundles("prod", repo, cache=fresh_cache, sign_keys=())

    # Sorted as every build's errors are: the one without a place first.
    assert [(e.where, e.message) for e in caught.value.errors] == [
        (None, "no signing key: every bundle must be signed"),
        ("environments/prod/environment.cfg:3", "unknown key 'colour' in [environment]"),
    ]
    assert caught.value.message == "the build found 2 errors; nothing was written"
    assert not fresh_cache.exists()
    assert not (repo / "bundles").exists()


def test_bundle_build_without_a_key_exits_1_before_resolving_anything(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSIGN_SIGN_KEY", raising=False)
    monkeypatch.setenv("CONSIGN_CACHE_DIR", str(fresh_cache))
    repo = with_requirements(tmp_path, f"{SMALL}\n")

    result = runner.invoke(app, ["build", "prod", "-C", str(repo), "--dirty"])

    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: no signing key: every bundle must be signed\n")
    assert "Resolving" not in result.stderr
    assert not fresh_cache.exists()
