"""Properties of the pointer reader (issue 11, fuzzing): a signed pointer
changed anywhere is refused; any bytes give a PointerError or another
RefusedError, never another exception."""

from __future__ import annotations


import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from builder.signing import load_signer
from executor.errors import RefusedError
from executor.pointer import Pointer, encode_pointer, read_pointer, verify_pointer
from executor.verify import load_trust
from tests.keys import signing_key

# A fixed moment: the same examples give the same bytes in every run.
NOW = 1_800_000_000


def signed(pointer: Pointer) -> bytes:
    signer = load_signer(signing_key().private)
    return encode_pointer(pointer, [signer.sign(pointer.payload())])


ORIGINAL = Pointer("web1", "prod", 7, "a" * 64, 900, NOW - 10, NOW + 3600)


def verify(data: bytes) -> Pointer:
    trust, _notes = load_trust(str(signing_key().trust))
    return verify_pointer(data, "web1.pointer", trust, NOW, "web1", "prod")[0]


def test_the_original_verifies() -> None:
    assert verify(signed(ORIGINAL)) == ORIGINAL


@given(st.data())
def test_a_changed_byte_is_refused(data: st.DataObject) -> None:
    original = signed(ORIGINAL)
    changed = bytearray(original)
    changed[data.draw(st.integers(0, len(original) - 1))] ^= data.draw(st.integers(1, 255))
    with pytest.raises(RefusedError):
        verify(bytes(changed))


@given(st.data())
def test_truncated_or_extended_pointers_are_refused(data: st.DataObject) -> None:
    original = signed(ORIGINAL)
    if data.draw(st.booleans()):
        changed = original[: data.draw(st.integers(0, len(original) - 1))]
    else:
        changed = original + data.draw(st.binary(min_size=1, max_size=64))
    with pytest.raises(RefusedError):
        verify(changed)
    with pytest.raises(RefusedError):
        read_pointer(changed, "web1.pointer")


@given(st.binary(max_size=2048))
def test_any_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(RefusedError):
        verify(data)
    try:
        read_pointer(data, "web1.pointer")
    except RefusedError:
        pass


@given(
    st.builds(
        Pointer,
        # Mostly this host and environment, so that many pointers verify.
        host=st.one_of(st.just("web1"), st.text(max_size=20)),
        environment=st.one_of(st.just("prod"), st.text(max_size=20)),
        serial=st.integers(0, 2**64 - 1),
        manifest=st.one_of(st.just("b" * 64), st.text(max_size=70)),
        manifest_size=st.integers(0, 2**40),
        issued=st.integers(0, 2**40),
        expires=st.one_of(st.integers(NOW - 5, NOW + 10**6), st.integers(0, 2**40)),
    )
)
def test_signed_pointers_with_any_fields_verify_or_are_refused(pointer: Pointer) -> None:
    try:
        got = verify(signed(pointer))
    except RefusedError:
        event("refused")
        return
    event("verified")
    assert got == pointer
    assert (got.host, got.environment) == ("web1", "prod") and got.expires > NOW and got.manifest_size >= 1
