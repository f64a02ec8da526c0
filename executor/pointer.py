"""Pointers: the small signed file that tells a pulling host what to apply.

``bundle publish`` writes one per host, ``hosts/<host>.pointer``; it names
the host, the environment, the bundle's serial and manifest digest, when it
was issued and when it expires. The pointer is the only file a pull
fetches when nothing changed, so it is small, signed, and has a deadline:
a server (or a man in the middle) that keeps serving yesterday's pointer is
noticed when it expires (freeze), and an older pointer never rolls a host
back (its serial is checked like a bundle's).

File layout (all integers big-endian)::

    magic        8 bytes  "\\x89CSP\\r\\n\\x1a\\n"
    payload_len  uint32
    payload      canonical msgpack map (see Pointer)
    sig_len      uint32
    signatures   as in a bundle: (uint32 length, SSHSIG blob)*

Signatures are SSHSIG in the bundle namespace ``consign-bundle`` over the
payload bytes. A payload carries ``kind: "pointer"`` and decodes only as a
pointer, a manifest only as a manifest: the strict decoders (every field
exactly once, nothing else) keep the two apart.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from . import canonical
from .bundle import parse_signatures, signature_block
from .decode import DecodeError, Fields
from .errors import RefusedError, SignatureError
from .sshsig import AllowedSigner, Signature, Trust

POINTER_MAGIC = b"\x89CSP\r\n\x1a\n"
POINTER_VERSION = 1
# A pointer is small; anything larger is refused before it is read.
MAX_POINTER_BYTES = 64 << 10
_LENGTH = struct.Struct(">I")
_DIGEST_LENGTH = 64


class PointerError(RefusedError):
    """A pointer that is damaged, not trusted, or not for this host."""

    code = "bad-pointer"


class PointerExpired(RefusedError):
    """A pointer past its expiry: the server may be frozen or replaying."""

    code = "pointer-expired"


@dataclass(frozen=True)
class Pointer:
    host: str
    environment: str
    serial: int
    # sha256 of the manifest bytes: the bundle's digest.
    manifest: str
    # Size of the manifest file (header, manifest, signatures) to fetch.
    manifest_size: int
    issued: int
    expires: int

    def payload(self) -> bytes:
        return canonical.pack({"kind": "pointer", "version": POINTER_VERSION, **self.to_json()})

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "environment": self.environment,
            "serial": self.serial,
            "manifest": self.manifest,
            "manifest_size": self.manifest_size,
            "issued": self.issued,
            "expires": self.expires,
        }


def encode_pointer(pointer: Pointer, signatures: list[Signature]) -> bytes:
    payload = pointer.payload()
    block = signature_block(signatures)
    return b"".join(
        [POINTER_MAGIC, _LENGTH.pack(len(payload)), payload, _LENGTH.pack(len(block)), block]
    )


def split_pointer(data: bytes, where: str) -> tuple[bytes, tuple[Signature, ...]]:
    """The payload and signatures of a pointer file, within its limits."""
    if len(data) > MAX_POINTER_BYTES:
        raise PointerError(f"{where}: a pointer is at most {MAX_POINTER_BYTES} bytes, got more")
    if not data.startswith(POINTER_MAGIC):
        raise PointerError(
            f"{where} is not a consign pointer (wrong magic bytes)",
            hint="pointers are written by 'bundle publish'; check the URL",
        )
    offset = len(POINTER_MAGIC)

    def take(size: int, what: str) -> bytes:
        nonlocal offset
        if offset + size > len(data):
            raise PointerError(f"{where} is truncated in {what}")
        chunk = data[offset : offset + size]
        offset += size
        return chunk

    (payload_length,) = _LENGTH.unpack(take(_LENGTH.size, "the payload length"))
    payload = take(payload_length, "the payload")
    (block_length,) = _LENGTH.unpack(take(_LENGTH.size, "the signature length"))
    block = take(block_length, "the signatures")
    if offset != len(data):
        raise PointerError(f"{where} has {len(data) - offset} bytes of trailing data")
    return payload, parse_signatures(block, where, PointerError)


def decode_payload(payload: bytes, where: str) -> Pointer:
    try:
        data = canonical.unpack(payload, max_bytes=MAX_POINTER_BYTES)
        f = Fields(data, "pointer")
        kind = f.string("kind")
        if kind != "pointer":
            raise DecodeError("pointer.kind", f"expected 'pointer', got {kind!r}")
        version = f.integer("version")
        if version != POINTER_VERSION:
            raise DecodeError("pointer.version", f"expected {POINTER_VERSION}, got {version}")
        pointer = Pointer(
            host=f.string("host"),
            environment=f.string("environment"),
            serial=f.integer("serial", minimum=0),
            manifest=f.string("manifest"),
            manifest_size=f.integer("manifest_size", minimum=1),
            issued=f.integer("issued", minimum=0),
            expires=f.integer("expires", minimum=0),
        )
        f.done()
    except (canonical.CanonicalError, DecodeError) as exc:
        raise PointerError(f"{where}: the pointer is invalid: {exc}") from None
    if len(pointer.manifest) != _DIGEST_LENGTH or not all(
        c in "0123456789abcdef" for c in pointer.manifest
    ):
        raise PointerError(f"{where}: the pointer's manifest digest is not a sha256")
    return pointer


def read_pointer(data: bytes, where: str) -> Pointer:
    """A pointer's content, unverified (for publish --refresh and inspection)."""
    payload, _signatures = split_pointer(data, where)
    return decode_payload(payload, where)


def verify_pointer(
    data: bytes, where: str, trust: Trust, now: int, host: str, environment: str | None
) -> tuple[Pointer, AllowedSigner]:
    """The pointer, if a trusted key signed it for this host, environment and
    time; else a RefusedError that says which."""
    payload, signatures = split_pointer(data, where)
    if not signatures:
        raise SignatureError(f"{where} is not signed", hint="publish it with 'bundle publish'")
    signer, reasons = trust.check(list(signatures), payload, now)
    if signer is None:
        raise SignatureError(
            f"{where} has no signature this host trusts: " + "; ".join(reasons),
            hint="the pointer was changed after it was signed, or signed by a key this host "
            "does not trust; publish again with a trusted key",
        )
    pointer = decode_payload(payload, where)
    if pointer.host != host:
        raise PointerError(
            f"{where} is for host {pointer.host!r}, but this host is {host!r}",
            hint="check the URL and --host",
        )
    if environment is not None and pointer.environment != environment:
        raise PointerError(
            f"{where} is for environment {pointer.environment!r}, but this host belongs to "
            f"{environment!r}",
            hint="check the URL, or pass --environment to move this host on purpose",
        )
    if pointer.expires <= now:
        raise PointerExpired(
            f"{where} expired {now - pointer.expires} s ago (serial {pointer.serial}): the "
            "server keeps serving an old pointer",
            hint="publish again ('bundle publish ENV DEST', or '--refresh' to re-sign the "
            "pointers); until then this host applies nothing new",
        )
    return pointer, signer
