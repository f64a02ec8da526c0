"""The bundle file: the one thing that travels from the builder to a host.

    magic       8 bytes    89 43 53 42 0d 0a 1a 0a   ("\\x89CSB\\r\\n\\x1a\\n")
    version     u16 BE     1
    manifest    u32 BE length M, then M bytes of canonical msgpack
    signatures  u32 BE length S, then S bytes: entries of u32 BE length + SSHSIG blob
    blobs       the blobs' bytes, back to back, in manifest order; the file ends there

``docs/bundle-format.md`` is the specification; this module follows it.
Reading happens in three steps, and nothing untrusted is parsed beyond the
bounded framing before the signature holds:

1. :func:`read_envelope`: magic, version, lengths within limits, the
   manifest's bytes and the signature blobs (not yet trusted);
2. :func:`verify_envelope`: one signature by a trusted key over the
   manifest bytes, then the manifest decoded (canonical, every field
   checked) and the file's length checked against it;
3. :class:`VerifiedBundle`: each blob hashed as stored before use, and,
   when unpacked, decompressed with a capped window and checked against its
   raw size and sha256.

Inspection tools that must read a bundle no host would trust use
:func:`open_unverified`: the same framing, manifest and blob checks, and
no signature check. Never apply what it returns.

Reading and writing both live here, in the executor, the single owner of
the format.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

import zstandard

from . import canonical
from .decode import DecodeError
from .errors import BundleError, RefusedError, SignatureError
from .fs import HashingWriter, NotRegularFile, open_regular
from .manifest import Compression, Manifest, decode_manifest, digest
from .sshsig import MAX_SIGNATURE_BLOB, AllowedSigner, Signature, SignatureFormatError, Trust

MAGIC = b"\x89CSB\r\n\x1a\n"
FORMAT_VERSION = 1

MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 64 << 10
MAX_SIGNATURES = 16
# zstd frames may not ask for a larger window than this (128 MiB), the
# default limit of zstd(1) too.
MAX_ZSTD_WINDOW = 1 << 27
# A zstd frame header is at most this long (magic included).
ZSTD_FRAME_HEADER_MAX = 18
ZSTD_LEVEL = 3
CHUNK = 1 << 20

_HEADER = struct.Struct(">8sHI")
_LENGTH = struct.Struct(">I")


# -- writing -------------------------------------------------------------------


@dataclass(frozen=True)
class BlobData:
    """A blob's stored bytes, in memory or in a file, for the writer."""

    data: bytes | None = None
    path: str | None = None

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        assert self.path is not None
        with open(self.path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk


def signature_block(signatures: Sequence[Signature]) -> bytes:
    if len(signatures) > MAX_SIGNATURES:
        raise ValueError(f"at most {MAX_SIGNATURES} signatures fit a bundle")
    parts = []
    for signature in signatures:
        blob = signature.encode()
        parts.append(_LENGTH.pack(len(blob)) + blob)
    return b"".join(parts)


def bundle_chunks(
    manifest_bytes: bytes, signatures: Sequence[Signature], blobs: Sequence[BlobData]
) -> Iterator[bytes]:
    """The bundle's bytes in pieces; blobs in the manifest's order."""
    block = signature_block(signatures)
    yield _HEADER.pack(MAGIC, FORMAT_VERSION, len(manifest_bytes))
    yield manifest_bytes
    yield _LENGTH.pack(len(block))
    yield block
    for blob in blobs:
        yield from blob.chunks()


# -- compression -----------------------------------------------------------------


def _compressor() -> zstandard.ZstdCompressor:
    # N.B. one fixed code path (level, multi-threaded mode, content size):
    # zstd's bytes differ between one-shot and streaming and between single-
    # and multi-threaded mode, though not across thread counts.
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, threads=-1)


def compress_file(source: str, destination: str) -> tuple[int, str]:
    """zstd `source` into `destination`; return the compressed size and sha256."""
    size = os.path.getsize(source)
    with open(source, "rb") as fin, open(destination, "wb") as fout:
        writer = HashingWriter(fout)
        _compressor().copy_stream(
            fin, cast(IO[bytes], writer), size=size, read_size=CHUNK, write_size=CHUNK
        )
    return writer.written, writer.digest.hexdigest()


# -- reading ---------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A bundle's framing: nothing in it is trusted yet."""

    path: str
    size: int
    manifest_bytes: bytes
    signatures: tuple[Signature, ...]
    blobs_offset: int
    # (device, inode, size, ctime in ns) of the file read: the blobs are read
    # again later, and must come from the same, unchanged file.
    identity: tuple[int, int, int, int]

    @property
    def digest(self) -> str:
        return digest(self.manifest_bytes)


def _identity(status: os.stat_result) -> tuple[int, int, int, int]:
    # ctime, unlike mtime, cannot be set back by the file's owner.
    return (status.st_dev, status.st_ino, status.st_size, status.st_ctime_ns)


def _open_bundle(path: str) -> tuple[BinaryIO, os.stat_result]:
    """Open a bundle file for reading; only regular files are bundles."""
    try:
        return open_regular(path)
    except OSError as exc:
        raise BundleError(f"cannot read the bundle {path}: {exc.strerror}") from None
    except NotRegularFile as exc:
        raise BundleError(
            f"{path} is {exc.kind}", hint="name the .bundle file that 'bundle build' wrote"
        ) from None


def _read_exact(f: BinaryIO, size: int, path: str, what: str) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise BundleError(
            f"{path} is truncated: {what} is incomplete ({len(data)} of {size} bytes)",
            hint="copy the bundle again",
        )
    return data


def parse_signatures(
    block: bytes, path: str, error: type[RefusedError] = BundleError
) -> tuple[Signature, ...]:
    """The signatures of a signature block (a bundle's or a pointer's);
    `error` names what is wrong with it."""
    signatures: list[Signature] = []
    offset = 0
    while offset < len(block):
        if len(signatures) == MAX_SIGNATURES:
            raise error(f"{path} carries more than {MAX_SIGNATURES} signatures")
        if offset + _LENGTH.size > len(block):
            raise error(f"{path}: signature {len(signatures) + 1} is truncated")
        (length,) = _LENGTH.unpack_from(block, offset)
        offset += _LENGTH.size
        if length > MAX_SIGNATURE_BLOB or offset + length > len(block):
            raise error(f"{path}: signature {len(signatures) + 1} has a bad length ({length})")
        try:
            signatures.append(Signature.decode(block[offset : offset + length]))
        except SignatureFormatError as exc:
            raise error(
                f"{path}: signature {len(signatures) + 1} is not an SSH signature: {exc}"
            ) from None
        offset += length
    return tuple(signatures)


def read_envelope(path: str) -> Envelope:
    """Read a bundle's framing within the format's limits."""
    f, status = _open_bundle(path)
    with f:
        total = status.st_size
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
        block = _read_exact(f, signature_length, path, "the signature block")
        return Envelope(
            path=path,
            size=total,
            manifest_bytes=manifest_bytes,
            signatures=parse_signatures(block, path),
            blobs_offset=f.tell(),
            identity=_identity(status),
        )


def decode_unverified(envelope: Envelope) -> Manifest:
    """The manifest without trusting it: for inspection tools, never for applying."""
    try:
        return decode_manifest(envelope.manifest_bytes, MAX_MANIFEST_BYTES)
    except (canonical.CanonicalError, DecodeError) as exc:
        raise BundleError(
            f"{envelope.path}: the manifest is invalid: {exc}",
            hint="bundles are made by 'bundle build'; rebuild it or copy it again",
        ) from None


def _check_length(envelope: Envelope, manifest: Manifest) -> None:
    """The file ends exactly where the manifest's last blob ends."""
    path = envelope.path
    expected = envelope.blobs_offset + sum(b.size for b in manifest.blobs)
    if envelope.size < expected:
        raise BundleError(
            f"{path} is truncated: {envelope.size} bytes, the manifest promises {expected}",
            hint="copy the bundle again",
        )
    if envelope.size > expected:
        raise BundleError(
            f"{path} has {envelope.size - expected} bytes of trailing data",
            hint="the file was changed after it was built; copy the bundle again",
        )


def open_unverified(path: str) -> BundleReader:
    """A bundle's framing and manifest without any trust: for inspection
    tools (`bundle inspect`, `bundle diff`), never for applying. The blobs
    are still checked against the manifest when read."""
    envelope = read_envelope(path)
    manifest = decode_unverified(envelope)
    _check_length(envelope, manifest)
    return BundleReader(envelope, manifest)


def verify_envelope(envelope: Envelope, trust: Trust, now: int) -> VerifiedBundle:
    """Check the signatures, then decode the manifest and the file's length."""
    path = envelope.path
    if not envelope.signatures:
        raise SignatureError(
            f"{path} is not signed",
            hint="build it with a signing key (bundle build --sign-key)",
        )
    signer, reasons = trust.check(envelope.signatures, envelope.manifest_bytes, now)
    if signer is None:
        tampered = any("does not match the manifest" in reason for reason in reasons)
        revoked = bool(reasons) and all(r.endswith("the key is revoked") for r in reasons)
        if tampered:
            hint = "the manifest was changed after it was signed: copy the bundle again or rebuild it"
        elif revoked:
            hint = (
                "the key that signed it is revoked on this host: rebuild and sign with a key "
                "that is not (docs/operations.md, When a key is stolen)"
            )
        else:
            hint = (
                "add the builder's key to the allowed signers (bundle keys generate prints "
                "the line), or rebuild with a trusted key"
            )
        raise SignatureError(
            f"{path} has no signature this host trusts: " + "; ".join(reasons), hint=hint
        )
    manifest = decode_unverified(envelope)
    _check_length(envelope, manifest)
    return VerifiedBundle(envelope, manifest, signer)


@dataclass(frozen=True)
class BundleReader:
    """A bundle's manifest and blobs; each blob is checked against the
    manifest as it is read. Whether the manifest is trusted is up to the
    caller: :func:`verify_envelope` gives a :class:`VerifiedBundle`."""

    envelope: Envelope
    manifest: Manifest

    @property
    def digest(self) -> str:
        return self.envelope.digest

    @property
    def path(self) -> str:
        return self.envelope.path

    def _offset(self, name: str) -> int:
        offset = self.envelope.blobs_offset
        for entry in self.manifest.blobs:
            if entry.name == name:
                return offset
            offset += entry.size
        raise BundleError(f"{self.path} has no {name!r} blob")

    def stored_chunks(self, name: str) -> Iterator[bytes]:
        """The blob's stored bytes; raises at the end if they do not match."""
        entry = self.manifest.blob(name)
        if entry is None:
            raise BundleError(f"{self.path} has no {name!r} blob")
        actual = hashlib.sha256()
        f, status = _open_bundle(self.path)
        with f:
            if _identity(status) != self.envelope.identity:
                raise BundleError(
                    f"{self.path} changed after its signature was checked",
                    hint="keep bundles in a directory only root can write while they are applied",
                )
            f.seek(self._offset(name))
            left = entry.size
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise BundleError(f"{self.path} is truncated in blob {name!r}")
                actual.update(chunk)
                left -= len(chunk)
                yield chunk
        if actual.hexdigest() != entry.sha256:
            raise BundleError(
                f"{self.path}: blob {name!r} does not match its sha256: "
                f"the manifest says {entry.sha256}, the blob has {actual.hexdigest()}",
                hint="the bundle is damaged; copy it again",
            )

    def check_blobs(self) -> None:
        """Hash every blob as stored, before anything is decompressed."""
        for entry in self.manifest.blobs:
            for _chunk in self.stored_chunks(entry.name):
                pass

    def raw_chunks(self, name: str) -> Iterator[bytes]:
        """The blob's content, decompressed within its declared size and checked."""
        entry = self.manifest.blob(name)
        if entry is None:
            raise BundleError(f"{self.path} has no {name!r} blob")
        stored = self.stored_chunks(name)
        if entry.compression is Compression.NONE:
            chunks = stored
        else:
            chunks = _decompress(stored, entry.raw_size, f"{self.path}: blob {name!r}")
        actual = hashlib.sha256()
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > entry.raw_size:
                raise BundleError(
                    f"{self.path}: blob {name!r} unpacks to more than its {entry.raw_size} bytes"
                )
            actual.update(chunk)
            yield chunk
        if size != entry.raw_size or actual.hexdigest() != entry.raw_sha256:
            raise BundleError(
                f"{self.path}: blob {name!r} does not unpack to its raw sha256 and size",
                hint="the bundle is damaged or was built wrongly; build it again",
            )

    def read(self, name: str, limit: int) -> bytes:
        """A small blob's content (a model), checked, at most `limit` bytes."""
        entry = self.manifest.blob(name)
        if entry is not None and entry.raw_size > limit:
            raise BundleError(f"{self.path}: blob {name!r} is larger than {limit} bytes")
        return b"".join(self.raw_chunks(name))

    def extract_to(self, name: str, destination: str) -> None:
        """Write a blob's checked content to the new file `destination`."""
        with open(destination, "xb") as out:
            for chunk in self.raw_chunks(name):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())


@dataclass(frozen=True)
class VerifiedBundle(BundleReader):
    """A bundle whose manifest is signed by a trusted key; blobs checked on use."""

    signer: AllowedSigner


class _ChunkReader:
    """A readable over an iterator of byte strings (for zstd's stream_reader)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def _fill(self, size: int) -> None:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk

    def peek(self, size: int) -> bytes:
        self._fill(size)
        return self._buffer[:size]

    def read(self, size: int = -1) -> bytes:
        self._fill(size)
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _check_frame_header(head: bytes, raw_size: int, where: str) -> None:
    """Refuse, with a clear message, a first frame that asks for too large a
    window or announces more content than the manifest allows; the
    decompressor enforces both anyway, for every frame."""
    try:
        params = zstandard.get_frame_parameters(head)
    except zstandard.ZstdError:
        return  # no complete frame header: the decompressor reports it
    if params.window_size > MAX_ZSTD_WINDOW:
        raise BundleError(
            f"{where} asks for a zstd window of {params.window_size} bytes; "
            f"the limit is {MAX_ZSTD_WINDOW}",
            hint="the bundle was not compressed by consign; build it with 'bundle build'",
        )
    if params.content_size != zstandard.CONTENTSIZE_UNKNOWN and params.content_size > raw_size:
        raise BundleError(
            f"{where} announces {params.content_size} bytes of content; "
            f"the manifest allows {raw_size}",
            hint="the bundle is damaged or was built wrongly; build it again",
        )


def _decompress(chunks: Iterable[bytes], raw_size: int, where: str) -> Iterator[bytes]:
    """Stream-decompress a zstd blob, as zstd(1) reads it (frame after frame):
    window capped, at most CHUNK bytes at a time, never more than `raw_size`
    plus one byte produced in all."""
    source = _ChunkReader(chunks)
    _check_frame_header(source.peek(ZSTD_FRAME_HEADER_MAX), raw_size, where)
    decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
    produced = 0
    try:
        with decompressor.stream_reader(
            cast(IO[bytes], source), read_size=CHUNK, read_across_frames=True
        ) as reader:
            # Ask for one byte more than the manifest allows, never for more.
            while chunk := reader.read(min(CHUNK, raw_size - produced + 1)):
                produced += len(chunk)
                if produced > raw_size:
                    raise BundleError(
                        f"{where} decompresses to more than its declared {raw_size} bytes",
                        hint="the bundle is damaged or was built wrongly; build it again",
                    )
                yield chunk
    except zstandard.ZstdError as exc:
        raise BundleError(
            f"{where} is not valid zstd data: {exc}",
            hint="the bundle is damaged or was built wrongly; build it again",
        ) from None
    if source.read(1):
        raise BundleError(f"{where} has data after its zstd frames")
