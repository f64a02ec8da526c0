"""The bundle file: read by the document alone, refused when damaged, and
checked by tools nobody here wrote (ssh-keygen, zstd).

The first part is an independent reader that knows nothing but
``docs/bundle-format.md``: struct, msgpack, cryptography and zstandard, no
import from executor.bundle, executor.manifest or executor.sshsig. It keeps
the code and the document honest with each other. The helpers that craft
damaged bundles (tests/bundles.py) use the same document rules.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from builder.signing import generate_key, load_signer
from tests.bundles import (
    DOC_MAGIC,
    GiB,
    KiB,
    MiB,
    Refused,
    doc_canonical,
    doc_join,
    doc_require,
    doc_split,
    edit_manifest,
    flipped,
    resigned,
    sign,
    spliced,
    ssh_string,
    with_blob,
    write,
    zstd_stream,
)
from tests.deployments import build_bundles, deployment, verified
from tests.keys import signing_key

DOC = Path(__file__).resolve().parents[2] / "docs" / "bundle-format.md"
BIN = Path(sys.executable).parent

# ---------------------------------------------------------------------------
# An independent reader: only the document's rules.
# ---------------------------------------------------------------------------

DOC_BLOB_ORDER = ("repo", "runtime", "model", "secrets")
DOC_REQUIRED_BLOBS = ("repo", "runtime", "model")


class _Wire:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise Refused("truncated SSH wire data")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def string(self) -> bytes:
        return self.take(self.u32())

    def end(self) -> None:
        if self.offset != len(self.data):
            raise Refused("trailing SSH wire data")


@dataclass(frozen=True)
class DocSignature:
    key: bytes  # the raw 32-byte ed25519 key
    namespace: bytes
    hash: bytes
    signature: bytes


def doc_parse_signature(blob: bytes) -> DocSignature:
    wire = _Wire(blob)
    if wire.take(6) != b"SSHSIG" or wire.u32() != 1:
        raise Refused("not an SSHSIG blob, version 1")
    key = _Wire(wire.string())
    if key.string() != b"ssh-ed25519":
        raise Refused("not an ed25519 key")
    raw = key.string()
    key.end()
    namespace, _reserved, hash_name = wire.string(), wire.string(), wire.string()
    inner = _Wire(wire.string())
    wire.end()
    if inner.string() != b"ssh-ed25519":
        raise Refused("not an ed25519 signature")
    signature = inner.string()
    inner.end()
    if len(raw) != 32 or len(signature) != 64:
        raise Refused("wrong ed25519 lengths")
    return DocSignature(raw, namespace, hash_name, signature)


def doc_signed_data(manifest: bytes, namespace: bytes, hash_name: bytes) -> bytes:
    digest = hashlib.new(hash_name.decode(), manifest).digest()
    return b"SSHSIG" + ssh_string(namespace) + ssh_string(b"") + ssh_string(hash_name) + ssh_string(digest)


def doc_trusted_keys(allowed_signers: str) -> set[bytes]:
    """The raw ed25519 keys an allowed_signers file names (no options honoured)."""
    keys = set()
    for line in allowed_signers.splitlines():
        tokens = line.split()
        for index, token in enumerate(tokens[:-1]):
            if token == "ssh-ed25519":
                wire = _Wire(base64.b64decode(tokens[index + 1]))
                assert wire.string() == b"ssh-ed25519"
                keys.add(wire.string())
    return keys


def doc_fingerprint(raw_key: bytes) -> str:
    blob = ssh_string(b"ssh-ed25519") + ssh_string(raw_key)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _no_duplicates(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise Refused("a duplicate map key")
    return dict(pairs)


def _no_ext(code: int, data: bytes) -> Any:
    raise Refused(f"extension type {code}")


def doc_decode(data: bytes) -> Any:
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            object_pairs_hook=_no_duplicates,
            ext_hook=_no_ext,
            timestamp=0,
        )
    except (ValueError, msgpack.UnpackException) as exc:
        raise Refused(f"not msgpack: {exc}") from None
    if doc_canonical(value) != data:
        raise Refused("not canonical")
    return value


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 255 and "/" not in value and "\0" not in value


def _is_hex(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch("[0-9a-f]{64}", value) is not None


def doc_check_manifest(manifest: Any) -> None:
    """Every field of the document's tables, exactly."""
    keys = {"format", "consign_version", "environment", "host", "fqdn", "serial",
            "build_time", "source", "target", "blobs"}  # fmt: skip
    doc_require(isinstance(manifest, dict) and set(manifest) == keys, "manifest keys")
    doc_require(manifest["format"] == 1 and type(manifest["format"]) is int, "format")
    doc_require(isinstance(manifest["consign_version"], str), "consign_version")
    for key in ("environment", "host", "fqdn"):
        doc_require(_is_name(manifest[key]), key)
    for key in ("serial", "build_time"):
        doc_require(_is_int(manifest[key], 0, (1 << 64) - 1), key)
    source, target = manifest["source"], manifest["target"]
    doc_require(isinstance(source, dict) and set(source) == {"commit", "dirty"}, "source")
    doc_require(source["commit"] is None or isinstance(source["commit"], str), "source.commit")
    doc_require(isinstance(source["dirty"], bool), "source.dirty")
    target_keys = {"platform", "python", "complete_platform"}
    doc_require(isinstance(target, dict) and set(target) == target_keys, "target")
    for key in sorted(target_keys):
        doc_require(target[key] is None or isinstance(target[key], str), f"target.{key}")
    blobs = manifest["blobs"]
    doc_require(isinstance(blobs, list), "blobs")
    entry_keys = {"name", "compression", "size", "sha256", "raw_size", "raw_sha256"}
    for entry in blobs:
        doc_require(isinstance(entry, dict) and set(entry) == entry_keys, "blob keys")
        doc_require(entry["compression"] in ("zstd", "none"), "compression")
        doc_require(_is_int(entry["size"], 0, 4 * GiB), "size")
        doc_require(_is_int(entry["raw_size"], 0, 16 * GiB), "raw_size")
        doc_require(_is_hex(entry["sha256"]) and _is_hex(entry["raw_sha256"]), "sha256")
        if entry["compression"] == "none":
            doc_require((entry["size"], entry["sha256"]) == (entry["raw_size"], entry["raw_sha256"]), "none")
    names = [entry["name"] for entry in blobs]
    doc_require(all(name in DOC_BLOB_ORDER for name in names), "blob names")
    doc_require(names == sorted(set(names), key=DOC_BLOB_ORDER.index), "blob order")
    doc_require(set(DOC_REQUIRED_BLOBS) <= set(names), "required blobs")


@dataclass(frozen=True)
class DocBundle:
    manifest: dict[str, Any]
    content: dict[str, bytes]
    signer: str


def doc_read(data: bytes, trusted: set[bytes]) -> DocBundle:
    """Read a bundle following docs/bundle-format.md, "Order of checks"."""
    parts = doc_split(data)  # 1. framing
    signatures = [doc_parse_signature(entry) for entry in parts.entries]
    signer = None  # 2. signature
    for signature in signatures:
        if signature.namespace != b"consign-bundle" or signature.hash not in (b"sha512", b"sha256"):
            continue
        if signature.key not in trusted:
            continue
        signed = doc_signed_data(parts.manifest, signature.namespace, signature.hash)
        try:
            Ed25519PublicKey.from_public_bytes(signature.key).verify(signature.signature, signed)
        except InvalidSignature:
            continue
        signer = doc_fingerprint(signature.key)
        break
    if signer is None:
        raise Refused("no trusted signature")
    manifest = doc_decode(parts.manifest)  # 3. manifest
    doc_check_manifest(manifest)
    (s,) = struct.unpack_from(">I", data, 14 + len(parts.manifest))
    sizes = [entry["size"] for entry in manifest["blobs"]]
    doc_require(len(data) == 18 + len(parts.manifest) + s + sum(sizes), "length")
    content = {}
    for entry, stored in zip(manifest["blobs"], parts.blobs, strict=True):
        doc_require(hashlib.sha256(stored).hexdigest() == entry["sha256"], "blob sha256")  # 5.
    for entry, stored in zip(manifest["blobs"], parts.blobs, strict=True):
        raw = stored
        if entry["compression"] == "zstd":  # 6. capped
            decompressor = zstandard.ZstdDecompressor(max_window_size=1 << 27)
            try:
                reader = decompressor.stream_reader(io.BytesIO(stored), read_across_frames=True)
                raw = reader.read(entry["raw_size"] + 1)
            except zstandard.ZstdError as exc:
                raise Refused(f"zstd: {exc}") from None
        doc_require(len(raw) == entry["raw_size"], "raw size")  # 7.
        doc_require(hashlib.sha256(raw).hexdigest() == entry["raw_sha256"], "raw sha256")
        content[entry["name"]] = raw
    return DocBundle(manifest, content, signer)


# ---------------------------------------------------------------------------
# Bundles to read and to damage.
# ---------------------------------------------------------------------------

APP = """
    from batou.component import Component, Attribute
    from batou.lib.file import File

    class App(Component):
        workers = Attribute(int, default=2)

        def configure(self):
            self += File("app.conf", content="workers={{component.workers}}\\n")
    """

ENV = """
    [environment]
    target_directory = /srv/app

    [host:web1]
    components = app

    [host:web2]
    components = app

    [component:app]
    workers = 4
    """


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bundles of prod (web1, web2), built once and never changed."""
    root = tmp_path_factory.mktemp("bundle-format")
    repo = deployment(
        root / "repo",
        components={"app": APP},
        environments={"prod": ENV},
        files={"data/payload.txt": "".join(f"line {i}\n" for i in range(2000))},
    )
    build_bundles("prod", repo)
    return repo / "bundles" / "prod"


@pytest.fixture
def good(bundles: Path, tmp_path: Path) -> Path:
    """A private copy of web1's bundle."""
    path = tmp_path / "web1.bundle"
    shutil.copy(bundles / "web1.bundle", path)
    return path


# ---------------------------------------------------------------------------
# The document and the code agree.
# ---------------------------------------------------------------------------


def test_an_independent_reader_following_the_document_reads_a_built_bundle(good: Path) -> None:
    from executor.manifest import manifest_to_data

    trusted = doc_trusted_keys(signing_key().trust.read_text())
    data = good.read_bytes()

    by_the_document = doc_read(data, trusted)
    bundle = verified(good)

    assert by_the_document.manifest == manifest_to_data(bundle.manifest)
    assert by_the_document.signer == bundle.signer.key.fingerprint()
    assert hashlib.sha256(doc_split(data).manifest).hexdigest() == bundle.digest
    blobs = {entry["name"]: entry for entry in by_the_document.manifest["blobs"]}
    assert list(blobs) == ["repo", "runtime", "model"]
    assert {name: entry["compression"] for name, entry in blobs.items()} == {
        "repo": "zstd", "runtime": "zstd", "model": "none"
    }  # fmt: skip
    for name, content in by_the_document.content.items():
        assert content == b"".join(bundle.raw_chunks(name))
    # The zstd blobs hold one frame each, whose header records the content size.
    parts = doc_split(data)
    for name in ("repo", "runtime"):
        assert zstandard.frame_content_size(parts.blob(name)) == len(by_the_document.content[name])
    # The runtime is a pex: a zip file, built for the builder's own Python.
    assert zipfile.is_zipfile(io.BytesIO(by_the_document.content["runtime"]))
    assert by_the_document.manifest["target"] == {
        "platform": None, "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "complete_platform": None,
    }  # fmt: skip


def test_the_layout_offsets_in_the_document_hold(good: Path) -> None:
    data = good.read_bytes()
    (m,) = struct.unpack_from(">I", data, 10)
    (s,) = struct.unpack_from(">I", data, 14 + m)
    (first,) = struct.unpack_from(">I", data, 18 + m)
    bundle = verified(good)

    assert data[:8] == b"\x89CSB\r\n\x1a\n" and data[8:10] == b"\x00\x01"
    assert data[14 : 14 + m] == bundle.envelope.manifest_bytes
    assert first + 4 == s  # one signature, filling the block
    assert bundle.envelope.blobs_offset == 18 + m + s
    repo, runtime, model = bundle.manifest.blobs
    assert (repo.name, runtime.name, model.name) == ("repo", "runtime", "model")
    assert len(data) == 18 + m + s + repo.size + runtime.size + model.size
    runtime_at = 18 + m + s + repo.size
    assert hashlib.sha256(data[runtime_at : runtime_at + runtime.size]).hexdigest() == runtime.sha256
    assert data[runtime_at + runtime.size :] == bundle.read("model", 1 << 20)


LIMITS = {
    "executor.bundle.MAX_MANIFEST_BYTES": "1 MiB (1048576)",
    "executor.bundle.MAX_SIGNATURE_BYTES": "64 KiB (65536)",
    "executor.bundle.MAX_SIGNATURES": "16",
    "executor.sshsig.MAX_SIGNATURE_BLOB": "4096",
    "executor.bundle.MAX_ZSTD_WINDOW": "2^27 (128 MiB)",
    "executor.manifest.MAX_BLOB_BYTES": "4 GiB",
    "executor.manifest.MAX_RAW_BYTES": "16 GiB",
    "executor.manifest.MAX_NAME_LENGTH": "255 characters",
    "executor.canonical.MAX_DEPTH": "64 levels",
    "executor.manifest.MAX_MODEL_BYTES": "64 MiB",
    "executor.snapshot.MAX_LINK_HOPS": "40",
    "executor.verify.MAX_TRUST_FILE_BYTES": "1 MiB each",
}


def _constant(where: str) -> object:
    module, name = where.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_the_limits_in_the_document_are_the_code_s(good: Path) -> None:
    from executor import bundle, manifest, sshsig

    text = DOC.read_text()
    units = {"KiB": KiB, "MiB": MiB, "GiB": GiB}
    for where, shown in LIMITS.items():
        row = next((line for line in text.splitlines() if line.endswith(f"| `{where}` |")), None)
        assert row is not None, f"the limits table has no row for {where}"
        assert f"| {shown} |" in row, row
        number = re.match(r"(\d+)(?:\^(\d+))? ?(KiB|MiB|GiB)?", shown)
        assert number is not None
        base, power, unit = number.groups()
        expected = int(base) ** int(power) if power else int(base) * units.get(unit or "", 1)
        value = _constant(where)
        assert value == expected, f"{where} is {value}, the document says {shown}"
    assert bundle.MAGIC == DOC_MAGIC and bundle.FORMAT_VERSION == 1
    assert manifest.BLOB_ORDER == DOC_BLOB_ORDER
    assert manifest.REQUIRED_BLOBS == DOC_REQUIRED_BLOBS
    assert sshsig.NAMESPACE == "consign-bundle"


def test_the_blob_table_in_the_document_is_the_code_s() -> None:
    from executor import manifest

    text = DOC.read_text().split("The blobs a manifest may list", 1)[1]
    rows = re.findall(r"^\| `(\w+)` \| (yes|no) \|", text, re.M)

    assert tuple(name for name, _ in rows) == manifest.BLOB_ORDER == DOC_BLOB_ORDER
    assert tuple(name for name, required in rows if required == "yes") == (
        manifest.REQUIRED_BLOBS
    )


@pytest.mark.parametrize("where", list(LIMITS))
def test_the_document_names_the_module_that_defines_each_limit(where: str) -> None:
    # A reader looks the limit up where the document says; an import there
    # means the document points at a copy, and the next change misses it.
    module, name = where.rsplit(".", 1)
    source = Path(importlib.import_module(module).__file__ or "").read_text()

    assert re.search(rf"^{name}(: [^=]+)? = ", source, re.M), f"{module} does not define {name}"


def _shell_blocks(section: str) -> str:
    text = DOC.read_text().split(f"## {section}", 1)[1]
    return "\n".join(re.findall(r"```sh\n(.*?)```", text, re.S))


def test_the_commands_in_the_document_check_a_bundle_by_hand(good: Path, tmp_path: Path) -> None:
    work = tmp_path / "by-hand"
    work.mkdir()
    shutil.copy(good, work / "web1.bundle")
    shutil.copy(signing_key().trust, work / "allowed_signers")
    script = _shell_blocks("Checking a bundle by hand")
    assert "ssh-keygen -Y verify" in script and "zstd -q -d" in script and "sha256sum -c" in script
    assert "python3 -m zipfile -l runtime.pex" in script

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count('Good "consign-bundle" signature for builder') == 2
    for name in ("repo.tar.zst", "repo.tar", "runtime.pex.zst", "runtime.pex", "model.msgpack"):
        assert f"{name}: OK" in result.stdout
    bundle = verified(good)
    assert (work / "repo.tar").read_bytes() == b"".join(bundle.raw_chunks("repo"))
    assert (work / "runtime.pex").read_bytes() == b"".join(bundle.raw_chunks("runtime"))
    assert (work / "model.msgpack").read_bytes() == bundle.read("model", 1 << 20)
    assert (work / "manual.manifest").read_bytes() == bundle.envelope.manifest_bytes
    # The listing names the pex's files; grep picks three of them out of it.
    with zipfile.ZipFile(work / "runtime.pex") as pex:
        names = pex.namelist()
    listed = (work / "runtime.list").read_text()
    assert all(f"\n{name} " in listed for name in names)
    first_words = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    picked = [word for word in first_words if word in names]
    assert picked == ["PEX-INFO", "__main__.py", "executor/__init__.py"]
    # PEX-INFO's requirements, one a line: consign's pins among them.
    with zipfile.ZipFile(work / "runtime.pex") as pex:
        requirements = json.loads(pex.read("PEX-INFO"))["requirements"]
    assert requirements and "\n".join(requirements) + "\n" in result.stdout


# ---------------------------------------------------------------------------
# Refusals: the reader of executor.bundle, exact text.
# ---------------------------------------------------------------------------


# From here on the tests exercise consign's own reader; they import it inside
# each test, so that the independent reader above visibly stands alone.


def read_all(path: Path, now: int | None = None) -> dict[str, bytes]:
    """Everything a host reads: framing, signature, manifest, every blob (by name)."""
    from executor.bundle import read_envelope, verify_envelope
    from executor.verify import load_trust

    trust, _notes = load_trust(str(signing_key().trust))
    bundle = verify_envelope(read_envelope(str(path)), trust, now or int(time.time()))
    bundle.check_blobs()
    return {entry.name: b"".join(bundle.raw_chunks(entry.name)) for entry in bundle.manifest.blobs}


def refusal(path: Path) -> str:
    from executor.errors import RefusedError

    with pytest.raises(RefusedError) as caught:
        read_all(path)
    return caught.value.message


@dataclass(frozen=True)
class Layout:
    data: bytes
    m: int
    s: int
    o: int
    fp: str
    # Each blob by name: where it lies in the file, and the sha256 the manifest says.
    spans: dict[str, tuple[int, int]]
    sha256: dict[str, str]

    def start(self, name: str) -> int:
        return self.spans[name][0]

    def end(self, name: str) -> int:
        return self.spans[name][1]


def layout(path: Path) -> Layout:
    data = path.read_bytes()
    (m,) = struct.unpack_from(">I", data, 10)
    (s,) = struct.unpack_from(">I", data, 14 + m)
    manifest = msgpack.unpackb(data[14 : 14 + m], raw=False)
    spans, sha256, offset = {}, {}, 18 + m + s
    for entry in manifest["blobs"]:
        spans[entry["name"]] = (offset, offset + entry["size"])
        sha256[entry["name"]] = entry["sha256"]
        offset += entry["size"]
    assert list(spans) == ["repo", "runtime", "model"] and offset == len(data)
    key = doc_parse_signature(doc_split(data).entries[0]).key
    return Layout(data, m, s, 18 + m + s, doc_fingerprint(key), spans, sha256)


def _blob_flip(name: str, where: Callable[[Layout], int]) -> Callable[[Layout], tuple[bytes, str]]:
    def case(lay: Layout) -> tuple[bytes, str]:
        offset = where(lay)
        start, end = lay.spans[name]
        assert start <= offset < end
        data = flipped(lay.data, offset)
        said = lay.sha256[name]
        has = hashlib.sha256(data[start:end]).hexdigest()
        return data, (
            f"{{path}}: blob {name!r} does not match its sha256: the manifest says {said}, "
            f"the blob has {has}"
        )

    return case


def _flip(where: Callable[[Layout], int], message: str) -> Callable[[Layout], tuple[bytes, str]]:
    def case(lay: Layout) -> tuple[bytes, str]:
        offset = where(lay)
        data = flipped(lay.data, offset)
        m = struct.unpack_from(">I", data, 10)[0]
        values = {"fp": lay.fp, "m": lay.m, "s": lay.s, "m_flipped": m,
                  "s_flipped": struct.unpack_from(">I", data, 14 + lay.m)[0],
                  "l_flipped": struct.unpack_from(">I", data, 18 + lay.m)[0]}  # fmt: skip
        return data, message.format(path="{path}", **values)

    return case


MISMATCH = "{path} has no signature this host trusts: {fp}: the signature does not match the manifest"

FLIPS: dict[str, Callable[[Layout], tuple[bytes, str]]] = {
    "magic, first byte": _flip(lambda lay: 0, "{path} is not a consign bundle (wrong magic bytes)"),
    "magic, last byte": _flip(lambda lay: 7, "{path} is not a consign bundle (wrong magic bytes)"),
    "format version": _flip(
        lambda lay: 9, "{path} has bundle format 254; this executor reads format 1"
    ),
    "manifest length": _flip(
        lambda lay: 10,
        "{path}: the manifest is larger than 1048576 bytes (the header says {m_flipped})",
    ),
    "manifest, first byte": _flip(lambda lay: 14, MISMATCH),
    "manifest, a middle byte": _flip(lambda lay: 14 + lay.m // 2, MISMATCH),
    "manifest, last byte": _flip(lambda lay: 13 + lay.m, MISMATCH),
    "signature block length": _flip(
        lambda lay: 14 + lay.m,
        "{path}: the signature block exceeds 65536 bytes (the header says {s_flipped})",
    ),
    "signature entry length": _flip(
        lambda lay: 18 + lay.m, "{path}: signature 1 has a bad length ({l_flipped})"
    ),
    "signature magic": _flip(
        lambda lay: 22 + lay.m,
        "{path}: signature 1 is not an SSH signature: missing the SSHSIG magic",
    ),
    "signature, ed25519 bytes": _flip(lambda lay: 17 + lay.m + lay.s, MISMATCH),
    "repo blob, first byte": _blob_flip("repo", lambda lay: lay.o),
    "repo blob, a middle byte": _blob_flip(
        "repo", lambda lay: (lay.start("repo") + lay.end("repo")) // 2
    ),
    "repo blob, last byte": _blob_flip("repo", lambda lay: lay.end("repo") - 1),
    "runtime blob, first byte": _blob_flip("runtime", lambda lay: lay.start("runtime")),
    "runtime blob, a middle byte": _blob_flip(
        "runtime", lambda lay: (lay.start("runtime") + lay.end("runtime")) // 2
    ),
    "runtime blob, last byte": _blob_flip("runtime", lambda lay: lay.end("runtime") - 1),
    "model blob, first byte": _blob_flip("model", lambda lay: lay.start("model")),
    "model blob, last byte": _blob_flip("model", lambda lay: len(lay.data) - 1),
}


@pytest.mark.parametrize("case", FLIPS, ids=list(FLIPS))
def test_a_flipped_byte_anywhere_is_refused(good: Path, tmp_path: Path, case: str) -> None:
    data, message = FLIPS[case](layout(good))
    path = write(tmp_path / "flipped.bundle", data)

    assert refusal(path) == message.format(path=path)
    with pytest.raises(Refused):
        doc_read(data, doc_trusted_keys(signing_key().trust.read_text()))


def test_a_flipped_key_in_the_signature_names_the_key_it_now_holds(good: Path, tmp_path: Path) -> None:
    lay = layout(good)
    # The signature entry: u32 L, "SSHSIG", u32 version, u32 key-blob length,
    # string "ssh-ed25519" (4 + 11), then the key's own u32 length and 32 bytes.
    key_end = 18 + lay.m + 4 + 6 + 4 + 4 + 15 + 4 + 32
    data = flipped(lay.data, key_end - 1)
    path = write(tmp_path / "flipped.bundle", data)
    key = doc_parse_signature(doc_split(data).entries[0]).key

    assert refusal(path) == MISMATCH.format(path=path, fp=doc_fingerprint(key))


TRUNCATIONS: dict[str, Callable[[Layout], tuple[int, str]]] = {
    "empty": lambda lay: (0, "{path} is empty"),
    "inside the magic": lambda lay: (5, "{path} is truncated: the header is incomplete"),
    "inside the lengths": lambda lay: (12, "{path} is truncated: the header is incomplete"),
    "inside the manifest": lambda lay: (
        14 + lay.m // 2,
        f"{{path}} is truncated: the manifest is incomplete ({lay.m // 2} of {lay.m} bytes)",
    ),
    "inside the signature length": lambda lay: (
        16 + lay.m,
        "{path} is truncated: the signature length is incomplete (2 of 4 bytes)",
    ),
    "inside the signature block": lambda lay: (
        28 + lay.m,
        f"{{path}} is truncated: the signature block is incomplete (10 of {lay.s} bytes)",
    ),
    "before the blobs": lambda lay: (
        lay.o,
        f"{{path}} is truncated: {lay.o} bytes, the manifest promises {len(lay.data)}",
    ),
    "inside the repo blob": lambda lay: (
        lay.o + 10,
        f"{{path}} is truncated: {lay.o + 10} bytes, the manifest promises {len(lay.data)}",
    ),
    "inside the runtime blob": lambda lay: (
        lay.start("runtime") + 10,
        f"{{path}} is truncated: {lay.start('runtime') + 10} bytes, "
        f"the manifest promises {len(lay.data)}",
    ),
    "before the model blob": lambda lay: (
        lay.start("model"),
        f"{{path}} is truncated: {lay.start('model')} bytes, the manifest promises {len(lay.data)}",
    ),
    "one byte short": lambda lay: (
        len(lay.data) - 1,
        f"{{path}} is truncated: {len(lay.data) - 1} bytes, the manifest promises {len(lay.data)}",
    ),
}


@pytest.mark.parametrize("case", TRUNCATIONS, ids=list(TRUNCATIONS))
def test_a_truncated_bundle_is_refused(good: Path, tmp_path: Path, case: str) -> None:
    lay = layout(good)
    cut, message = TRUNCATIONS[case](lay)
    path = write(tmp_path / "cut.bundle", lay.data[:cut])

    assert refusal(path) == message.format(path=path)
    with pytest.raises(Refused):
        doc_read(lay.data[:cut], doc_trusted_keys(signing_key().trust.read_text()))


def test_trailing_data_is_refused(good: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "long.bundle", good.read_bytes() + b"\0")

    assert refusal(path) == f"{path} has 1 bytes of trailing data"


def test_a_stored_blob_longer_than_its_declared_size_is_refused(good: Path, tmp_path: Path) -> None:
    parts = doc_split(good.read_bytes())
    longer = spliced(parts, "repo", parts.blob("repo") + b"\0" * 7)
    path = write(tmp_path / "long.bundle", doc_join(longer))

    assert refusal(path) == f"{path} has 7 bytes of trailing data"


def test_an_unsigned_bundle_is_refused(good: Path, tmp_path: Path) -> None:
    parts = doc_split(good.read_bytes())
    path = write(tmp_path / "unsigned.bundle", doc_join(replace(parts, entries=())))

    assert refusal(path) == f"{path} is not signed"


def _other_signatures(count: int, manifest: bytes, directory: Path) -> list[bytes]:
    entries = []
    for index in range(count):
        key = directory / f"other-{index}"
        generate_key(key, comment="")
        entries.append(load_signer(key).sign(manifest).encode())
    return entries


def test_sixteen_signatures_are_read_and_any_trusted_one_counts(good: Path, tmp_path: Path) -> None:
    parts = doc_split(good.read_bytes())
    others = _other_signatures(15, parts.manifest, tmp_path)
    path = write(tmp_path / "many.bundle", doc_join(replace(parts, entries=(*others, *parts.entries))))

    assert read_all(path)["model"] == parts.blob("model")


def test_more_than_sixteen_signatures_are_refused(good: Path, tmp_path: Path) -> None:
    parts = doc_split(good.read_bytes())
    entries = parts.entries * 17
    path = write(tmp_path / "many.bundle", doc_join(replace(parts, entries=entries)))

    assert refusal(path) == f"{path} carries more than 16 signatures"


MALFORMED_ENTRIES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "length beyond the block": (
        lambda entry: struct.pack(">I", len(entry) + 1) + entry,
        "{path}: signature 1 has a bad length (185)",
    ),
    "longer than 4096 bytes": (
        lambda entry: struct.pack(">I", 4097) + entry + b"\0" * (4097 - len(entry)),
        "{path}: signature 1 has a bad length (4097)",
    ),
    "a length cut short": (
        lambda entry: ssh_string(entry) + b"\0\0",
        "{path}: signature 2 is truncated",
    ),
    "not SSHSIG": (
        lambda entry: ssh_string(b"x" * len(entry)),
        "{path}: signature 1 is not an SSH signature: missing the SSHSIG magic",
    ),
    "SSHSIG version 2": (
        lambda entry: ssh_string(entry[:6] + struct.pack(">I", 2) + entry[10:]),
        "{path}: signature 1 is not an SSH signature: SSHSIG version 2 is not supported",
    ),
    "an RSA key": (
        lambda entry: ssh_string(
            b"SSHSIG" + struct.pack(">I", 1) + ssh_string(ssh_string(b"ssh-rsa") + ssh_string(b"\1" * 32))
            + entry[10 + 4 + 51 :]
        ),
        "{path}: signature 1 is not an SSH signature: key type 'ssh-rsa' is not ssh-ed25519",
    ),  # fmt: skip
    "cut inside": (
        lambda entry: ssh_string(entry[:100]),
        "{path}: signature 1 is not an SSH signature: truncated",
    ),
    "trailing bytes inside": (
        lambda entry: ssh_string(entry + b"\0"),
        "{path}: signature 1 is not an SSH signature: 1 bytes of trailing data",
    ),
}


@pytest.mark.parametrize("case", MALFORMED_ENTRIES, ids=list(MALFORMED_ENTRIES))
def test_a_malformed_signature_entry_is_refused(good: Path, tmp_path: Path, case: str) -> None:
    parts = doc_split(good.read_bytes())
    make, message = MALFORMED_ENTRIES[case]
    path = write(tmp_path / "bad.bundle", doc_join(parts, block=make(parts.entries[0])))

    assert refusal(path) == message.format(path=path)


def test_oversized_framing_is_refused_before_it_is_read(good: Path, tmp_path: Path) -> None:
    parts = doc_split(good.read_bytes())
    huge_manifest = DOC_MAGIC + struct.pack(">HI", 1, (1 << 20) + 1)
    path = write(tmp_path / "m.bundle", huge_manifest)
    assert refusal(path) == (
        f"{path}: the manifest is larger than 1048576 bytes (the header says 1048577)"
    )
    block = b"\0" * (64 * KiB + 1)
    path = write(tmp_path / "s.bundle", doc_join(parts, block=block))
    assert refusal(path) == (
        f"{path}: the signature block exceeds 65536 bytes (the header says 65537)"
    )


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, old
    return data.replace(old, new)


def _duplicate_key(manifest: bytes) -> bytes:
    # A second "serial" at the end of the top-level map (fixmap: 0x80 | count).
    count = manifest[0] & 0x0F
    assert manifest[0] & 0xF0 == 0x80
    return bytes([0x80 | (count + 1)]) + manifest[1:] + b"\xa6serial\x00"


def _wide_integer(manifest: bytes) -> bytes:
    # "format": 1 as uint16 (cd 00 01) instead of positive fixint 01.
    return _replace_once(manifest, b"\xa6format\x01", b"\xa6format\xcd\x00\x01")


def _unsorted(manifest: bytes) -> bytes:
    data = msgpack.unpackb(manifest, raw=False)
    reordered = {"serial": data.pop("serial"), **data}
    return bytes(msgpack.packb(reordered, use_bin_type=True))


def _with_build_time(manifest: bytes, value: object) -> bytes:
    data = msgpack.unpackb(manifest, raw=False)
    data["build_time"] = value
    return bytes(msgpack.packb(dict(sorted(data.items())), use_bin_type=True, datetime=False))


def _float_time(manifest: bytes) -> bytes:
    return _with_build_time(manifest, float(msgpack.unpackb(manifest)["build_time"]))


def _timestamp(manifest: bytes) -> bytes:
    return _with_build_time(manifest, msgpack.Timestamp(msgpack.unpackb(manifest)["build_time"]))


def _long_string_header(manifest: bytes) -> bytes:
    # "host": "web1" as str8 (d9 04) instead of fixstr (a4).
    return _replace_once(manifest, b"\xa4host\xa4web1", b"\xa4host\xd9\x04web1")


NON_CANONICAL: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "a duplicate key": (_duplicate_key, "duplicate map key 'serial'"),
    "a non-canonical integer": (_wide_integer, "not canonical: re-encoding gives different bytes"),
    "keys out of order": (_unsorted, "not canonical: re-encoding gives different bytes"),
    "a longer string header": (_long_string_header, "not canonical: re-encoding gives different bytes"),
    "a float": (_float_time, "not canonical: floats are not canonical: {time}.0"),
    "a timestamp extension": (_timestamp, "extension type -1 (timestamp) is not allowed"),
    "trailing bytes": (lambda m: m + b"\xc0", "1 bytes of trailing data"),
}


@pytest.mark.parametrize("case", NON_CANONICAL, ids=list(NON_CANONICAL))
def test_a_signed_but_non_canonical_manifest_is_refused(good: Path, tmp_path: Path, case: str) -> None:
    parts = doc_split(good.read_bytes())
    make, reason = NON_CANONICAL[case]
    manifest = make(parts.manifest)
    path = write(tmp_path / "odd.bundle", doc_join(resigned(parts, manifest)))
    build_time = msgpack.unpackb(parts.manifest, raw=False)["build_time"]

    # Signed by the trusted key: only the canonical check can refuse it.
    assert refusal(path) == (
        f"{path}: the manifest is invalid: {reason.format(time=build_time)}"
    )
    with pytest.raises(Refused):
        doc_read(path.read_bytes(), doc_trusted_keys(signing_key().trust.read_text()))


def test_a_bundle_with_another_format_in_its_manifest_is_refused(good: Path, tmp_path: Path) -> None:
    parts = edit_manifest(doc_split(good.read_bytes()), lambda m: m.update(format=2))
    path = write(tmp_path / "v2.bundle", doc_join(parts))

    assert refusal(path) == f"{path}: the manifest is invalid: manifest.format: expected 1, got 2"


# -- blobs after the signature: hashes, decompression -----------------------


@pytest.mark.parametrize("name", ["repo", "runtime"])
def test_a_blob_that_unpacks_to_other_content_is_refused(good: Path, tmp_path: Path, name: str) -> None:
    parts = doc_split(good.read_bytes())
    other = zstandard.ZstdCompressor().compress(b"other content")
    path = write(tmp_path / "other.bundle", doc_join(with_blob(parts, name, other)))

    assert refusal(path) == f"{path}: blob {name!r} does not unpack to its raw sha256 and size"


def test_a_truncated_zstd_frame_is_refused(good: Path, tmp_path: Path) -> None:
    parts = doc_split(good.read_bytes())
    path = write(tmp_path / "cut.bundle", doc_join(with_blob(parts, "repo", parts.blob("repo")[:-20])))

    assert refusal(path) == f"{path}: blob 'repo' does not unpack to its raw sha256 and size"


def test_data_after_the_zstd_frame_is_refused(good: Path, tmp_path: Path) -> None:
    parts = doc_split(good.read_bytes())
    path = write(tmp_path / "tail.bundle", doc_join(with_blob(parts, "repo", parts.blob("repo") + b"junk")))

    assert refusal(path) == (
        f"{path}: blob 'repo' is not valid zstd data: zstd decompress error: Unknown frame descriptor"
    )


@pytest.mark.parametrize("window_log", [28, 29])
def test_a_zstd_frame_asking_for_a_larger_window_is_refused_before_decompressing(
    good: Path, tmp_path: Path, window_log: int
) -> None:
    from executor.bundle import VerifiedBundle

    raw = b"small content " * 100
    # Streaming, without the content size, the frame keeps the window it was
    # made with: nothing large is needed to ask for a large window.
    stored = zstd_stream([raw], window_log=window_log)
    assert zstandard.get_frame_parameters(stored).window_size == 1 << window_log
    parts = with_blob(doc_split(good.read_bytes()), "repo", stored, raw=raw)
    path = write(tmp_path / "window.bundle", doc_join(parts))
    produced: list[bytes] = []
    original = VerifiedBundle.raw_chunks

    def counting(self: VerifiedBundle, name: str) -> Iterator[bytes]:
        for chunk in original(self, name):
            produced.append(chunk)
            yield chunk

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VerifiedBundle, "raw_chunks", counting)
        message = refusal(path)

    assert message == (
        f"{path}: blob 'repo' asks for a zstd window of {1 << window_log} bytes; "
        f"the limit is {1 << 27}"
    )
    assert produced == []


def test_a_later_frame_with_a_larger_window_is_refused_by_the_decompressor(
    good: Path, tmp_path: Path
) -> None:
    first, second = b"first frame\n" * 10, b"second frame\n" * 10
    stored = zstandard.ZstdCompressor().compress(first) + zstd_stream([second], window_log=28)
    parts = with_blob(doc_split(good.read_bytes()), "repo", stored, raw=first + second)
    path = write(tmp_path / "window.bundle", doc_join(parts))

    assert refusal(path) == (
        f"{path}: blob 'repo' is not valid zstd data: "
        "zstd decompress error: Frame requires too much memory for decoding"
    )
    # zstd(1) has the same default limit and refuses it too.
    blob = write(tmp_path / "repo.zst", stored)
    result = subprocess.run(["zstd", "-d", "-c", str(blob)], capture_output=True, timeout=30)
    assert result.returncode != 0


def test_several_frames_decompress_like_zstd_does(good: Path, tmp_path: Path) -> None:
    first, second = b"first frame\n" * 10, b"second frame\n" * 10
    stored = zstandard.ZstdCompressor().compress(first) + zstandard.ZstdCompressor().compress(second)
    parts = with_blob(doc_split(good.read_bytes()), "repo", stored, raw=first + second)
    path = write(tmp_path / "frames.bundle", doc_join(parts))

    assert read_all(path)["repo"] == first + second


BOMB = 16 << 20  # 16 MiB of zeros: a few hundred bytes of zstd


def test_a_bomb_announcing_its_size_is_refused_from_the_frame_header(good: Path, tmp_path: Path) -> None:
    stored = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(b"\0" * BOMB)
    parts = with_blob(doc_split(good.read_bytes()), "repo", stored, raw=b"tiny", raw_size=4096)
    path = write(tmp_path / "bomb.bundle", doc_join(parts))

    assert refusal(path) == (
        f"{path}: blob 'repo' announces {BOMB} bytes of content; the manifest allows 4096"
    )


def test_a_bomb_without_a_size_stops_at_the_declared_size(good: Path, tmp_path: Path) -> None:
    from executor.bundle import read_envelope, verify_envelope
    from executor.errors import BundleError
    from executor.verify import load_trust

    stored = zstd_stream(b"\0" * (1 << 20) for _ in range(BOMB >> 20))
    assert len(stored) < 64 * KiB
    parts = with_blob(doc_split(good.read_bytes()), "repo", stored, raw=b"x" * 4096)
    path = write(tmp_path / "bomb.bundle", doc_join(parts))
    trust, _notes = load_trust(str(signing_key().trust))
    bundle = verify_envelope(read_envelope(str(path)), trust, int(time.time()))
    bundle.check_blobs()
    produced = 0

    tracemalloc.start()
    try:
        with pytest.raises(BundleError) as caught:
            for chunk in bundle.raw_chunks("repo"):
                produced += len(chunk)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert caught.value.message == (
        f"{path}: blob 'repo' decompresses to more than its declared 4096 bytes"
    )
    assert produced <= 4096
    assert peak < 1 << 20  # far below the 16 MiB the frame would give


def test_the_bundle_file_must_not_change_between_reads(good: Path, tmp_path: Path) -> None:
    from executor.bundle import read_envelope, verify_envelope
    from executor.errors import BundleError
    from executor.verify import load_trust

    trust, _notes = load_trust(str(signing_key().trust))
    bundle = verify_envelope(read_envelope(str(good)), trust, int(time.time()))
    swapped = tmp_path / "swapped"
    shutil.copy(good, swapped)
    os.replace(swapped, good)

    with pytest.raises(BundleError) as caught:
        bundle.check_blobs()
    assert caught.value.message == f"{good} changed after its signature was checked"


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    from executor.bundle import read_envelope
    from executor.errors import BundleError

    fifo = tmp_path / "web1.bundle"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "not a regular file"), (tmp_path, "a directory")):
        with pytest.raises(BundleError) as caught:
            read_envelope(str(path))  # must not block on the fifo
        assert caught.value.message == f"{path} is {kind}"
    with pytest.raises(BundleError) as caught:
        read_envelope(str(tmp_path / "missing.bundle"))
    assert caught.value.message == (
        f"cannot read the bundle {tmp_path / 'missing.bundle'}: No such file or directory"
    )


def test_open_unverified_reads_without_trust_but_still_checks_blobs(good: Path, tmp_path: Path) -> None:
    from executor.bundle import open_unverified
    from executor.errors import BundleError

    parts = doc_split(good.read_bytes())
    path = write(tmp_path / "unsigned.bundle", doc_join(replace(parts, entries=())))
    bundle = open_unverified(str(path))
    assert bundle.read("model", 1 << 20) == parts.blob("model")

    damaged = write(tmp_path / "damaged.bundle", flipped(good.read_bytes(), len(good.read_bytes()) - 1))
    with pytest.raises(BundleError, match="blob 'model' does not match its sha256"):
        open_unverified(str(damaged)).check_blobs()


def test_the_writer_refuses_more_signatures_than_a_reader_accepts() -> None:
    from executor.bundle import signature_block
    from executor.sshsig import Signature

    signature = Signature.decode(sign(b"manifest"))
    assert len(signature_block([signature] * 16)) == 16 * (4 + len(signature.encode()))
    with pytest.raises(ValueError, match="at most 16 signatures"):
        signature_block([signature] * 17)


def test_compression_is_one_fixed_path_with_the_content_size(tmp_path: Path) -> None:
    from executor.bundle import compress_file

    content = b"".join(f"line {i}\n".encode() for i in range(50_000))
    source = write(tmp_path / "content", content)
    size, sha256 = compress_file(str(source), str(tmp_path / "content.zst"))
    stored = (tmp_path / "content.zst").read_bytes()

    assert (size, sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert zstandard.frame_content_size(stored) == len(content)
    assert zstandard.get_frame_parameters(stored).window_size <= 1 << 27
    compress_file(str(source), str(tmp_path / "again.zst"))
    assert (tmp_path / "again.zst").read_bytes() == stored


# ---------------------------------------------------------------------------
# Interoperability with tools nobody here wrote.
# ---------------------------------------------------------------------------


def ssh_keygen(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ssh-keygen", *args], input=stdin, capture_output=True, timeout=30)


def test_ssh_keygen_verifies_every_signature_of_every_built_bundle(
    bundles: Path, tmp_path: Path
) -> None:
    from executor.bundle import read_envelope

    # A second key, as during a rotation: both sign, ssh-keygen checks each.
    second = tmp_path / "second"
    generate_key(second, comment="")
    repo = bundles.parent.parent
    out = tmp_path / "out"
    build_bundles("prod", repo, out=out, sign_keys=(signing_key().private, second))
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(
        signing_key().trust.read_text() + f"builder {(tmp_path / 'second.pub').read_text()}"
    )
    paths = sorted((out / "prod").glob("*.bundle"))
    assert [p.name for p in paths] == ["web1.bundle", "web2.bundle"]
    for path in paths:
        envelope = read_envelope(str(path))
        assert len(envelope.signatures) == 2
        manifest = tmp_path / f"{path.stem}.manifest"
        manifest.write_bytes(envelope.manifest_bytes)
        for index, signature in enumerate(envelope.signatures):
            armored = tmp_path / f"{path.stem}.{index}.sig"
            armored.write_text(signature.armored())
            result = ssh_keygen(
                "-Y", "verify", "-f", str(allowed), "-I", "builder", "-n", "consign-bundle",
                "-s", str(armored), stdin=envelope.manifest_bytes,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert result.stdout.decode().startswith('Good "consign-bundle" signature for builder')


@pytest.mark.parametrize("hash_option", [[], ["-O", "hashalg=sha256"]], ids=["sha512", "sha256"])
def test_consign_accepts_a_signature_made_by_ssh_keygen(
    good: Path, tmp_path: Path, hash_option: list[str]
) -> None:
    from executor.sshsig import Signature

    key = tmp_path / "ssh-keygen-key"
    made = ssh_keygen("-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f", str(key))
    assert made.returncode == 0, made.stderr
    parts = doc_split(good.read_bytes())
    manifest = tmp_path / "manifest"
    manifest.write_bytes(parts.manifest)
    signed = ssh_keygen("-Y", "sign", "-f", str(key), "-n", "consign-bundle", *hash_option, str(manifest))
    assert signed.returncode == 0, signed.stderr
    entry = Signature.from_armored((tmp_path / "manifest.sig").read_text()).encode()
    path = write(tmp_path / "ssh-keygen.bundle", doc_join(replace(parts, entries=(entry,))))
    trust = tmp_path / "allowed_signers"
    trust.write_text(f'ops namespaces="consign-bundle" {(tmp_path / "ssh-keygen-key.pub").read_text()}')

    from executor.bundle import read_envelope, verify_envelope
    from executor.verify import load_trust

    bundle = verify_envelope(read_envelope(str(path)), load_trust(str(trust))[0], int(time.time()))
    bundle.check_blobs()
    assert bundle.signer.principals == ("ops",)
    assert bundle.envelope.signatures[0].hash_algorithm == ("sha256" if hash_option else "sha512")
    assert doc_read(path.read_bytes(), doc_trusted_keys(trust.read_text())).signer == (
        bundle.signer.key.fingerprint()
    )


def test_ssh_keygen_signs_with_the_builder_s_key_the_very_same_bytes(good: Path, tmp_path: Path) -> None:
    from executor.sshsig import Signature

    parts = doc_split(good.read_bytes())
    key = tmp_path / "builder"
    shutil.copy(signing_key().private, key)
    manifest = write(tmp_path / "manifest", parts.manifest)
    signed = ssh_keygen("-Y", "sign", "-f", str(key), "-n", "consign-bundle", str(manifest))
    assert signed.returncode == 0, signed.stderr

    # ed25519 is deterministic: spliced in, the bundle is byte for byte the built one.
    entry = Signature.from_armored((tmp_path / "manifest.sig").read_text()).encode()
    assert doc_join(replace(parts, entries=(entry,))) == good.read_bytes()


def test_the_zstd_tool_decompresses_each_compressed_blob_to_its_raw_sha256(
    good: Path, tmp_path: Path
) -> None:
    bundle = verified(good)
    parts = doc_split(good.read_bytes())
    unpacked = {}
    for entry in bundle.manifest.blobs:
        if entry.compression.value != "zstd":
            continue
        blob = write(tmp_path / f"{entry.name}.zst", parts.blob(entry.name))
        result = subprocess.run(["zstd", "-q", "-d", "-c", str(blob)], capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout) == entry.raw_size
        assert hashlib.sha256(result.stdout).hexdigest() == entry.raw_sha256
        unpacked[entry.name] = result.stdout

    assert sorted(unpacked) == ["repo", "runtime"]
    # The repo is a tar, the runtime a pex: a zip file that carries its PEX-INFO.
    assert tarfile.is_tarfile(io.BytesIO(unpacked["repo"]))
    assert zipfile.is_zipfile(io.BytesIO(unpacked["runtime"]))
    with zipfile.ZipFile(io.BytesIO(unpacked["runtime"])) as pex:
        assert "PEX-INFO" in pex.namelist() and "__main__.py" in pex.namelist()
