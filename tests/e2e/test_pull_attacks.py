"""The pull attacks of reference/threats.md, served by a real nginx.

A host (web1) pulled and applied build A (serial 1000). Each test copies
that host and a published layout (build A, or A and then B, serial 2000,
where web1's model changed) into a directory nginx serves, changes the
layout as an attacker who controls the server would, and pulls. Every pull
must be refused with the reason, and the host unchanged: its state.msgpack
byte for byte, its target directory, generations and store; the run is
recorded as refused (audit log, status). Attacks that need a valid
signature get one from the test key, so that only the defence under test
can refuse them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builder.publish import PublishOptions, publish
from builder.signing import generate_key, load_signer
from executor.apply import ApplyOptions
from executor.bundle import open_unverified
from executor.errors import BundleError, RefusedError, RollbackError, SignatureError
from executor.pointer import Pointer, PointerError, PointerExpired, encode_pointer, read_pointer
from executor.pull import PullOptions, PullResult, pull
from tests.deployments import build_bundles, deployment
from tests.keys import signing_key
from tests.nginx import Nginx, nginx_unavailable, running_nginx

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self.colour = self.host.data.get("colour", "blue")
            self += File("app.conf", content="{{host.name}} colour={{component.colour}}\\n")
    """


def environment(web1_colour: str) -> str:
    return f"""
        [environment]
        require_v6 = false

        [host:web1]
        components = app
        data-colour = {web1_colour}

        [host:web2]
        components = app
        """


@dataclass(frozen=True)
class Fleet:
    """Builds A (serial 1000) and B (2000, web1 turns green), and two
    published layouts: A, and A then B."""

    root: Path
    nginx: Nginx

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    def out(self, build: str) -> Path:
        return self.root / "out" / build

    def layout(self, name: str) -> Path:
        return self.root / "layouts" / name

    @property
    def attacker_key(self) -> Path:
        return self.root / "keys" / "attacker"

    def publish(self, destination: Path, build: str, **kw: Any) -> None:
        kw.setdefault("sign_keys", (signing_key().private,))
        publish(PublishOptions("prod", destination, repository=self.repo, out=self.out(build), **kw))

    def serve(self, layout: str) -> tuple[Path, str]:
        """A fresh copy of a layout where nginx serves it, and its URL."""
        directory = Path(tempfile.mkdtemp(prefix=f"{layout}-", dir=self.nginx.root))
        directory.chmod(0o755)
        shutil.copytree(self.layout(layout), directory, dirs_exist_ok=True)
        return directory, f"{self.nginx.url}/{directory.name}"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    reason = nginx_unavailable()
    if reason:
        pytest.skip(reason)
    with running_nginx(tmp_path_factory.mktemp("nginx"), tmp_path_factory.mktemp("www")) as server:
        yield server


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, nginx: Nginx) -> Fleet:
    fleet = Fleet(tmp_path_factory.mktemp("pull-attacks"), nginx)
    generate_key(fleet.attacker_key, comment="attacker")
    deployment(fleet.repo, components={"app": APP}, environments={"prod": environment("blue")})
    build_bundles("prod", fleet.repo, out=fleet.out("a"), serial=1000)
    deployment(fleet.repo, environments={"prod": environment("green")})
    build_bundles("prod", fleet.repo, out=fleet.out("b"), serial=2000)
    fleet.publish(fleet.layout("a"), "a")
    shutil.copytree(fleet.layout("a"), fleet.layout("ab"))
    fleet.publish(fleet.layout("ab"), "b")
    return fleet


# Files every run may write, refused or not, and the pull's cache of the
# last valid pointer (a pointer refused later, at its manifest or blobs, was
# valid); blobs/ and incoming/ are checked on their own.
BOOKKEEPING = frozenset(
    {"audit.log", "status.json", "lock", "pointer", "pull.json", "blobs", "incoming"}
)
Entry = tuple[str, int, bytes]


def snapshot(root: Path, skip: frozenset[str] = frozenset()) -> dict[str, Entry]:
    """Every path below `root` (but `skip` at the top): kind, mode, content."""
    entries: dict[str, Entry] = {}
    for directory, names, files in os.walk(root):
        if Path(directory) == root:
            names[:] = [n for n in names if n not in skip]
            files = [n for n in files if n not in skip]
        for name in sorted(names + files):
            path = Path(directory, name)
            status = path.lstat()
            relative = str(path.relative_to(root))
            mode = stat.S_IMODE(status.st_mode)
            if stat.S_ISLNK(status.st_mode):
                entries[relative] = ("link", mode, os.readlink(path).encode())
            elif stat.S_ISDIR(status.st_mode):
                entries[relative] = ("dir", mode, b"")
            else:
                entries[relative] = ("file", mode, path.read_bytes())
    return entries


@dataclass
class Host:
    """web1: its state and target directory, and how it pulls."""

    root: Path
    metrics: Path | None = None

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def target(self) -> Path:
        return self.root / "target"

    def options(self, url: str, now: int | None = None) -> PullOptions:
        apply = ApplyOptions(
            bundle="",
            host="web1",
            target_directory=str(self.target),
            state_directory=str(self.state),
            trust_file=str(signing_key().trust),
            runtime_directory=os.environ["CONSIGN_RUNTIME_DIR"],
            metrics_path=None if self.metrics is None else str(self.metrics),
        )
        return PullOptions(url, apply, deadline=60, now=now)

    def pull(self, url: str, now: int | None = None) -> PullResult:
        return pull(self.options(url, now))

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.state / "audit.log").read_text().splitlines()]

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state / "status.json").read_text())
        return data


@dataclass(frozen=True)
class Before:
    state_file: bytes
    state: dict[str, Entry]
    target: dict[str, Entry]
    audit_lines: int
    last_success: dict[str, Any]


def remember(host: Host) -> Before:
    return Before(
        (host.state / "state.msgpack").read_bytes(),
        snapshot(host.state, BOOKKEEPING),
        snapshot(host.target),
        len(host.audit()),
        host.status()["last_success"],
    )


def assert_unchanged(host: Host, before: Before, code: str) -> None:
    """Nothing of the host changed; the pull is recorded as refused (`code`)."""
    assert (host.state / "state.msgpack").read_bytes() == before.state_file, "state.msgpack changed"
    assert snapshot(host.target) == before.target, "the target directory changed"
    assert snapshot(host.state, BOOKKEEPING) == before.state
    # Kept blobs are only ever ones that matched their signed sha256.
    for blob in (host.state / "blobs").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob
    assert list((host.state / "incoming").iterdir()) == []
    audit = host.audit()
    assert len(audit) == before.audit_lines + 1
    assert (audit[-1]["kind"], audit[-1]["result"]) == ("pull", "refused"), audit[-1]
    assert audit[-1]["error"]["code"] == code
    status = host.status()
    assert status["last_run"] == audit[-1]
    assert status["last_success"] == before.last_success


@pytest.fixture(scope="module")
def baseline(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """web1 after pulling build A."""
    root = tmp_path_factory.mktemp("baseline")
    _layout, url = fleet.serve("a")
    result = Host(root).pull(url)
    assert result.applied is not None and result.applied.error is None
    assert (result.pointer.serial, result.applied.generation) == (1000, 1)
    assert (root / "target/work/app/app.conf").read_text() == "web1 colour=blue\n"
    return root


@pytest.fixture
def host(baseline: Path, tmp_path: Path) -> Host:
    root = tmp_path / "host"
    shutil.copytree(baseline, root, symlinks=True)
    return Host(root)


def refused(host: Host, url: str, now: int | None = None) -> RefusedError:
    with pytest.raises(RefusedError) as caught:
        host.pull(url, now)
    return caught.value


def pointer_file(layout: Path, host: str) -> Path:
    return layout / "hosts" / f"{host}.pointer"


def pointer_of(layout: Path, host: str) -> Pointer:
    path = pointer_file(layout, host)
    return read_pointer(path.read_bytes(), str(path))


def signed(pointer: Pointer, key: Path) -> bytes:
    return encode_pointer(pointer, [load_signer(key).sign(pointer.payload())])


# -- rollback ------------------------------------------------------------------------


def test_an_old_pointer_replayed_after_a_newer_one_was_applied_is_refused(
    fleet: Fleet, host: Host
) -> None:
    layout, url = fleet.serve("a")
    old = pointer_file(layout, "web1").read_bytes()
    fleet.publish(layout, "b")
    newer = host.pull(url)
    assert newer.applied is not None and newer.applied.error is None
    assert (newer.pointer.serial, newer.applied.generation) == (2000, 2)
    assert (host.target / "work/app/app.conf").read_text() == "web1 colour=green\n"
    before = remember(host)

    pointer_file(layout, "web1").write_bytes(old)
    # As a mirror that kept the old file serves it: its own time, not the
    # second the newer one was fetched in (which nginx's ETag could not tell).
    os.utime(pointer_file(layout, "web1"), (1_600_000_000, 1_600_000_000))
    error = refused(host, url)

    assert isinstance(error, RollbackError)
    assert "points at serial 1000, older than serial 2000" in error.message
    assert_unchanged(host, before, "rollback")
    assert (host.target / "work/app/app.conf").read_text() == "web1 colour=green\n"


# -- freeze --------------------------------------------------------------------------


def test_an_expired_pointer_is_refused_and_shows_in_status_and_metrics(
    fleet: Fleet, host: Host
) -> None:
    layout, url = fleet.serve("ab")
    fresh = pointer_of(layout, "web1")
    now = int(time.time())
    expired = Pointer(
        fresh.host, fresh.environment, fresh.serial, fresh.manifest, fresh.manifest_size,
        issued=now - 7200, expires=now - 3600,
    )  # fmt: skip
    pointer_file(layout, "web1").write_bytes(signed(expired, signing_key().private))
    metrics = host.root / "metrics" / "consign.prom"
    metrics.parent.mkdir()
    config = host.root / "executor.toml"
    config.write_text(
        'host = "web1"\n'
        f'trust = "{signing_key().trust}"\n'
        f'state_dir = "{host.state}"\n'
        f'target_dir = "{host.target}"\n'
        f'runtime_dir = "{os.environ["CONSIGN_RUNTIME_DIR"]}"\n'
        f'metrics = "{metrics}"\n'
    )
    before = remember(host)

    pulled = subprocess.run(
        [str(BIN / "executor"), "pull", url, "--config", str(config), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert pulled.returncode == 3, pulled.stdout + pulled.stderr
    data = json.loads(pulled.stdout)
    assert (data["kind"], data["status"], data["error"]["code"]) == ("pull", "refused", "pointer-expired")
    assert "expired 36" in data["error"]["message"] and "s ago (serial 2000)" in data["error"]["message"]
    assert_unchanged(host, before, "pointer-expired")

    shown = subprocess.run(
        [str(BIN / "executor"), "status", "--config", str(config), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    status = json.loads(shown.stdout)
    last = status["last_run"]
    assert (last["kind"], last["result"], last["error"]["code"]) == ("pull", "refused", "pointer-expired")
    assert status["current"]["number"] == 1
    assert status["last_success"] == before.last_success
    lines = metrics.read_text().splitlines()
    assert 'consign_last_run_failed{host="web1"} 1' in lines
    assert 'consign_current_generation{host="web1"} 1' in lines


def test_a_pointer_served_past_its_expiry_is_refused_not_a_quiet_no_change(
    fleet: Fleet, host: Host
) -> None:
    layout, url = fleet.serve("a")
    # Pointers for what web1 runs already, valid for one minute.
    subprocess.run(
        [str(BIN / "bundle"), "publish", "prod", str(layout), "--refresh", "--expires-in", "60"],
        cwd=fleet.repo, capture_output=True, text=True, check=True,
        env={**os.environ, "CONSIGN_SIGN_KEY": str(signing_key().private)},
    )  # fmt: skip
    pointer = pointer_of(layout, "web1")
    assert pointer.expires - pointer.issued == 60
    host.metrics = host.root / "consign.prom"
    # Within its minute: nothing new, nothing refused; the host keeps its ETag.
    assert not host.pull(url, now=pointer.expires - 1).changed
    assert 'consign_last_run_failed{host="web1"} 0' in host.metrics.read_text().splitlines()
    before = remember(host)
    mark = fleet.nginx.mark()

    # The server goes on serving the same pointer (freeze): 304 Not Modified.
    error = refused(host, url, now=pointer.expires + 30)

    assert [(r.path, r.status) for r in fleet.nginx.requests(mark, at_least=1)] == [
        (f"/{layout.name}/hosts/web1.pointer", 304)
    ]
    assert isinstance(error, PointerExpired)
    assert error.code == "pointer-expired"
    assert "expired 30 s ago (serial 1000)" in error.message
    assert_unchanged(host, before, "pointer-expired")
    assert 'consign_last_run_failed{host="web1"} 1' in host.metrics.read_text().splitlines()


# -- wrong target --------------------------------------------------------------------


def test_another_host_s_pointer_is_refused_naming_both_hosts(fleet: Fleet, host: Host) -> None:
    layout, url = fleet.serve("ab")
    shutil.copyfile(pointer_file(layout, "web2"), pointer_file(layout, "web1"))
    before = remember(host)

    error = refused(host, url)

    assert isinstance(error, PointerError)
    assert "is for host 'web2', but this host is 'web1'" in error.message
    assert_unchanged(host, before, "bad-pointer")


def test_a_pointer_for_web1_naming_web2_s_manifest_is_refused(fleet: Fleet, host: Host) -> None:
    layout, url = fleet.serve("ab")
    web2 = pointer_of(layout, "web2")
    forged = Pointer(
        "web1", web2.environment, web2.serial, web2.manifest, web2.manifest_size,
        web2.issued, web2.expires,
    )  # fmt: skip
    pointer_file(layout, "web1").write_bytes(signed(forged, signing_key().private))
    before = remember(host)

    error = refused(host, url)

    assert isinstance(error, BundleError)
    assert f"manifests/{web2.manifest} is for 'web2' serial 2000, the pointer says 'web1'" in (
        error.message
    )
    assert_unchanged(host, before, "bad-bundle")


# -- mix and match -------------------------------------------------------------------


def test_a_manifest_swapped_for_an_older_one_is_refused(fleet: Fleet, host: Host) -> None:
    layout, url = fleet.serve("ab")
    new, old = pointer_of(layout, "web1"), pointer_of(fleet.layout("a"), "web1")
    assert new.manifest != old.manifest
    shutil.copyfile(layout / "manifests" / old.manifest, layout / "manifests" / new.manifest)
    before = remember(host)

    error = refused(host, url)

    assert isinstance(error, BundleError)
    assert "is not the manifest the pointer names" in error.message
    assert f"digest {old.manifest[:16]}, the pointer says {new.manifest[:16]}" in error.message
    assert_unchanged(host, before, "bad-bundle")


def test_a_replaced_blob_is_refused_and_nothing_is_applied(fleet: Fleet, host: Host) -> None:
    layout, url = fleet.serve("ab")
    bundle = open_unverified(str(fleet.out("b") / "prod" / "web1.bundle"))
    model = next(entry.sha256 for entry in bundle.manifest.blobs if entry.name == "model")
    assert not (host.state / "blobs" / model).exists()
    blob = layout / "blobs" / model
    original = blob.read_bytes()
    blob.write_bytes(bytes(b ^ 0xFF for b in original))
    before = remember(host)

    error = refused(host, url)

    assert isinstance(error, BundleError)
    assert f"blobs/{model} does not match its signed sha256" in error.message
    assert_unchanged(host, before, "bad-bundle")
    assert not (host.state / "blobs" / model).exists()
    assert (host.target / "work/app/app.conf").read_text() == "web1 colour=blue\n"


# -- arbitrary installation ----------------------------------------------------------


def test_a_pointer_signed_by_an_untrusted_key_is_refused(fleet: Fleet, host: Host) -> None:
    layout, url = fleet.serve("ab")
    pointer_file(layout, "web1").write_bytes(signed(pointer_of(layout, "web1"), fleet.attacker_key))
    before = remember(host)

    error = refused(host, url)

    assert isinstance(error, SignatureError)
    assert "has no signature this host trusts" in error.message
    assert_unchanged(host, before, "untrusted")
