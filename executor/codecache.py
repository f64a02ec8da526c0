"""Compiled code kept between runs: templates and component files.

An apply that changes nothing compiles nothing: the code objects of the
last run are loaded with ``marshal``. Only a directory as private as the
runtime itself may hold them (their code is executed): the runtime's own,
``STATE/runtimes/<sha256>/template-cache``, which ``executor.child`` sets.
Entries are keyed by the Python version and everything the code is made
from; a damaged entry is compiled again, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")

# Where compiled code is kept between runs (None: nowhere).
_directory: Path | None = None


def use(directory: Path | None) -> None:
    """Keep compiled code in `directory` from now on (None: stop)."""
    global _directory
    _directory = directory


def cached(parts: list[str], make: Callable[[], T], accept: Callable[[object], bool]) -> T:
    """What `make()` returns for `parts`, from the cache when an entry that
    `accept` takes is there; else made and kept. `make`'s result must be
    marshal-able (code objects, tuples, dicts, text)."""
    if _directory is None:
        return make()
    key = hashlib.sha256("\0".join([sys.version, *parts]).encode()).hexdigest()
    path = _directory / key[:2] / key
    with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
        value = marshal.loads(path.read_bytes())
        if accept(value):
            return value  # type: ignore[no-any-return]
    value = make()
    with contextlib.suppress(OSError, ValueError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staged = path.with_name(f".{key}.{os.getpid()}")
        staged.write_bytes(marshal.dumps(cast(Any, value)))
        os.replace(staged, path)
    return value
