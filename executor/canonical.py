"""Canonical msgpack: one byte string per value, and a bounded, strict decoder.

Signed and content-addressed data must have exactly one encoding, so the
encoder sorts map keys (recursively), refuses floats and extension types,
and the decoder refuses duplicate keys and anything that does not re-encode
to the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

# What canonical data may contain. Anything else is a bug in the caller.
Value = None | bool | int | str | bytes | Sequence["Value"] | Mapping[str, "Value"]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64
# The integers msgpack can represent: int64 and uint64.
MIN_INT = -(1 << 63)
MAX_INT = (1 << 64) - 1


class CanonicalError(ValueError):
    """Bytes that are not canonical msgpack within the limits."""


def _normalise(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise CanonicalError(f"nesting deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, (bool, bytes)):
        return value
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise CanonicalError(
                f"integer {value} is outside msgpack's range [{MIN_INT}, {MAX_INT}]"
            )
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates have no UTF-8 encoding: msgpack would fail later.
            raise CanonicalError(f"string {value!r} is not valid Unicode") from None
        return value
    if isinstance(value, float):
        raise CanonicalError(f"floats are not canonical: {value!r}")
    if isinstance(value, Mapping):
        items = []
        for key in value:
            if not isinstance(key, str):
                raise CanonicalError(f"map keys must be str, got {type(key).__name__}")
            items.append((key, _normalise(value[key], depth + 1)))
        # A dict keeps the sorted order for msgpack's packer.
        return dict(sorted(items))
    if isinstance(value, (list, tuple)):
        return [_normalise(item, depth + 1) for item in value]
    raise CanonicalError(f"cannot encode {type(value).__name__} canonically")


def pack(value: Any) -> bytes:
    """Encode `value` canonically: sorted keys, no floats, no ext types."""
    packed: bytes = msgpack.packb(
        _normalise(value, 0), use_bin_type=True, strict_types=False, datetime=False
    )
    return packed


def _pairs_without_duplicates(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for key, val in pairs:
        if key in result:
            raise CanonicalError(f"duplicate map key {key!r}")
        result[key] = val
    return result


def _refuse_ext(code: int, data: bytes) -> Any:
    raise CanonicalError(f"extension type {code} is not allowed")


def unpack(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode canonical msgpack; refuse anything another encoder could differ on."""
    if len(data) > max_bytes:
        raise CanonicalError(f"{len(data)} bytes exceed the limit of {max_bytes}")
    unpacker = msgpack.Unpacker(
        max_buffer_size=max(len(data), 1),
        raw=False,
        strict_map_key=True,
        object_pairs_hook=_pairs_without_duplicates,
        ext_hook=_refuse_ext,
        use_list=True,
    )
    unpacker.feed(data)
    try:
        value = unpacker.unpack()
    except msgpack.OutOfData:
        raise CanonicalError("truncated msgpack data") from None
    except CanonicalError:
        raise
    except msgpack.StackError:
        # msgpack's own nesting limit (1024) is far above ours.
        raise CanonicalError(f"nesting deeper than {MAX_DEPTH}") from None
    except msgpack.FormatError:
        raise CanonicalError(
            f"malformed msgpack: reserved type byte at offset {unpacker.tell()}"
        ) from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise CanonicalError(f"malformed msgpack: {exc or type(exc).__name__}") from None
    if unpacker.tell() != len(data):
        raise CanonicalError(f"{len(data) - unpacker.tell()} bytes of trailing data")
    _check_tree(value)
    try:
        again = pack(value)
    except CanonicalError as exc:
        raise CanonicalError(f"not canonical: {exc}") from None
    if again != data:
        raise CanonicalError("not canonical: re-encoding gives different bytes")
    return value


def _check_tree(value: Any) -> None:
    # Iterative, so that hostile nesting cannot exhaust the Python stack.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CanonicalError(f"nesting deeper than {MAX_DEPTH}")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, msgpack.Timestamp):
            # msgpack decodes extension type -1 itself, without ext_hook.
            raise CanonicalError("extension type -1 (timestamp) is not allowed")
