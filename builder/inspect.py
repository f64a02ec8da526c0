"""``bundle inspect`` and ``bundle diff``: what is in a bundle, what changed.

Both read bundles without a host's trust: they check the framing, the
canonical manifest and every blob hash, and say whether each signature
matches the manifest; with ``--trust`` they also say whether a host with
that allowed_signers file would accept it.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from packaging.utils import parse_wheel_filename

from executor import canonical
from executor.bundle import BundleReader, open_unverified
from executor.decode import DecodeError
from executor.errors import BundleError, ConsignError
from executor.manifest import MAX_MODEL_BYTES, manifest_to_data
from executor.model import decode_model, model_to_data
from executor.sshsig import verify
from executor.verify import load_trust

from .errors import BuildError

# bundle diff reads bundles nobody vouched for: bound the temporary files.
MAX_DIFF_SNAPSHOT_BYTES = 2 << 30
MAX_RUNTIME_BYTES = 2 << 30
MAX_PEX_INFO_BYTES = 1 << 20


@dataclass(frozen=True)
class SignatureReport:
    fingerprint: str
    namespace: str
    valid: bool
    # With --trust: None when a host would accept it, else why not.
    trusted: str | None = None


@dataclass(frozen=True)
class Inspection:
    path: str
    size: int
    digest: str
    manifest: dict[str, Any]
    signatures: tuple[SignatureReport, ...]
    roots: tuple[str, ...]
    skipped: tuple[str, ...]
    # With --trust: the principals of the first signature a host would accept.
    trust_checked: bool = False
    accepted_by: str | None = None
    # What the runtime pex holds: distribution name -> version.
    distributions: tuple[tuple[str, str], ...] = ()
    # Roots of other hosts ("host/root") that must apply before this host's.
    depends_on: tuple[str, ...] = ()
    # Names whose DNS answers the build pinned.
    pinned_names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "digest": self.digest,
            "manifest": self.manifest,
            "signatures": [
                {
                    "fingerprint": s.fingerprint,
                    "namespace": s.namespace,
                    "valid": s.valid,
                    "trusted": (s.trusted is None) if self.trust_checked else None,
                    "refused_because": s.trusted,
                }
                for s in self.signatures
            ],
            "roots": list(self.roots),
            "skipped": list(self.skipped),
            "accepted_by": self.accepted_by,
            "distributions": dict(self.distributions),
            "depends_on": list(self.depends_on),
            "pinned_names": list(self.pinned_names),
        }


def _model(bundle: BundleReader) -> dict[str, Any]:
    try:
        return model_to_data(decode_model(bundle.read("model", MAX_MODEL_BYTES)))
    except (canonical.CanonicalError, DecodeError) as exc:
        raise BundleError(f"{bundle.path}: the model is invalid: {exc}") from None


def inspect_bundle(
    path: Path, trust_file: Path | None = None, revoked_file: Path | None = None, now: int | None = None
) -> Inspection:
    bundle = open_unverified(str(path))
    bundle.check_blobs()
    manifest_bytes = bundle.envelope.manifest_bytes
    reports = []
    accepted_by = None
    trust = None
    if trust_file is not None:
        trust, _notes = load_trust(str(trust_file), str(revoked_file) if revoked_file else None)
    moment = now if now is not None else int(time.time())
    for signature in bundle.envelope.signatures:
        valid = verify(signature, manifest_bytes)
        reason = None
        if trust is not None:
            signer, reasons = trust.check([signature], manifest_bytes, moment)
            if signer is not None:
                accepted_by = accepted_by or ",".join(signer.principals)
            else:
                reason = "; ".join(reasons)
        reports.append(SignatureReport(signature.key.fingerprint(), signature.namespace, valid, reason))
    model = _model(bundle)
    host = bundle.manifest.host
    depends_on = sorted(
        {
            entry
            for root in model["roots"]
            for entry in root["after"]
            if entry.split("/", 1)[0] != host
        }
    )
    return Inspection(
        path=str(path),
        size=bundle.envelope.size,
        digest=bundle.digest,
        manifest=manifest_to_data(bundle.manifest),
        signatures=tuple(reports),
        roots=tuple(root["name"] for root in model["roots"]),
        skipped=tuple(f"{s['name']} ({s['reason']})" for s in model["skipped"]),
        trust_checked=trust is not None,
        accepted_by=accepted_by,
        distributions=tuple(sorted(runtime_distributions(bundle).items(), key=_folded)),
        depends_on=tuple(depends_on),
        pinned_names=tuple(sorted(model["dns"])),
    )


def _folded(item: tuple[str, str]) -> str:
    return item[0].lower()


def runtime_distributions(bundle: BundleReader) -> dict[str, str]:
    """Name -> version of every distribution in the bundle's runtime pex,
    from its PEX-INFO; empty for a bundle without a runtime."""
    entry = bundle.manifest.blob("runtime")
    if entry is None:
        return {}
    if entry.raw_size > MAX_RUNTIME_BYTES:
        raise BuildError(
            f"{bundle.path}: the runtime declares {entry.raw_size} bytes, "
            f"more than bundle inspect unpacks ({MAX_RUNTIME_BYTES})"
        )
    with tempfile.TemporaryFile() as data:
        for chunk in bundle.raw_chunks("runtime"):
            data.write(chunk)
        data.seek(0)
        try:
            with zipfile.ZipFile(data) as pex:
                if pex.getinfo("PEX-INFO").file_size > MAX_PEX_INFO_BYTES:
                    raise ValueError(f"PEX-INFO is larger than {MAX_PEX_INFO_BYTES} bytes")
                info = json.loads(pex.read("PEX-INFO"))
            files = info["distributions"]
            if not isinstance(files, dict) or not all(isinstance(n, str) for n in files):
                raise ValueError("PEX-INFO's distributions are not a map of wheel names")
            wheels = [parse_wheel_filename(name) for name in files]
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
            raise BundleError(
                f"{bundle.path}: the runtime is not a pex consign made: {exc}"
            ) from None
    return {str(name): str(version) for name, version, _build, _tags in wheels}


def write_signed_parts(path: Path, manifest_out: Path | None, signature_out: Path | None) -> str:
    """Write the signed manifest bytes and the first signature (armored), so
    that ``ssh-keygen -Y verify ... -s S < M`` checks them by hand."""
    envelope = open_unverified(str(path)).envelope
    if signature_out is not None and not envelope.signatures:
        raise BuildError(f"{path} is not signed; there is no signature to write")
    outputs = [(manifest_out, envelope.manifest_bytes)]
    if envelope.signatures:
        outputs.append((signature_out, envelope.signatures[0].armored().encode()))
    for target, data in outputs:
        if target is None:
            continue
        try:
            target.write_bytes(data)
        except OSError as exc:
            raise BuildError(
                f"cannot write {target}: {exc.strerror}",
                hint="choose a path in a directory that exists and is writable",
            ) from None
    return (
        f"ssh-keygen -Y verify -f allowed_signers -I builder -n consign-bundle "
        f"-s {signature_out or 'SIGNATURE'} < {manifest_out or 'MANIFEST'}"
    )


# -- diff ------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference: where, old value, new value (None when absent)."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class BundleDiff:
    host: str
    manifest: tuple[Change, ...]
    model: tuple[Change, ...]
    # Distributions of the runtime: name -> version, None when absent.
    runtime: tuple[Change, ...]
    files_added: tuple[str, ...]
    files_removed: tuple[str, ...]
    files_changed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (
            self.manifest or self.model or self.runtime or self.files_added or self.files_removed or self.files_changed
        )

    def to_json(self) -> dict[str, Any]:
        def changes(items: tuple[Change, ...]) -> list[dict[str, Any]]:
            return [{"path": c.path, "old": c.old, "new": c.new} for c in items]

        return {
            "host": self.host,
            "manifest": changes(self.manifest),
            "model": changes(self.model),
            "runtime": changes(self.runtime),
            "files": {
                "added": list(self.files_added),
                "removed": list(self.files_removed),
                "changed": list(self.files_changed),
            },
        }


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """Leaves of nested maps and lists as (path, value); roots keyed by name."""
    if isinstance(value, Mapping):
        for key in sorted(value):
            yield from _flatten(value[key], f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list) and value and all(
        isinstance(v, Mapping) and "name" in v for v in value
    ):
        for item in value:
            rest = {k: v for k, v in item.items() if k != "name"}
            yield from _flatten(rest, f"{prefix}[{item['name']}]")
    else:
        yield prefix, value


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[Change, ...]:
    before, after = dict(_flatten(old, "")), dict(_flatten(new, ""))
    return tuple(
        Change(path, before.get(path), after.get(path))
        for path in sorted(set(before) | set(after))
        if before.get(path) != after.get(path)
    )


def snapshot_index(bundle: BundleReader) -> dict[str, str]:
    """Path -> a fingerprint of kind, mode and content, for the repo snapshot."""
    index: dict[str, str] = {}
    entry = bundle.manifest.blob("repo")
    if entry is not None and entry.raw_size > MAX_DIFF_SNAPSHOT_BYTES:
        raise BuildError(
            f"{bundle.path}: the repository snapshot declares {entry.raw_size} bytes, "
            f"more than bundle diff unpacks ({MAX_DIFF_SNAPSHOT_BYTES})"
        )
    with tempfile.TemporaryFile() as data:
        for chunk in bundle.raw_chunks("repo"):
            data.write(chunk)
        data.seek(0)
        _index_tar(data, index)
    return index


def _index_tar(data: IO[bytes], index: dict[str, str]) -> None:
    with tarfile.open(fileobj=data, mode="r:") as tar:
        for member in tar.getmembers():
            if member.isdir():
                continue
            if member.issym():
                index[member.name] = f"link -> {member.linkname}"
                continue
            source = tar.extractfile(member)
            content = hashlib.sha256()
            while source is not None and (chunk := source.read(1 << 20)):
                content.update(chunk)
            index[member.name] = f"{member.mode:o} {content.hexdigest()}"


def diff_bundles(old_path: Path, new_path: Path) -> BundleDiff:
    old, new = open_unverified(str(old_path)), open_unverified(str(new_path))
    for bundle in (old, new):
        bundle.check_blobs()
    if old.manifest.host != new.manifest.host:
        raise BuildError(
            f"{old_path} is for host {old.manifest.host!r}, {new_path} for {new.manifest.host!r}",
            hint="bundle diff compares two bundles of the same host",
        )
    old_manifest, new_manifest = manifest_to_data(old.manifest), manifest_to_data(new.manifest)
    old_files, new_files = snapshot_index(old), snapshot_index(new)
    return BundleDiff(
        host=new.manifest.host,
        manifest=_changes(old_manifest, new_manifest),
        model=_changes(_model(old), _model(new)),
        runtime=_runtime_changes(old, new),
        files_added=tuple(sorted(set(new_files) - set(old_files))),
        files_removed=tuple(sorted(set(old_files) - set(new_files))),
        files_changed=tuple(
            sorted(p for p in set(old_files) & set(new_files) if old_files[p] != new_files[p])
        ),
    )



def _runtime_changes(old: BundleReader, new: BundleReader) -> tuple[Change, ...]:
    old_entry, new_entry = old.manifest.blob("runtime"), new.manifest.blob("runtime")
    if (old_entry and old_entry.raw_sha256) == (new_entry and new_entry.raw_sha256):
        return ()
    before, after = runtime_distributions(old), runtime_distributions(new)
    return tuple(
        Change(name, before.get(name), after.get(name))
        for name in sorted(set(before) | set(after), key=str.lower)
        if before.get(name) != after.get(name)
    )


def read_host_bundles(
    directory: Path, hosts: list[str], environment: str, *, check_blobs: bool
) -> tuple[list[tuple[str, BundleReader]], list[ConsignError]]:
    """Each host's bundle in `directory` (bundles/ENV), opened and checked
    to be that host's, and every problem found (a missing bundle names the
    host and says to build). With `check_blobs`, every blob's hash too."""
    readers: list[tuple[str, BundleReader]] = []
    problems: list[ConsignError] = []
    for host in hosts:
        path = directory / f"{host}.bundle"
        if not path.is_file():
            problems.append(
                BuildError(
                    f"there is no bundle for host {host!r} in {directory}",
                    hint=f"run 'bundle build {environment}' first",
                )
            )
            continue
        try:
            bundle = open_unverified(str(path))
            if check_blobs:
                bundle.check_blobs()
        except ConsignError as exc:
            problems.append(exc)
            continue
        manifest = bundle.manifest
        if manifest.host != host or manifest.environment != environment:
            problems.append(
                BuildError(
                    f"{path} is a bundle for {manifest.host!r} in {manifest.environment!r}",
                    hint=f"rebuild it with 'bundle build {environment}'",
                )
            )
            continue
        readers.append((host, bundle))
    return readers, problems
