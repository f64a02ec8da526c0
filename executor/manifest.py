"""The bundle manifest: what a bundle is, signed as one canonical msgpack map.

Every field is described in ``docs/bundle-format.md``; this module is the
one codec for it. Decoding validates every field and names the path of the
first bad one (``manifest.blobs[1].sha256: ...``).
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from . import canonical
from .decode import DecodeError, Fields, shown

FORMAT_VERSION = 1

# Blob names in the order a bundle lists them; repo, runtime and model are required.
BLOB_ORDER = ("repo", "runtime", "model", "secrets")
REQUIRED_BLOBS = ("repo", "runtime", "model")

MAX_BLOB_BYTES = 4 << 30
# Serials and times are unsigned 64-bit msgpack integers.
MAX_SERIAL = (1 << 64) - 1
MAX_RAW_BYTES = 16 << 30
MAX_NAME_LENGTH = 255
# The model blob is read into memory whole.
MAX_MODEL_BYTES = 64 << 20


class Compression(enum.Enum):
    ZSTD = "zstd"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """A blob as stored in the bundle (`size`, `sha256`) and as used (`raw_*`)."""

    name: str
    compression: Compression
    size: int
    sha256: str
    raw_size: int
    raw_sha256: str


@dataclass(frozen=True, slots=True)
class Source:
    """The repository state a bundle was built from."""

    commit: str | None
    dirty: bool


@dataclass(frozen=True, slots=True)
class Target:
    """What the bundle's runtime was built for.

    `platform` is the host's batou platform; `python` the X.Y version its
    runtime needs; `complete_platform` the sha256 of the complete platform
    file it was built for (as the builder normalised it), if one was used.
    """

    platform: str | None = None
    python: str | None = None
    complete_platform: str | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    environment: str
    host: str
    fqdn: str
    serial: int
    build_time: int
    consign_version: str
    source: Source
    target: Target
    blobs: tuple[BlobEntry, ...]

    def blob(self, name: str) -> BlobEntry | None:
        for entry in self.blobs:
            if entry.name == name:
                return entry
        return None


def digest(manifest_bytes: bytes) -> str:
    """A bundle's identity: the sha256 of its manifest bytes."""
    return hashlib.sha256(manifest_bytes).hexdigest()


def manifest_to_data(manifest: Manifest) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "consign_version": manifest.consign_version,
        "environment": manifest.environment,
        "host": manifest.host,
        "fqdn": manifest.fqdn,
        "serial": manifest.serial,
        "build_time": manifest.build_time,
        "source": {"commit": manifest.source.commit, "dirty": manifest.source.dirty},
        "target": {
            "platform": manifest.target.platform,
            "python": manifest.target.python,
            "complete_platform": manifest.target.complete_platform,
        },
        "blobs": [
            {
                "name": b.name,
                "compression": b.compression.value,
                "size": b.size,
                "sha256": b.sha256,
                "raw_size": b.raw_size,
                "raw_sha256": b.raw_sha256,
            }
            for b in manifest.blobs
        ],
    }


def encode_manifest(manifest: Manifest) -> bytes:
    check_blob_list(manifest.blobs, "manifest.blobs", error=ValueError)
    return canonical.pack(manifest_to_data(manifest))


def _hex_digest(fields: Fields, key: str) -> str:
    value = fields.string(key)
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise DecodeError(fields.path(key), f"expected 64 lowercase hex digits, got {shown(value)}")
    return value


def _name(fields: Fields, key: str) -> str:
    value = fields.string(key)
    if not value or len(value) > MAX_NAME_LENGTH or "/" in value or "\0" in value:
        raise DecodeError(fields.path(key), f"expected a plain name, got {shown(value)}")
    return value


def _blob_entry(value: object, path: str) -> BlobEntry:
    f = Fields(value, path)
    name = f.string("name")
    compression_text = f.string("compression")
    try:
        compression = Compression(compression_text)
    except ValueError:
        raise DecodeError(
            f.path("compression"), f"expected 'zstd' or 'none', got {shown(compression_text)}"
        ) from None
    entry = BlobEntry(
        name=name,
        compression=compression,
        size=f.integer("size", minimum=0),
        sha256=_hex_digest(f, "sha256"),
        raw_size=f.integer("raw_size", minimum=0),
        raw_sha256=_hex_digest(f, "raw_sha256"),
    )
    f.done()
    if entry.size > MAX_BLOB_BYTES:
        raise DecodeError(f"{path}.size", f"expected at most {MAX_BLOB_BYTES}, got {entry.size}")
    if entry.raw_size > MAX_RAW_BYTES:
        raise DecodeError(
            f"{path}.raw_size", f"expected at most {MAX_RAW_BYTES}, got {entry.raw_size}"
        )
    if compression is Compression.NONE and (entry.size, entry.sha256) != (
        entry.raw_size,
        entry.raw_sha256,
    ):
        raise DecodeError(path, "an uncompressed blob's raw size and sha256 must equal its own")
    return entry


def check_blob_list(
    blobs: tuple[BlobEntry, ...], path: str, error: type[Exception] = DecodeError
) -> None:
    """Known names, each once, in BLOB_ORDER, the required ones present."""

    def fail(where: str, message: str) -> None:
        if error is DecodeError:
            raise DecodeError(where, message)
        raise error(f"{where}: {message}")

    names = [b.name for b in blobs]
    for index, name in enumerate(names):
        if name not in BLOB_ORDER:
            fail(
                f"{path}[{index}].name",
                f"expected one of {', '.join(BLOB_ORDER)}, got {shown(name)}",
            )
        if names.index(name) != index:
            fail(f"{path}[{index}].name", f"blob {shown(name)} appears twice")
    if names != sorted(names, key=BLOB_ORDER.index):
        fail(path, f"blobs must be listed in the order {', '.join(BLOB_ORDER)}")
    for name in REQUIRED_BLOBS:
        if name not in names:
            fail(path, f"the {name!r} blob is missing")


def manifest_from_data(data: object) -> Manifest:
    f = Fields(data, "manifest")
    version = f.integer("format")
    if version != FORMAT_VERSION:
        raise DecodeError("manifest.format", f"expected {FORMAT_VERSION}, got {version}")
    source = f.mapping("source")
    target = f.mapping("target")
    blobs = f.array("blobs", _blob_entry)
    manifest = Manifest(
        environment=_name(f, "environment"),
        host=_name(f, "host"),
        fqdn=_name(f, "fqdn"),
        serial=f.integer("serial", minimum=0),
        build_time=f.integer("build_time", minimum=0),
        consign_version=f.string("consign_version"),
        source=Source(commit=source.optional_string("commit"), dirty=_flag(source, "dirty")),
        target=Target(
            platform=target.optional_string("platform"),
            python=_python_version(target),
            complete_platform=_optional_digest(target, "complete_platform"),
        ),
        blobs=blobs,
    )
    source.done()
    target.done()
    f.done()
    check_blob_list(blobs, "manifest.blobs")
    return manifest


def _python_version(fields: Fields) -> str | None:
    value = fields.optional_string("python")
    if value is not None and not re.fullmatch(r"3\.\d{1,2}", value):
        raise DecodeError(fields.path("python"), f"expected a version like 3.11, got {shown(value)}")
    return value


def _optional_digest(fields: Fields, key: str) -> str | None:
    value = fields.optional_string(key)
    if value is not None and (
        len(value) != 64 or any(c not in "0123456789abcdef" for c in value)
    ):
        raise DecodeError(fields.path(key), f"expected 64 lowercase hex digits, got {shown(value)}")
    return value


def _flag(fields: Fields, key: str) -> bool:
    value = fields.raw(key)
    if not isinstance(value, bool):
        raise DecodeError(fields.path(key), f"expected true or false, got {shown(value)}")
    return value


def decode_manifest(data: bytes, max_bytes: int) -> Manifest:
    """Decode canonical manifest bytes; raises CanonicalError or DecodeError."""
    return manifest_from_data(canonical.unpack(data, max_bytes=max_bytes))
