"""Taking bundle files apart and putting damaged ones together, by the
rules of ``docs/bundle-format.md`` alone.

Nothing here imports executor.bundle, executor.manifest or executor.sshsig:
the split and the join follow the document, so that tests of consign's
reader (tests/executor/test_bundle.py) and of the whole host
(tests/e2e/test_attacks.py) craft their inputs without trusting the code
under test. A bundle re-signed here is signed by the test key, so that only
the defence after the signature can refuse it.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack
import zstandard

from builder.signing import load_signer
from tests.keys import signing_key

DOC_MAGIC = bytes.fromhex("894353420d0a1a0a")
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


class Refused(Exception):
    """The document's rules refuse the bundle."""


def doc_require(condition: bool, what: str) -> None:
    if not condition:
        raise Refused(what)


def ssh_string(data: bytes) -> bytes:
    """An SSH wire string: u32 length, then the bytes."""
    return struct.pack(">I", len(data)) + data


def _sorted(value: Any) -> Any:
    if isinstance(value, float):
        raise Refused("a float")
    if isinstance(value, msgpack.Timestamp):
        raise Refused("extension type -1")
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def doc_canonical(value: Any) -> bytes:
    """The document's canonical msgpack: sorted keys, smallest encodings."""
    return bytes(msgpack.packb(_sorted(value), use_bin_type=True))


@dataclass(frozen=True)
class Parts:
    """A bundle split by the document's layout (nothing checked but lengths).

    `names` are the blobs' names in the manifest's order (empty when the
    manifest cannot be decoded): blobs are found by name, never by index.
    """

    manifest: bytes
    entries: tuple[bytes, ...]
    blobs: tuple[bytes, ...]
    header: bytes = field(default=b"")
    names: tuple[str, ...] = ()

    def blob(self, name: str) -> bytes:
        """Blob `name`'s stored bytes."""
        return self.blobs[self.names.index(name)]

    def blobs_offset(self) -> int:
        """Where the blobs start in the joined file: 18 + M + S."""
        return 18 + len(self.manifest) + sum(4 + len(entry) for entry in self.entries)

    def span(self, name: str) -> tuple[int, int]:
        """Where blob `name` lies in the joined file: (start, end)."""
        index = self.names.index(name)
        start = self.blobs_offset() + sum(len(blob) for blob in self.blobs[:index])
        return start, start + len(self.blobs[index])


def doc_split(data: bytes) -> Parts:
    """The layout's fields; the blobs cut by the manifest's sizes."""
    if len(data) < 14:
        raise Refused("no header")
    magic, version, m = struct.unpack_from(">8sHI", data)
    doc_require(magic == DOC_MAGIC, "magic")
    doc_require(version == 1, "version")
    doc_require(m <= 1 * MiB, "manifest length")
    doc_require(len(data) >= 18 + m, "truncated manifest")
    manifest = data[14 : 14 + m]
    (s,) = struct.unpack_from(">I", data, 14 + m)
    doc_require(s <= 64 * KiB and len(data) >= 18 + m + s, "signature block")
    block, offset = data[18 + m : 18 + m + s], 0
    entries: list[bytes] = []
    while offset < len(block):
        doc_require(offset + 4 <= len(block) and len(entries) < 16, "signature entries")
        (length,) = struct.unpack_from(">I", block, offset)
        doc_require(length <= 4096 and offset + 4 + length <= len(block), "signature entry length")
        entries.append(block[offset + 4 : offset + 4 + length])
        offset += 4 + length
    start = 18 + m + s
    blobs = []
    try:
        listed = msgpack.unpackb(manifest, raw=False)["blobs"]
        sizes = [entry["size"] for entry in listed]
        names = tuple(str(entry["name"]) for entry in listed)
    except Exception:  # noqa: BLE001 - crafting damaged bundles splits what it can
        sizes, names = [len(data) - start], ()
    for size in sizes:
        blobs.append(data[start : start + size])
        start += size
    return Parts(manifest, tuple(entries), tuple(blobs), header=data[:8], names=names)


def doc_join(parts: Parts, block: bytes | None = None) -> bytes:
    if block is None:
        block = b"".join(ssh_string(entry) for entry in parts.entries)
    return b"".join(
        [DOC_MAGIC, struct.pack(">HI", 1, len(parts.manifest)), parts.manifest,
         ssh_string(block), *parts.blobs]
    )  # fmt: skip


def sign(manifest: bytes) -> bytes:
    """An SSHSIG blob by the test key (trusted by tests.keys' allowed_signers)."""
    return load_signer(signing_key().private).sign(manifest).encode()


def resigned(parts: Parts, manifest: bytes) -> Parts:
    return replace(parts, manifest=manifest, entries=(sign(manifest),))


def edit_manifest(parts: Parts, edit: Callable[[dict[str, Any]], None]) -> Parts:
    """Change the decoded manifest, encode it canonically, sign it again."""
    data = msgpack.unpackb(parts.manifest, raw=False)
    edit(data)
    return resigned(parts, doc_canonical(data))


def spliced(parts: Parts, name: str, stored: bytes) -> Parts:
    """Blob `name` replaced by other bytes, the manifest and its signature
    left as they are: what an attacker without the key can do."""
    blobs = list(parts.blobs)
    blobs[parts.names.index(name)] = stored
    return replace(parts, blobs=tuple(blobs))


def with_blob(
    parts: Parts,
    name: str,
    stored: bytes,
    *,
    raw: bytes | None = None,
    raw_size: int | None = None,
    raw_sha256: str | None = None,
) -> Parts:
    """Replace blob `name`; the manifest pins the new bytes and is signed again,
    so that only the checks after the signature can refuse the bundle."""
    data = msgpack.unpackb(parts.manifest, raw=False)
    entry = data["blobs"][parts.names.index(name)]
    entry["size"], entry["sha256"] = len(stored), hashlib.sha256(stored).hexdigest()
    if raw is not None:
        entry["raw_size"], entry["raw_sha256"] = len(raw), hashlib.sha256(raw).hexdigest()
    if raw_size is not None:
        entry["raw_size"] = raw_size
    if raw_sha256 is not None:
        entry["raw_sha256"] = raw_sha256
    return resigned(spliced(parts, name, stored), doc_canonical(data))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def flipped(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


def zstd_stream(chunks: Iterator[bytes] | list[bytes], **params: Any) -> bytes:
    """A zstd frame written by streaming, without the content size in its header."""
    if params:
        compressor = zstandard.ZstdCompressor(
            compression_params=zstandard.ZstdCompressionParameters.from_level(3, **params)
        )
    else:
        compressor = zstandard.ZstdCompressor(level=3)
    out = io.BytesIO()
    with compressor.stream_writer(out, closefd=False) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return out.getvalue()
