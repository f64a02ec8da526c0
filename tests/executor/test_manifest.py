"""The manifest codec: canonical bytes, every field checked, bad ones named by path."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from executor import canonical
from executor.decode import DecodeError
from executor.manifest import (
    MAX_BLOB_BYTES,
    MAX_RAW_BYTES,
    BlobEntry,
    Compression,
    Manifest,
    Source,
    Target,
    decode_manifest,
    digest,
    encode_manifest,
    manifest_to_data,
)

SHA_A, SHA_B, SHA_C, SHA_D, SHA_E = "a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64

MANIFEST = Manifest(
    environment="prod",
    host="web1",
    fqdn="web1.example.com",
    serial=1_700_000_000,
    build_time=1_700_000_000,
    consign_version="0.1.0",
    source=Source(commit="3f2a" * 10, dirty=False),
    target=Target(platform="debian12", python="3.11", complete_platform=SHA_E),
    blobs=(
        BlobEntry("repo", Compression.ZSTD, 400, SHA_A, 10240, SHA_B),
        BlobEntry("runtime", Compression.ZSTD, 1766351, SHA_D, 7817836, SHA_E),
        BlobEntry("model", Compression.NONE, 473, SHA_C, 473, SHA_C),
    ),
)


def test_a_manifest_round_trips_through_canonical_bytes() -> None:
    data = encode_manifest(MANIFEST)

    assert decode_manifest(data, 1 << 20) == MANIFEST
    assert data == canonical.pack(manifest_to_data(MANIFEST))
    assert digest(data) == hashlib.sha256(data).hexdigest()
    # Keys sorted: "blobs" first, "target" last; times are ints.
    assert data[:7] == b"\x8a\xa5blobs"
    assert manifest_to_data(MANIFEST)["build_time"] == 1_700_000_000
    assert manifest_to_data(MANIFEST)["target"] == {
        "platform": "debian12", "python": "3.11", "complete_platform": SHA_E
    }  # fmt: skip
    assert [blob["name"] for blob in manifest_to_data(MANIFEST)["blobs"]] == [
        "repo", "runtime", "model"
    ]  # fmt: skip


def test_optional_fields_are_nil_and_the_blob_lookup_finds_by_name() -> None:
    bare = Manifest(
        environment="e",
        host="h",
        fqdn="h",
        serial=0,
        build_time=0,
        consign_version="0",
        source=Source(commit=None, dirty=True),
        target=Target(),
        blobs=MANIFEST.blobs,
    )

    assert decode_manifest(encode_manifest(bare), 1 << 20) == bare
    assert manifest_to_data(bare)["target"] == {
        "platform": None, "python": None, "complete_platform": None
    }  # fmt: skip
    assert bare.blob("model") == MANIFEST.blobs[2]
    assert bare.blob("runtime") == MANIFEST.blobs[1]
    assert bare.blob("secrets") is None


def test_all_four_blobs_in_their_order_decode() -> None:
    blobs = (
        BlobEntry("repo", Compression.ZSTD, 1, SHA_A, 2, SHA_B),
        BlobEntry("runtime", Compression.ZSTD, 1, SHA_A, 2, SHA_B),
        BlobEntry("model", Compression.NONE, 0, SHA_C, 0, SHA_C),
        BlobEntry("secrets", Compression.NONE, 5, SHA_A, 5, SHA_A),
    )
    manifest = Manifest(**{**_fields(MANIFEST), "blobs": blobs})

    assert decode_manifest(encode_manifest(manifest), 1 << 20) == manifest


def _fields(manifest: Manifest) -> dict[str, Any]:
    return {name: getattr(manifest, name) for name in Manifest.__slots__}


def _set(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _delete(*path: str | int) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


def _blobs(edit: Callable[[list[dict[str, Any]]], object]) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        edit(data["blobs"])

    return apply


SECRETS = {"name": "secrets", "compression": "none", "size": 1, "sha256": SHA_A,
           "raw_size": 1, "raw_sha256": SHA_A}  # fmt: skip

BAD: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "format missing": (_delete("format"), "manifest.format: missing"),
    "format 2": (_set("format", value=2), "manifest.format: expected 1, got 2"),
    "format as str": (_set("format", value="1"), "manifest.format: expected int, got str"),
    "environment empty": (
        _set("environment", value=""),
        "manifest.environment: expected a plain name, got ''",
    ),
    "host with a slash": (_set("host", value="a/b"), "manifest.host: expected a plain name, got 'a/b'"),
    "host with NUL": (_set("host", value="a\0"), "manifest.host: expected a plain name, got 'a\\x00'"),
    "fqdn too long": (
        _set("fqdn", value="x" * 256),
        "manifest.fqdn: expected a plain name, got '" + "x" * 56 + "...",
    ),
    "host as bin": (_set("host", value=b"web1"), "manifest.host: expected str, got bin"),
    "serial negative": (_set("serial", value=-1), "manifest.serial: expected at least 0, got -1"),
    "serial a bool": (_set("serial", value=True), "manifest.serial: expected int, got bool"),
    "build_time nil": (_set("build_time", value=None), "manifest.build_time: expected int, got nil"),
    "consign_version an int": (
        _set("consign_version", value=1),
        "manifest.consign_version: expected str, got int",
    ),
    "source not a map": (_set("source", value=[]), "manifest.source: expected a map, got array"),
    "source.commit missing": (_delete("source", "commit"), "manifest.source.commit: missing"),
    "source.commit an int": (
        _set("source", "commit", value=7),
        "manifest.source.commit: expected str or nil, got int",
    ),
    "source.dirty not a bool": (
        _set("source", "dirty", value=1),
        "manifest.source.dirty: expected true or false, got 1",
    ),
    "source with another field": (
        _set("source", "branch", value="main"),
        "manifest.source: unexpected field 'branch'",
    ),
    "target.platform an int": (
        _set("target", "platform", value=3),
        "manifest.target.platform: expected str or nil, got int",
    ),
    "target.python missing": (_delete("target", "python"), "manifest.target.python: missing"),
    "target.python an int": (
        _set("target", "python", value=3),
        "manifest.target.python: expected str or nil, got int",
    ),
    "target.complete_platform missing": (
        _delete("target", "complete_platform"),
        "manifest.target.complete_platform: missing",
    ),
    "target.complete_platform as bin": (
        _set("target", "complete_platform", value=bytes.fromhex(SHA_E)),
        "manifest.target.complete_platform: expected str or nil, got bin",
    ),
    "target with another field": (
        _set("target", "abi", value="cp311"),
        "manifest.target: unexpected field 'abi'",
    ),
    "target missing": (_delete("target"), "manifest.target: missing"),
    "another top-level field": (_set("expires", value=0), "manifest: unexpected field 'expires'"),
    "blobs a map": (_set("blobs", value={}), "manifest.blobs: expected an array, got map"),
    "a blob not a map": (_set("blobs", 1, value="model"), "manifest.blobs[1]: expected a map, got str"),
    "a blob name missing": (_delete("blobs", 0, "name"), "manifest.blobs[0].name: missing"),
    "an unknown compression": (
        _set("blobs", 0, "compression", value="gzip"),
        "manifest.blobs[0].compression: expected 'zstd' or 'none', got 'gzip'",
    ),
    "an uppercase sha256": (
        _set("blobs", 1, "sha256", value="A" * 64),
        f"manifest.blobs[1].sha256: expected 64 lowercase hex digits, got '{'A' * 56}...",
    ),
    "a short raw_sha256": (
        _set("blobs", 0, "raw_sha256", value="abc"),
        "manifest.blobs[0].raw_sha256: expected 64 lowercase hex digits, got 'abc'",
    ),
    "a negative size": (
        _set("blobs", 0, "size", value=-1),
        "manifest.blobs[0].size: expected at least 0, got -1",
    ),
    "a size over the limit": (
        _set("blobs", 0, "size", value=MAX_BLOB_BYTES + 1),
        f"manifest.blobs[0].size: expected at most {MAX_BLOB_BYTES}, got {MAX_BLOB_BYTES + 1}",
    ),
    "a raw size over the limit": (
        _set("blobs", 0, "raw_size", value=MAX_RAW_BYTES + 1),
        f"manifest.blobs[0].raw_size: expected at most {MAX_RAW_BYTES}, got {MAX_RAW_BYTES + 1}",
    ),
    "another field in a blob": (
        _set("blobs", 0, "mode", value=420),
        "manifest.blobs[0]: unexpected field 'mode'",
    ),
    "an uncompressed blob with other raw values": (
        _set("blobs", 2, "raw_size", value=1),
        "manifest.blobs[2]: an uncompressed blob's raw size and sha256 must equal its own",
    ),
    "an unknown blob": (
        _set("blobs", 1, "name", value="extra"),
        "manifest.blobs[1].name: expected one of repo, runtime, model, secrets, got 'extra'",
    ),
    "a blob twice": (
        _blobs(lambda blobs: blobs.insert(1, dict(blobs[0]))),
        "manifest.blobs[1].name: blob 'repo' appears twice",
    ),
    "blobs out of order": (
        _blobs(lambda blobs: blobs.append(blobs.pop(1))),
        "manifest.blobs: blobs must be listed in the order repo, runtime, model, secrets",
    ),
    "secrets before the model": (
        _blobs(lambda blobs: blobs.insert(2, dict(SECRETS))),
        "manifest.blobs: blobs must be listed in the order repo, runtime, model, secrets",
    ),
    "the model missing": (_blobs(lambda blobs: blobs.pop()), "manifest.blobs: the 'model' blob is missing"),
    "the runtime missing": (
        _blobs(lambda blobs: blobs.pop(1)),
        "manifest.blobs: the 'runtime' blob is missing",
    ),
    "the repo missing": (
        _blobs(lambda blobs: blobs.pop(0)),
        "manifest.blobs: the 'repo' blob is missing",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_field_is_refused_naming_its_path(case: str) -> None:
    edit, message = BAD[case]
    data = manifest_to_data(MANIFEST)
    edit(data)

    with pytest.raises(DecodeError) as caught:
        decode_manifest(canonical.pack(data), 1 << 20)

    assert str(caught.value) == message
    assert message.startswith(caught.value.path + ": ")


def test_the_top_level_must_be_a_map() -> None:
    with pytest.raises(DecodeError, match="^manifest: expected a map, got array$"):
        decode_manifest(canonical.pack([1]), 1 << 20)


HOSTILE: dict[str, tuple[bytes, str]] = {
    "an array claiming 2^32-1 items": (b"\xdd\xff\xff\xff\xff", "malformed msgpack: 4294967295 exceeds max_array_len(5)"),
    "a map claiming 2^32-1 entries": (b"\xdf\xff\xff\xff\xff", "malformed msgpack: 4294967295 exceeds max_map_len(2)"),
    "a str claiming 4 GiB": (b"\xdb\xff\xff\xff\xff", "truncated msgpack data"),
    "65 nested arrays": (b"\x91" * 65 + b"\xc0", "nesting deeper than 64"),
    "2000 nested arrays": (b"\x91" * 2000 + b"\xc0", "nesting deeper than 64"),
    "a duplicate key": (b"\x82\xa1a\x01\xa1a\x02", "duplicate map key 'a'"),
    "an int key": (b"\x81\x01\x02", "malformed msgpack: int is not allowed for map key when strict_map_key=True"),
    "an extension type": (b"\xc7\x01\x05x", "extension type 5 is not allowed"),
    "the reserved byte": (b"\xc1", "malformed msgpack: reserved type byte at offset 0"),
    "a float": (b"\xcb" + b"\0" * 8, "not canonical: floats are not canonical: 0.0"),
    "1 as uint16": (b"\xcd\x00\x01", "not canonical: re-encoding gives different bytes"),
    "keys out of order": (b"\x82\xa1b\x01\xa1a\x02", "not canonical: re-encoding gives different bytes"),
    "trailing bytes": (b"\xc0\xc0", "1 bytes of trailing data"),
    "nothing": (b"", "truncated msgpack data"),
}  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_msgpack_is_refused_by_the_bounded_decoder(case: str) -> None:
    data, message = HOSTILE[case]

    with pytest.raises(canonical.CanonicalError) as caught:
        decode_manifest(data, 1 << 20)

    assert str(caught.value) == message


def test_a_manifest_over_the_size_limit_is_refused_before_decoding() -> None:
    data = encode_manifest(MANIFEST)

    with pytest.raises(canonical.CanonicalError) as caught:
        decode_manifest(data, len(data) - 1)

    assert str(caught.value) == f"{len(data)} bytes exceed the limit of {len(data) - 1}"


def test_the_encoder_refuses_a_blob_list_no_reader_would_accept() -> None:
    wrong = Manifest(**{**_fields(MANIFEST), "blobs": MANIFEST.blobs[::-1]})

    with pytest.raises(ValueError) as caught:
        encode_manifest(wrong)

    assert str(caught.value) == (
        "manifest.blobs: blobs must be listed in the order repo, runtime, model, secrets"
    )
