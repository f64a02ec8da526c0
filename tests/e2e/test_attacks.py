"""Every attack of reference/threats.md that comes as a bundle file: refused,
with the exact reason, and nothing on the host changed.

Each test starts from a host that applied a good bundle (state, store and
target directory in place), hands it the attacker's file through
``executor.apply.apply_bundle`` (a few through the ``executor`` console
script), and compares the whole host directory byte for byte afterwards.
Attacks that need a valid signature get one from the test key, so that only
the defence under test can refuse them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard

from builder.signing import FileSigner, generate_key, load_signer, read_public_key
from executor.apply import ApplyOptions, apply_bundle
from executor.errors import (
    BundleError,
    RefusedError,
    RollbackError,
    SignatureError,
    WrongTargetError,
)
from executor.bundle import open_unverified
from executor.sshsig import Signature, signed_data
from executor import canonical
from executor.state import load_state, state_from_data
from tests.deployments import build_bundles, deployment
from tests.bundles import (
    doc_canonical,
    doc_join,
    doc_split,
    flipped,
    resigned,
    spliced,
    with_blob,
    write,
    zstd_stream,
)
from tests.keys import signing_key

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent

APP = """
    from batou.component import Component, Attribute
    from batou.lib.file import File

    class App(Component):
        workers = Attribute(int, default=2)

        def configure(self):
            self += File("app.conf", content="workers={{component.workers}}\\n")
    """


def environment(workers: int) -> str:
    return f"""
        [host:web1]
        components = app

        [host:web2]
        components = app

        [component:app]
        workers = {workers}
        """


STAGING = """
    [host:web1]
    components = app
    """


@dataclass(frozen=True)
class Fleet:
    """Bundles built once: build A (serial 200), build B (other model, same
    serial), an older build, staging's, and the key material of a rotation."""

    root: Path

    def bundle(self, build: str, host: str = "web1") -> Path:
        return self.root / "builds" / build / f"{host}.bundle"

    @property
    def old_key(self) -> Path:
        return self.root / "keys" / "old"

    @property
    def new_key(self) -> Path:
        return self.root / "keys" / "new"

    @property
    def attacker_key(self) -> Path:
        return self.root / "keys" / "attacker"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    root = tmp_path_factory.mktemp("fleet")
    for name in ("old", "new", "attacker"):
        generate_key(root / "keys" / name, comment=name)
    repo_a = deployment(
        root / "a", components={"app": APP}, environments={"prod": environment(4), "staging": STAGING}
    )
    repo_b = deployment(root / "b", components={"app": APP}, environments={"prod": environment(5)})
    builds: dict[str, tuple[Path, str, dict[str, Any]]] = {
        "a": (repo_a, "prod", {"serial": 200}),
        "b": (repo_b, "prod", {"serial": 200}),
        "older": (repo_a, "prod", {"serial": 100}),
        "newer": (repo_a, "prod", {"serial": 300}),
        "staging": (repo_a, "staging", {"serial": 300}),
        "attacker": (repo_a, "prod", {"serial": 300, "sign_keys": (root / "keys" / "attacker",)}),
        "old-key": (repo_a, "prod", {"serial": 300, "sign_keys": (root / "keys" / "old",)}),
        "both-keys": (
            repo_a, "prod", {"serial": 300, "sign_keys": (root / "keys" / "old", root / "keys" / "new")}
        ),
    }  # fmt: skip
    for name, (repo, env, options) in builds.items():
        out = root / "out" / name
        build_bundles(env, repo, out=out, **options)
        shutil.copytree(out / env, root / "builds" / name)
    return Fleet(root)


@pytest.fixture(scope="module")
def baseline(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host that applied build A: its state, store and target directory."""
    host = tmp_path_factory.mktemp("baseline")
    result = apply_bundle(
        ApplyOptions(
            bundle=str(fleet.bundle("a")),
            host="web1",
            target_directory=str(host / "target"),
            state_directory=str(host / "state"),
            trust_file=str(signing_key().trust),
        )
    )
    assert result.error is None
    assert (host / "target/work/app/app.conf").read_text() == "workers=4\n"
    return host


Entry = tuple[str, int, bytes]
# What every run writes, refused or not: the audit line, the status, the lock.
BOOKKEEPING = ("state/state.msgpack", "state/audit.log", "state/status.json", "state/lock")


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path below `root`: kind and mode, and content or link target."""
    entries: dict[str, Entry] = {}
    for directory, names, files in os.walk(root):
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


@dataclass(frozen=True)
class Host:
    root: Path
    before: dict[str, Entry]

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def target(self) -> Path:
        return self.root / "target"

    def options(self, bundle: Path, **kw: Any) -> ApplyOptions:
        kw.setdefault("trust_file", str(signing_key().trust))
        return ApplyOptions(
            bundle=str(bundle),
            host="web1",
            target_directory=str(self.target),
            state_directory=str(self.state),
            **kw,
        )

    def assert_unchanged(self) -> None:
        """Store, generations and target directory are byte for byte as
        before; the state is too, except that it may remember the bundle's
        digest as failed; the run is recorded as refused."""
        after = snapshot(self.root)
        state_file = "state/state.msgpack"
        before_state, after_state = (
            state_from_data(canonical.unpack(entries[state_file][2]))
            for entries in (self.before, after)
        )
        assert replace(after_state, failed=()) == replace(before_state, failed=()), (
            "the host's state changed"
        )
        # At most the refused bundle's own digest is new.
        assert len(set(after_state.failed) - set(before_state.failed)) <= 1

        def kept(entries: dict[str, Entry]) -> dict[str, Entry]:
            return {k: v for k, v in entries.items() if k not in BOOKKEEPING}

        assert kept(after) == kept(self.before)
        last = json.loads((self.root / "state/audit.log").read_text().splitlines()[-1])
        assert last["result"] == "refused", last
        status = json.loads((self.root / "state/status.json").read_text())
        assert status["last_run"]["result"] == "refused"
        # The last success is still the baseline's.
        assert status["last_success"]["result"] == "ok"

    def refuses(self, bundle: Path, *, check: bool = True, **kw: Any) -> RefusedError:
        """The refusal of applying `bundle`; unless told not to (the test then
        checks after its own assertions), that the host did not change."""
        with pytest.raises(RefusedError) as caught:
            apply_bundle(self.options(bundle, **kw))
        if check:
            self.assert_unchanged()
        return caught.value


@pytest.fixture
def host(baseline: Path, tmp_path: Path) -> Host:
    root = tmp_path / "host"
    shutil.copytree(baseline, root, symlinks=True)
    return Host(root, snapshot(root))


def fingerprint(key: Path) -> str:
    return read_public_key(key).fingerprint()


# -- arbitrary installation --------------------------------------------------------


def test_a_bundle_signed_by_the_attacker_s_own_key_is_refused(fleet: Fleet, host: Host) -> None:
    bundle = fleet.bundle("attacker")

    error = host.refuses(bundle)

    assert isinstance(error, SignatureError)
    assert error.message == (
        f"{bundle} has no signature this host trusts: "
        f"{fingerprint(fleet.attacker_key)}: the key is not in the allowed signers"
    )


def test_a_modified_manifest_no_longer_matches_its_signature(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    parts = doc_split(fleet.bundle("newer").read_bytes())
    data = msgpack.unpackb(parts.manifest, raw=False)
    data["serial"] = 999  # same length as the signed 300: only the signature can tell
    bundle = write(tmp_path / "web1.bundle", doc_join(replace(parts, manifest=doc_canonical(data))))

    error = host.refuses(bundle)

    assert error.message == (
        f"{bundle} has no signature this host trusts: "
        f"{fingerprint(signing_key().private)}: the signature does not match the manifest"
    )


def test_a_modified_blob_no_longer_matches_its_signed_hash(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    data = fleet.bundle("newer").read_bytes()
    bundle = write(tmp_path / "web1.bundle", flipped(data, len(data) - 2))
    parts = doc_split(data)
    said = hashlib.sha256(parts.blob("model")).hexdigest()
    has = hashlib.sha256(doc_split(bundle.read_bytes()).blob("model")).hexdigest()

    error = host.refuses(bundle)

    assert isinstance(error, BundleError)
    assert error.message == (
        f"{bundle}: blob 'model' does not match its sha256: the manifest says {said}, "
        f"the blob has {has}"
    )


def test_a_bundle_stripped_of_its_signatures_is_refused(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    parts = doc_split(fleet.bundle("newer").read_bytes())
    bundle = write(tmp_path / "web1.bundle", doc_join(replace(parts, entries=())))

    error = host.refuses(bundle)

    assert error.message == f"{bundle} is not signed"


# -- damaged on the way: one byte, a cut, padding ------------------------------------


@dataclass(frozen=True)
class Offsets:
    """Where the parts of a bundle lie (docs/bundle-format.md, Layout)."""

    data: bytes
    m: int  # manifest length
    s: int  # signature block length
    spans: dict[str, tuple[int, int]]  # each blob by name: (start, end)

    @property
    def blobs(self) -> int:
        return 18 + self.m + self.s

    @property
    def repo_size(self) -> int:
        start, end = self.spans["repo"]
        return end - start

    def middle(self, name: str) -> int:
        start, end = self.spans[name]
        return (start + end) // 2

    @classmethod
    def of(cls, path: Path) -> Offsets:
        data = path.read_bytes()
        parts = doc_split(data)
        s = sum(4 + len(entry) for entry in parts.entries)
        spans = {name: parts.span(name) for name in parts.names}
        assert list(spans) == ["repo", "runtime", "model"]
        return cls(data, len(parts.manifest), s, spans)


def test_a_flipped_byte_in_the_magic_is_refused(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    bundle = write(tmp_path / "web1.bundle", flipped(fleet.bundle("newer").read_bytes(), 3))

    error = host.refuses(bundle)

    assert isinstance(error, BundleError)
    assert error.message == f"{bundle} is not a consign bundle (wrong magic bytes)"


def test_a_flipped_byte_in_the_signature_is_refused(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    at = Offsets.of(fleet.bundle("newer"))
    # The block's last byte is the last byte of the ed25519 signature itself.
    bundle = write(tmp_path / "web1.bundle", flipped(at.data, at.blobs - 1))

    error = host.refuses(bundle)

    assert isinstance(error, SignatureError)
    assert error.message == (
        f"{bundle} has no signature this host trusts: "
        f"{fingerprint(signing_key().private)}: the signature does not match the manifest"
    )


@pytest.mark.parametrize("blob", ["repo", "runtime"], ids=["repository blob", "runtime blob"])
def test_a_flipped_byte_in_a_compressed_blob_is_refused(
    fleet: Fleet, host: Host, tmp_path: Path, blob: str
) -> None:
    at = Offsets.of(fleet.bundle("newer"))
    data = flipped(at.data, at.middle(blob))
    bundle = write(tmp_path / "web1.bundle", data)
    where = slice(*at.spans[blob])
    said, has = (hashlib.sha256(d[where]).hexdigest() for d in (at.data, data))

    error = host.refuses(bundle)

    assert isinstance(error, BundleError)
    assert error.message == (
        f"{bundle}: blob {blob!r} does not match its sha256: the manifest says {said}, "
        f"the blob has {has}"
    )


TRUNCATIONS: dict[str, Callable[[Offsets], tuple[int, str]]] = {
    "inside the header": lambda at: (12, "{path} is truncated: the header is incomplete"),
    "inside the manifest": lambda at: (
        14 + at.m // 2,
        f"{{path}} is truncated: the manifest is incomplete ({at.m // 2} of {at.m} bytes)",
    ),
    "inside the repository blob": lambda at: (
        at.blobs + at.repo_size // 2,
        f"{{path}} is truncated: {at.blobs + at.repo_size // 2} bytes, "
        f"the manifest promises {len(at.data)}",
    ),
    "inside the runtime blob": lambda at: (
        at.middle("runtime"),
        f"{{path}} is truncated: {at.middle('runtime')} bytes, "
        f"the manifest promises {len(at.data)}",
    ),
}


@pytest.mark.parametrize("case", TRUNCATIONS, ids=list(TRUNCATIONS))
def test_a_truncated_bundle_is_refused(fleet: Fleet, host: Host, tmp_path: Path, case: str) -> None:
    at = Offsets.of(fleet.bundle("newer"))
    cut, message = TRUNCATIONS[case](at)
    bundle = write(tmp_path / "web1.bundle", at.data[:cut])

    error = host.refuses(bundle)

    assert isinstance(error, BundleError)
    assert error.message == message.format(path=bundle)


def test_a_manifest_with_a_non_canonical_integer_is_refused_though_signed(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    parts = doc_split(fleet.bundle("newer").read_bytes())
    # serial 300 as uint32 (ce) where canonical msgpack takes uint16 (cd): the
    # same number, other bytes, so another digest for the same manifest.
    canonical, wide = b"\xa6serial\xcd\x01\x2c", b"\xa6serial\xce\x00\x00\x01\x2c"
    assert parts.manifest.count(canonical) == 1
    manifest = parts.manifest.replace(canonical, wide)
    bundle = write(tmp_path / "web1.bundle", doc_join(resigned(parts, manifest)))

    error = host.refuses(bundle)

    assert isinstance(error, BundleError)
    assert error.message == (
        f"{bundle}: the manifest is invalid: not canonical: re-encoding gives different bytes"
    )


def test_a_stored_blob_larger_than_declared_is_refused(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    parts = doc_split(fleet.bundle("newer").read_bytes())
    bundle = write(
        tmp_path / "web1.bundle", doc_join(spliced(parts, "repo", parts.blob("repo") + b"\0" * 7))
    )

    error = host.refuses(bundle)

    assert isinstance(error, BundleError)
    assert error.message == f"{bundle} has 7 bytes of trailing data"


def test_a_blob_unpacking_to_more_than_declared_is_refused(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    parts = doc_split(fleet.bundle("newer").read_bytes())
    tar = zstandard.ZstdDecompressor().decompress(parts.blob("repo"))
    larger = tar + b"\0" * 512
    stored = zstandard.ZstdCompressor(level=3).compress(larger)
    # Signed again: the manifest pins these stored bytes, and declares one byte less.
    declared = larger[:-1]
    bundle = write(tmp_path / "web1.bundle", doc_join(with_blob(parts, "repo", stored, raw=declared)))

    error = host.refuses(bundle)

    assert isinstance(error, BundleError)
    assert error.message == (
        f"{bundle}: blob 'repo' announces {len(larger)} bytes of content; "
        f"the manifest allows {len(declared)}"
    )


def test_a_blob_unpacking_to_more_than_declared_is_refused_even_when_its_snapshot_is_stored(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    parts = doc_split(fleet.bundle("newer").read_bytes())
    # Declares the snapshot build A put in this host's store.
    tar = zstandard.ZstdDecompressor().decompress(doc_split(fleet.bundle("a").read_bytes()).blob("repo"))
    larger = tar + b"\0" * 512
    stored = zstandard.ZstdCompressor(level=3).compress(larger)
    bundle = write(tmp_path / "web1.bundle", doc_join(with_blob(parts, "repo", stored, raw=tar)))

    error = host.refuses(bundle)

    assert error.message == (
        f"{bundle}: blob 'repo' announces {len(larger)} bytes of content; "
        f"the manifest allows {len(tar)}"
    )


# -- signatures that are genuine but not for this ---------------------------------------


def test_a_signature_made_for_another_namespace_is_refused(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    parts = doc_split(fleet.bundle("newer").read_bytes())
    signer = load_signer(signing_key().private)
    assert isinstance(signer, FileSigner)
    # The trusted key, the very manifest, but signed as (say) a git commit.
    data = signed_data(parts.manifest, "git", "sha512")
    signature = Signature(signer.key, "git", "sha512", signer.private.sign(data))
    bundle = write(tmp_path / "web1.bundle", doc_join(replace(parts, entries=(signature.encode(),))))

    error = host.refuses(bundle)

    assert isinstance(error, SignatureError)
    assert error.message == (
        f"{bundle} has no signature this host trusts: {fingerprint(signing_key().private)}: "
        "signed for namespace 'git', not 'consign-bundle'"
    )


def test_a_key_that_is_not_yet_valid_is_refused(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    key = read_public_key(signing_key().private).openssh()
    trust = tmp_path / "allowed_signers"
    trust.write_text(f'builder namespaces="consign-bundle",valid-after="20300101Z" {key}\n')
    trust.chmod(0o644)
    bundle = fleet.bundle("newer")

    error = host.refuses(bundle, trust_file=str(trust), now=JUNE_2024)

    assert isinstance(error, SignatureError)
    assert error.message == (
        f"{bundle} has no signature this host trusts: {fingerprint(signing_key().private)}: "
        "allowed signers line 1: it is valid only after 2030-01-01 00:00:00 UTC"
    )


# -- wrong target ----------------------------------------------------------------


def test_another_host_s_bundle_is_refused(fleet: Fleet, host: Host) -> None:
    error = host.refuses(fleet.bundle("a", "web2"))

    assert isinstance(error, WrongTargetError)
    assert error.message == "this bundle is for host 'web2' (web2), but this host is 'web1'"


def test_another_environment_s_bundle_is_refused(fleet: Fleet, host: Host) -> None:
    error = host.refuses(fleet.bundle("staging"))

    assert isinstance(error, WrongTargetError)
    assert error.message == "this bundle is for environment 'staging', but this host belongs to 'prod'"


# -- rollback ----------------------------------------------------------------------


def test_an_older_validly_signed_bundle_is_refused(fleet: Fleet, host: Host) -> None:
    error = host.refuses(fleet.bundle("older"))

    assert isinstance(error, RollbackError)
    assert error.message == (
        "this bundle has serial 100, older than serial 200 which this host accepted before"
    )


def test_a_downgrade_the_operator_allows_is_applied_and_recorded(fleet: Fleet, host: Host) -> None:
    result = apply_bundle(host.options(fleet.bundle("older"), allow_downgrade=True, now=1_900_000_000))

    assert result.error is None
    state = load_state(str(host.state))
    [downgrade] = state.downgrades
    assert (downgrade.time, downgrade.from_serial, downgrade.to_serial) == (1_900_000_000, 200, 100)
    assert downgrade.bundle == result.bundle_digest
    assert state.highest_serial == 200


def test_an_allowed_downgrade_is_a_one_time_bypass_that_keeps_the_floor(
    fleet: Fleet, host: Host
) -> None:
    assert apply_bundle(host.options(fleet.bundle("newer"))).error is None
    downgraded = apply_bundle(host.options(fleet.bundle("older"), allow_downgrade=True))
    assert downgraded.error is None
    after_downgrade = load_state(str(host.state))
    assert after_downgrade.highest_serial == 300
    assert [(d.from_serial, d.to_serial) for d in after_downgrade.downgrades] == [(300, 100)]

    # Serial 200 is newer than what runs now, but not than what the host accepted.
    with pytest.raises(RollbackError) as caught:
        apply_bundle(host.options(fleet.bundle("a")))

    assert caught.value.message == (
        "this bundle has serial 200, older than serial 300 which this host accepted before"
    )
    assert load_state(str(host.state)) == after_downgrade


# -- mix and match -----------------------------------------------------------------


def test_a_model_from_another_build_spliced_into_a_bundle_is_refused(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    a = doc_split(fleet.bundle("a").read_bytes())
    b = doc_split(fleet.bundle("b").read_bytes())
    theirs = b.blob("model")
    assert len(a.blob("model")) == len(theirs) and a.blob("model") != theirs
    bundle = write(tmp_path / "web1.bundle", doc_join(spliced(a, "model", theirs)))
    said, has = (hashlib.sha256(blob).hexdigest() for blob in (a.blob("model"), theirs))

    error = host.refuses(bundle)

    assert error.message == (
        f"{bundle}: blob 'model' does not match its sha256: the manifest says {said}, "
        f"the blob has {has}"
    )


def test_a_manifest_from_another_build_with_this_build_s_blobs_is_refused(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    a = doc_split(fleet.bundle("a").read_bytes())
    b = doc_split(fleet.bundle("b").read_bytes())
    mixed = replace(b, blobs=a.blobs)
    bundle = write(tmp_path / "web1.bundle", doc_join(mixed))
    promised = len(doc_join(b))
    actual = len(doc_join(mixed))

    error = host.refuses(bundle)

    if actual < promised:
        assert error.message == f"{bundle} is truncated: {actual} bytes, the manifest promises {promised}"
    elif actual > promised:
        assert error.message == f"{bundle} has {actual - promised} bytes of trailing data"
    else:
        # The first blob that differs between the two builds gives it away.
        old_blobs = open_unverified(str(fleet.bundle("a"))).manifest.blobs
        new_blobs = open_unverified(str(fleet.bundle("b"))).manifest.blobs
        first = next(n.name for o, n in zip(old_blobs, new_blobs, strict=True) if o.sha256 != n.sha256)
        assert error.message.startswith(f"{bundle}: blob '{first}' does not match its sha256")


# -- endless data ------------------------------------------------------------------


def test_endless_trailing_data_is_refused(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    bundle = write(tmp_path / "web1.bundle", fleet.bundle("newer").read_bytes() + b"\0" * (1 << 20))

    error = host.refuses(bundle)

    assert error.message == f"{bundle} has 1048576 bytes of trailing data"


def test_a_header_announcing_a_huge_manifest_is_refused_before_reading_it(
    host: Host, tmp_path: Path
) -> None:
    bundle = write(tmp_path / "web1.bundle", b"\x89CSB\r\n\x1a\n\x00\x01\xff\xff\xff\xff")

    error = host.refuses(bundle)

    assert error.message == (
        f"{bundle}: the manifest is larger than 1048576 bytes (the header says 4294967295)"
    )


BOMB = 16 << 20


def _repo_blob_attack(fleet: Fleet, tmp_path: Path, stored: bytes, raw: bytes, **kw: Any) -> Path:
    parts = with_blob(doc_split(fleet.bundle("newer").read_bytes()), "repo", stored, raw=raw, **kw)
    return write(tmp_path / "web1.bundle", doc_join(parts))


def test_a_decompression_bomb_is_stopped_at_the_declared_size(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    stored = zstd_stream(b"\0" * (1 << 20) for _ in range(BOMB >> 20))
    bundle = _repo_blob_attack(fleet, tmp_path, stored, b"x" * 10240)

    error = host.refuses(bundle, check=False)

    assert error.message == f"{bundle}: blob 'repo' decompresses to more than its declared 10240 bytes"
    host.assert_unchanged()


def test_a_bomb_announcing_its_size_is_refused_from_its_frame_header(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    stored = zstandard.ZstdCompressor(level=3).compress(b"\0" * BOMB)
    bundle = _repo_blob_attack(fleet, tmp_path, stored, b"x" * 10240)

    error = host.refuses(bundle, check=False)

    assert error.message == (
        f"{bundle}: blob 'repo' announces {BOMB} bytes of content; the manifest allows 10240"
    )
    host.assert_unchanged()


def test_a_zstd_frame_with_a_huge_window_is_refused(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    raw = b"content " * 1000
    bundle = _repo_blob_attack(fleet, tmp_path, zstd_stream([raw], window_log=29), raw)

    error = host.refuses(bundle, check=False)

    assert error.message == (
        f"{bundle}: blob 'repo' asks for a zstd window of {1 << 29} bytes; the limit is {1 << 27}"
    )
    host.assert_unchanged()


# -- hostile archive -----------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, **fields: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _tar(*members: tarfile.TarInfo) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_member("components", tarfile.DIRTYPE, mode=0o755))
        content = b"# harmless\n"
        tar.addfile(_member("components/app.py", size=len(content)), io.BytesIO(content))
        for member in members:
            data = b"evil\n" if member.isreg() else b""
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data else None)
    return out.getvalue()


ESCAPE = "consign-attack-escaped"

HOSTILE_ARCHIVES: dict[str, tuple[Callable[[], bytes], str]] = {
    "../x": (lambda: _tar(_member(f"../{ESCAPE}")), f"snapshot member '../{ESCAPE}' leaves the tree"),
    "a/../../x": (
        lambda: _tar(_member(f"components/../../{ESCAPE}")),
        f"snapshot member 'components/../../{ESCAPE}' leaves the tree",
    ),
    "/etc/x": (
        lambda: _tar(_member(f"/etc/{ESCAPE}")),
        f"snapshot member '/etc/{ESCAPE}' has an absolute or invalid path",
    ),
    "a symlink to /": (
        lambda: _tar(_member("root", tarfile.SYMTYPE, linkname="/")),
        "snapshot member 'root' links to an absolute path '/'",
    ),
    "a symlink out through another": (
        lambda: _tar(
            _member("x", tarfile.DIRTYPE, mode=0o755),
            _member("x/s", tarfile.SYMTYPE, linkname=".."),
            _member("x/l", tarfile.SYMTYPE, linkname="s/../.."),
        ),
        "snapshot member 'x/l' links outside the tree ('s/../..' through the symlink 'x/s')",
    ),
    "a file written through a symlink": (
        lambda: _tar(_member("up", tarfile.SYMTYPE, linkname="components"), _member("up/x")),
        "snapshot member 'up/x' lies below the symlink 'up'",
    ),
    "a hard link": (
        lambda: _tar(_member("hard", tarfile.LNKTYPE, linkname="components/app.py")),
        "snapshot member 'hard' is a hard link",
    ),
    "a device node": (
        lambda: _tar(_member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)),
        "snapshot member 'null' is a device, fifo or other special file",
    ),
    "a fifo": (
        lambda: _tar(_member("pipe", tarfile.FIFOTYPE)),
        "snapshot member 'pipe' is a device, fifo or other special file",
    ),
    "a name twice": (
        lambda: _tar(_member("components/app.py")),
        "snapshot member 'components/app.py' appears twice",
    ),
    "a file below a file": (
        lambda: _tar(_member("components/app.py/x")),
        "snapshot member 'components/app.py/x' lies below 'components/app.py', which is not a directory",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_ARCHIVES, ids=list(HOSTILE_ARCHIVES))
def test_a_hostile_archive_is_refused_before_anything_is_written(
    fleet: Fleet, host: Host, tmp_path: Path, case: str
) -> None:
    make, message = HOSTILE_ARCHIVES[case]
    tar = make()
    stored = zstandard.ZstdCompressor(level=3).compress(tar)
    bundle = _repo_blob_attack(fleet, tmp_path, stored, tar)

    error = host.refuses(bundle, check=False)

    assert isinstance(error, BundleError)
    assert error.message == message
    for escaped in (Path("/etc") / ESCAPE, host.state / ESCAPE, host.root / ESCAPE, tmp_path / ESCAPE):
        assert not escaped.exists()
    host.assert_unchanged()


# -- hostile msgpack -------------------------------------------------------------------


def test_a_hostile_manifest_without_a_trusted_signature_is_never_parsed(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    parts = doc_split(fleet.bundle("newer").read_bytes())
    hostile = b"\xdd\xff\xff\xff\xff" + b"\x91" * 5000
    unsigned = write(tmp_path / "web1.bundle", doc_join(replace(parts, manifest=hostile, entries=())))
    assert host.refuses(unsigned).message == f"{unsigned} is not signed"

    forged = write(tmp_path / "forged.bundle", doc_join(replace(parts, manifest=hostile)))
    assert host.refuses(forged).message == (
        f"{forged} has no signature this host trusts: "
        f"{fingerprint(signing_key().private)}: the signature does not match the manifest"
    )


HOSTILE_MANIFESTS: dict[str, tuple[bytes, str]] = {
    "deep nesting": (b"\x91" * 5000 + b"\xc0", "nesting deeper than 64"),
    "a huge array length": (b"\xdd\xff\xff\xff\xff\xc0", "malformed msgpack: 4294967295 exceeds max_array_len(6)"),
    "a huge string length": (b"\xdb\xff\xff\xff\xff", "truncated msgpack data"),
    "an extension type": (b"\xc7\x01\x05x", "extension type 5 is not allowed"),
}  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE_MANIFESTS, ids=list(HOSTILE_MANIFESTS))
def test_a_hostile_manifest_signed_by_a_trusted_key_is_refused_by_the_bounded_decoder(
    fleet: Fleet, host: Host, tmp_path: Path, case: str
) -> None:
    manifest, reason = HOSTILE_MANIFESTS[case]
    parts = resigned(doc_split(fleet.bundle("newer").read_bytes()), manifest)
    bundle = write(tmp_path / "web1.bundle", doc_join(parts))

    error = host.refuses(bundle)

    assert error.message == f"{bundle}: the manifest is invalid: {reason}"


def test_a_manifest_with_a_duplicate_key_is_refused_though_signed(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    parts = doc_split(fleet.bundle("newer").read_bytes())
    # A second "host" naming this host after the signed one: last-wins
    # decoders would see web1 wherever the first said otherwise.
    count = parts.manifest[0] & 0x0F
    manifest = bytes([0x80 | (count + 1)]) + parts.manifest[1:] + b"\xa4host\xa4web1"
    bundle = write(tmp_path / "web1.bundle", doc_join(resigned(parts, manifest)))

    error = host.refuses(bundle)

    assert error.message == f"{bundle}: the manifest is invalid: duplicate map key 'host'"


def test_a_hostile_model_is_refused_before_anything_is_written(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    parts = doc_split(fleet.bundle("newer").read_bytes())
    model = b"\x82\xa4host\x01\xa4host\x02"
    # Signed again: the manifest pins the hostile model, only its decoder can refuse it.
    hostile = with_blob(parts, "model", model, raw=model)
    data = msgpack.unpackb(hostile.manifest, raw=False)
    entry = data["blobs"][hostile.names.index("model")]
    assert entry["compression"] == "none" and entry["sha256"] == entry["raw_sha256"]
    bundle = write(tmp_path / "web1.bundle", doc_join(hostile))

    error = host.refuses(bundle)

    assert error.message == "the bundle's model is invalid: duplicate map key 'host'"


# -- key compromise: rotation and revocation -------------------------------------------


def _rotation_trust(fleet: Fleet, tmp_path: Path, retired: bool) -> Path:
    old = read_public_key(fleet.old_key).openssh()
    new = read_public_key(fleet.new_key).openssh()
    window = ',valid-before="20250101Z"' if retired else ""
    path = tmp_path / "allowed_signers"
    path.write_text(
        f'builder namespaces="consign-bundle"{window} {old} old key\n'
        f'builder namespaces="consign-bundle" {new} new key\n'
    )
    path.chmod(0o644)
    return path


JUNE_2024, JUNE_2025 = 1_717_200_000, 1_748_736_000


def test_during_a_rotation_both_keys_sign_and_either_is_trusted(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    trust = _rotation_trust(fleet, tmp_path, retired=False)

    result = apply_bundle(host.options(fleet.bundle("old-key"), trust_file=str(trust), now=JUNE_2024))
    assert result.error is None
    result = apply_bundle(host.options(fleet.bundle("both-keys"), trust_file=str(trust), now=JUNE_2024))
    assert result.error is None


def test_a_bundle_signed_only_by_a_retired_key_is_refused(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    trust = _rotation_trust(fleet, tmp_path, retired=True)
    bundle = fleet.bundle("old-key")

    error = host.refuses(bundle, trust_file=str(trust), now=JUNE_2025)

    assert error.message == (
        f"{bundle} has no signature this host trusts: {fingerprint(fleet.old_key)}: "
        "allowed signers line 1: it was valid only until 2025-01-01 00:00:00 UTC"
    )
    # Bundles the new key signed as well still apply.
    result = apply_bundle(host.options(fleet.bundle("both-keys"), trust_file=str(trust), now=JUNE_2025))
    assert result.error is None


def test_a_revoked_key_is_refused_inside_its_window(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    trust = _rotation_trust(fleet, tmp_path, retired=True)
    revoked = tmp_path / "revoked"
    revoked.write_text(read_public_key(fleet.old_key).openssh() + " stolen\n")
    revoked.chmod(0o644)
    bundle = fleet.bundle("old-key")

    error = host.refuses(bundle, trust_file=str(trust), revoked_file=str(revoked), now=JUNE_2024)

    assert error.message == (
        f"{bundle} has no signature this host trusts: {fingerprint(fleet.old_key)}: the key is revoked"
    )


def test_after_a_key_compromise_the_operator_revokes_the_key_and_resets_the_poisoned_serial(
    fleet: Fleet, host: Host, tmp_path: Path
) -> None:
    trust = tmp_path / "allowed_signers"
    stolen = read_public_key(fleet.old_key).openssh()
    trust.write_text(signing_key().trust.read_text() + f'builder namespaces="consign-bundle" {stolen}\n')
    trust.chmod(0o644)
    # The thief's bundle, signed with a then trusted key, raised the floor to 300.
    poisoned = apply_bundle(host.options(fleet.bundle("old-key"), trust_file=str(trust)))
    assert poisoned.error is None
    with pytest.raises(RollbackError):
        apply_bundle(host.options(fleet.bundle("a"), trust_file=str(trust)))
    revoked = tmp_path / "revoked_keys"
    revoked.write_text(stolen + " stolen\n")
    revoked.chmod(0o644)

    reset = subprocess.run(
        [str(BIN / "executor"), "reset-serial", "200", "--state-dir", str(host.state)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert reset.stdout == f"serial floor reset: 300 -> 200 (recorded in {host.state})\n"
    state = load_state(str(host.state))
    assert state.highest_serial == 200
    assert [(c.kind, c.from_serial, c.to_serial) for c in state.history] == [("reset", 300, 200)]
    options = {"trust_file": str(trust), "revoked_file": str(revoked)}
    assert apply_bundle(host.options(fleet.bundle("a"), **options)).error is None
    assert load_state(str(host.state)).highest_serial == 200
    with pytest.raises(SignatureError, match="the key is revoked"):
        apply_bundle(host.options(fleet.bundle("old-key"), **options))


# -- through the console script -----------------------------------------------------


def executor_apply(host: Host, bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "executor"), "apply", str(bundle), "--host", "web1",
         "--state-dir", str(host.state), "--target-dir", str(host.target),
         "--trust", str(signing_key().trust), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_the_console_script_refuses_attacks_with_exit_code_3(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    data = fleet.bundle("newer").read_bytes()
    damaged = write(tmp_path / "damaged.bundle", flipped(data, 20))
    cases = {
        fleet.bundle("attacker"): f"{fleet.bundle('attacker')} has no signature this host trusts",
        fleet.bundle("older"): f"{fleet.bundle('older')}: this bundle has serial 100, older "
        "than serial 200",
        fleet.bundle("a", "web2"): f"{fleet.bundle('a', 'web2')}: this bundle is for host "
        "'web2' (web2), but this host is 'web1'",
        damaged: f"{damaged} has no signature this host trusts",
    }
    for bundle, message in cases.items():
        result = executor_apply(host, bundle)

        assert result.returncode == 3, result.stdout + result.stderr
        assert result.stderr.startswith(f"error: {message}")
        host.assert_unchanged()


def test_the_console_script_refuses_a_hostile_archive(fleet: Fleet, host: Host, tmp_path: Path) -> None:
    tar = _tar(_member("root", tarfile.SYMTYPE, linkname="/"))
    bundle = _repo_blob_attack(fleet, tmp_path, zstandard.ZstdCompressor().compress(tar), tar)

    result = executor_apply(host, bundle, "--json")

    assert result.returncode == 3, result.stdout + result.stderr
    assert '"status": "refused"' in result.stdout
    assert "snapshot member 'root' links to an absolute path '/'" in result.stdout
    host.assert_unchanged()
