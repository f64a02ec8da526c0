"""Properties of the bundle reader (issue 11, fuzzing): any change to a
signed bundle, any truncation, any bytes at all are refused with a
documented error (a RefusedError), never another exception; inspection
tools reading the same bytes without trust fail the same way."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executor.bundle import open_unverified, read_envelope, verify_envelope
from executor.errors import RefusedError
from executor.verify import load_trust
from tests.deployments import build_bundles, deployment
from tests.keys import signing_key

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="hello\\n")
    """


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    repo = deployment(
        tmp_path_factory.mktemp("repo"), components={"app": APP}, environments={"prod": "[hosts]\nweb1 = app\n"}
    )
    return build_bundles("prod", repo).hosts[0].path.read_bytes()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "bundle"


def accept(data: bytes, path: Path) -> None:
    """Everything a host does with a bundle before it unpacks anything, and
    reading every blob whole (decompressed) as unpacking would."""
    path.write_bytes(data)
    trust, _notes = load_trust(str(signing_key().trust))
    bundle = verify_envelope(read_envelope(str(path)), trust, int(time.time()))
    bundle.check_blobs()
    for entry in bundle.manifest.blobs:
        for _chunk in bundle.raw_chunks(entry.name):
            pass


def inspect(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    reader = open_unverified(str(path))
    for entry in reader.manifest.blobs:
        for _chunk in reader.raw_chunks(entry.name):
            pass


def offsets(size: int) -> st.SearchStrategy[int]:
    # The framing, manifest and signatures are in the first few KiB: search there most.
    return st.one_of(st.integers(0, min(size - 1, 4096)), st.integers(0, size - 1))


@given(st.data())
def test_a_changed_byte_anywhere_is_refused(original: bytes, scratch: Path, data: st.DataObject) -> None:
    offset = data.draw(offsets(len(original)))
    value = data.draw(st.integers(1, 255))
    changed = bytearray(original)
    changed[offset] ^= value
    with pytest.raises(RefusedError):
        accept(bytes(changed), scratch)
    try:
        inspect(bytes(changed), scratch)
    except RefusedError:
        pass


@given(st.data())
def test_truncated_or_extended_bundles_are_refused(original: bytes, scratch: Path, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        changed = original[: data.draw(offsets(len(original)))]
    else:
        changed = original + data.draw(st.binary(min_size=1, max_size=64))
    with pytest.raises(RefusedError):
        accept(changed, scratch)
    with pytest.raises(RefusedError):
        inspect(changed, scratch)


@given(st.data())
def test_inserted_or_removed_bytes_are_refused(original: bytes, scratch: Path, data: st.DataObject) -> None:
    offset = data.draw(offsets(len(original)))
    if data.draw(st.booleans()):
        changed = original[:offset] + data.draw(st.binary(min_size=1, max_size=16)) + original[offset:]
    else:
        changed = original[:offset] + original[offset + data.draw(st.integers(1, 16)) :]
    with pytest.raises(RefusedError):
        accept(changed, scratch)


@given(st.binary(max_size=4096))
def test_any_bytes_are_refused(scratch: Path, data: bytes) -> None:
    with pytest.raises(RefusedError):
        accept(data, scratch)
    with pytest.raises(RefusedError):
        inspect(data, scratch)


@given(st.binary(max_size=512))
def test_the_real_header_followed_by_anything_is_refused(original: bytes, scratch: Path, tail: bytes) -> None:
    with pytest.raises(RefusedError):
        accept(original[:16] + tail, scratch)
