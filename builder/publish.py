"""``bundle publish``: the static layout hosts pull from.

::

    DEST/hosts/<host>.pointer    small, signed: host, environment, serial,
                                 manifest digest, issued, expires (replaced)
    DEST/manifests/<digest>      a bundle's header: magic, manifest, signatures
    DEST/blobs/<sha256>          a blob's stored (compressed) bytes

Manifests and blobs are named by their sha256 and never rewritten, so any
static web server, object store or CDN can serve and cache them forever;
only pointers change. Per host, the blobs go first, then the manifest, then
the pointer (each written to a temporary name and renamed), so a reader
never sees a pointer whose manifest or blobs are not there yet. A bundle
of a host is the manifest file followed by its blobs in manifest order:
a puller reassembles it and applies it as ``executor apply`` would.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import Any

from executor.bundle import BundleReader
from executor.errors import ErrorList
from executor.fs import stage_file, write_atomic
from executor.pointer import Pointer, encode_pointer, read_pointer

from .build import key_paths
from .environment import ENVIRONMENTS_DIR, load_environment
from .errors import BuildError
from .inspect import read_host_bundles
from .repository import Repository
from .signing import Signer, load_signers

HOSTS_DIR, MANIFESTS_DIR, BLOBS_DIR = "hosts", "manifests", "blobs"
DEFAULT_EXPIRES_IN = 7 * 24 * 3600
_CHUNK = 1 << 20


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str) -> int:
    """Seconds from '3600', '30m', '12h' or '7d'."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], None) if value else None
    number = value[:-1] if unit else value
    if not re.fullmatch(r"[0-9]{1,12}", number):
        raise BuildError(
            f"{option} must be a duration like 3600, 30m, 12h or 7d, got {text!r}",
        )
    return int(number) * (unit or 1)


@dataclass(frozen=True)
class PublishOptions:
    environment: str
    destination: Path
    repository: Path = Path(".")
    # Where 'bundle build' wrote the bundles [default: REPOSITORY/bundles].
    out: Path | None = None
    hosts: tuple[str, ...] = ()
    sign_keys: tuple[Path, ...] = ()
    expires_in: int = DEFAULT_EXPIRES_IN
    # Re-sign the pointers already published with a new expiry; no bundles.
    refresh: bool = False
    now: int | None = None


@dataclass(frozen=True)
class PublishedHost:
    host: str
    serial: int
    manifest: str
    expires: int
    # Files this publish wrote (manifests and blobs that were new), and bytes.
    written: tuple[str, ...] = ()
    written_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "serial": self.serial,
            "manifest": self.manifest,
            "expires": self.expires,
            "written": list(self.written),
            "written_bytes": self.written_bytes,
        }


@dataclass(frozen=True)
class PublishResult:
    environment: str
    destination: Path
    hosts: tuple[PublishedHost, ...]
    refresh: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "destination": str(self.destination),
            "refresh": self.refresh,
            "hosts": [h.to_json() for h in self.hosts],
        }


def _directory(path: Path) -> None:
    """A directory of the layout, readable by a web server whatever the
    umask (directories that exist already keep their mode)."""
    for directory in (path.parent, path):
        if not directory.is_dir():
            directory.mkdir(parents=True)
            os.chmod(directory, 0o755)


def _write_new(path: Path, chunks: Iterable[bytes]) -> int:
    """Write a content-addressed file unless it is there; the bytes written."""
    if path.is_file():
        return 0
    _directory(path.parent)
    written = 0

    def counted() -> Iterator[bytes]:
        nonlocal written
        for chunk in chunks:
            written += len(chunk)
            yield chunk

    staged = stage_file(str(path), counted(), mode=0o644)
    os.rename(staged, path)
    return written


def _header(bundle: BundleReader) -> bytes:
    """The bundle up to its first blob: magic, manifest, signatures."""
    with open(bundle.path, "rb") as f:
        data = f.read(bundle.envelope.blobs_offset)
    if len(data) != bundle.envelope.blobs_offset:
        raise BuildError(f"{bundle.path} changed while it was published")
    return data


def _signers(options: PublishOptions, root: Path, configured: tuple[str, ...]) -> list[Signer]:
    repository = Repository.open(root)
    snapshot = {f.name for f in repository.files()}
    return load_signers(key_paths(options.sign_keys, repository, configured, snapshot))


def publish(options: PublishOptions) -> PublishResult:
    """Publish (or, with refresh, re-sign) the selected hosts' pointers."""
    root = options.repository.resolve()
    if not (root / ENVIRONMENTS_DIR).is_dir():
        raise BuildError(
            f"{root} is not a deployment repository: it has no {ENVIRONMENTS_DIR}/ directory",
            hint="run bundle publish in the repository, or pass -C PATH",
        )
    if options.expires_in < 60:
        raise BuildError(
            f"--expires-in must be at least 60 seconds, got {options.expires_in}",
            hint="pointers must outlive the time hosts take to pull them (default 7 days)",
        )
    config, errors = load_environment(root, options.environment)
    if len(errors) == 1:
        raise errors[0]
    if errors or config is None:
        raise ErrorList(errors, f"{len(errors)} errors in the environment; nothing was published")
    known = [h.name for h in config.hosts if not h.ignored]
    for name in options.hosts:
        if name not in known:
            raise BuildError(
                f"--host {name!r} is not a host of environment {options.environment!r}",
                hint=f"its hosts: {', '.join(known)}",
            )
    selected = [h for h in known if not options.hosts or h in options.hosts]
    signers = _signers(options, root, config.settings.sign_keys)
    now = options.now if options.now is not None else int(time.time())
    destination = options.destination.resolve()
    if options.refresh:
        hosts = [_refresh(destination, host, signers, now, options.expires_in) for host in selected]
    else:
        bundles_dir = (options.out or root / "bundles").resolve() / options.environment
        readers, problems = read_host_bundles(
            bundles_dir, selected, options.environment, check_blobs=True
        )
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise ErrorList(problems, f"{len(problems)} problems; nothing was published")
        for host, bundle in readers:
            _check_not_older(destination, host, bundle)
        hosts = [_publish_host(destination, host, bundle, signers, now, options.expires_in) for host, bundle in readers]
    return PublishResult(options.environment, destination, tuple(hosts), options.refresh)


def _pointer_path(destination: Path, host: str) -> Path:
    return destination / HOSTS_DIR / f"{host}.pointer"


def _check_not_older(destination: Path, host: str, bundle: BundleReader) -> None:
    path = _pointer_path(destination, host)
    if not path.is_file():
        return
    published = read_pointer(path.read_bytes(), str(path))
    if published.serial > bundle.manifest.serial:
        raise BuildError(
            f"{path} already points at serial {published.serial}, newer than this bundle's "
            f"{bundle.manifest.serial}",
            hint="hosts would refuse the older bundle anyway; build from a newer commit "
            "(to roll back on purpose, commit the old state again and build that)",
        )


def _write_pointer(path: Path, data: bytes) -> None:
    """Replace the pointer; its time always moves on, so that servers whose
    ETag and Last-Modified come from the file's second never answer a
    conditional request for the new pointer with 304 (two publishes in one
    second)."""
    try:
        before: float | None = path.stat().st_mtime
    except FileNotFoundError:
        before = None
    _directory(path.parent)
    write_atomic(str(path), data, mode=0o644)
    if before is not None and int(path.stat().st_mtime) <= int(before):
        moment = int(before) + 1
        os.utime(path, (moment, moment))


def _sign(pointer: Pointer, signers: list[Signer]) -> bytes:
    payload = pointer.payload()
    return encode_pointer(pointer, [signer.sign(payload) for signer in signers])


def _publish_host(
    destination: Path,
    host: str,
    bundle: BundleReader,
    signers: list[Signer],
    now: int,
    expires_in: int,
) -> PublishedHost:
    written: list[str] = []
    total = 0
    for entry in bundle.manifest.blobs:
        path = destination / BLOBS_DIR / entry.sha256
        # Stored bytes, checked against the manifest as they are copied.
        size = _write_new(path, bundle.stored_chunks(entry.name))
        if size:
            written.append(f"{BLOBS_DIR}/{entry.sha256}")
            total += size
    header = _header(bundle)
    manifest_path = destination / MANIFESTS_DIR / bundle.digest
    size = _write_new(manifest_path, [header])
    if size:
        written.append(f"{MANIFESTS_DIR}/{bundle.digest}")
        total += size
    pointer = Pointer(
        host=host,
        environment=bundle.manifest.environment,
        serial=bundle.manifest.serial,
        manifest=bundle.digest,
        manifest_size=len(header),
        issued=now,
        expires=now + expires_in,
    )
    _write_pointer(_pointer_path(destination, host), _sign(pointer, signers))
    return PublishedHost(host, pointer.serial, pointer.manifest, pointer.expires, tuple(written), total)


def _refresh(destination: Path, host: str, signers: list[Signer], now: int, expires_in: int) -> PublishedHost:
    path = _pointer_path(destination, host)
    if not path.is_file():
        raise BuildError(
            f"there is no published pointer for host {host!r} at {path}",
            hint="publish the bundles first ('bundle publish ENV DEST' without --refresh)",
        )
    old = read_pointer(path.read_bytes(), str(path))
    if not (destination / MANIFESTS_DIR / old.manifest).is_file():
        raise BuildError(
            f"{path} names manifest {old.manifest[:16]}, which is not in {destination / MANIFESTS_DIR}",
            hint="publish the bundles again without --refresh",
        )
    pointer = Pointer(
        old.host, old.environment, old.serial, old.manifest, old.manifest_size, now, now + expires_in
    )
    _write_pointer(path, _sign(pointer, signers))
    return PublishedHost(host, pointer.serial, pointer.manifest, pointer.expires)
