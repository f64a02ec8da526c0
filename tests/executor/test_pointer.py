"""Pointers: the small signed file a pulling host reads first. Every way a
pointer can be damaged, forged, misdirected or stale is refused by name."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from builder.signing import Signer, generate_key, load_signer
from executor import canonical
from executor.errors import RefusedError, SignatureError
from executor.manifest import BlobEntry, Compression, Manifest, Source, Target, encode_manifest
from executor.pointer import (
    MAX_POINTER_BYTES,
    POINTER_MAGIC,
    Pointer,
    PointerError,
    PointerExpired,
    encode_pointer,
    read_pointer,
    verify_pointer,
)
from executor.sshsig import Signature, Trust
from executor.verify import load_trust
from tests.keys import signing_key

WHERE = "https://deploy.example.com/prod/hosts/web1.pointer"
NOW = 1_700_000_000
POINTER = Pointer(
    host="web1",
    environment="prod",
    serial=7,
    manifest="ab" * 32,
    manifest_size=978,
    issued=NOW - 60,
    expires=NOW + 3600,
)
UNTRUSTED_HINT = (
    "the pointer was changed after it was signed, or signed by a key this host does not "
    "trust; publish again with a trusted key"
)


@functools.cache
def signer() -> Signer:
    return load_signer(signing_key().private)


@functools.cache
def trust() -> Trust:
    loaded, _notes = load_trust(str(signing_key().trust))
    return loaded


def frame(payload: bytes, signatures: list[Signature]) -> bytes:
    """A pointer file by the layout in executor/pointer.py's docstring."""
    block = b"".join(struct.pack(">I", len(s.encode())) + s.encode() for s in signatures)
    return POINTER_MAGIC + struct.pack(">I", len(payload)) + payload + struct.pack(">I", len(block)) + block


def signed(payload: bytes) -> bytes:
    return frame(payload, [signer().sign(payload)])


@functools.cache
def good() -> bytes:
    return encode_pointer(POINTER, [signer().sign(POINTER.payload())])


def fields(**changes: Any) -> dict[str, Any]:
    """The pointer's payload map with fields changed (None removes one)."""
    data: dict[str, Any] = msgpack.unpackb(POINTER.payload(), raw=False)
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


def verify(data: bytes, **kw: Any) -> tuple[Pointer, Any]:
    arguments: dict[str, Any] = {"now": NOW, "host": "web1", "environment": "prod", **kw}
    return verify_pointer(data, WHERE, trust(), **arguments)


def test_a_signed_pointer_verifies_to_what_was_encoded() -> None:
    pointer, allowed = verify(good())

    assert pointer == POINTER
    assert allowed.key == signer().key
    assert verify(good(), environment=None)[0] == POINTER
    assert read_pointer(good(), WHERE) == POINTER


def test_the_file_has_the_documented_layout() -> None:
    signature = signer().sign(POINTER.payload())

    assert encode_pointer(POINTER, [signature]) == frame(POINTER.payload(), [signature])
    assert good().startswith(b"\x89CSP\r\n\x1a\n")
    assert msgpack.unpackb(POINTER.payload(), raw=False) == {
        "kind": "pointer",
        "version": 1,
        "host": "web1",
        "environment": "prod",
        "serial": 7,
        "manifest": "ab" * 32,
        "manifest_size": 978,
        "issued": NOW - 60,
        "expires": NOW + 3600,
    }


def test_one_trusted_signature_among_others_is_enough(tmp_path: Path) -> None:
    generate_key(tmp_path / "other", comment="not trusted")
    other = load_signer(tmp_path / "other")
    payload = POINTER.payload()

    pointer, allowed = verify(frame(payload, [other.sign(payload), signer().sign(payload)]))

    assert pointer == POINTER
    assert allowed.key == signer().key


P = len(POINTER.payload())


def _block(block: bytes) -> Callable[[bytes], bytes]:
    """The good pointer with its signature block replaced by `block`."""
    return lambda data: data[: 12 + P] + struct.pack(">I", len(block)) + block


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: b"", f"{WHERE} is not a consign pointer (wrong magic bytes)"),
        (lambda d: b"\x89CSB\r\n\x1a\n" + d[8:], f"{WHERE} is not a consign pointer (wrong magic bytes)"),
        (lambda d: d[:4], f"{WHERE} is not a consign pointer (wrong magic bytes)"),
        (lambda d: d[:8], f"{WHERE} is truncated in the payload length"),
        (lambda d: d[:11], f"{WHERE} is truncated in the payload length"),
        (lambda d: d[:12], f"{WHERE} is truncated in the payload"),
        (lambda d: d[: 12 + P - 1], f"{WHERE} is truncated in the payload"),
        (lambda d: d[: 12 + P], f"{WHERE} is truncated in the signature length"),
        (lambda d: d[: 12 + P + 3], f"{WHERE} is truncated in the signature length"),
        (lambda d: d[: 12 + P + 4], f"{WHERE} is truncated in the signatures"),
        (lambda d: d[:-1], f"{WHERE} is truncated in the signatures"),
        (lambda d: d + b"\0\0", f"{WHERE} has 2 bytes of trailing data"),
        (
            lambda d: d + b"\0" * MAX_POINTER_BYTES,
            f"{WHERE}: a pointer is at most {MAX_POINTER_BYTES} bytes, got more",
        ),
        (_block(b"\0\0"), f"{WHERE}: signature 1 is truncated"),
        (_block(struct.pack(">I", 1000) + b"x"), f"{WHERE}: signature 1 has a bad length (1000)"),
        (_block(struct.pack(">I", 10) + b"NOTSSHSIG!"), f"{WHERE}: signature 1 is not an SSH signature: missing the SSHSIG magic"),
    ],
    ids=[
        "empty",
        "bundle-magic",
        "short-magic",
        "no-payload-length",
        "half-payload-length",
        "no-payload",
        "half-payload",
        "no-signature-length",
        "half-signature-length",
        "no-signatures",
        "half-signature",
        "trailing",
        "too-large",
        "signature-entry-truncated",
        "signature-entry-bad-length",
        "signature-not-sshsig",
    ],
)
def test_a_damaged_pointer_is_refused_by_name(damage: Callable[[bytes], bytes], message: str) -> None:
    data = damage(good())

    for check in (lambda: verify(data), lambda: read_pointer(data, WHERE)):
        with pytest.raises(PointerError) as caught:
            check()
        assert caught.value.message == message
        assert caught.value.code == "bad-pointer"


def test_wrong_magic_hints_at_the_url() -> None:
    with pytest.raises(PointerError) as caught:
        verify(b"<html>not found</html>")

    assert caught.value.hint == "pointers are written by 'bundle publish'; check the URL"


def test_an_unsigned_pointer_is_refused() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(encode_pointer(POINTER, []))

    assert caught.value.message == f"{WHERE} is not signed"
    assert caught.value.hint == "publish it with 'bundle publish'"


def test_a_pointer_signed_by_an_untrusted_key_is_refused(tmp_path: Path) -> None:
    generate_key(tmp_path / "other", comment="not trusted")
    signature = load_signer(tmp_path / "other").sign(POINTER.payload())

    with pytest.raises(SignatureError) as caught:
        verify(encode_pointer(POINTER, [signature]))

    assert caught.value.message == (
        f"{WHERE} has no signature this host trusts: "
        f"{signature.key.fingerprint()}: the key is not in the allowed signers"
    )
    assert caught.value.hint == UNTRUSTED_HINT


def test_a_payload_changed_after_signing_is_refused() -> None:
    signature = signer().sign(POINTER.payload())
    forged = replace(POINTER, serial=8).payload()

    with pytest.raises(SignatureError) as caught:
        verify(frame(forged, [signature]))

    assert caught.value.message == (
        f"{WHERE} has no signature this host trusts: "
        f"{signature.key.fingerprint()}: the signature does not match the manifest"
    )
    assert caught.value.hint == UNTRUSTED_HINT


def test_a_pointer_for_another_host_is_refused() -> None:
    with pytest.raises(PointerError) as caught:
        verify(good(), host="web2")

    assert caught.value.message == f"{WHERE} is for host 'web1', but this host is 'web2'"
    assert caught.value.hint == "check the URL and --host"


def test_a_pointer_for_another_environment_is_refused() -> None:
    with pytest.raises(PointerError) as caught:
        verify(good(), environment="staging")

    assert caught.value.message == (
        f"{WHERE} is for environment 'prod', but this host belongs to 'staging'"
    )
    assert caught.value.hint == (
        "check the URL, or pass --environment to move this host on purpose"
    )


@pytest.mark.parametrize("late", [0, 90])
def test_an_expired_pointer_is_refused(late: int) -> None:
    with pytest.raises(PointerExpired) as caught:
        verify(good(), now=POINTER.expires + late)

    assert caught.value.message == (
        f"{WHERE} expired {late} s ago (serial 7): the server keeps serving an old pointer"
    )
    assert caught.value.code == "pointer-expired"
    assert isinstance(caught.value, RefusedError)
    assert caught.value.hint == (
        "publish again ('bundle publish ENV DEST', or '--refresh' to re-sign the pointers); "
        "until then this host applies nothing new"
    )


def test_a_pointer_is_good_until_the_second_it_expires() -> None:
    assert verify(good(), now=POINTER.expires - 1)[0] == POINTER


def _manifest_payload() -> bytes:
    """A bundle's manifest: signed with the same key and namespace as pointers."""
    blobs = tuple(
        BlobEntry(name, Compression.NONE, 3, digit * 64, 3, digit * 64)
        for name, digit in (("repo", "1"), ("runtime", "2"), ("model", "3"))
    )
    return encode_manifest(
        Manifest(
            environment="prod",
            host="web1",
            fqdn="web1.example.com",
            serial=7,
            build_time=NOW,
            consign_version="0.1.0",
            source=Source(None, True),
            target=Target(),
            blobs=blobs,
        )
    )


def _unsorted(data: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(dict(reversed(list(data.items()))), use_bin_type=True))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (lambda: _manifest_payload(), "the pointer is invalid: pointer.kind: missing"),
        (
            lambda: canonical.pack(fields(kind="manifest")),
            "the pointer is invalid: pointer.kind: expected 'pointer', got 'manifest'",
        ),
        (
            lambda: canonical.pack(fields(version=2)),
            "the pointer is invalid: pointer.version: expected 1, got 2",
        ),
        (
            lambda: canonical.pack(fields(host=None)),
            "the pointer is invalid: pointer.host: missing",
        ),
        (
            lambda: canonical.pack(fields(serial=-1)),
            "the pointer is invalid: pointer.serial: expected at least 0, got -1",
        ),
        (
            lambda: canonical.pack(fields(manifest_size=0)),
            "the pointer is invalid: pointer.manifest_size: expected at least 1, got 0",
        ),
        (
            lambda: canonical.pack(fields(expires="tomorrow")),
            "the pointer is invalid: pointer.expires: expected int, got str",
        ),
        (
            lambda: canonical.pack(fields(extra=1)),
            "the pointer is invalid: pointer: unexpected field 'extra'",
        ),
        (
            lambda: _unsorted(fields()),
            "the pointer is invalid: not canonical: re-encoding gives different bytes",
        ),
        (
            lambda: canonical.pack([1, 2]),
            "the pointer is invalid: pointer: expected a map, got array",
        ),
        (
            lambda: canonical.pack(fields(manifest="ab" * 31)),
            "the pointer's manifest digest is not a sha256",
        ),
        (
            lambda: canonical.pack(fields(manifest="AB" * 32)),
            "the pointer's manifest digest is not a sha256",
        ),
        (
            lambda: canonical.pack(fields(manifest="zz" * 32)),
            "the pointer's manifest digest is not a sha256",
        ),
        (
            lambda: canonical.pack(fields(manifest="../../etc/passwd".ljust(64, "a"))),
            "the pointer's manifest digest is not a sha256",
        ),
    ],
    ids=[
        "a-bundle-manifest",
        "other-kind",
        "unknown-version",
        "missing-host",
        "negative-serial",
        "empty-manifest",
        "expires-not-int",
        "extra-field",
        "not-canonical",
        "not-a-map",
        "short-digest",
        "uppercase-digest",
        "not-hex-digest",
        "path-digest",
    ],
)
def test_a_signed_payload_that_is_no_valid_pointer_is_refused(
    payload: Callable[[], bytes], message: str
) -> None:
    data = signed(payload())

    for check in (lambda: verify(data), lambda: read_pointer(data, WHERE)):
        with pytest.raises(PointerError) as caught:
            check()
        assert caught.value.message == f"{WHERE}: {message}"


def test_read_pointer_does_not_check_signature_host_or_expiry(tmp_path: Path) -> None:
    generate_key(tmp_path / "other", comment="not trusted")
    other = load_signer(tmp_path / "other")
    stale = replace(POINTER, host="web2", expires=NOW - 1)

    assert read_pointer(encode_pointer(stale, []), WHERE) == stale
    assert read_pointer(encode_pointer(stale, [other.sign(stale.payload())]), WHERE) == stale
