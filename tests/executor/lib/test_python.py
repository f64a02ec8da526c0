"""python.VirtualEnv and python.Package, offline: packages come from wheels
made here, installed with find_links and --no-index.

Making a venv takes seconds: the module makes two (one shared by the
package tests, one that replaces a venv of the wrong version).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from executor.component import Component
from executor.errors import CommandError, ConfigurationError, DeployError
from executor.lib.python import Package, VirtualEnv, normalize_name, version_key
from executor.redact import mask_url

from .helpers import apply_twice, configure, deploy, workdir

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"



def _can_make_venvs() -> bool:
    if shutil.which(f"python{PY}") is None:
        return False
    probe = [f"python{PY}", "-c", "import venv, ensurepip"]
    return subprocess.run(probe, capture_output=True).returncode == 0


CAN_MAKE_VENVS = _can_make_venvs()
needs_python = pytest.mark.skipif(
    not CAN_MAKE_VENVS, reason=f"python{PY} with venv and ensurepip is not on PATH"
)


def make_wheel(directory: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of distribution `name` with module `name` (with _)."""
    module = name.replace("-", "_").lower()
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{module}.py": f"VERSION = {version!r}\n",
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ),
        f"{dist}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: consign-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in sorted(files.items()):
            archive.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), text)
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    make_wheel(directory, "Tiny-Pkg", "1.0")
    make_wheel(directory, "Tiny-Pkg", "2.0")
    make_wheel(directory, "other-pkg", "0.5")
    return directory


def root_with(*makers: Callable[[], Component]) -> Callable[[], Component]:
    class Root(Component):
        def configure(self) -> None:
            for make in makers:
                self += make()

    return Root


def venv_with(path: Path | None, *packages: Callable[[], Package]) -> Callable[[], Component]:
    class Root(Component):
        def configure(self) -> None:
            venv = VirtualEnv(PY, path=None if path is None else str(path))
            self += venv
            for make in packages:
                venv += make()

    return Root


def offline(name: str, wheels: Path, **kw: Any) -> Callable[[], Package]:
    return lambda: Package(name, find_links=str(wheels), pip_args=("--no-index",), **kw)


def run_python(venv: Path, code: str) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def shared_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A venv made once at a new path; the first run's outcome."""
    if not CAN_MAKE_VENVS:
        pytest.skip(f"python{PY} with venv and ensurepip is not on PATH")
    base = tmp_path_factory.mktemp("shared")
    path = base / "venvs" / "app"
    previous = os.umask(0o022)
    try:
        outcome, _ = deploy(venv_with(path), base)
    finally:
        os.umask(previous)
    assert outcome.error is None, outcome.error
    return path, outcome


# -- VirtualEnv ----------------------------------------------------------------


@needs_python
def test_a_venv_is_made_and_a_second_run_changes_nothing(
    shared_venv: tuple[Path, Any], tmp_path: Path
) -> None:
    path, first = shared_venv

    assert first.changed == (f"Root > VirtualEnv('{PY}') > Venv('{path}')",)
    again, _ = deploy(venv_with(path), tmp_path)
    assert again.error is None
    assert again.changed == ()
    info = json.loads(
        run_python(path, "import json, sys; print(json.dumps([sys.prefix, sys.version]))")
    )
    assert info[0] == str(path)
    assert info[1].startswith(PY)
    # Made elsewhere and moved: nothing names the work directory.
    assert ".consign-" not in (path / "pyvenv.cfg").read_text()
    assert (path / "bin" / "pip").read_text().startswith(f"#!{path}/bin/python")
    assert f'"{path}"' in (path / "bin" / "activate").read_text()
    assert sorted(p.name for p in path.parent.iterdir()) == ["app"]
    # Made with umask 022: not the 0700 of the temporary directory it was made in.
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


@needs_python
def test_a_venv_of_another_version_is_made_anew_in_place(tmp_path: Path) -> None:
    here = workdir(tmp_path)
    (here / "bin").mkdir(parents=True)
    (here / "bin" / "python").write_text(
        '#!/bin/sh\necho \'{"version": "2.7.18", "venv": true}\'\n'
    )
    (here / "bin" / "python").chmod(0o755)
    (here / "bin" / "old-tool").write_text("old")
    (here / "lib" / "python2.7").mkdir(parents=True)
    (here / "pyvenv.cfg").write_text("home = /old\n")
    (here / "keep.txt").write_text("not the venv's")
    inode = here.stat().st_ino

    first, _ = apply_twice(venv_with(None), tmp_path)

    assert first.changed == (f"Root > VirtualEnv('{PY}') > Venv('{here}')",)
    assert here.stat().st_ino == inode
    assert not (here / "bin" / "old-tool").exists()
    assert not (here / "lib" / "python2.7").exists()
    assert (here / "keep.txt").read_text() == "not the venv's"
    assert run_python(here, "import sys; print(sys.prefix)") == str(here)
    assert [p.name for p in here.parent.iterdir() if p.name.startswith(".consign-")] == []


def test_a_missing_python_version_is_a_clear_error(tmp_path: Path) -> None:
    make = root_with(lambda: VirtualEnv("3.99"))

    for predicting in (True, False):
        outcome, _ = deploy(make, tmp_path, predicting=predicting)
        error = outcome.error
        assert isinstance(error, DeployError)
        assert error.message.startswith("Python 3.99 is not installed: no python3.99 on PATH")
        assert "install Python 3.99" in (error.hint or "")
        assert "apt-get install python3.99 python3.99-venv" in (error.hint or "")
        assert error.where == f"Root > VirtualEnv('3.99') > Venv('{workdir(tmp_path)}')"
    assert not (workdir(tmp_path) / "bin").exists()


@pytest.fixture
def fake_pythons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """python3.98 that does not run (a pyenv shim without its version) and
    python3.97 that is another version."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "python3.98").write_text(
        "#!/bin/sh\necho 'pyenv: python3.98: command not found' >&2\nexit 127\n"
    )
    (bin_dir / "python3.97").write_text(
        '#!/bin/sh\necho \'{"version": "3.11.7", "venv": false}\'\n'
    )
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_a_python_that_does_not_run_is_a_clear_error(tmp_path: Path, fake_pythons: Path) -> None:
    outcome, _ = deploy(root_with(lambda: VirtualEnv("3.98")), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == (
        f"python3.98 ({fake_pythons}/python3.98) does not run: "
        "pyenv: python3.98: command not found"
    )


def test_a_python_of_another_version_is_a_clear_error(tmp_path: Path, fake_pythons: Path) -> None:
    outcome, _ = deploy(root_with(lambda: VirtualEnv("3.97")), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == (
        f"python3.97 ({fake_pythons}/python3.97) is Python 3.11.7, want 3.97"
    )
    assert "executable=" in (outcome.error.hint or "")


@needs_python
def test_a_dry_run_makes_no_venv_and_installs_nothing(tmp_path: Path, wheels: Path) -> None:
    path = tmp_path / "venv"

    outcome, _ = deploy(venv_with(path, offline("Tiny-Pkg", wheels)), tmp_path, predicting=True)

    assert outcome.error is None
    assert outcome.changed == (
        f"Root > VirtualEnv('{PY}') > Venv('{path}')",
        f"Root > VirtualEnv('{PY}') > Package('Tiny-Pkg')",
    )
    assert not path.exists()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"version": "three"}, "VirtualEnv version must be like '3' or '3.11', got 'three'"),
        ({"version": "3.11-dev"}, "VirtualEnv version must be like '3' or '3.11', got '3.11-dev'"),
    ],
)
def test_a_bad_python_version_is_a_configure_error(
    tmp_path: Path, kw: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: VirtualEnv(**kw)), tmp_path)

    assert info.value.message == message
    assert info.value.where is not None and info.value.where.startswith("Root > VirtualEnv(")


def test_the_python_version_defaults_to_3(tmp_path: Path) -> None:
    root = configure(root_with(lambda: VirtualEnv(), lambda: VirtualEnv(path="v")), tmp_path)

    assert [venv.version for venv in root.sub_components] == ["3", "3"]
    assert root.sub_components[1].python == f"{workdir(tmp_path)}/v/bin/python"


# -- Package -------------------------------------------------------------------


@needs_python
def test_a_package_installs_and_a_version_change_reinstalls(
    shared_venv: tuple[Path, Any], wheels: Path, tmp_path: Path
) -> None:
    path, _ = shared_venv
    version = "import tiny_pkg; print(tiny_pkg.VERSION)"

    first, run = apply_twice(venv_with(path, offline("Tiny_Pkg", wheels, version="1.0")), tmp_path)
    assert first.changed == (f"Root > VirtualEnv('{PY}') > Package('Tiny_Pkg')",)
    assert run_python(path, version) == "1.0"
    assert "Successfully installed Tiny_Pkg-1.0" in [e.message for e in run.log]

    second, _ = apply_twice(venv_with(path, offline("tiny.pkg", wheels, version="2.0")), tmp_path)
    assert second.changed == (f"Root > VirtualEnv('{PY}') > Package('tiny.pkg')",)
    assert run_python(path, version) == "2.0"

    # 2.0.0 is 2.0 (PEP 440): nothing to do.
    third, _ = deploy(venv_with(path, offline("tiny-pkg", wheels, version="2.0.0")), tmp_path)
    assert third.error is None
    assert third.changed == ()


@needs_python
def test_a_package_into_a_venv_given_by_path(
    shared_venv: tuple[Path, Any], wheels: Path, tmp_path: Path
) -> None:
    path, _ = shared_venv

    apply_twice(
        root_with(
            offline(
                "other-pkg", wheels, venv=str(path), dependencies=False, check_package_is_module=True
            )
        ),
        tmp_path,
    )

    assert run_python(path, "import other_pkg; print(other_pkg.VERSION)") == "0.5"


@needs_python
def test_a_package_that_is_not_found_is_a_clear_error(
    shared_venv: tuple[Path, Any], wheels: Path, tmp_path: Path
) -> None:
    path, _ = shared_venv

    outcome, _ = deploy(venv_with(path, offline("no-such-thing", wheels, version="1.0")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == (
        f"pip could not install no-such-thing==1.0 into {path}: "
        "ERROR: Could not find a version that satisfies the requirement no-such-thing==1.0 "
        "(from versions: none) | ERROR: No matching distribution found for no-such-thing==1.0"
    )
    assert "package index" in (error.hint or "")
    assert error.where == f"Root > VirtualEnv('{PY}') > Package('no-such-thing')"

    outcome, _ = deploy(venv_with(path, offline("Tiny-Pkg", wheels, version="9.9")), tmp_path)
    assert isinstance(outcome.error, DeployError)
    assert "(from versions: 1.0, 2.0)" in outcome.error.message


def test_a_package_into_a_missing_venv_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    outcome, _ = deploy(root_with(lambda: Package("requests", venv=str(missing))), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == (
        f"cannot install requests: {missing} is no venv (no bin/python)"
    )
    assert outcome.error.where == "Root > Package('requests')"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Package("requests"), "Package 'requests' has no venv to install into"),
        (
            lambda: Package("requests>=2", venv="/v"),
            "Package needs a distribution name (like 'requests' or 'requests[socks]'), "
            "got 'requests>=2'",
        ),
        (
            lambda: Package("requests", version=">=2", venv="/v"),
            "Package version must be one version (like '2.1.0'), got '>=2'",
        ),
    ],
)
def test_bad_package_arguments_are_configure_errors(
    tmp_path: Path, make: Callable[[], Package], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(root_with(make), tmp_path)

    assert info.value.message == message
    assert info.value.hint
    assert info.value.where is not None and info.value.where.startswith("Root > Package(")


BROKEN_URL_MESSAGE = "cannot tell its user name and password from its host"


@pytest.mark.parametrize(
    ("kw", "message", "hint"),
    [
        ({"timeout": 0}, "Package.timeout must be a positive number of seconds, got 0", "timeout=60"),
        ({"timeout": -5}, "Package.timeout must be a positive number of seconds, got -5", "timeout=60"),
        (
            {"timeout": "soon"},
            "Package.timeout must be a positive number of seconds, got 'soon'",
            "timeout=60",
        ),
        ({"timeout": True}, "Package.timeout must be a positive number of seconds, got True", "timeout=60"),
        (
            {"index": "ftp://u:s3cret@mirror.example.com/simple"},
            "Package index= must be an http(s) or file URL or a path, "
            "got 'ftp://u:***@mirror.example.com/simple'",
            "https://host/simple",
        ),
        (
            {"index": "https://deploy:s3cr/et@pypi.example.com/simple"},
            f"cannot parse the index= URL 'https://deploy:***@pypi.example.com/simple': "
            f"{BROKEN_URL_MESSAGE}",
            "percent-encode / # ? @ in the password (%2F, %23, %3F, %40)",
        ),
        (
            {"find_links": ["/srv/wheels", "/srv/my wheels"]},
            "Package find_links= must be an http(s) or file URL or a path, got '/srv/my wheels'",
            "without spaces",
        ),
        (
            {"find_links": "https://u:s3cr#et@files.example.com/wheels/"},
            f"cannot parse the find_links= URL 'https://u:***@files.example.com/wheels/': "
            f"{BROKEN_URL_MESSAGE}",
            "percent-encode",
        ),
        (
            {"find_links": "git+https://example.com/wheels"},
            "Package find_links= must be an http(s) or file URL or a path, "
            "got 'git+https://example.com/wheels'",
            "file:///srv/wheels",
        ),
    ],
)
def test_bad_timeouts_and_package_sources_are_configure_errors(
    tmp_path: Path, kw: dict[str, Any], message: str, hint: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: Package("app", venv="/v", **kw)), tmp_path)

    assert info.value.message == message
    assert hint in (info.value.hint or "")
    assert info.value.where == "Root > Package('app')"
    assert "s3cr" not in str(info.value)


@pytest.mark.parametrize(
    "arg",
    [
        "--index-url",
        "--index-url=https://u:s3cret@pypi.example.com/simple",
        "--index=https://pypi.example.com/simple",
        "--extra-index-url",
        "--find-links=/srv/wheels",
        "-i",
        "-ihttps://u:s3cret@pypi.example.com/simple",
        "-f",
        "-Uf",
    ],
)
def test_pip_args_naming_an_index_or_find_links_are_refused(tmp_path: Path, arg: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: Package("app", venv="/v", pip_args=(arg,))), tmp_path)

    assert info.value.message == (
        f"Package pip_args must not name an index or find-links, got {mask_url(arg)!r}"
    )
    assert "index=" in (info.value.hint or "") and "find_links=" in (info.value.hint or "")
    assert "s3cret" not in str(info.value)


def test_other_pip_args_and_good_sources_are_taken(tmp_path: Path) -> None:
    root = configure(
        root_with(
            lambda: Package(
                "app",
                venv="/v",
                pip_args=("--no-index", "-U", "-rrequirements-if.txt", "--no-deps"),
                index="https://u:p%2Fw@pypi.example.com/simple",
                find_links=["wheels", "file:///srv/wheels", "https://files.example.com/"],
                timeout="2.5",
            )
        ),
        tmp_path,
    )

    (package,) = root.sub_components
    assert package._index == "https://u:p%2Fw@pypi.example.com/simple"
    assert package._links == [
        f"{workdir(tmp_path)}/wheels", "file:///srv/wheels", "https://files.example.com/"
    ]
    assert package._timeout == "2.5"


def test_a_venv_python_that_cannot_say_what_is_installed_is_a_clear_error(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        "echo 'Fatal Python error: init_fs_encoding: failed to get the Python codec' >&2\n"
        "exit 1\n"
    )
    python.chmod(0o755)

    outcome, _ = deploy(root_with(lambda: Package("app", venv=str(venv))), tmp_path)

    error = outcome.error
    assert isinstance(error, CommandError)
    assert error.message == (
        f"cannot ask {python} which version of app is installed: "
        "Fatal Python error: init_fs_encoding: failed to get the Python codec"
    )
    assert "importlib" not in str(error)
    assert error.hint is not None and f"remove {venv}" in error.hint
    assert error.where == "Root > Package('app')"

    python.write_text("#!/bin/sh\necho 'not json'\n")
    outcome, _ = deploy(root_with(lambda: Package("app", venv=str(venv))), tmp_path)
    assert isinstance(outcome.error, CommandError)
    assert outcome.error.message == (
        f"cannot ask {python} which version of app is installed: "
        "it printed 'not json', not versions"
    )


def test_index_credentials_stay_out_of_the_log(tmp_path: Path) -> None:
    # A "venv" whose python records its arguments and fails like pip would.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(
        "#!/bin/sh\n"
        'case "$*" in *" pip "*) echo "ERROR: 401 for $PIP_INDEX_URL" >&2; exit 1;; esac\n'
        "echo '[]'\n"
    )
    (venv / "bin" / "python").chmod(0o755)
    index = "https://deploy:s3cret@pypi.example.com/simple"

    outcome, run = deploy(
        root_with(lambda: Package("app", version="1", venv=str(venv), index=index)), tmp_path
    )

    assert isinstance(outcome.error, DeployError)
    assert "s3cret" not in str(outcome.error)
    assert "https://deploy:***@pypi.example.com/simple" in outcome.error.message
    assert all("s3cret" not in entry.message for entry in run.log)
    assert any("index https://deploy:***@pypi.example.com/simple" in e.message for e in run.log)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("1.0", "1.0.0", True),
        ("1.0", "1", True),
        ("1.0RC1", "1.0rc1", True),
        ("1.0-1", "1.0.post1", True),
        ("v2.0", "2.0", True),
        ("1.0", "1.0.1", False),
        ("1.0a1", "1.0", False),
        ("1.0+local", "1.0", False),
        ("weird", "weird", True),
    ],
)
def test_version_key(a: str, b: str, equal: bool) -> None:
    assert (version_key(a) == version_key(b)) is equal


def test_normalize_name() -> None:
    assert normalize_name("Tiny_Pkg") == normalize_name("tiny.pkg") == "tiny-pkg"
