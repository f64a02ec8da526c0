"""executor pull against a published directory served by a server that
fails on purpose: what is fetched, what is applied, what is recorded."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import executor.pull
from builder.publish import PublishOptions, publish
from executor.apply import ApplyStatus
from executor.bundle import open_unverified
from executor.errors import RollbackError
from executor.fetch import Fetcher, FetchError
from executor.manifest import BlobEntry
from executor.pointer import PointerExpired, read_pointer
from executor.pull import PullOptions, PullResult, pull
from executor.state import load_state
from tests.deployments import apply_options, build_bundles, deployment
from tests.faulty_http import Endless, FaultyServer, Status, Trickle, Truncate, etag_of
from tests.keys import signing_key

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

    [component:app]
    release = {release}
    """


@dataclass(frozen=True)
class Release:
    """One build of the deployment, published on its own."""

    published: Path
    serial: int
    digest: str
    manifest_size: int
    blobs: tuple[BlobEntry, ...]

    @property
    def pointer(self) -> Path:
        return self.published / "hosts/web1.pointer"


@dataclass(frozen=True)
class Releases:
    first: Release
    second: Release

    def new_in_second(self) -> list[BlobEntry]:
        kept = {b.sha256 for b in self.first.blobs}
        return [b for b in self.second.blobs if b.sha256 not in kept]


def _release(repo: Path, base: Path, serial: int) -> Release:
    (repo / "environments/prod/environment.cfg").write_text(
        textwrap.dedent(ENV).lstrip("\n").format(release=serial // 100)
    )
    build_bundles("prod", repo, serial=serial, out=base / "bundles")
    published = base / "published"
    publish(
        PublishOptions(
            "prod",
            published,
            repository=repo,
            out=base / "bundles",
            sign_keys=(signing_key().private,),
        )
    )
    bundle = open_unverified(str(base / "bundles/prod/web1.bundle"))
    return Release(
        published, serial, bundle.digest, bundle.envelope.blobs_offset, bundle.manifest.blobs
    )


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    base = tmp_path_factory.mktemp("releases")
    repo = deployment(base / "repo", components={"app": APP})
    (repo / "environments/prod").mkdir(parents=True)
    first = _release(repo, base / "first", 100)
    second = _release(repo, base / "second", 200)
    assert 0 < len(Releases(first, second).new_in_second()) < len(second.blobs)
    return Releases(first, second)


@pytest.fixture
def server(releases: Releases) -> Iterator[FaultyServer]:
    with FaultyServer(releases.first.published) as running:
        yield running


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries in a pull wait for nothing; the delays are kept here."""
    waited: list[float] = []
    monkeypatch.setattr(executor.pull, "Fetcher", functools.partial(Fetcher, sleep=waited.append))
    return waited


def options(server: FaultyServer, tmp_path: Path, **kw: Any) -> PullOptions:
    return PullOptions(server.url, apply_options(tmp_path / "unused", tmp_path, host="web1"), **kw)


def blob_path(blob: BlobEntry) -> str:
    return f"/blobs/{blob.sha256}"


def app_conf(tmp_path: Path) -> str:
    return (tmp_path / "target/work/app/app.conf").read_text()


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "state/audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def status(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "state/status.json").read_text())
    return data


def assert_no_partial_files(tmp_path: Path) -> None:
    """STATE/incoming is empty; STATE/blobs holds only whole blobs, by digest."""
    assert os.listdir(tmp_path / "state/incoming") == []
    for kept in (tmp_path / "state/blobs").iterdir():
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == kept.name


def assert_failed_and_nothing_applied(tmp_path: Path, state_before: bytes) -> None:
    """A pull that failed to download: recorded as failed, and the target, the
    state and the generations as they were, with no partial file."""
    assert app_conf(tmp_path) == "release 1\n"
    assert (tmp_path / "state/state.msgpack").read_bytes() == state_before
    assert os.listdir(tmp_path / "state/generations") == ["1"]
    assert_no_partial_files(tmp_path)
    last = audit(tmp_path)[-1]
    assert (last["kind"], last["result"], last["error"]["code"]) == ("pull", "failed", "fetch-failed")
    assert status(tmp_path)["last_run"]["result"] == "failed"


def test_a_first_pull_downloads_the_bundle_and_applies_it(
    releases: Releases, server: FaultyServer, tmp_path: Path
) -> None:
    first = releases.first

    result = pull(options(server, tmp_path))

    assert result.changed
    assert result.applied is not None and result.applied.status is ApplyStatus.OK
    assert app_conf(tmp_path) == "release 1\n"
    assert result.pointer == read_pointer(first.pointer.read_bytes(), "")
    assert result.downloaded == (
        f"manifests/{first.digest}",
        *(f"blobs/{b.sha256}" for b in first.blobs),
    )
    assert server.paths() == [
        "/hosts/web1.pointer",
        f"/manifests/{first.digest}",
        *(blob_path(b) for b in first.blobs),
    ]
    assert result.requests == 2 + len(first.blobs)
    assert result.received_bytes == (
        first.pointer.stat().st_size + first.manifest_size + sum(b.size for b in first.blobs)
    )
    state = load_state(str(tmp_path / "state"))
    assert (state.current, state.highest_serial, state.bundle) == (1, 100, first.digest)
    assert sorted(os.listdir(tmp_path / "state/blobs")) == sorted(b.sha256 for b in first.blobs)
    assert_no_partial_files(tmp_path)
    assert result.to_json()["status"] == "ok"


def test_a_second_pull_is_one_conditional_request_answered_304(
    releases: Releases, server: FaultyServer, tmp_path: Path
) -> None:
    pull(options(server, tmp_path))
    server.clear()

    result = pull(options(server, tmp_path))

    assert not result.changed
    assert (result.requests, result.received_bytes, result.downloaded) == (1, 0, ())
    (request,) = server.requests
    assert request.path == "/hosts/web1.pointer"
    assert request.headers["If-None-Match"] == etag_of(releases.first.pointer.read_bytes())
    assert (request.status, request.sent) == (304, 0)
    assert result.pointer.serial == 100
    assert result.to_json()["status"] == "no-change"
    last = audit(tmp_path)[-1]
    assert (last["kind"], last["result"], last["generation"]) == ("pull", "ok", 1)


def test_a_blob_that_fails_twice_with_503_is_fetched_again_and_applied(
    releases: Releases, server: FaultyServer, tmp_path: Path, delays: list[float]
) -> None:
    runtime = max(releases.first.blobs, key=lambda b: b.size)
    server.script(blob_path(runtime), Status(503), Status(503))

    result = pull(options(server, tmp_path))

    assert result.applied is not None and result.applied.status is ApplyStatus.OK
    assert app_conf(tmp_path) == "release 1\n"
    assert [r.status for r in server.requests_for(blob_path(runtime))] == [503, 503, 200]
    assert len(delays) == 2
    assert result.downloaded.count(f"blobs/{runtime.sha256}") == 1


def test_a_blob_truncated_every_time_fails_cleanly_and_applies_nothing(
    releases: Releases, server: FaultyServer, tmp_path: Path, delays: list[float]
) -> None:
    pull(options(server, tmp_path))
    before = (tmp_path / "state/state.msgpack").read_bytes()
    server.serve(releases.second.published)
    broken = releases.new_in_second()[0]
    server.always(blob_path(broken), Truncate(broken.size // 2))

    with pytest.raises(FetchError) as caught:
        pull(options(server, tmp_path))

    assert caught.value.message == (
        f"cannot download {server.url}/blobs/{broken.sha256}: "
        f"the body ended after {broken.size // 2} of {broken.size} bytes"
    )
    assert len(server.requests_for(blob_path(broken))) == 5
    assert len(delays) == 4
    assert_failed_and_nothing_applied(tmp_path, before)
    assert audit(tmp_path)[-1]["error"]["message"] == caught.value.message
    assert status(tmp_path)["last_run"]["result"] == "failed"
    last_success = status(tmp_path)["last_success"]
    assert (last_success["result"], last_success["bundle"]) == ("ok", releases.first.digest)


def test_a_blob_trickled_past_the_deadline_fails_and_applies_nothing(
    releases: Releases, server: FaultyServer, tmp_path: Path, delays: list[float]
) -> None:
    pull(options(server, tmp_path))
    before = (tmp_path / "state/state.msgpack").read_bytes()
    server.serve(releases.second.published)
    slow = releases.new_in_second()[0]
    # 8 bytes every 100 ms: the pull's deadline (3 s, 240 bytes) passes long before the end.
    assert slow.size > 2 * 8 * 3.0 / 0.1
    server.always(blob_path(slow), Trickle(step=8, interval=0.1))

    with pytest.raises(FetchError) as caught:
        pull(options(server, tmp_path, deadline=3.0))

    assert "the pull's deadline passed" in caught.value.message
    server.wait_idle()
    assert_failed_and_nothing_applied(tmp_path, before)


def test_a_failed_download_is_recorded_with_the_pointer_it_followed(
    releases: Releases, server: FaultyServer, tmp_path: Path
) -> None:
    server.always(f"/manifests/{releases.first.digest}", Status(404))

    with pytest.raises(FetchError):
        pull(options(server, tmp_path))

    # The pointer was verified before the manifest failed: monitoring should
    # see which serial this host could not fetch.
    last = audit(tmp_path)[-1]
    assert (last["result"], last["environment"], last["serial"], last["bundle"]) == (
        "failed",
        "prod",
        100,
        releases.first.digest,
    )


def test_an_endless_blob_never_grows_past_its_signed_size_on_disk(
    releases: Releases, server: FaultyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = max(releases.first.blobs, key=lambda b: b.size)
    server.always(blob_path(runtime), Endless(chunk=64 << 10))
    staged: list[int] = []
    unlink = Path.unlink

    def measured(self: Path, missing_ok: bool = False) -> None:
        # The staged blob only grows while it downloads: its size when it is
        # removed is the most it held.
        if self.parent.name == "blobs" and self.name.startswith(".") and self.exists():
            staged.append(self.stat().st_size)
        unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", measured)

    with pytest.raises(FetchError) as caught:
        pull(options(server, tmp_path))

    assert caught.value.message == (
        f"cannot download {server.url}/blobs/{runtime.sha256}: "
        f"more than the {runtime.size} bytes it may have"
    )
    assert len(staged) == 1
    assert 0 < staged[0] <= runtime.size
    assert len(server.requests_for(blob_path(runtime))) == 1
    assert_no_partial_files(tmp_path)
    assert not (tmp_path / "target").exists()
    assert not (tmp_path / "state/generations").exists()


def test_blobs_the_host_keeps_are_not_downloaded_again(
    releases: Releases, server: FaultyServer, tmp_path: Path
) -> None:
    pull(options(server, tmp_path))
    server.serve(releases.second.published)
    server.clear()
    new = releases.new_in_second()

    result = pull(options(server, tmp_path))

    assert result.applied is not None and result.applied.status is ApplyStatus.OK
    assert app_conf(tmp_path) == "release 2\n"
    assert server.paths() == [
        "/hosts/web1.pointer",
        f"/manifests/{releases.second.digest}",
        *(blob_path(b) for b in new),
    ]
    assert result.downloaded == (
        f"manifests/{releases.second.digest}",
        *(f"blobs/{b.sha256}" for b in new),
    )
    assert load_state(str(tmp_path / "state")).current == 2


def test_a_pointer_older_than_the_hosts_floor_is_refused(
    releases: Releases, server: FaultyServer, tmp_path: Path
) -> None:
    server.serve(releases.second.published)
    pull(options(server, tmp_path))
    server.serve(releases.first.published)
    server.clear()

    with pytest.raises(RollbackError) as caught:
        pull(options(server, tmp_path))

    url = f"{server.url}/hosts/web1.pointer"
    assert caught.value.message == (
        f"{url} points at serial 100, older than serial 200 which this host accepted before"
    )
    assert caught.value.hint == (
        "the server serves an old pointer (replayed or stale); publish again"
    )
    assert server.paths() == ["/hosts/web1.pointer"]
    assert app_conf(tmp_path) == "release 2\n"
    last = audit(tmp_path)[-1]
    assert (last["kind"], last["result"], last["error"]["code"]) == ("pull", "refused", "rollback")


def test_an_expired_pointer_is_refused_and_recorded(
    releases: Releases, server: FaultyServer, tmp_path: Path
) -> None:
    expires = read_pointer(releases.first.pointer.read_bytes(), "").expires

    with pytest.raises(PointerExpired) as caught:
        pull(options(server, tmp_path, now=expires + 30))

    url = f"{server.url}/hosts/web1.pointer"
    assert caught.value.message == (
        f"{url} expired 30 s ago (serial 100): the server keeps serving an old pointer"
    )
    assert server.paths() == ["/hosts/web1.pointer"]
    assert not (tmp_path / "target").exists()
    assert not (tmp_path / "state/generations").exists()
    (line,) = audit(tmp_path)
    assert (line["kind"], line["result"], line["error"]["code"]) == (
        "pull",
        "refused",
        "pointer-expired",
    )
    assert status(tmp_path)["last_run"]["result"] == "refused"
    assert status(tmp_path)["last_success"] is None


def test_the_result_names_what_a_pull_did(
    releases: Releases, server: FaultyServer, tmp_path: Path
) -> None:
    result: PullResult = pull(options(server, tmp_path))

    data = result.to_json()
    assert data["host"] == "web1"
    assert data["url"] == f"{server.url}/hosts/web1.pointer"
    assert data["pointer"]["serial"] == 100
    assert data["pointer"]["manifest"] == releases.first.digest
    assert data["downloaded"] == list(result.downloaded)
    assert data["apply"]["status"] == "ok"
