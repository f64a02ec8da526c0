"""The example applied on a host that has only a stock python3 and no network.

The host gets the executor as one pex (``bundle executor-pex``) and runs it
with a bare virtual environment's python, in which neither the example's
requirement (SQLAlchemy) nor consign's dependencies can be imported: all of
it must come from the executor pex and the bundle's runtime.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from executor import __version__
from tests.deployments import git_commit
from tests.keys import signing_key

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e

# What the builder's side runs with: this installation's console scripts.
BUILDER_ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "CONSIGN_SIGN_KEY": str(signing_key().private),
}


def run(
    *args: str | Path, cwd: Path, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False, env=env
    )
    if check and completed.returncode != 0:
        raise AssertionError(
            f"{args} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}"
        )
    return completed


@dataclass(frozen=True)
class Host:
    """A host with a bare python, the executor pex, and the example's bundle."""

    root: Path
    python: Path
    executor: Path
    bundle: Path

    @property
    def env(self) -> dict[str, str]:
        # Nothing of the builder's installation: no PATH to it, no PYTHONPATH,
        # no consign variables; pex and HOME inside the host's own directory.
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.root / "home"),
            "PEX_ROOT": str(self.root / "pex-root"),
            "LANG": "C.UTF-8",
        }

    def apply(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return run(
            "unshare", "-n", self.python, self.executor,
            "apply", self.bundle, "--host", "localhost",
            "--trust", signing_key().trust,
            "--target-dir", self.root / "target", "--state-dir", self.root / "state",
            *extra,
            cwd=self.root, env=self.env,
        )


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    if subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare -n is not permitted here (needs root or user namespaces)")
    base = tmp_path_factory.mktemp("runtime-e2e")
    repo = base / "example"
    for name in ("components", "environments"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("requirements.txt", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    git_commit(repo)
    run("bundle", "build", "local", cwd=repo, env=BUILDER_ENV)
    run("bundle", "executor-pex", "--out", base / "executor.pex", cwd=base, env=BUILDER_ENV)

    machine = base / "host"
    (machine / "home").mkdir(parents=True)
    # A stock python: a venv without pip made from the base interpreter.
    run(sys.executable, "-m", "venv", "--without-pip", machine / "bare", cwd=base, env=BUILDER_ENV)
    executor = machine / "executor.pex"
    shutil.copy(base / "executor.pex", executor)
    bundle = machine / "localhost.bundle"
    shutil.copy(repo / "bundles/local/localhost.bundle", bundle)
    return Host(machine, machine / "bare/bin/python", executor, bundle)


@pytest.mark.parametrize("module", ["sqlalchemy", "jinja2", "msgpack", "typer", "executor"])
def test_the_bare_python_imports_nothing_of_the_deployment_or_consign(
    host: Host, module: str
) -> None:
    completed = run(host.python, "-c", f"import {module}", cwd=host.root, env=host.env, check=False)

    assert completed.returncode != 0
    assert "ModuleNotFoundError" in completed.stderr


def test_the_example_applies_offline_from_the_executor_pex_and_again_changes_nothing(
    host: Host,
) -> None:
    first = host.apply()

    assert "ok: 8 components changed" in first.stdout
    assert "changed  Database" in first.stdout
    database = host.root / "target/work/database/app.sqlite"
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (2,)
        columns = [row[1] for row in connection.execute("PRAGMA table_info(items)")]
    assert columns == ["id", "name", "created"]

    second = host.apply()

    assert "ok: 0 components changed" in second.stdout
    assert "changed" not in second.stdout.replace("0 components changed", "")

    # The runtime was made once, under the state directory, and has the requirement.
    runtimes = list((host.root / "state/runtimes").iterdir())
    assert len(runtimes) == 1
    python = runtimes[0] / "venv/bin/python"
    imported = run(
        python, "-I", "-c", "import sqlalchemy; print(sqlalchemy.__version__)",
        cwd=host.root, env=host.env,
    )
    assert imported.stdout.strip() == "2.1.9"
    # Nothing under $HOME: pex and the runtime stay where they were told.
    assert list((host.root / "home").iterdir()) == []


def test_the_executor_pex_verifies_offline_and_says_its_version(host: Host) -> None:
    version = run(
        "unshare", "-n", host.python, host.executor, "--version", cwd=host.root, env=host.env
    )
    assert version.stdout == f"consign executor {__version__}\n"

    verified = run(
        "unshare", "-n", host.python, host.executor, "verify", host.bundle,
        "--host", "localhost", "--trust", signing_key().trust,
        "--state-dir", host.root / "verify-state",
        cwd=host.root, env=host.env,
    )
    assert "is a valid bundle for localhost (local)" in verified.stdout


def test_the_executor_pex_is_reproducible(host: Host, tmp_path: Path) -> None:
    again = tmp_path / "elsewhere" / "executor.pex"
    run("bundle", "executor-pex", "--out", again, cwd=tmp_path, env=BUILDER_ENV)

    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(
        host.executor.read_bytes()
    ).digest()
    assert os.access(again, os.X_OK)
