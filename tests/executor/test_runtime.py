"""The bundle's runtime on the host: the right Python, a private venv made once per digest."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from executor.apply import ApplyStatus, apply_bundle
from executor.bundle import VerifiedBundle
from executor.child import template_cache
from executor.cli import app
from executor.errors import RuntimeFailure, StateError
from executor.runtime import READY, find_python, prepare_runtime, runtime_directory
from tests.deployments import apply_options, build_bundles, deployment, verified
from tests.keys import signing_key

OWN = f"{sys.version_info.major}.{sys.version_info.minor}"


APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="x\\n")
    """


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = deployment(
        tmp_path_factory.mktemp("runtime") / "repo",
        components={"app": APP},
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = app\n"},
    )
    build_bundles("prod", repo)
    return repo / "bundles/prod/web1.bundle"


@pytest.fixture(scope="module")
def bundle(bundle_path: Path) -> VerifiedBundle:
    return verified(bundle_path)


@pytest.fixture(scope="module")
def prepared(bundle: VerifiedBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runtime directory in which the bundle's runtime was made."""
    directory = tmp_path_factory.mktemp("prepared") / "runtimes"
    prepare_runtime(bundle, directory)
    return directory


def digest(bundle: VerifiedBundle) -> str:
    entry = bundle.manifest.blob("runtime")
    assert entry is not None
    return entry.sha256


def fake_python(directory: Path, name: str, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(0o755)
    return path


def forbid_subprocesses(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(command: Any, *args: Any, **kw: Any) -> Any:
        raise AssertionError(f"ran {command} for a runtime that exists")

    monkeypatch.setattr(subprocess, "run", forbidden)


# -- which Python ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, OWN])
def test_the_executor_s_own_python_serves_its_own_version(version: str | None) -> None:
    assert find_python(version) == sys.executable


def test_another_version_is_found_by_name_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = fake_python(tmp_path / "bin", "python3.98", "3.98")
    fake_python(tmp_path / "bin", "python3", "3.98")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    assert find_python("3.98") == str(wanted)


def test_python3_serves_when_it_has_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python3 = fake_python(tmp_path / "bin", "python3", "3.98")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    assert find_python("3.98") == str(python3)


def test_a_missing_version_says_what_to_install_or_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # python3.98 that is another version (a pyenv shim, say) does not count.
    fake_python(tmp_path / "bin", "python3.98", "3.97")
    fake_python(tmp_path / "bin", "python3", OWN)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    with pytest.raises(RuntimeFailure) as caught:
        find_python("3.98")

    assert caught.value.message == (
        f"this bundle's runtime needs Python 3.98, and this host has none "
        f"(the executor runs Python {OWN})"
    )
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("install python3.98, or build the bundle")
    assert f"[host:NAME] python = {OWN}" in caught.value.hint
    assert "'executor inspect-platform'" in caught.value.hint


def running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def missing(version: str) -> str:
    return (
        f"this bundle's runtime needs Python {version}, and this host has none "
        f"(the executor runs Python {OWN})"
    )


def spying_python(directory: Path, name: str, version: str, ran: Path) -> Path:
    """A fake python that notes it was run."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho \"$0\" >> {ran}\necho {version}\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777])
def test_a_python_in_a_directory_others_can_write_is_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    ran = tmp_path / "ran"
    spying_python(tmp_path / "open", "python3.98", "3.98", ran)
    (tmp_path / "open").chmod(mode)
    monkeypatch.setenv("PATH", str(tmp_path / "open"))

    with pytest.raises(RuntimeFailure) as caught:
        find_python("3.98")

    assert caught.value.message == missing("3.98")
    # Not even asked for its version: whoever wrote it decides what that runs.
    assert not ran.exists()


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_python_file_others_can_write_is_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    ran = tmp_path / "ran"
    spying_python(tmp_path / "bin", "python3.98", "3.98", ran).chmod(mode)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    with pytest.raises(RuntimeFailure) as caught:
        find_python("3.98")

    assert caught.value.message == missing("3.98")
    assert not ran.exists()


def test_a_link_to_a_python_in_a_directory_others_can_write_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The link is what would run: whoever can write its directory can point it
    # elsewhere after the check, so a trusted target does not make it trusted.
    trusted = fake_python(tmp_path / "bin", "python3.98", "3.98")
    (tmp_path / "open").mkdir()
    (tmp_path / "open/python3.98").symlink_to(trusted)
    (tmp_path / "open").chmod(0o777)
    monkeypatch.setenv("PATH", str(tmp_path / "open"))

    with pytest.raises(RuntimeFailure) as caught:
        find_python("3.98")

    assert caught.value.message == missing("3.98")


def test_a_link_in_a_trusted_directory_to_a_trusted_python_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = fake_python(tmp_path / "opt/python/bin", "python3.98", "3.98")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/python3.98").symlink_to(trusted)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    # The interpreter's own file: a link changed later redirects nothing.
    assert find_python("3.98") == str(trusted)


def test_a_link_to_a_python_others_can_write_is_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "ran"
    target = spying_python(tmp_path / "open", "python3.98", "3.98", ran)
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/python3.98").symlink_to(target)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    with pytest.raises(RuntimeFailure) as caught:
        find_python("3.98")

    assert caught.value.message == missing("3.98")
    assert not ran.exists()


def test_an_untrusted_python3_x_gives_way_to_a_trusted_python3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "ran"
    spying_python(tmp_path / "open", "python3.98", "3.98", ran)
    (tmp_path / "open").chmod(0o777)
    python3 = fake_python(tmp_path / "bin", "python3", "3.98")
    monkeypatch.setenv("PATH", f"{tmp_path / 'open'}{os.pathsep}{tmp_path / 'bin'}")

    assert find_python("3.98") == str(python3)
    assert not ran.exists()


def test_an_untrusted_python3_x_first_on_path_is_passed_over_for_a_trusted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "ran"
    spying_python(tmp_path / "open", "python3.98", "3.98", ran)
    (tmp_path / "open").chmod(0o777)
    trusted = fake_python(tmp_path / "bin", "python3.98", "3.98")
    monkeypatch.setenv("PATH", f"{tmp_path / 'open'}{os.pathsep}{tmp_path / 'bin'}")

    assert find_python("3.98") == str(trusted)
    assert not ran.exists()


def test_relative_path_entries_are_never_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_python(tmp_path / "bin", "python3.98", "3.98")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "bin")

    with pytest.raises(RuntimeFailure) as caught:
        find_python("3.98")

    assert caught.value.message == missing("3.98")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")
@pytest.mark.parametrize("given_away", ["the python", "its directory"])
def test_a_python_owned_by_another_user_is_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_away: str
) -> None:
    ran = tmp_path / "ran"
    python = spying_python(tmp_path / "bin", "python3.98", "3.98", ran)
    os.chown(python if given_away == "the python" else python.parent, 65534, 65534)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    with pytest.raises(RuntimeFailure) as caught:
        find_python("3.98")

    assert caught.value.message == missing("3.98")
    assert not ran.exists()


def test_the_own_python_is_used_whatever_path_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "ran"
    spying_python(tmp_path / "bin", f"python{OWN}", OWN, ran)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    assert find_python(OWN) == sys.executable
    assert not ran.exists()


def test_the_runtime_directory_defaults_below_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runtime_directory(str(tmp_path / "state"), None) == tmp_path / "state/runtimes"
    monkeypatch.chdir(tmp_path)
    # Absolute: the runtime runs in another working directory.
    assert runtime_directory("state", None) == tmp_path / "state/runtimes"
    assert runtime_directory("state", "elsewhere") == tmp_path / "elsewhere"


# -- making the runtime environment -----------------------------------------------------


def test_the_runtime_is_made_once_and_holds_the_runtime_not_the_executor(
    bundle: VerifiedBundle, prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = prepared / digest(bundle)
    python = final / "venv/bin/python"
    assert (final / READY).is_file()
    assert python.exists()
    assert stat.S_IMODE(prepared.stat().st_mode) == 0o700
    # Only the finished environment: no work directory, no pex, no PEX_ROOT.
    assert sorted(p.name for p in prepared.iterdir()) == [digest(bundle)]
    assert not list(final.glob("*.pex"))
    assert not (final / "pex-root").exists()

    imports = subprocess.run(
        [str(python), "-I", "-c", "import executor.child, batou.component, jinja2, msgpack, dns"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert imports.returncode == 0, imports.stderr
    # The host executor's own dependencies are not the runtime's.
    for name in ("typer", "zstandard", "cryptography"):
        completed = subprocess.run(
            [str(python), "-I", "-c", f"import {name}"], capture_output=True, check=False
        )
        assert completed.returncode != 0, f"{name} is importable in the runtime"

    forbid_subprocesses(monkeypatch)
    assert prepare_runtime(bundle, prepared) == python


def test_only_a_prepared_runtime_keeps_compiled_templates(
    bundle: VerifiedBundle, prepared: Path, tmp_path: Path
) -> None:
    final = prepared / digest(bundle)
    assert template_cache(str(final / "venv"), sys.base_prefix) == final / "template-cache"
    # A developer's venv, or the system's Python: nothing is written beside it.
    (tmp_path / "venv").mkdir()
    assert template_cache(str(tmp_path / "venv"), sys.base_prefix) is None
    assert template_cache(sys.base_prefix, sys.base_prefix) is None


def test_the_runtime_is_made_offline_and_outside_home(
    bundle: VerifiedBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "runtimes"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PEX_ROOT", str(home / ".pex"))
    commands: list[tuple[list[str], dict[str, str]]] = []
    real_run = subprocess.run

    def recording(command: list[str], *args: Any, **kw: Any) -> Any:
        commands.append((command, kw.get("env") or {}))
        return real_run(command, *args, **kw)

    monkeypatch.setattr(subprocess, "run", recording)
    python = prepare_runtime(bundle, directory)
    monkeypatch.undo()

    final = directory / digest(bundle)
    assert python == final / "venv/bin/python"
    assert (final / READY).is_file()
    completed = subprocess.run([str(python), "-c", "import executor.child"], check=False)
    assert completed.returncode == 0
    ((command, environment),) = commands
    assert command[0] == sys.executable
    assert command[2:4] == ["venv", "--site-packages-copies"]
    assert environment["PEX_TOOLS"] == "1"
    # Never under $HOME, never the caller's PEX_ROOT.
    assert environment["PEX_ROOT"].startswith(str(directory))
    assert list(home.iterdir()) == []
    assert [p.name for p in directory.iterdir()] == [final.name]


def test_a_half_made_runtime_directory_is_replaced(
    bundle: VerifiedBundle, tmp_path: Path
) -> None:
    directory = tmp_path / "runtimes"
    leftover = directory / digest(bundle)
    (leftover / "venv/bin").mkdir(parents=True)
    (leftover / "venv/bin/python").write_text("half a python")
    (leftover / "junk").write_text("from an interrupted run")
    directory.chmod(0o700)

    python = prepare_runtime(bundle, directory)

    assert python == leftover / "venv/bin/python"
    assert (leftover / READY).is_file()
    assert not (leftover / "junk").exists()
    completed = subprocess.run([str(python), "-c", "import executor.child"], check=False)
    assert completed.returncode == 0
    assert [p.name for p in directory.iterdir()] == [leftover.name]


def test_a_runtime_whose_python_is_gone_is_made_again(
    bundle: VerifiedBundle, tmp_path: Path
) -> None:
    directory = tmp_path / "runtimes"
    broken = directory / digest(bundle)
    (broken / "venv/bin").mkdir(parents=True)
    (broken / "venv/bin/python").symlink_to(tmp_path / "removed/python3")
    (broken / READY).write_text("")
    directory.chmod(0o700)

    python = prepare_runtime(bundle, directory)

    assert python == broken / "venv/bin/python"
    assert python.exists()
    completed = subprocess.run([str(python), "-c", "import executor.child"], check=False)
    assert completed.returncode == 0
    assert [p.name for p in directory.iterdir()] == [broken.name]


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_runtime_directory_others_can_write_is_refused(
    bundle: VerifiedBundle, tmp_path: Path, mode: int
) -> None:
    directory = tmp_path / "runtimes"
    directory.mkdir()
    directory.chmod(mode)

    with pytest.raises(StateError) as caught:
        prepare_runtime(bundle, directory)

    assert caught.value.message == (
        f"the runtime directory {directory} is writable by others (mode {mode:o})"
    )
    assert caught.value.hint == (
        f"chmod 700 {directory}: whoever writes it decides the code that applies bundles"
    )
    assert list(directory.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_a_runtime_directory_of_another_user_is_refused(
    bundle: VerifiedBundle, tmp_path: Path
) -> None:
    directory = tmp_path / "runtimes"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)

    with pytest.raises(StateError) as caught:
        prepare_runtime(bundle, directory)

    assert caught.value.message == (
        f"the runtime directory {directory} belongs to uid 65534, not to the executor's uid 0"
    )
    assert caught.value.hint == f"chown 0 {directory}, or use a directory of the executor's own"
    assert list(directory.iterdir()) == []


def test_a_runtime_directory_that_cannot_be_made_is_a_runtime_failure(
    bundle: VerifiedBundle, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(RuntimeFailure) as caught:
        prepare_runtime(bundle, blocker / "runtimes")

    assert caught.value.message == (
        f"cannot make the runtime directory {blocker / 'runtimes'}: Not a directory"
    )
    assert caught.value.hint == (
        "run as root, or pass --state-dir / --runtime-dir with a writable directory"
    )


def test_a_made_runtime_in_a_directory_others_can_write_is_not_used(
    bundle: VerifiedBundle, prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_subprocesses(monkeypatch)
    prepared.chmod(0o777)
    try:
        with pytest.raises(StateError) as caught:
            prepare_runtime(bundle, prepared)
    finally:
        prepared.chmod(0o700)

    # Checked on every use, not only when the runtime is made.
    assert caught.value.message == (
        f"the runtime directory {prepared} is writable by others (mode 777)"
    )
    assert caught.value.hint == (
        f"chmod 700 {prepared}: whoever writes it decides the code that applies bundles"
    )


def test_a_runtime_another_apply_finished_meanwhile_is_kept(
    bundle: VerifiedBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "runtimes"
    final = directory / digest(bundle)
    real_run = subprocess.run

    def and_another_apply(command: Any, *args: Any, **kw: Any) -> Any:
        completed = real_run(command, *args, **kw)
        if "venv" in command:
            # Meanwhile another executor finished the same runtime.
            (final / "venv/bin").mkdir(parents=True)
            (final / "venv/bin/python").symlink_to(sys.executable)
            (final / "in-use").write_text("")
            (final / READY).write_text("")
        return completed

    monkeypatch.setattr(subprocess, "run", and_another_apply)
    python = prepare_runtime(bundle, directory)

    # The other apply's runtime, untouched; this one's work directory is gone.
    assert python == final / "venv/bin/python"
    assert (final / "in-use").exists()
    assert (final / READY).is_file()
    assert (final / "venv/bin/python").readlink() == Path(sys.executable)
    assert [p.name for p in directory.iterdir()] == [final.name]


def test_making_the_runtime_past_its_time_fails_and_leaves_nothing(
    bundle: VerifiedBundle, tmp_path: Path
) -> None:
    directory = tmp_path / "runtimes"
    started = time.monotonic()

    # pex takes longer than this to start, let alone to make a venv.
    with pytest.raises(RuntimeFailure) as caught:
        prepare_runtime(bundle, directory, timeout=0.1)

    assert caught.value.message == f"cannot make the runtime environment from {bundle.path}"
    assert caught.value.hint == "making the environment took longer than the 0.1s it had"
    assert time.monotonic() - started < 10
    assert list(directory.iterdir()) == []
    # Nothing goes on writing there after the failure.
    time.sleep(0.5)
    assert list(directory.iterdir()) == []


def test_a_runtime_that_hangs_while_made_is_stopped_at_the_timeout(
    bundle: VerifiedBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "runtimes"
    pid_file = tmp_path / "hanging.pid"
    real_run = subprocess.run
    limits: list[float | None] = []

    def hanging(command: Any, *args: Any, **kw: Any) -> Any:
        if "venv" not in command:
            return real_run(command, *args, **kw)
        limits.append(kw.get("timeout"))
        # Half a venv, then nothing: a pex that hangs on a stuck file system.
        destination = command[-1]
        hang = (
            "import os, sys, time; os.makedirs(sys.argv[1] + '/bin'); "
            "open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(60)"
        )
        return real_run([sys.executable, "-c", hang, destination, str(pid_file)], *args, **kw)

    monkeypatch.setattr(subprocess, "run", hanging)
    started = time.monotonic()
    with pytest.raises(RuntimeFailure) as caught:
        prepare_runtime(bundle, directory, timeout=1.5)
    elapsed = time.monotonic() - started
    monkeypatch.undo()

    assert limits == [1.5]
    assert caught.value.message == f"cannot make the runtime environment from {bundle.path}"
    assert caught.value.hint == "making the environment took longer than the 1.5s it had"
    assert 1.5 <= elapsed < 10
    assert list(directory.iterdir()) == []
    # The hanging process was stopped, not left behind.
    assert not running(int(pid_file.read_text()))


def test_apply_with_a_timeout_shorter_than_making_the_runtime_fails_before_running(
    bundle_path: Path, tmp_path: Path
) -> None:
    runtimes = tmp_path / "runtimes"

    with pytest.raises(RuntimeFailure) as caught:
        apply_bundle(
            apply_options(bundle_path, tmp_path, timeout=0.1, runtime_directory=str(runtimes))
        )

    assert caught.value.message == f"cannot make the runtime environment from {bundle_path}"
    # The time left of the run's 0.1 s, which started before the runtime.
    assert caught.value.hint is not None
    assert re.fullmatch(
        r"making the environment took longer than the 0\.\d+s it had", caught.value.hint
    ), caught.value.hint
    assert list(runtimes.iterdir()) == []
    assert not (tmp_path / "target").exists()


# -- where apply makes it ---------------------------------------------------------------


def test_apply_uses_the_runtime_directory_it_is_given(
    bundle: VerifiedBundle, bundle_path: Path, prepared: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        [
            "apply", str(bundle_path), "--host", "web1", "--runtime-dir", str(prepared),
            "--target-dir", str(tmp_path / "target"), "--state-dir", str(tmp_path / "state"),
            "--trust", str(signing_key().trust),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "ok: 2 components changed" in result.stdout
    assert (tmp_path / "target/work/app/app.conf").read_text() == "x\n"
    assert not (tmp_path / "state/runtimes").exists()
    assert [p.name for p in prepared.iterdir()] == [digest(bundle)]


def test_a_dry_run_makes_a_missing_runtime_elsewhere_and_leaves_the_host_alone(
    bundle_path: Path, tmp_path: Path
) -> None:
    runtimes = tmp_path / "runtimes"

    result = apply_bundle(
        apply_options(bundle_path, tmp_path, dry_run=True, runtime_directory=str(runtimes))
    )

    assert result.status is ApplyStatus.OK, result.error
    conf = tmp_path / "target/work/app/app.conf"
    assert result.changed == (
        f"App > File('{conf}') > Presence('{conf}')",
        f"App > File('{conf}') > Content('{conf}')",
    )
    assert not runtimes.exists()
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "target").exists()
