"""``executor pull BASE_URL``: fetch this host's pointer, and when it names a
new bundle, download what the host lacks, reassemble it, and apply it.

1. GET ``BASE/hosts/<host>.pointer``, conditionally (If-None-Match /
   If-Modified-Since from the last pull); verify it (signature by a trusted
   key, this host and environment, not expired, serial not older than the
   floor). Same digest as the current generation: nothing to do.
2. GET ``BASE/manifests/<digest>`` (capped at the size the pointer signs);
   its manifest must hash to the pointer's digest and carry a trusted
   signature before any blob is fetched.
3. GET each ``BASE/blobs/<sha256>`` not already in ``STATE/blobs``, capped at
   its signed size, checked against its sha256, kept by digest.
4. Reassemble the bundle (the manifest file, then the blobs in manifest
   order) and apply it through :func:`executor.apply.apply_bundle`, which
   checks everything again, as for any bundle.

Failures before the apply (an expired pointer, a server that fails) are
recorded like runs (status, audit log, metrics), so that a frozen server
shows in monitoring.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import generations
from .apply import ApplyOptions, ApplyResult, apply_bundle
from .bundle import MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, decode_unverified, read_envelope
from .errors import BundleError, ConsignError, RefusedError, RollbackError, SignatureError
from .fetch import Fetcher
from .fs import fsync_directory, write_atomic
from .lock import state_lock
from .pointer import MAX_POINTER_BYTES, Pointer, verify_pointer
from .records import RunRecord, record_run
from .sshsig import Trust
from .state import load_state, prepare_directory
from .verify import load_trust, this_host

BLOBS_DIR = "blobs"
INCOMING_DIR = "incoming"
POINTER_FILE = "pointer"
PULL_FILE = "pull.json"
DEFAULT_DEADLINE = 900.0
DEFAULT_MIN_RATE = 4096.0
# The manifest file: magic and lengths, manifest, signatures.
MAX_MANIFEST_FILE = 64 + MAX_MANIFEST_BYTES + MAX_SIGNATURE_BYTES


@dataclass(frozen=True)
class PullOptions:
    base_url: str
    # host, trust, state, target, ...: as for executor apply (bundle is ignored).
    apply: ApplyOptions
    splay: float = 0.0
    deadline: float = DEFAULT_DEADLINE
    min_rate: float = DEFAULT_MIN_RATE
    now: int | None = None


@dataclass(frozen=True)
class PullResult:
    """What a pull did: nothing new, or an apply (with its result)."""

    host: str
    url: str
    pointer: Pointer
    requests: int
    received_bytes: int
    downloaded: tuple[str, ...]
    applied: ApplyResult | None = None

    @property
    def changed(self) -> bool:
        return self.applied is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "url": self.url,
            "pointer": self.pointer.to_json(),
            "requests": self.requests,
            "received_bytes": self.received_bytes,
            "downloaded": list(self.downloaded),
            "status": "no-change" if self.applied is None else self.applied.status.value,
            "apply": None if self.applied is None else self.applied.to_json(),
        }


def _url(base: str, *parts: str) -> str:
    return base.rstrip("/") + "/" + "/".join(parts)


def _conditional(state_directory: str, url: str) -> tuple[dict[str, str], bytes | None]:
    """Headers for a conditional GET of `url`, and the pointer they refer to."""
    try:
        with open(os.path.join(state_directory, PULL_FILE), "rb") as f:
            saved = json.loads(f.read(1 << 16))
        with open(os.path.join(state_directory, POINTER_FILE), "rb") as f:
            cached = f.read(MAX_POINTER_BYTES + 1)
    except (OSError, ValueError):
        return {}, None
    if not isinstance(saved, dict) or saved.get("url") != url:
        return {}, None
    headers = {}
    if isinstance(saved.get("etag"), str):
        headers["If-None-Match"] = saved["etag"]
    if isinstance(saved.get("last_modified"), str):
        headers["If-Modified-Since"] = saved["last_modified"]
    return headers, cached


def _remember(state_directory: str, url: str, data: bytes, headers: dict[str, str]) -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    write_atomic(
        os.path.join(state_directory, POINTER_FILE), data, mode=0o600, follow_symlinks=False
    )
    saved = {"url": url, "etag": lowered.get("etag"), "last_modified": lowered.get("last-modified")}
    write_atomic(
        os.path.join(state_directory, PULL_FILE),
        json.dumps(saved).encode(),
        mode=0o600,
        follow_symlinks=False,
    )


def pull(options: PullOptions) -> PullResult:
    """See the module doc. Raises RefusedError / FetchError / StateError for a
    pull that stops before applying (recorded); an apply that fails returns
    a result with the apply's error."""
    if options.splay > 0:
        time.sleep(random.uniform(0, options.splay))
    settings = options.apply
    host = settings.host or this_host()
    state_directory = settings.state_directory
    prepare_directory(state_directory)
    started, clock = time.time(), time.monotonic()
    fetcher = Fetcher(deadline=clock + options.deadline, min_rate=options.min_rate)
    url = _url(options.base_url, "hosts", f"{host}.pointer")
    verified: list[Pointer] = []
    try:
        pointer, downloaded, bundle = _download(options, host, url, fetcher, verified)
    except ConsignError as error:
        # With the pointer it followed, once verified: monitoring sees which
        # serial the host failed to fetch.
        _record(settings, host, url, started, clock, verified[0] if verified else None, error)
        raise
    if bundle is None:
        _record(settings, host, url, started, clock, pointer, None)
        return PullResult(host, url, pointer, fetcher.requests, fetcher.received, downloaded)
    try:
        applied = apply_bundle(replace(settings, bundle=str(bundle), host=host, origin=url))
    finally:
        with contextlib.suppress(OSError):
            bundle.unlink()
    return PullResult(host, url, pointer, fetcher.requests, fetcher.received, downloaded, applied)


def _download(
    options: PullOptions, host: str, url: str, fetcher: Fetcher, verified: list[Pointer]
) -> tuple[Pointer, tuple[str, ...], Path | None]:
    settings = options.apply
    state_directory = settings.state_directory
    now = options.now if options.now is not None else int(time.time())
    trust, _notes = load_trust(settings.trust_file, settings.revoked_file)
    state = load_state(state_directory)
    headers, cached = _conditional(state_directory, url)
    with tempfile.TemporaryFile() as body:
        fetched = fetcher.get(url, MAX_POINTER_BYTES, body, headers)
        if fetched.status == 304 and cached is not None:
            data = cached
        else:
            if fetched.status == 304:
                body.seek(0)
                fetched = fetcher.get(url, MAX_POINTER_BYTES, body)
            body.seek(0)
            data = body.read()
    pointer, _signer = verify_pointer(
        data, url, trust, now, host, settings.environment or state.environment
    )
    verified.append(pointer)
    if state.highest_serial is not None and pointer.serial < state.highest_serial:
        raise RollbackError(
            f"{url} points at serial {pointer.serial}, older than serial {state.highest_serial} "
            "which this host accepted before",
            hint="the server serves an old pointer (replayed or stale); publish again",
        )
    if fetched.status != 304:
        _remember(state_directory, url, data, dict(fetched.headers))
    current = None if state.current is None else generations.find(state_directory, state.current)
    if current is not None and current.digest == pointer.manifest:
        return pointer, (), None
    return pointer, *_fetch_bundle(options, pointer, fetcher, trust, now)


def _fetch_bundle(
    options: PullOptions, pointer: Pointer, fetcher: Fetcher, trust: Trust, now: int
) -> tuple[tuple[str, ...], Path]:
    state_directory = options.apply.state_directory
    incoming = Path(state_directory, INCOMING_DIR)
    blobs = Path(state_directory, BLOBS_DIR)
    for directory in (incoming, blobs):
        directory.mkdir(mode=0o700, exist_ok=True)
    downloaded: list[str] = []
    manifest_url = _url(options.base_url, "manifests", pointer.manifest)
    if pointer.manifest_size > MAX_MANIFEST_FILE:
        raise BundleError(f"{manifest_url}: the pointer promises a manifest of {pointer.manifest_size} bytes")
    with tempfile.NamedTemporaryFile(dir=incoming, prefix=".manifest-", delete=False) as header:
        header_path = Path(header.name)
    try:
        with open(header_path, "r+b") as out:
            fetcher.get(manifest_url, pointer.manifest_size, out)
        downloaded.append(f"manifests/{pointer.manifest}")
        envelope = read_envelope(str(header_path))
        if envelope.digest != pointer.manifest or envelope.blobs_offset != pointer.manifest_size:
            raise BundleError(
                f"{manifest_url} is not the manifest the pointer names "
                f"(digest {envelope.digest[:16]}, the pointer says {pointer.manifest[:16]})",
                hint="the server mixes files of different publishes; publish again",
            )
        signer, reasons = trust.check(list(envelope.signatures), envelope.manifest_bytes, now)
        if signer is None:
            raise SignatureError(
                f"{manifest_url} has no signature this host trusts: " + "; ".join(reasons)
            )
        manifest = decode_unverified(envelope)
        if manifest.host != pointer.host or manifest.serial != pointer.serial:
            raise BundleError(
                f"{manifest_url} is for {manifest.host!r} serial {manifest.serial}, the pointer "
                f"says {pointer.host!r} serial {pointer.serial}"
            )
        for entry in manifest.blobs:
            kept = blobs / entry.sha256
            if kept.is_file() and kept.stat().st_size == entry.size:
                continue
            blob_url = _url(options.base_url, "blobs", entry.sha256)
            staged = blobs / f".{entry.sha256[:16]}-{os.getpid()}"
            try:
                with open(staged, "w+b") as out:
                    fetcher.get(blob_url, entry.size, out)
                    out.seek(0)
                    digest = hashlib.sha256()
                    while chunk := out.read(1 << 20):
                        digest.update(chunk)
                if digest.hexdigest() != entry.sha256:
                    raise BundleError(
                        f"{blob_url} does not match its signed sha256 (got {digest.hexdigest()[:16]})",
                        hint="the server serves a replaced or damaged blob; nothing was applied",
                    )
                os.rename(staged, kept)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    staged.unlink()
            downloaded.append(f"blobs/{entry.sha256}")
        fsync_directory(str(blobs))
        bundle = incoming / f"{pointer.manifest}.bundle"
        staged_bundle = incoming / f".{pointer.manifest[:16]}-{os.getpid()}"
        with open(staged_bundle, "wb") as out, open(header_path, "rb") as head:
            out.write(head.read())
            for entry in manifest.blobs:
                with open(blobs / entry.sha256, "rb") as blob:
                    while chunk := blob.read(1 << 20):
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.rename(staged_bundle, bundle)
        return tuple(downloaded), bundle
    finally:
        with contextlib.suppress(FileNotFoundError):
            header_path.unlink()


def _record(
    settings: ApplyOptions,
    host: str,
    url: str,
    started: float,
    clock: float,
    pointer: Pointer | None,
    error: ConsignError | None,
) -> None:
    """Record a pull that did not reach the apply (which records itself)."""
    if error is None:
        result = "ok"
    elif isinstance(error, RefusedError):
        result = "refused"
    else:
        result = "failed"
    state_directory = settings.state_directory
    current = None
    with contextlib.suppress(ConsignError):
        state = load_state(state_directory)
        current = state.current
    record = RunRecord(
        kind="pull",
        result=result,
        started=started,
        duration_s=time.monotonic() - clock,
        bundle_path=url,
        host=host,
        environment=None if pointer is None else pointer.environment,
        bundle=None if pointer is None else pointer.manifest,
        serial=None if pointer is None else pointer.serial,
        generation=current if error is None else None,
        error=None if error is None else error.to_json(),
        pid=os.getpid(),
    )
    with contextlib.suppress(ConsignError), state_lock(state_directory, f"pull {url}", settings.wait):
        record_run(state_directory, record, settings.metrics_path, settings.report_url)
