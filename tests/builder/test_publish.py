"""bundle publish: the static layout hosts pull from (pointers, manifests,
blobs), written in an order a reader can never catch half-done."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builder.errors import BuildError
from builder.publish import DEFAULT_EXPIRES_IN, PublishOptions, PublishResult, parse_duration, publish
from executor.bundle import BundleReader, open_unverified
from executor.errors import ConsignError, ErrorList
from executor.pointer import Pointer, verify_pointer
from executor.verify import load_trust
from tests.deployments import build_bundles, deployment
from tests.keys import signing_key

NOW = 1_700_000_000

APP = """
    from batou.component import Component, Attribute
    from batou.lib.file import File

    class App(Component):
        release = Attribute(str, default="0")

        def configure(self):
            self += File("app.conf", content="release {{component.release}}\\n")
    """

ENV = """
    [environment]
    target_directory = /srv/app

    [hosts]
    web1 = app
    web2 = app

    [component:app]
    release = {release}
    """


@dataclass(frozen=True)
class Builds:
    repo: Path
    # Serial 100, then serial 200 with another release of the app.
    older: Path
    newer: Path


def _build(repo: Path, out: Path, serial: int) -> Path:
    (repo / "environments/prod/environment.cfg").write_text(
        textwrap.dedent(ENV).lstrip("\n").format(release=serial // 100)
    )
    build_bundles("prod", repo, serial=serial, out=out)
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    base = tmp_path_factory.mktemp("builds")
    repo = deployment(base / "repo", components={"app": APP})
    (repo / "environments/prod").mkdir()
    return Builds(repo, _build(repo, base / "older", 100), _build(repo, base / "newer", 200))


def options(builds: Builds, destination: Path, out: Path | None = None, **kw: Any) -> PublishOptions:
    kw.setdefault("sign_keys", (signing_key().private,))
    kw.setdefault("now", NOW)
    return PublishOptions(
        "prod", destination, repository=builds.repo, out=out or builds.older, **kw
    )


def bundle(out: Path, host: str) -> BundleReader:
    return open_unverified(str(out / "prod" / f"{host}.bundle"))


def stored(reader: BundleReader, index: int) -> bytes:
    """The stored bytes of the manifest's blob `index`, straight from the file."""
    data = Path(reader.path).read_bytes()
    offset = reader.envelope.blobs_offset + sum(b.size for b in reader.manifest.blobs[:index])
    return data[offset : offset + reader.manifest.blobs[index].size]


def files(destination: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(destination)): p.read_bytes()
        for p in sorted(destination.rglob("*"))
        if p.is_file()
    }


def verified(destination: Path, host: str, now: int = NOW) -> Pointer:
    trust, _notes = load_trust(str(signing_key().trust))
    pointer, _signer = verify_pointer(
        (destination / "hosts" / f"{host}.pointer").read_bytes(), host, trust, now, host, "prod"
    )
    return pointer


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    return tmp_path.resolve() / "www"


def test_publish_writes_pointers_manifests_and_blobs_named_by_digest(
    builds: Builds, destination: Path
) -> None:
    result = publish(options(builds, destination))

    readers = {host: bundle(builds.older, host) for host in ("web1", "web2")}
    assert [h.host for h in result.hosts] == ["web1", "web2"]
    assert sorted(os.listdir(destination / "hosts")) == ["web1.pointer", "web2.pointer"]
    assert sorted(os.listdir(destination / "manifests")) == sorted(r.digest for r in readers.values())
    assert sorted(os.listdir(destination / "blobs")) == sorted(
        {b.sha256 for r in readers.values() for b in r.manifest.blobs}
    )
    for host, reader in readers.items():
        header = Path(reader.path).read_bytes()[: reader.envelope.blobs_offset]
        assert (destination / "manifests" / reader.digest).read_bytes() == header
        for index, entry in enumerate(reader.manifest.blobs):
            data = (destination / "blobs" / entry.sha256).read_bytes()
            assert data == stored(reader, index)
            assert hashlib.sha256(data).hexdigest() == entry.sha256
        assert verified(destination, host) == Pointer(
            host=host,
            environment="prod",
            serial=100,
            manifest=reader.digest,
            manifest_size=len(header),
            issued=NOW,
            expires=NOW + DEFAULT_EXPIRES_IN,
        )
    for path in destination.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_the_result_lists_what_each_host_wrote(builds: Builds, destination: Path) -> None:
    result = publish(options(builds, destination))

    web1, web2 = bundle(builds.older, "web1"), bundle(builds.older, "web2")
    first, second = result.hosts
    assert (first.host, first.serial, first.manifest) == ("web1", 100, web1.digest)
    assert first.expires == NOW + DEFAULT_EXPIRES_IN
    assert first.written == (
        *(f"blobs/{b.sha256}" for b in web1.manifest.blobs),
        f"manifests/{web1.digest}",
    )
    assert first.written_bytes == web1.envelope.size
    # web2 shares what web1 already wrote (the runtime, at least).
    shared = {b.sha256 for b in web1.manifest.blobs}
    own = [b for b in web2.manifest.blobs if b.sha256 not in shared]
    assert len(own) < len(web2.manifest.blobs)
    assert second.written == (*(f"blobs/{b.sha256}" for b in own), f"manifests/{web2.digest}")
    assert second.written_bytes == web2.envelope.blobs_offset + sum(b.size for b in own)
    assert result.to_json()["hosts"][0]["written"] == list(first.written)


def test_publishing_the_same_build_again_writes_nothing_new(
    builds: Builds, destination: Path
) -> None:
    publish(options(builds, destination))
    before = {
        p: p.stat().st_ino for p in destination.rglob("*") if p.is_file() and p.parent.name != "hosts"
    }

    again = publish(options(builds, destination, now=NOW + 60))

    assert [(h.written, h.written_bytes) for h in again.hosts] == [((), 0), ((), 0)]
    after = {
        p: p.stat().st_ino for p in destination.rglob("*") if p.is_file() and p.parent.name != "hosts"
    }
    assert after == before
    # Only the pointers are signed again, with the new time.
    assert verified(destination, "web1", NOW + 60).issued == NOW + 60


def test_a_newer_build_shares_the_blobs_that_did_not_change(
    builds: Builds, destination: Path
) -> None:
    publish(options(builds, destination))
    before = files(destination)

    result = publish(options(builds, destination, out=builds.newer))

    kept = {b.sha256 for host in ("web1", "web2") for b in bundle(builds.older, host).manifest.blobs}
    for published in result.hosts:
        newer = bundle(builds.newer, published.host)
        new = [b for b in newer.manifest.blobs if b.sha256 not in kept]
        kept |= {b.sha256 for b in new}
        assert 0 < len(new) < len(newer.manifest.blobs)
        assert published.written == (
            *(f"blobs/{b.sha256}" for b in new),
            f"manifests/{newer.digest}",
        )
        assert verified(destination, published.host).serial == 200
    after = files(destination)
    # What the older build published is still there, byte for byte.
    for name, data in before.items():
        if not name.startswith("hosts/"):
            assert after[name] == data, name


def test_an_older_bundle_over_a_newer_pointer_is_refused(builds: Builds, destination: Path) -> None:
    publish(options(builds, destination, out=builds.newer))
    before = files(destination)

    with pytest.raises(BuildError) as caught:
        publish(options(builds, destination))

    assert caught.value.message == (
        f"{destination}/hosts/web1.pointer already points at serial 200, newer than this "
        "bundle's 100"
    )
    assert caught.value.hint == (
        "hosts would refuse the older bundle anyway; build from a newer commit "
        "(to roll back on purpose, commit the old state again and build that)"
    )
    assert files(destination) == before


def test_refresh_re_signs_with_a_new_expiry_keeping_serial_and_digest(
    builds: Builds, destination: Path
) -> None:
    publish(options(builds, destination))
    old = verified(destination, "web1")
    before = files(destination)

    result = publish(options(builds, destination, refresh=True, now=NOW + 1000, expires_in=3600))

    assert result.refresh
    new = verified(destination, "web1", NOW + 1000)
    assert new == Pointer(
        old.host, old.environment, old.serial, old.manifest, old.manifest_size, NOW + 1000, NOW + 4600
    )
    assert [(h.host, h.serial, h.expires, h.written) for h in result.hosts] == [
        ("web1", 100, NOW + 4600, ()),
        ("web2", 100, NOW + 4600, ()),
    ]
    after = files(destination)
    assert {k: v for k, v in after.items() if not k.startswith("hosts/")} == {
        k: v for k, v in before.items() if not k.startswith("hosts/")
    }


def test_refresh_without_a_published_pointer_is_refused(builds: Builds, destination: Path) -> None:
    with pytest.raises(BuildError) as caught:
        publish(options(builds, destination, refresh=True, hosts=("web1",)))

    assert caught.value.message == (
        f"there is no published pointer for host 'web1' at {destination}/hosts/web1.pointer"
    )
    assert caught.value.hint == (
        "publish the bundles first ('bundle publish ENV DEST' without --refresh)"
    )
    assert not destination.exists()


def test_refresh_of_a_pointer_whose_manifest_is_gone_is_refused(
    builds: Builds, destination: Path
) -> None:
    publish(options(builds, destination))
    digest = bundle(builds.older, "web1").digest
    (destination / "manifests" / digest).unlink()
    pointer = (destination / "hosts/web1.pointer").read_bytes()

    with pytest.raises(BuildError) as caught:
        publish(options(builds, destination, refresh=True, hosts=("web1",), now=NOW + 10))

    assert caught.value.message == (
        f"{destination}/hosts/web1.pointer names manifest {digest[:16]}, which is not in "
        f"{destination}/manifests"
    )
    assert caught.value.hint == "publish the bundles again without --refresh"
    assert (destination / "hosts/web1.pointer").read_bytes() == pointer


def test_an_expiry_under_a_minute_is_refused(builds: Builds, destination: Path) -> None:
    with pytest.raises(BuildError) as caught:
        publish(options(builds, destination, expires_in=59))

    assert caught.value.message == "--expires-in must be at least 60 seconds, got 59"
    assert caught.value.hint == (
        "pointers must outlive the time hosts take to pull them (default 7 days)"
    )
    assert not destination.exists()
    assert publish(options(builds, destination, expires_in=60)).hosts[0].expires == NOW + 60


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("30m", 1800), ("12h", 43200), ("7d", 604800), (" 7D ", 604800), ("0", 0)],
)
def test_a_duration_is_seconds_or_a_number_with_a_unit(text: str, seconds: int) -> None:
    assert parse_duration(text, "--expires-in") == seconds


@pytest.mark.parametrize("text", ["7 days", "", "-1", "1.5h", "h", "12w", "\u00b2"])
def test_anything_else_is_no_duration(text: str) -> None:
    with pytest.raises(BuildError) as caught:
        parse_duration(text, "--expires-in")

    assert caught.value.message == (
        f"--expires-in must be a duration like 3600, 30m, 12h or 7d, got {text!r}"
    )


def test_an_unknown_host_is_refused_naming_the_hosts(builds: Builds, destination: Path) -> None:
    with pytest.raises(BuildError) as caught:
        publish(options(builds, destination, hosts=("web3",)))

    assert caught.value.message == "--host 'web3' is not a host of environment 'prod'"
    assert caught.value.hint == "its hosts: web1, web2"
    assert not destination.exists()


def test_a_missing_bundle_names_the_host_and_says_to_build(
    builds: Builds, destination: Path, tmp_path: Path
) -> None:
    empty = tmp_path.resolve() / "empty"
    (empty / "prod").mkdir(parents=True)

    with pytest.raises(BuildError) as caught:
        publish(options(builds, destination, out=empty, hosts=("web1",)))

    assert caught.value.message == f"there is no bundle for host 'web1' in {empty}/prod"
    assert caught.value.hint == "run 'bundle build prod' first"

    with pytest.raises(ErrorList) as both:
        publish(options(builds, destination, out=empty))

    assert both.value.message == "2 problems; nothing was published"
    assert [e.message for e in both.value.errors] == [
        f"there is no bundle for host 'web1' in {empty}/prod",
        f"there is no bundle for host 'web2' in {empty}/prod",
    ]
    assert not destination.exists()


def test_a_damaged_bundle_is_refused_before_anything_is_written(
    builds: Builds, destination: Path, tmp_path: Path
) -> None:
    out = tmp_path.resolve() / "out"
    shutil.copytree(builds.older, out)
    # web1 is fine; the last blob of web2 has one byte flipped.
    path = out / "prod/web2.bundle"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = bundle(out, "web2")
    entry = reader.manifest.blobs[-1]
    actual = hashlib.sha256(stored(reader, len(reader.manifest.blobs) - 1)).hexdigest()

    with pytest.raises(ConsignError) as caught:
        publish(options(builds, destination, out=out))

    assert caught.value.message == (
        f"{path}: blob {entry.name!r} does not match its sha256: "
        f"the manifest says {entry.sha256}, the blob has {actual}"
    )
    assert not destination.exists()


@pytest.fixture
def renames(monkeypatch: pytest.MonkeyPatch, destination: Path) -> Iterator[list[str]]:
    """Every file put in place below the destination, in order."""
    done: list[str] = []
    rename = os.rename

    def recorded(source: Any, target: Any, *args: Any, **kw: Any) -> None:
        rename(source, target, *args, **kw)
        if Path(target).is_relative_to(destination):
            done.append(str(Path(target).relative_to(destination)))

    monkeypatch.setattr(os, "rename", recorded)
    yield done


def test_blobs_and_manifest_are_in_place_before_the_pointer_names_them(
    builds: Builds, destination: Path, renames: list[str]
) -> None:
    publish(options(builds, destination))

    web1, web2 = bundle(builds.older, "web1"), bundle(builds.older, "web2")
    shared = {b.sha256 for b in web1.manifest.blobs}
    assert renames == [
        *(f"blobs/{b.sha256}" for b in web1.manifest.blobs),
        f"manifests/{web1.digest}",
        "hosts/web1.pointer",
        *(f"blobs/{b.sha256}" for b in web2.manifest.blobs if b.sha256 not in shared),
        f"manifests/{web2.digest}",
        "hosts/web2.pointer",
    ]


def test_the_layout_is_readable_by_a_web_server_under_a_strict_umask(
    builds: Builds, destination: Path
) -> None:
    previous = os.umask(0o077)
    try:
        publish(options(builds, destination))
    finally:
        os.umask(previous)

    # The files are 0644 for the web server's user; so must the directories be
    # that lead to them.
    for directory in ("hosts", "manifests", "blobs"):
        assert stat.S_IMODE((destination / directory).stat().st_mode) == 0o755, directory
    for path in destination.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_the_result_to_json(builds: Builds, destination: Path) -> None:
    result: PublishResult = publish(options(builds, destination, hosts=("web2",)))

    data = result.to_json()
    assert data["environment"] == "prod"
    assert data["destination"] == str(destination)
    assert data["refresh"] is False
    assert [h["host"] for h in data["hosts"]] == ["web2"]
    assert sorted(os.listdir(destination / "hosts")) == ["web2.pointer"]
