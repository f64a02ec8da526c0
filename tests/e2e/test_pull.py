"""bundle publish and executor pull through a real nginx on loopback.

Three hosts (web1, web2, web3) each have their own state and target
directory and pull from one nginx that serves what ``bundle publish``
wrote. nginx's access log (one JSON object per request: path, status,
bytes sent) shows exactly what each pull fetched. The steps build on each
other (module-scoped fixtures, in order): first pulls, a change for web2
only, a pull with nothing new, ``publish --refresh``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from executor.bundle import open_unverified
from executor.pointer import Pointer, read_pointer
from tests.deployments import deployment, git_commit
from tests.keys import signing_key
from tests.nginx import Nginx, Request, nginx_unavailable, running_nginx

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
HOSTS = ("web1", "web2", "web3")
# The snapshot's file times are the build time: pinned, so that two builds
# of the same components ship the same repository blob (reproducible builds).
EPOCH = "1700000000"
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "CONSIGN_SIGN_KEY": str(signing_key().private),
    "SOURCE_DATE_EPOCH": EPOCH,
}

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self.colour = self.host.data.get("colour", "blue")
            self += File("app.conf", content="{{host.name}} colour={{component.colour}}\\n")
    """

MOTD = """
    from batou.component import Component
    from batou.lib.file import File

    class Motd(Component):
        def configure(self):
            self += File("motd", content="Welcome to {{host.name}}.\\n")
    """


def environment(web2_colour: str) -> str:
    return f"""
        [environment]
        require_v6 = false

        [host:web1]
        components = app, motd

        [host:web2]
        components = app, motd
        data-colour = {web2_colour}

        [host:web3]
        components = app, motd
        """


def run(*args: str | Path, cwd: Path, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False, env=env
    )
    if completed.returncode != 0:
        raise AssertionError(f"{args} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return completed


@dataclass(frozen=True)
class Pulled:
    """One ``executor pull --json``: its output, and what nginx served it."""

    data: dict[str, Any]
    requests: list[Request]


@dataclass(frozen=True)
class Fleet:
    root: Path
    nginx: Nginx

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def destination(self) -> Path:
        return self.nginx.root / "prod"

    @property
    def url(self) -> str:
        return f"{self.nginx.url}/prod"

    def host_dir(self, host: str) -> Path:
        return self.root / "hosts" / host

    def target(self, host: str) -> Path:
        return self.host_dir(host) / "target"

    def state(self, host: str) -> Path:
        return self.host_dir(host) / "state"

    def pointer(self, host: str) -> Pointer:
        path = self.destination / "hosts" / f"{host}.pointer"
        return read_pointer(path.read_bytes(), str(path))

    def bundle_blobs(self, host: str) -> dict[str, str]:
        bundle = open_unverified(str(self.repo / "bundles" / "prod" / f"{host}.bundle"))
        return {entry.name: entry.sha256 for entry in bundle.manifest.blobs}

    def build(self, serial: int, *extra: str) -> None:
        run("bundle", "build", "prod", "--dirty", "--serial", str(serial), *extra, cwd=self.repo)

    def publish(self, *extra: str) -> dict[str, Any]:
        completed = run("bundle", "publish", "prod", self.destination, "--json", *extra, cwd=self.repo)
        data: dict[str, Any] = json.loads(completed.stdout)
        return data

    def pull(self, host: str) -> Pulled:
        mark = self.nginx.mark()
        completed = run(
            "executor", "pull", self.url,
            "--host", host,
            "--trust", signing_key().trust,
            "--state-dir", self.state(host),
            "--target-dir", self.target(host),
            "--runtime-dir", os.environ["CONSIGN_RUNTIME_DIR"],
            "--json",
            cwd=self.root,
        )  # fmt: skip
        data: dict[str, Any] = json.loads(completed.stdout)
        return Pulled(data, self.nginx.requests(mark, at_least=data["requests"]))

    def status(self, host: str) -> dict[str, Any]:
        completed = run("executor", "status", "--state-dir", self.state(host), "--json", cwd=self.root)
        data: dict[str, Any] = json.loads(completed.stdout)
        return data


def served(pulled: Pulled) -> list[tuple[str, int]]:
    return [(r.path, r.status) for r in pulled.requests]


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    reason = nginx_unavailable()
    if reason:
        pytest.skip(reason)
    with running_nginx(tmp_path_factory.mktemp("nginx"), tmp_path_factory.mktemp("www")) as server:
        yield server


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, nginx: Nginx) -> Fleet:
    """web1..web3 built (serial 1000) and published; nothing pulled yet."""
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), nginx)
    deployment(
        fleet.repo,
        components={"app": APP, "motd": MOTD},
        environments={"prod": environment("blue")},
    )
    fleet.build(1000)
    published = fleet.publish()
    assert [(h["host"], h["serial"]) for h in published["hosts"]] == [(h, 1000) for h in HOSTS]
    return fleet


@pytest.fixture(scope="module")
def first(fleet: Fleet) -> dict[str, Pulled]:
    return {host: fleet.pull(host) for host in HOSTS}


@pytest.fixture(scope="module")
def second(fleet: Fleet, first: dict[str, Pulled]) -> dict[str, Pulled]:
    """web2's colour changes (its model only); web2 is built and published again."""
    deployment(fleet.repo, environments={"prod": environment("green")})
    fleet.build(2000, "--host", "web2")
    published = fleet.publish("--host", "web2")
    assert [(h["host"], h["serial"]) for h in published["hosts"]] == [("web2", 2000)]
    return {host: fleet.pull(host) for host in HOSTS}


@dataclass(frozen=True)
class Idle:
    pulled: Pulled
    status: dict[str, Any]


@pytest.fixture(scope="module")
def idle(fleet: Fleet, second: dict[str, Pulled]) -> Idle:
    pulled = fleet.pull("web2")
    return Idle(pulled, fleet.status("web2"))


@dataclass(frozen=True)
class Refreshed:
    before: dict[str, Pointer]
    after: dict[str, Pointer]
    published: dict[str, Any]
    pulled: dict[str, Pulled]


@pytest.fixture(scope="module")
def refreshed(fleet: Fleet, idle: Idle) -> Refreshed:
    before = {host: fleet.pointer(host) for host in HOSTS}
    # nginx's validators (ETag: mtime and size; Last-Modified) have a
    # resolution of one second: a pointer rewritten within the second it was
    # fetched in would look unchanged.
    newest = max((fleet.destination / "hosts" / f"{h}.pointer").stat().st_mtime for h in HOSTS)
    time.sleep(max(0.0, newest + 1.1 - time.time()))
    # Not the default 7d: the expiry changes even within the second of the publish.
    published = fleet.publish("--refresh", "--expires-in", "8d")
    after = {host: fleet.pointer(host) for host in HOSTS}
    return Refreshed(before, after, published, {host: fleet.pull(host) for host in HOSTS})


def test_each_host_pulls_and_applies_its_own_bundle(fleet: Fleet, first: dict[str, Pulled]) -> None:
    for host in HOSTS:
        pulled = first[host]
        data = pulled.data
        assert (data["host"], data["status"]) == (host, "ok"), data
        assert data["apply"]["generation"] == 1
        assert data["pointer"]["serial"] == 1000
        digest = data["pointer"]["manifest"]
        blobs = fleet.bundle_blobs(host)
        assert data["downloaded"] == [f"manifests/{digest}"] + [
            f"blobs/{blobs[name]}" for name in ("repo", "runtime", "model")
        ]
        # The pointer, then exactly what it says was downloaded.
        assert served(pulled) == [(f"/prod/hosts/{host}.pointer", 200)] + [
            (f"/prod/{path}", 200) for path in data["downloaded"]
        ]
        assert data["requests"] == len(pulled.requests)
        assert data["received_bytes"] == sum(r.body_bytes_sent for r in pulled.requests)
        target = fleet.target(host)
        assert (target / "work/app/app.conf").read_text() == f"{host} colour=blue\n"
        assert (target / "work/motd/motd").read_text() == f"Welcome to {host}.\n"


def test_a_change_for_web2_only_fetches_web2_s_pointer_manifest_and_model(
    fleet: Fleet, first: dict[str, Pulled], second: dict[str, Pulled]
) -> None:
    web2 = second["web2"].data
    digest = web2["pointer"]["manifest"]
    assert digest != first["web2"].data["pointer"]["manifest"]
    old, new = first["web2"].data["downloaded"], fleet.bundle_blobs("web2")
    assert f"blobs/{new['model']}" not in old
    assert (web2["status"], web2["pointer"]["serial"], web2["apply"]["generation"]) == ("ok", 2000, 2)
    assert web2["downloaded"] == [f"manifests/{digest}", f"blobs/{new['model']}"]
    assert served(second["web2"]) == [
        ("/prod/hosts/web2.pointer", 200),
        (f"/prod/manifests/{digest}", 200),
        (f"/prod/blobs/{new['model']}", 200),
    ]
    assert (fleet.target("web2") / "work/app/app.conf").read_text() == "web2 colour=green\n"
    for host in ("web1", "web3"):
        data = second[host].data
        assert (data["status"], data["apply"], data["downloaded"]) == ("no-change", None, [])
        assert data["pointer"] == first[host].data["pointer"]
        # The pointer did not change: nginx answers the conditional request with 304.
        assert served(second[host]) == [(f"/prod/hosts/{host}.pointer", 304)]
        assert second[host].requests[0].if_none_match
        assert (data["requests"], data["received_bytes"]) == (1, 0)
        assert (fleet.target(host) / "work/app/app.conf").read_text() == f"{host} colour=blue\n"


def test_a_pull_with_nothing_new_is_one_small_request_and_is_the_last_run(
    second: dict[str, Pulled], idle: Idle
) -> None:
    data = idle.pulled.data
    assert (data["status"], data["requests"], data["downloaded"]) == ("no-change", 1, [])
    (request,) = idle.pulled.requests
    assert (request.path, request.status) == ("/prod/hosts/web2.pointer", 304)
    assert request.bytes_sent < 2048

    last = idle.status["last_run"]
    digest = second["web2"].data["pointer"]["manifest"]
    assert (last["kind"], last["result"], last["error"]) == ("pull", "ok", None)
    assert (last["host"], last["bundle"], last["serial"], last["generation"]) == ("web2", digest, 2000, 2)
    assert last["bundle_path"] == data["url"]
    assert idle.status["last_success"] == last
    assert idle.status["current"]["number"] == 2


def test_publish_refresh_resigns_the_pointers_and_the_next_pull_changes_nothing(
    fleet: Fleet, refreshed: Refreshed
) -> None:
    assert refreshed.published["refresh"] is True
    for host in HOSTS:
        before, after = refreshed.before[host], refreshed.after[host]
        assert (after.serial, after.manifest, after.host) == (before.serial, before.manifest, host)
        assert after.expires > before.expires
        assert after.expires - after.issued == 8 * 86400

        pulled = refreshed.pulled[host]
        data = pulled.data
        assert (data["status"], data["apply"], data["downloaded"]) == ("no-change", None, [])
        assert data["pointer"]["expires"] == after.expires
        # The re-signed pointer is new to the host: fetched in full, alone.
        assert served(pulled) == [(f"/prod/hosts/{host}.pointer", 200)]
        status = fleet.status(host)
        assert (status["last_run"]["kind"], status["last_run"]["result"]) == ("pull", "ok")


def test_a_commit_that_changes_only_the_environment_downloads_only_the_model(
    tmp_path: Path, nginx: Nginx
) -> None:
    # As users build: clean commits, serial and file times from the commit,
    # no SOURCE_DATE_EPOCH. environments/ is not shipped, so a commit that
    # only changes it changes the host's model, and a pull fetches that alone.
    env = {k: v for k, v in ENV.items() if k != "SOURCE_DATE_EPOCH"}
    repo = deployment(
        tmp_path / "repo",
        components={"app": APP, "motd": MOTD},
        environments={"prod": environment("blue")},
        files={".gitignore": "bundles/\n"},
    )
    git_commit(repo, when=1_700_000_000)
    destination = nginx.root / "git"
    host = tmp_path / "web2"

    def pull() -> dict[str, Any]:
        completed = run(
            "executor", "pull", f"{nginx.url}/git", "--host", "web2",
            "--trust", signing_key().trust,
            "--state-dir", host / "state", "--target-dir", host / "target",
            "--runtime-dir", os.environ["CONSIGN_RUNTIME_DIR"], "--json",
            cwd=tmp_path, env=env,
        )  # fmt: skip
        data: dict[str, Any] = json.loads(completed.stdout)
        return data

    run("bundle", "build", "prod", "--host", "web2", cwd=repo, env=env)
    run("bundle", "publish", "prod", destination, "--host", "web2", cwd=repo, env=env)
    assert pull()["status"] == "ok"

    deployment(repo, environments={"prod": environment("green")})
    git_commit(repo, "web2 turns green", when=1_700_000_100)
    run("bundle", "build", "prod", "--host", "web2", cwd=repo, env=env)
    run("bundle", "publish", "prod", destination, "--host", "web2", cwd=repo, env=env)
    data = pull()

    bundle = open_unverified(str(repo / "bundles/prod/web2.bundle"))
    model = next(entry.sha256 for entry in bundle.manifest.blobs if entry.name == "model")
    assert data["status"] == "ok"
    assert (host / "target/work/app/app.conf").read_text() == "web2 colour=green\n"
    repo_blob = next(entry.sha256 for entry in bundle.manifest.blobs if entry.name == "repo")
    assert f"blobs/{repo_blob}" not in data["downloaded"], (
        "the repository blob changed although no shipped file did: its file times are the "
        "commit's, so every commit ships the whole repository again"
    )
    assert data["downloaded"] == [f"manifests/{bundle.digest}", f"blobs/{model}"]
