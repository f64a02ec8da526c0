"""The bundle file: the one thing that travels from the builder to a host.

    magic       8 bytes    89 43 53 42 0d 0a 1a 0a   ("\\x89CSB\\r\\n\\x1a\\n")
    version     u16 BE     1
    manifest    u32 BE length, then canonical msgpack
    signatures  u32 BE length, then the signature block (empty for now)
    blobs       the blobs' bytes, back to back, in manifest order

The manifest names every blob with its size and sha256, so the reader
checks the framing and every byte before anything is decompressed or
parsed beyond the manifest. Reading and writing both live here, in the
executor, the single owner of the format.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from . import __version__, canonical
from .decode import DecodeError, Fields, shown
from .errors import BundleError

MAGIC = b"\x89CSB\r\n\x1a\n"
FORMAT_VERSION = 1

MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 64 << 10
MAX_BLOBS = 16
MAX_BLOB_BYTES = 4 << 30
# zstd frames may not ask for a larger window than this (128 MiB).
MAX_ZSTD_WINDOW = 1 << 27
ZSTD_LEVEL = 3

_HEADER = struct.Struct(">8sHI")
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class BlobEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    environment: str
    host: str
    consign_version: str
    blobs: tuple[BlobEntry, ...]

    def blob(self, name: str) -> BlobEntry:
        for entry in self.blobs:
            if entry.name == name:
                return entry
        raise BundleError(f"the bundle has no {name!r} blob")


@dataclass(frozen=True)
class Bundle:
    manifest: Manifest
    manifest_bytes: bytes
    blobs: dict[str, bytes]

    @property
    def digest(self) -> str:
        """sha256 of the manifest bytes: names this bundle's content."""
        return hashlib.sha256(self.manifest_bytes).hexdigest()


def manifest_to_data(manifest: Manifest) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "consign_version": manifest.consign_version,
        "environment": manifest.environment,
        "host": manifest.host,
        "blobs": [{"name": b.name, "size": b.size, "sha256": b.sha256} for b in manifest.blobs],
    }


def _blob_entry(value: object, path: str) -> BlobEntry:
    f = Fields(value, path)
    entry = BlobEntry(
        name=f.string("name"),
        size=f.integer("size", minimum=0),
        sha256=f.string("sha256"),
    )
    f.done()
    if entry.size > MAX_BLOB_BYTES:
        raise DecodeError(f"{path}.size", f"expected at most {MAX_BLOB_BYTES}, got {entry.size}")
    if len(entry.sha256) != 64 or any(c not in "0123456789abcdef" for c in entry.sha256):
        raise DecodeError(
            f"{path}.sha256", f"expected 64 lowercase hex digits, got {shown(entry.sha256)}"
        )
    return entry


def manifest_from_data(data: object) -> Manifest:
    f = Fields(data, "manifest")
    version = f.integer("format")
    if version != FORMAT_VERSION:
        raise DecodeError("manifest.format", f"expected {FORMAT_VERSION}, got {version}")
    blobs = f.array("blobs", _blob_entry)
    manifest = Manifest(
        environment=f.string("environment"),
        host=f.string("host"),
        consign_version=f.string("consign_version"),
        blobs=blobs,
    )
    f.done()
    if len(blobs) > MAX_BLOBS:
        raise DecodeError(
            "manifest.blobs", f"expected at most {MAX_BLOBS} blobs, got {len(blobs)}"
        )
    first: dict[str, int] = {}
    for index, blob in enumerate(blobs):
        if blob.name in first:
            raise DecodeError(
                f"manifest.blobs[{index}].name",
                f"blob name {shown(blob.name)} appears twice (first at blobs[{first[blob.name]}])",
            )
        first[blob.name] = index
    return manifest


def compress(data: bytes) -> bytes:
    """zstd through one fixed code path, so equal input gives equal bytes."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, threads=-1)
    return bytes(compressor.compress(data))


def decompress(data: bytes, *, max_size: int) -> bytes:
    """Decompress one zstd frame of at most `max_size` bytes, window capped."""
    decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
    try:
        declared = zstandard.frame_content_size(data)
        # decompress() allocates what the frame declares (or max_size when it
        # declares nothing): check it first. compress() always declares it.
        if declared < 0:
            raise BundleError(
                "a blob's zstd frame does not declare its size",
                hint="bundles are made by 'bundle build', which always declares it",
            )
        if declared > max_size:
            raise BundleError(f"a blob declares {declared} bytes, more than {max_size}")
        # One frame, nothing after it: the same bytes must mean the same data.
        result = decompressor.decompress(data, max_output_size=max_size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise BundleError(f"a blob does not decompress: {exc}") from None
    if len(result) > max_size:
        raise BundleError(f"a blob decompresses to more than {max_size} bytes")
    return bytes(result)


def encode_bundle(
    *, environment: str, host: str, blobs: Sequence[tuple[str, bytes]]
) -> bytes:
    return b"".join(bundle_parts(environment=environment, host=host, blobs=blobs))


def bundle_parts(
    *, environment: str, host: str, blobs: Sequence[tuple[str, bytes]]
) -> list[bytes]:
    """The bundle's bytes in pieces, so a writer need not join large blobs."""
    names = [name for name, _data in blobs]
    # A bundle the reader would refuse is a bug in the caller, not bad input.
    if len(set(names)) != len(names):
        raise ValueError(f"blob names must be unique, got {names}")
    if len(blobs) > MAX_BLOBS:
        raise ValueError(f"at most {MAX_BLOBS} blobs fit a bundle, got {len(blobs)}")
    manifest = Manifest(
        environment=environment,
        host=host,
        consign_version=__version__,
        blobs=tuple(
            BlobEntry(name, len(data), hashlib.sha256(data).hexdigest()) for name, data in blobs
        ),
    )
    manifest_bytes = canonical.pack(manifest_to_data(manifest))
    parts = [
        _HEADER.pack(MAGIC, FORMAT_VERSION, len(manifest_bytes)),
        manifest_bytes,
        _LENGTH.pack(0),
    ]
    parts.extend(data for _name, data in blobs)
    return parts


def _read_exact(f: BinaryIO, size: int, path: str, what: str) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise BundleError(
            f"{path} is truncated: {what} is incomplete ({len(data)} of {size} bytes)",
            hint="copy the bundle again",
        )
    return data


def read_bundle(path: str) -> Bundle:
    """Read and check a bundle: framing, limits, manifest, every blob's hash."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise BundleError(f"cannot read the bundle {path}: {exc.strerror}") from None
    with f:
        total = os.fstat(f.fileno()).st_size
        head = f.read(_HEADER.size)
        if not head:
            raise BundleError(f"{path} is empty", hint="copy the bundle again")
        if len(head) < len(MAGIC) and MAGIC.startswith(head):
            raise BundleError(
                f"{path} is truncated: the header is incomplete", hint="copy the bundle again"
            )
        if head[: len(MAGIC)] != MAGIC:
            raise BundleError(
                f"{path} is not a consign bundle (wrong magic bytes)",
                hint="bundles are made by 'bundle build'; was the file copied in text mode?",
            )
        if len(head) < _HEADER.size:
            raise BundleError(
                f"{path} is truncated: the header is incomplete", hint="copy the bundle again"
            )
        _magic, version, manifest_length = _HEADER.unpack(head)
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{path} has bundle format {version}; this executor reads format {FORMAT_VERSION}",
                hint="build the bundle with a consign of the same format version",
            )
        if manifest_length > MAX_MANIFEST_BYTES:
            raise BundleError(
                f"{path}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes "
                f"(the header says {manifest_length})"
            )
        manifest_bytes = _read_exact(f, manifest_length, path, "the manifest")
        (signature_length,) = _LENGTH.unpack(
            _read_exact(f, _LENGTH.size, path, "the signature length")
        )
        if signature_length > MAX_SIGNATURE_BYTES:
            raise BundleError(
                f"{path}: the signature block exceeds {MAX_SIGNATURE_BYTES} bytes "
                f"(the header says {signature_length})"
            )
        _read_exact(f, signature_length, path, "the signature block")
        try:
            manifest = manifest_from_data(canonical.unpack(manifest_bytes))
        except (canonical.CanonicalError, DecodeError) as exc:
            raise BundleError(
                f"{path}: the manifest is invalid: {exc}",
                hint="bundles are made by 'bundle build'; rebuild it or copy it again",
            ) from None
        expected = f.tell() + sum(b.size for b in manifest.blobs)
        if total < expected:
            raise BundleError(
                f"{path} is truncated: {total} bytes, the manifest promises {expected}",
                hint="copy the bundle again",
            )
        if total > expected:
            raise BundleError(
                f"{path} has {total - expected} bytes of trailing data",
                hint="the file was changed after it was built; copy the bundle again",
            )
        blobs: dict[str, bytes] = {}
        for entry in manifest.blobs:
            data = _read_exact(f, entry.size, path, f"blob {entry.name!r}")
            actual = hashlib.sha256(data).hexdigest()
            if actual != entry.sha256:
                raise BundleError(
                    f"{path}: blob {entry.name!r} does not match its sha256: "
                    f"the manifest says {entry.sha256}, the blob has {actual}",
                    hint="the bundle is damaged; copy it again",
                )
            blobs[entry.name] = data
    return Bundle(manifest, manifest_bytes, blobs)
