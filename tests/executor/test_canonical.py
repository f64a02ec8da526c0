from __future__ import annotations

from typing import Any

import pytest

from executor.canonical import MAX_DEPTH, CanonicalError, pack, unpack

# --- encoding ---------------------------------------------------------------


def test_pack_sorts_map_keys_recursively() -> None:
    value = {"b": 1, "a": {"d": [{"z": 0, "y": 1}], "c": None}}

    assert pack(value) == (
        b"\x82"
        b"\xa1a\x82\xa1c\xc0\xa1d\x91\x82\xa1y\x01\xa1z\x00"
        b"\xa1b\x01"
    )


def test_pack_does_not_depend_on_insertion_order() -> None:
    forward = {str(i): i for i in range(50)}
    backward = {str(i): i for i in reversed(range(50))}

    assert pack(forward) == pack(backward)


def test_tuples_and_lists_encode_alike() -> None:
    assert pack((1, "a", (b"x",))) == pack([1, "a", [b"x"]])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "floats are not canonical: 1.5"),
        ({"a": [0.0]}, "floats are not canonical: 0.0"),
        ({1: "x"}, "map keys must be str, got int"),
        ({"a": {b"k": 1}}, "map keys must be str, got bytes"),
        (object(), "cannot encode object canonically"),
        ({"s": {1, 2}}, "cannot encode set canonically"),
        (bytearray(b"x"), "cannot encode bytearray canonically"),
        (
            1 << 64,
            "integer 18446744073709551616 is outside msgpack's range "
            "[-9223372036854775808, 18446744073709551615]",
        ),
        (
            -(1 << 63) - 1,
            "integer -9223372036854775809 is outside msgpack's range "
            "[-9223372036854775808, 18446744073709551615]",
        ),
        ("\ud800", "string '\\ud800' is not valid Unicode"),
    ],
    ids=[
        "float",
        "nested-float",
        "int-key",
        "bytes-key",
        "object",
        "set",
        "bytearray",
        "int-too-large",
        "int-too-small",
        "lone-surrogate",
    ],
)
def test_pack_refuses_what_has_no_canonical_encoding(value: object, message: str) -> None:
    with pytest.raises(CanonicalError) as caught:
        pack(value)

    assert str(caught.value) == message


def test_pack_refuses_nesting_deeper_than_the_limit() -> None:
    value: Any = None
    for _ in range(MAX_DEPTH + 1):
        value = [value]

    with pytest.raises(CanonicalError) as caught:
        pack(value)

    assert str(caught.value) == "nesting deeper than 64"


# --- decoding ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        127,
        128,
        -32,
        -33,
        255,
        256,
        65535,
        65536,
        (1 << 32) - 1,
        1 << 32,
        (1 << 64) - 1,
        -(1 << 63),
        "",
        "hello",
        "ünïcödé ✓",
        "x" * 31,
        "x" * 32,
        "x" * 256,
        "x" * 65536,
        b"",
        b"\x00\xff",
        b"x" * 256,
        b"x" * 65536,
        [],
        [1, "a", b"b", None, True, [[]]],
        list(range(16)),
        list(range(65536)),
        {},
        {"a": 1, "b": {"c": [None]}},
        {str(i): i for i in range(16)},
        {str(i): i for i in range(65536)},
    ],
    ids=repr,
)
def test_every_allowed_value_round_trips(value: object) -> None:
    data = pack(value)

    assert unpack(data) == value
    assert pack(unpack(data)) == data


def test_unpack_returns_lists_for_tuples() -> None:
    assert unpack(pack((1, (2,)))) == [1, [2]]


def test_unpack_accepts_nesting_at_the_limit() -> None:
    data = b"\x91" * MAX_DEPTH + b"\xc0"

    value = unpack(data)

    for _ in range(MAX_DEPTH):
        assert isinstance(value, list)
        value = value[0]
    assert value is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated msgpack data"),
        (b"\x92\x01", "truncated msgpack data"),
        (b"\xa5abc", "truncated msgpack data"),
        (b"\xcd\x00", "truncated msgpack data"),
        (b"\x81\xa1a", "truncated msgpack data"),
        (b"\x01\x02", "1 bytes of trailing data"),
        (b"\x90\xc0\xc0", "2 bytes of trailing data"),
        (b"\x82\xa1a\x01\xa1a\x02", "duplicate map key 'a'"),
        (b"\x81\xa1x\x82\xa1k\x01\xa1k\x01", "duplicate map key 'k'"),
        (b"\xcd\x00\x01", "not canonical: re-encoding gives different bytes"),
        (b"\xd0\x01", "not canonical: re-encoding gives different bytes"),
        (b"\xd9\x01a", "not canonical: re-encoding gives different bytes"),
        (b"\xdc\x00\x00", "not canonical: re-encoding gives different bytes"),
        (b"\x82\xa1b\x01\xa1a\x02", "not canonical: re-encoding gives different bytes"),
        (b"\xca\x3f\xc0\x00\x00", "not canonical: floats are not canonical: 1.5"),
        (b"\xcb" + b"\x00" * 8, "not canonical: floats are not canonical: 0.0"),
        (b"\x81\xc4\x01k\x01", "not canonical: map keys must be str, got bytes"),
        (b"\xd4\x05\x00", "extension type 5 is not allowed"),
        (b"\xc7\x01\x07x", "extension type 7 is not allowed"),
        (b"\x91\xd5\x80\x00\x00", "extension type -128 is not allowed"),
        (b"\xd6\xff\x00\x00\x00\x01", "extension type -1 (timestamp) is not allowed"),
        (b"\x81\xa1t\xd6\xff\x00\x00\x00\x01", "extension type -1 (timestamp) is not allowed"),
        (b"\xc1", "malformed msgpack: reserved type byte at offset 0"),
        (b"\x92\x01\xc1", "malformed msgpack: reserved type byte at offset 2"),
        (
            b"\xa1\xff",
            "malformed msgpack: 'utf-8' codec can't decode byte 0xff in position 0: "
            "invalid start byte",
        ),
        (b"\xdd\xff\xff\xff\xff", "malformed msgpack: 4294967295 exceeds max_array_len(5)"),
        (b"\xdf\xff\xff\xff\xff", "malformed msgpack: 4294967295 exceeds max_map_len(2)"),
        # msgpack waits for the 4 GiB instead of allocating them.
        (b"\xc6\xff\xff\xff\xff", "truncated msgpack data"),
        (
            b"\x81\x01\x02",
            "malformed msgpack: int is not allowed for map key when strict_map_key=True",
        ),
        (b"\x91" * 100 + b"\xc0", "nesting deeper than 64"),
        (b"\x91" * (MAX_DEPTH + 1) + b"\xc0", "nesting deeper than 64"),
        (b"\x81\xa1a" * (MAX_DEPTH + 1) + b"\xc0", "nesting deeper than 64"),
        # Deeper than msgpack's own stack: refused by it, reported alike.
        (b"\x91" * 5000 + b"\xc0", "nesting deeper than 64"),
    ],
    ids=[
        "empty",
        "truncated-array",
        "truncated-str",
        "truncated-uint16",
        "truncated-map",
        "one-trailing-byte",
        "two-trailing-bytes",
        "duplicate-key",
        "nested-duplicate-key",
        "one-as-uint16",
        "one-as-int8",
        "short-str-as-str8",
        "empty-array-as-array16",
        "unsorted-keys",
        "float32",
        "float64",
        "bin-key",
        "fixext1",
        "ext8",
        "nested-ext",
        "timestamp",
        "nested-timestamp",
        "reserved-byte",
        "nested-reserved-byte",
        "invalid-utf8",
        "huge-array-length",
        "huge-map-length",
        "huge-bin-length",
        "int-key",
        "100-nested-arrays",
        "one-too-deep",
        "deep-maps",
        "deeper-than-msgpack",
    ],
)
def test_unpack_refuses_non_canonical_or_malformed_data(data: bytes, message: str) -> None:
    with pytest.raises(CanonicalError) as caught:
        unpack(data)

    assert str(caught.value) == message


def test_unpack_refuses_data_over_max_bytes_before_parsing() -> None:
    data = pack("x" * 100)

    with pytest.raises(CanonicalError) as caught:
        unpack(data, max_bytes=len(data) - 1)

    assert str(caught.value) == "102 bytes exceed the limit of 101"
    assert unpack(data, max_bytes=len(data)) == "x" * 100


def test_canonical_error_is_a_value_error() -> None:
    assert issubclass(CanonicalError, ValueError)
