"""The key rotation procedure of docs/security.md, end to end through the
console scripts: add a new key, sign with both, retire the old one; a
bundle signed only by the retired key is then refused and the host stays
as it was (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deployments import deployment, git_commit

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="release\\n")
    """


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, env=ENV)
    if check and completed.returncode != 0:
        raise AssertionError(f"{args} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return completed


def generate(directory: Path, name: str) -> tuple[Path, str]:
    """A key and its allowed_signers line, as 'bundle keys generate' prints it."""
    trust = directory / f"{name}.allowed"
    run("bundle", "keys", "generate", str(directory / name), "--trust-file", str(trust), cwd=directory)
    return directory / name, trust.read_text().strip()


def snapshot(root: Path) -> dict[str, bytes]:
    """What a refused bundle must leave as it was: the deployed files and
    the state that decides what the host accepts and runs."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not relative.endswith(("audit.log", "lock", "status.json")):
            found[relative] = path.read_bytes()
    return found


def test_rotation_add_sign_with_both_retire_old(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    old, old_line = generate(keys, "old")
    new, new_line = generate(keys, "new")
    repo = deployment(
        tmp_path / "repo",
        components={"app": APP},
        environments={"prod": "[hosts]\nweb1 = app\n"},
        files={".gitignore": "bundles/\n"},
    )
    git_commit(repo)
    host = tmp_path / "host"
    trust = tmp_path / "allowed_signers"
    revoked = tmp_path / "revoked_keys"
    revoked.write_text("")

    def build(serial: int, *signing: Path) -> None:
        run("bundle", "build", "prod", "--serial", str(serial),
            *[arg for key in signing for arg in ("--sign-key", str(key))], cwd=repo)

    def apply(check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            "executor", "apply", "bundles/prod/web1.bundle", "--host", "web1", "--json",
            "--target-dir", str(host / "target"), "--state-dir", str(host / "state"),
            "--trust", str(trust), "--revoked", str(revoked), cwd=repo, check=check,
        )

    # Before: the hosts trust the old key only.
    trust.write_text(old_line + "\n")
    build(100, old)
    assert json.loads(apply().stdout)["status"] == "ok"

    # 1. Add the new key on the hosts, next to the old one.
    trust.write_text(old_line + "\n" + new_line + "\n")
    # 2. Sign with both: hosts that trust either accept.
    build(101, old, new)
    assert json.loads(apply().stdout)["status"] == "ok"
    trust.write_text(old_line + "\n")
    assert json.loads(apply().stdout)["status"] == "ok"  # a host not yet updated
    trust.write_text(new_line + "\n")
    assert json.loads(apply().stdout)["status"] == "ok"  # a host already without the old key

    # 3. Retire the old key: remove its line and revoke it; sign with the new one only.
    revoked.write_text(old.with_suffix(".pub").read_text())
    build(102, new)
    assert json.loads(apply().stdout)["status"] == "ok"
    before = snapshot(host)

    # 4. A newer bundle signed only by the retired key is refused; nothing changes.
    build(103, old)
    refused = apply(check=False)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "untrusted"
    assert "no signature this host trusts" in error["message"]
    assert snapshot(host) == before
    # Even where its line was left in allowed_signers by mistake, revocation wins.
    trust.write_text(old_line + "\n" + new_line + "\n")
    refused = apply(check=False)
    assert refused.returncode == 3
    assert "revoked" in json.loads(refused.stdout)["error"]["message"]
    assert snapshot(host) == before
