"""Service discovery across hosts through the real console scripts: build
once, push the waves in order, see what changed when DNS changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deployments import deployment, git_commit
from tests.keys import signing_key

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "CONSIGN_SIGN_KEY": str(signing_key().private),
}


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, env=ENV)
    if check and completed.returncode != 0:
        raise AssertionError(f"{args} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return completed


def apply_json(repo: Path, host: str, root: Path) -> dict[str, object]:
    completed = run(
        "executor", "apply", f"bundles/prod/{host}.bundle", "--host", host,
        "--target-dir", str(root / host / "target"), "--state-dir", str(root / host / "state"),
        "--trust", str(signing_key().trust), "--json", cwd=repo,
    )
    data: dict[str, object] = json.loads(completed.stdout)
    return data


COMPONENTS = {
    "web": """
        from batou.component import Component
        from batou.lib.file import File

        class Web(Component):
            def configure(self):
                self.app = self.require_one("app")
                self.db = self.require_one("db")
                self += File("upstream.conf", content=(
                    "app {{component.app.connect}} via {{component.app.listen}}\\n"
                    "db {{component.db.address.connect}} via {{component.db.address.listen}}\\n"
                ))
        """,
    "app": """
        from batou.component import Component
        from batou.lib.file import File
        from batou.utils import Address

        class App(Component):
            def configure(self):
                self.db = self.require_one("db")
                self.address = Address("app.example.com:8080")
                self.provide("app", self.address)
                self += File("app.conf", content="db {{component.db.address.connect}}\\n")
        """,
    "db": """
        from batou.component import Component, Attribute
        from batou.utils import Address

        class Db(Component):
            port = Attribute(int, default=5432)

            def configure(self):
                self.address = Address("db.example.com", self.port)
                self.provide("db", self)
        """,
}

PROD = """
    [environment]
    target_directory = /srv/shop

    [hosts]
    web1 = web
    web2 = app
    web3 = db

    [component:db]
    port = 6432

    [resolver]
    app.example.com = 10.0.0.9
    db.example.com = 10.0.0.5
    """


def test_a_fleet_builds_once_applies_in_waves_and_diffs_a_dns_change(tmp_path: Path) -> None:
    repo = deployment(tmp_path / "repo", components=COMPONENTS, environments={"prod": PROD})
    git_commit(repo)

    built = run("bundle", "build", "prod", cwd=repo)
    assert built.stdout.count("built ") == 3
    assert (
        "waves    hosts that provide for other hosts apply first (push in this order):\n"
        "  1. web3\n"
        "  2. web2\n"
        "  3. web1\n"
    ) in built.stdout

    inspected = run("bundle", "inspect", "bundles/prod/web1.bundle", cwd=repo)
    assert "applies after web2/app, web3/db (other hosts)" in inspected.stdout
    pinned = run("bundle", "inspect", "bundles/prod/web2.bundle", cwd=repo)
    assert "dns pinned   1 name: app.example.com" in pinned.stdout

    hosts = tmp_path / "hosts"
    for host in ("web3", "web2", "web1"):
        assert apply_json(repo, host, hosts)["status"] == "ok"
    assert (hosts / "web1/target/work/web/upstream.conf").read_text() == (
        "app app.example.com:8080 via 10.0.0.9:8080\n"
        "db db.example.com:6432 via 10.0.0.5:6432\n"
    )
    assert (hosts / "web2/target/work/app/app.conf").read_text() == "db db.example.com:6432\n"
    assert apply_json(repo, "web1", hosts)["changed"] == []

    # The database moves: the bundles say so before anything is pushed.
    shutil.copy(repo / "bundles/prod/web2.bundle", tmp_path / "web2-old.bundle")
    cfg = repo / "environments/prod/environment.cfg"
    cfg.write_text(cfg.read_text().replace("app.example.com = 10.0.0.9", "app.example.com = 10.0.0.19"))
    git_commit(repo, "app moves", when=1_700_000_100)
    run("bundle", "build", "prod", cwd=repo)

    diff = run("bundle", "diff", str(tmp_path / "web2-old.bundle"), "bundles/prod/web2.bundle", cwd=repo)
    assert "dns.app.example.com.v4: ['10.0.0.9'] -> ['10.0.0.19']" in diff.stdout
    assert "resolver.app.example.com: ['10.0.0.9'] -> ['10.0.0.19']" in diff.stdout
    as_json = json.loads(
        run(
            "bundle", "diff", "--json", str(tmp_path / "web2-old.bundle"),
            "bundles/prod/web2.bundle", cwd=repo,
        ).stdout
    )
    assert {"path": "dns.app.example.com.v4", "old": ["10.0.0.9"], "new": ["10.0.0.19"]} in as_json[
        "model"
    ]

    assert apply_json(repo, "web1", hosts)["status"] == "ok"
    assert "app app.example.com:8080 via 10.0.0.19:8080\n" in (
        hosts / "web1/target/work/web/upstream.conf"
    ).read_text()


def test_a_build_with_discovery_errors_reports_them_all_and_writes_nothing(tmp_path: Path) -> None:
    components = {
        **COMPONENTS,
        "db": COMPONENTS["db"].replace('self.provide("db", self)', 'self.provide("dbb", self)'),
    }
    repo = deployment(tmp_path / "repo", components=components, environments={"prod": PROD})
    git_commit(repo)

    failed = run("bundle", "build", "prod", cwd=repo, check=False)

    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == "the build found 3 errors; nothing was written"
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: App (components/app/component.py:7): requires 'db', which no component provides",
        "error: Db on web3: provides 'dbb', which no component requires",
        # App failed before it provided: nothing reached web1 either.
        "error: Web (components/web/component.py:6): requires 'app', which no component provides",
    ]
    assert not (repo / "bundles").exists()
