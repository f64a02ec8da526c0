from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard

from executor import __version__, canonical
from executor.bundle import (
    FORMAT_VERSION,
    MAGIC,
    MAX_BLOB_BYTES,
    MAX_BLOBS,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    BlobEntry,
    Manifest,
    bundle_parts,
    compress,
    decompress,
    encode_bundle,
    manifest_to_data,
    read_bundle,
)
from executor.errors import BundleError, RefusedError

BLOBS = [("repo", b"tar bytes " * 100), ("model", b"\x80"), ("empty", b"")]
HEADER_SIZE = len(MAGIC) + 2 + 4


def write(tmp_path: Path, data: bytes, name: str = "web1.bundle") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def good_bundle(blobs: Sequence[tuple[str, bytes]] = BLOBS) -> bytes:
    return encode_bundle(environment="prod", host="web1", blobs=blobs)


def frame(manifest: bytes, blobs: bytes = b"", signatures: bytes = b"") -> bytes:
    """A bundle file around given manifest bytes, valid or not."""
    return b"".join(
        [
            struct.pack(">8sHI", MAGIC, FORMAT_VERSION, len(manifest)),
            manifest,
            struct.pack(">I", len(signatures)),
            signatures,
            blobs,
        ]
    )


def manifest_data(blobs: Sequence[tuple[str, bytes]] = BLOBS) -> dict[str, Any]:
    return manifest_to_data(
        Manifest(
            environment="prod",
            host="web1",
            consign_version=__version__,
            blobs=tuple(
                BlobEntry(name, len(data), hashlib.sha256(data).hexdigest())
                for name, data in blobs
            ),
        )
    )


def manifest_length(data: bytes) -> int:
    (length,) = struct.unpack(">I", data[len(MAGIC) + 2 : HEADER_SIZE])
    return int(length)


def refusal(path: str) -> str:
    with pytest.raises(BundleError) as caught:
        read_bundle(path)
    assert isinstance(caught.value, RefusedError)
    return caught.value.message


# --- writing and reading ----------------------------------------------------


def test_a_bundle_written_in_parts_reads_back(tmp_path: Path) -> None:
    parts = bundle_parts(environment="prod", host="web1", blobs=BLOBS)
    path = tmp_path / "web1.bundle"
    with open(path, "wb") as f:
        for part in parts:
            f.write(part)

    bundle = read_bundle(str(path))

    assert bundle.manifest == Manifest(
        environment="prod",
        host="web1",
        consign_version=__version__,
        blobs=tuple(
            BlobEntry(name, len(data), hashlib.sha256(data).hexdigest()) for name, data in BLOBS
        ),
    )
    assert bundle.blobs == dict(BLOBS)
    assert bundle.manifest.blob("repo").size == 1000
    assert path.read_bytes() == good_bundle()


def test_the_file_is_magic_version_manifest_signatures_blobs(tmp_path: Path) -> None:
    data = good_bundle()
    length = manifest_length(data)

    bundle = read_bundle(write(tmp_path, data))

    assert data[:8] == b"\x89CSB\r\n\x1a\n"
    assert data[8:10] == b"\x00\x01"
    assert data[HEADER_SIZE : HEADER_SIZE + length] == bundle.manifest_bytes
    assert data[HEADER_SIZE + length : HEADER_SIZE + length + 4] == b"\x00\x00\x00\x00"
    assert data[HEADER_SIZE + length + 4 :] == b"".join(blob for _name, blob in BLOBS)
    assert canonical.unpack(bundle.manifest_bytes) == manifest_data()


def test_the_digest_is_the_sha256_of_the_manifest(tmp_path: Path) -> None:
    bundle = read_bundle(write(tmp_path, good_bundle()))

    assert bundle.digest == hashlib.sha256(bundle.manifest_bytes).hexdigest()


def test_the_digest_changes_with_any_blob() -> None:
    changed = [("repo", b"other"), *BLOBS[1:]]

    assert good_bundle() != good_bundle(changed)
    assert good_bundle() == good_bundle()


def test_a_bundle_without_blobs_reads_back(tmp_path: Path) -> None:
    bundle = read_bundle(write(tmp_path, good_bundle([])))

    assert bundle.blobs == {}
    assert bundle.manifest.blobs == ()


def test_a_signature_block_within_the_limit_is_skipped(tmp_path: Path) -> None:
    blobs = b"".join(blob for _name, blob in BLOBS)
    manifest = canonical.pack(manifest_data())
    data = frame(manifest, blobs, signatures=b"s" * MAX_SIGNATURE_BYTES)

    assert read_bundle(write(tmp_path, data)).blobs == dict(BLOBS)


def test_asking_for_a_missing_blob_says_which(tmp_path: Path) -> None:
    bundle = read_bundle(write(tmp_path, good_bundle()))

    with pytest.raises(BundleError) as caught:
        bundle.manifest.blob("secrets")

    assert caught.value.message == "the bundle has no 'secrets' blob"


@pytest.mark.parametrize(
    ("blobs", "message"),
    [
        ([("a", b"1"), ("a", b"2")], "blob names must be unique, got ['a', 'a']"),
        (
            [(f"b{i}", b"") for i in range(MAX_BLOBS + 1)],
            f"at most {MAX_BLOBS} blobs fit a bundle, got {MAX_BLOBS + 1}",
        ),
    ],
    ids=["duplicate-name", "too-many"],
)
def test_the_writer_refuses_a_bundle_the_reader_would_refuse(
    blobs: list[tuple[str, bytes]], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        bundle_parts(environment="prod", host="web1", blobs=blobs)

    assert str(caught.value) == message


# --- framing refusals -------------------------------------------------------


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"")

    assert refusal(path) == f"{path} is empty"


@pytest.mark.parametrize("offset", range(len(MAGIC)))
def test_wrong_magic_is_refused(tmp_path: Path, offset: int) -> None:
    data = bytearray(good_bundle())
    data[offset] ^= 0x20
    path = write(tmp_path, bytes(data))

    with pytest.raises(BundleError) as caught:
        read_bundle(path)

    assert caught.value.message == f"{path} is not a consign bundle (wrong magic bytes)"
    assert caught.value.hint == (
        "bundles are made by 'bundle build'; was the file copied in text mode?"
    )


@pytest.mark.parametrize(
    "data", [b"PK\x03\x04", b"hello world, no bundle here", b"\x89CSB\n\x1a\n\x00\x01"]
)
def test_other_files_are_not_bundles(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, data)

    assert refusal(path) == f"{path} is not a consign bundle (wrong magic bytes)"


@pytest.mark.parametrize("version", [0, 2, 0xFFFF])
def test_another_format_version_is_refused(tmp_path: Path, version: int) -> None:
    data = good_bundle()
    path = write(tmp_path, data[:8] + struct.pack(">H", version) + data[10:])

    with pytest.raises(BundleError) as caught:
        read_bundle(path)

    assert caught.value.message == (
        f"{path} has bundle format {version}; this executor reads format 1"
    )
    assert caught.value.hint == "build the bundle with a consign of the same format version"


def _truncation_message(path: str, data: bytes, cut: int) -> str:
    length = manifest_length(data)
    signature_at = HEADER_SIZE + length
    if cut < HEADER_SIZE:
        return f"{path} is truncated: the header is incomplete"
    if cut < signature_at:
        return (
            f"{path} is truncated: the manifest is incomplete "
            f"({cut - HEADER_SIZE} of {length} bytes)"
        )
    if cut < signature_at + 4:
        return (
            f"{path} is truncated: the signature length is incomplete "
            f"({cut - signature_at} of 4 bytes)"
        )
    return f"{path} is truncated: {cut} bytes, the manifest promises {len(data)}"


def test_a_bundle_cut_anywhere_in_its_framing_is_refused(tmp_path: Path) -> None:
    data = good_bundle()
    blobs_at = HEADER_SIZE + manifest_length(data) + 4
    path = write(tmp_path, b"")

    for cut in range(1, blobs_at + 1):
        Path(path).write_bytes(data[:cut])
        assert refusal(path) == _truncation_message(path, data, cut), cut


@pytest.mark.parametrize("missing", [1, 2, 500, 999, 1000, 1001])
def test_a_bundle_cut_in_its_blobs_is_refused(tmp_path: Path, missing: int) -> None:
    data = good_bundle()
    path = write(tmp_path, data[:-missing])

    with pytest.raises(BundleError) as caught:
        read_bundle(path)

    assert caught.value.message == (
        f"{path} is truncated: {len(data) - missing} bytes, the manifest promises {len(data)}"
    )
    assert caught.value.hint == "copy the bundle again"


def test_a_truncated_signature_block_is_refused(tmp_path: Path) -> None:
    manifest = canonical.pack(manifest_data([]))
    path = write(tmp_path, frame(manifest, signatures=b"sig")[:-1])

    assert refusal(path) == (
        f"{path} is truncated: the signature block is incomplete (2 of 3 bytes)"
    )


@pytest.mark.parametrize("extra", [b"x", b"\x00" * 4096])
def test_trailing_data_is_refused(tmp_path: Path, extra: bytes) -> None:
    path = write(tmp_path, good_bundle() + extra)

    with pytest.raises(BundleError) as caught:
        read_bundle(path)

    assert caught.value.message == f"{path} has {len(extra)} bytes of trailing data"
    assert caught.value.hint == "the file was changed after it was built; copy the bundle again"


def test_a_manifest_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # The header alone: the reader must not wait for (or allocate) the bytes.
    header = struct.pack(">8sHI", MAGIC, FORMAT_VERSION, MAX_MANIFEST_BYTES + 1)
    path = write(tmp_path, header)

    assert refusal(path) == (
        f"{path}: the manifest is larger than 1048576 bytes (the header says 1048577)"
    )


def test_the_largest_length_field_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, struct.pack(">8sHI", MAGIC, FORMAT_VERSION, 0xFFFFFFFF))

    assert refusal(path) == (
        f"{path}: the manifest is larger than 1048576 bytes (the header says 4294967295)"
    )


def test_a_signature_block_over_the_limit_is_refused(tmp_path: Path) -> None:
    manifest = canonical.pack(manifest_data([]))
    data = frame(manifest)[: -4] + struct.pack(">I", MAX_SIGNATURE_BYTES + 1)
    path = write(tmp_path, data)

    assert refusal(path) == (
        f"{path}: the signature block exceeds 65536 bytes (the header says 65537)"
    )


# --- manifest refusals ------------------------------------------------------


def _with(**changes: Any) -> dict[str, Any]:
    data = manifest_data()
    data.update(changes)
    return data


def _blob(name: str = "repo", size: int = 0, sha256: object = "0" * 64, **extra: Any) -> Any:
    return {"name": name, "size": size, "sha256": sha256, **extra}


BAD_MANIFESTS: list[tuple[str, object, str]] = [
    ("not-a-map", [1, 2], "manifest: expected a map, got array"),
    ("format-2", _with(format=2), "manifest.format: expected 1, got 2"),
    ("format-str", _with(format="1"), "manifest.format: expected int, got str"),
    ("host-int", _with(host=7), "manifest.host: expected str, got int"),
    ("environment-nil", _with(environment=None), "manifest.environment: expected str, got nil"),
    ("unexpected-field", _with(serial=3), "manifest: unexpected field 'serial'"),
    ("blobs-map", _with(blobs={}), "manifest.blobs: expected an array, got map"),
    (
        "duplicate-blob-name",
        _with(blobs=[_blob("a"), _blob("b"), _blob("a")]),
        "manifest.blobs[2].name: blob name 'a' appears twice (first at blobs[0])",
    ),
    (
        "too-many-blobs",
        _with(blobs=[_blob(f"b{i:02}") for i in range(MAX_BLOBS + 1)]),
        "manifest.blobs: expected at most 16 blobs, got 17",
    ),
    (
        "sha256-short",
        _with(blobs=[_blob(sha256="abc")]),
        "manifest.blobs[0].sha256: expected 64 lowercase hex digits, got 'abc'",
    ),
    (
        "sha256-uppercase",
        _with(blobs=[_blob(sha256="A" * 64)]),
        f"manifest.blobs[0].sha256: expected 64 lowercase hex digits, got '{'A' * 56}...",
    ),
    (
        "sha256-not-hex",
        _with(blobs=[_blob(sha256="g" * 64)]),
        f"manifest.blobs[0].sha256: expected 64 lowercase hex digits, got '{'g' * 56}...",
    ),
    (
        "sha256-bin",
        _with(blobs=[_blob(sha256=b"0" * 32)]),
        "manifest.blobs[0].sha256: expected str, got bin",
    ),
    (
        "size-negative",
        _with(blobs=[_blob(size=-1)]),
        "manifest.blobs[0].size: expected at least 0, got -1",
    ),
    (
        "size-over-limit",
        _with(blobs=[_blob(size=MAX_BLOB_BYTES + 1)]),
        f"manifest.blobs[0].size: expected at most {MAX_BLOB_BYTES}, got {MAX_BLOB_BYTES + 1}",
    ),
    (
        "blob-extra-field",
        _with(blobs=[_blob(mode=1)]),
        "manifest.blobs[0]: unexpected field 'mode'",
    ),
    (
        "blob-name-missing",
        _with(blobs=[{"size": 0, "sha256": "0" * 64}]),
        "manifest.blobs[0].name: missing",
    ),
]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [(manifest, message) for _id, manifest, message in BAD_MANIFESTS],
    ids=[case[0] for case in BAD_MANIFESTS],
)
def test_an_invalid_manifest_is_refused_naming_the_field(
    tmp_path: Path, manifest: object, message: str
) -> None:
    path = write(tmp_path, frame(canonical.pack(manifest)))

    with pytest.raises(BundleError) as caught:
        read_bundle(path)

    assert caught.value.message == f"{path}: the manifest is invalid: {message}"
    assert caught.value.hint == (
        "bundles are made by 'bundle build'; rebuild it or copy it again"
    )


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        # msgpack's own packer keeps insertion order: keys not sorted.
        (
            msgpack.packb({"format": 1, "blobs": []}, use_bin_type=True),
            "not canonical: re-encoding gives different bytes",
        ),
        (b"\x81\xa6format\xcd\x00\x01", "not canonical: re-encoding gives different bytes"),
        (b"\x82\xa4host\xa1a\xa4host\xa1b", "duplicate map key 'host'"),
        (b"\x81\xa6format\xcb" + b"\x00" * 8, "not canonical: floats are not canonical: 0.0"),
        (b"\x92\x01", "truncated msgpack data"),
        (b"\xc0\xc0", "1 bytes of trailing data"),
        (b"\x91" * 100 + b"\xc0", "nesting deeper than 64"),
        (b"", "truncated msgpack data"),
    ],
    ids=[
        "unsorted-keys",
        "int-as-uint16",
        "duplicate-key",
        "float",
        "truncated",
        "trailing",
        "deep-nesting",
        "empty",
    ],
)
def test_a_manifest_that_is_not_canonical_msgpack_is_refused(
    tmp_path: Path, manifest: bytes, message: str
) -> None:
    path = write(tmp_path, frame(manifest))

    assert refusal(path) == f"{path}: the manifest is invalid: {message}"


@pytest.mark.parametrize("index", range(2))
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_a_flipped_byte_in_any_blob_is_refused(tmp_path: Path, index: int, position: str) -> None:
    name, blob = BLOBS[index]
    damaged = bytearray(blob)
    at = {"first": 0, "middle": len(blob) // 2, "last": len(blob) - 1}[position]
    damaged[at] ^= 0x01
    blobs = b"".join(bytes(damaged) if i == index else b for i, (_n, b) in enumerate(BLOBS))
    path = write(tmp_path, frame(canonical.pack(manifest_data()), blobs))

    with pytest.raises(BundleError) as caught:
        read_bundle(path)

    assert caught.value.message == (
        f"{path}: blob {name!r} does not match its sha256: "
        f"the manifest says {hashlib.sha256(blob).hexdigest()}, "
        f"the blob has {hashlib.sha256(bytes(damaged)).hexdigest()}"
    )
    assert caught.value.hint == "the bundle is damaged; copy it again"


def test_blobs_swapped_between_bundles_are_refused(tmp_path: Path) -> None:
    swapped = [("repo", b"x" * 1000), *BLOBS[1:]]
    blobs = b"".join(b for _n, b in swapped)
    path = write(tmp_path, frame(canonical.pack(manifest_data()), blobs))

    assert refusal(path).startswith(f"{path}: blob 'repo' does not match its sha256")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("missing.bundle", "No such file or directory"), ("", "Is a directory")],
)
def test_an_unreadable_path_is_refused(tmp_path: Path, name: str, reason: str) -> None:
    path = str(tmp_path / name) if name else str(tmp_path)

    assert refusal(path) == f"cannot read the bundle {path}: {reason}"


# --- compression ------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"x", b"hello world" * 10_000, bytes(range(256)) * 4096],
    ids=["empty", "one-byte", "text", "binary-1MiB"],
)
def test_compress_round_trips(data: bytes) -> None:
    assert decompress(compress(data), max_size=len(data)) == data


def test_compress_is_deterministic() -> None:
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(100_000))

    first = compress(data)

    assert compress(data) == first
    assert compress(bytes(bytearray(data))) == first


def test_compress_declares_the_content_size() -> None:
    assert zstandard.frame_content_size(compress(b"abc" * 1000)) == 3000


def test_decompress_refuses_a_frame_declaring_more_than_max_size() -> None:
    data = compress(b"\x00" * 1_000_000)

    with pytest.raises(BundleError) as caught:
        decompress(data, max_size=999_999)

    assert caught.value.message == "a blob declares 1000000 bytes, more than 999999"


def test_decompress_refuses_a_frame_that_does_not_declare_its_size() -> None:
    data = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x00" * 1000)

    with pytest.raises(BundleError) as caught:
        decompress(data, max_size=1 << 30)

    assert caught.value.message == "a blob's zstd frame does not declare its size"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "a blob does not decompress: error when determining content size"),
        (b"not zstd at all", "a blob does not decompress: error when determining content size"),
        (
            compress(b"hello world" * 100)[:-3],
            "a blob does not decompress: decompression error: did not decompress full frame",
        ),
        (
            compress(b"hello") + b"tail",
            "a blob does not decompress: compressed input contains 4 bytes of unused data, "
            "which is disallowed",
        ),
        (
            compress(b"one") + compress(b"two"),
            "a blob does not decompress: compressed input contains 12 bytes of unused data, "
            "which is disallowed",
        ),
    ],
    ids=["empty", "garbage", "truncated", "trailing-data", "two-frames"],
)
def test_decompress_refuses_garbage(data: bytes, message: str) -> None:
    with pytest.raises(BundleError) as caught:
        decompress(data, max_size=1 << 20)

    assert caught.value.message == message
