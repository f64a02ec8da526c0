"""Typed access to decoded msgpack maps that names the path of a bad field.

    fields = Fields(data, "model")
    name = fields.string("name")          # DecodeError: model.name: expected str, got int
    fields.done()                      # DecodeError: model: unexpected field 'x'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DecodeError(ValueError):
    """A decoded value does not have the expected shape; names the path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


# Errors speak msgpack's vocabulary, the format the bad bytes came in.
_MSGPACK_NAMES = {dict: "map", list: "array", bytes: "bin", type(None): "nil"}


def _type_name(value: object) -> str:
    return _MSGPACK_NAMES.get(type(value), type(value).__name__)


def shown(value: object, limit: int = 60) -> str:
    """repr() of a decoded value for an error message, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class Fields:
    """Reads the fields of one map, each exactly once, checking types."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise DecodeError(path, f"expected a map, got {_type_name(data)}")
        self._data: dict[str, Any] = data
        self._path = path
        self._seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self._path}.{key}"

    def _get(self, key: str) -> Any:
        if key not in self._data:
            raise DecodeError(self.path(key), "missing")
        self._seen.add(key)
        return self._data[key]

    def string(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise DecodeError(self.path(key), f"expected str, got {_type_name(value)}")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self._get(key)
        if value is not None and not isinstance(value, str):
            raise DecodeError(self.path(key), f"expected str or nil, got {_type_name(value)}")
        return value

    def integer(self, key: str, *, minimum: int | None = None) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DecodeError(self.path(key), f"expected int, got {_type_name(value)}")
        if minimum is not None and value < minimum:
            raise DecodeError(self.path(key), f"expected at least {minimum}, got {value}")
        return value

    def optional_integer(self, key: str, *, minimum: int | None = None) -> int | None:
        if self._data.get(key, 0) is None:
            self._seen.add(key)
            return None
        return self.integer(key, minimum=minimum)

    def array(self, key: str, item: Callable[[object, str], T]) -> tuple[T, ...]:
        value = self._get(key)
        if not isinstance(value, list):
            raise DecodeError(self.path(key), f"expected an array, got {_type_name(value)}")
        return tuple(item(v, f"{self.path(key)}[{i}]") for i, v in enumerate(value))

    def string_map(self, key: str) -> tuple[tuple[str, str], ...]:
        """A map of str to str, returned as sorted pairs."""
        value = self._get(key)
        if not isinstance(value, dict):
            raise DecodeError(self.path(key), f"expected a map, got {_type_name(value)}")
        for k, v in value.items():
            if not isinstance(v, str):
                raise DecodeError(f"{self.path(key)}[{k!r}]", f"expected str, got {_type_name(v)}")
        return tuple(sorted(value.items()))

    def mapping(self, key: str) -> Fields:
        return Fields(self._get(key), self.path(key))

    def raw(self, key: str) -> Any:
        return self._get(key)

    def done(self) -> None:
        extra = sorted(set(self._data) - self._seen)
        if extra:
            raise DecodeError(self._path, f"unexpected field {extra[0]!r}")


def str_item(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(path, f"expected str, got {_type_name(value)}")
    return value
