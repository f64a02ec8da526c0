"""Generations: every bundle this host applied, kept for rollback.

::

    STATE/generations/<n>/bundle           the bundle as accepted (read-only)
    STATE/generations/<n>/generation.json  what it is: digest, serial, source, blobs
    STATE/current -> generations/<n>       the generation the host runs (informational link)
    STATE/previous -> generations/<m>      the one before it

A generation is written in a work directory and renamed into place, so it
is complete or absent. Which generations are current and previous is
recorded in the state (``state.msgpack``, one atomic rename switches both);
the two links follow it for people and scripts, and are repaired by the
next switch if a crash came between. Everything here runs under the state
directory's lock (:mod:`executor.lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .bundle import BundleReader, VerifiedBundle, read_envelope
from .errors import BundleError, StateError
from .fs import fsync_directory, write_atomic

GENERATIONS_DIR = "generations"
BUNDLE_FILE = "bundle"
INFO_FILE = "generation.json"
CURRENT_LINK = "current"
PREVIOUS_LINK = "previous"
# Leftovers of interrupted work start with this; gc removes them.
WORK_PREFIX = ".work-"
_MAX_INFO_BYTES = 1 << 16


@dataclass(frozen=True)
class Generation:
    """One applied bundle, as the host keeps it."""

    number: int
    digest: str
    host: str
    environment: str
    serial: int
    build_time: int
    commit: str | None
    dirty: bool
    # The sha256 of the repo and runtime blobs: their store and runtime entries.
    repo: str
    runtime: str
    # When this host first accepted it (Unix seconds).
    received: int

    def directory(self, state_directory: str) -> Path:
        return Path(state_directory, GENERATIONS_DIR, str(self.number))

    def bundle_path(self, state_directory: str) -> str:
        return str(self.directory(state_directory) / BUNDLE_FILE)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_DAMAGED_HINT = (
    "move that generation's directory out of STATE/generations (it only serves rollback); "
    "the next apply keeps a new one"
)


def _from_json(data: object, where: str) -> Generation:
    if not isinstance(data, dict):
        raise StateError(f"{where} is damaged: not a JSON object", hint=_DAMAGED_HINT)
    try:
        generation = Generation(**data)
    except TypeError as exc:
        raise StateError(f"{where} is damaged: {exc}", hint=_DAMAGED_HINT) from None
    for name, kind in (
        ("number", int),
        ("serial", int),
        ("build_time", int),
        ("received", int),
        ("digest", str),
        ("host", str),
        ("environment", str),
        ("repo", str),
        ("runtime", str),
        ("dirty", bool),
    ):
        if not isinstance(getattr(generation, name), kind):
            raise StateError(f"{where} is damaged: {name} is not {kind.__name__}", hint=_DAMAGED_HINT)
    return generation


def generations(state_directory: str) -> list[Generation]:
    """Every complete generation, oldest first."""
    base = Path(state_directory, GENERATIONS_DIR)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if not name.isdigit():
            continue
        where = str(base / name / INFO_FILE)
        try:
            with open(where, "rb") as f:
                data = json.loads(f.read(_MAX_INFO_BYTES))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise StateError(f"{where} is damaged: {exc}", hint=_DAMAGED_HINT) from None
        generation = _from_json(data, where)
        if generation.number != int(name):
            raise StateError(
                f"{where} is damaged: it says generation {generation.number}", hint=_DAMAGED_HINT
            )
        found.append(generation)
    return sorted(found, key=lambda g: g.number)


def find(state_directory: str, number: int) -> Generation:
    for generation in generations(state_directory):
        if generation.number == number:
            return generation
    known = ", ".join(str(g.number) for g in generations(state_directory)) or "none"
    raise StateError(
        f"there is no generation {number} in {state_directory}",
        hint=f"the generations kept are: {known} ('executor status' lists them)",
    )


def by_digest(state_directory: str, digest: str) -> Generation | None:
    for generation in generations(state_directory):
        if generation.digest == digest:
            return generation
    return None


def record(bundle: VerifiedBundle, state_directory: str, now: int) -> Generation:
    """The generation of an accepted bundle: the existing one with its
    digest, or a new one holding a copy of the bundle file.

    The copy is checked against the accepted manifest before it counts: a
    bundle file swapped after verification never becomes a generation.
    """
    existing = by_digest(state_directory, bundle.digest)
    if existing is not None:
        return existing
    manifest = bundle.manifest
    repo, runtime = manifest.blob("repo"), manifest.blob("runtime")
    assert repo is not None and runtime is not None  # the manifest decoder requires them
    base = Path(state_directory, GENERATIONS_DIR)
    # Every numeric name counts, complete or not: a number is never reused.
    try:
        numbers = [int(name) for name in os.listdir(base) if name.isdigit()]
    except FileNotFoundError:
        numbers = []
    generation = Generation(
        number=max(numbers, default=0) + 1,
        digest=bundle.digest,
        host=manifest.host,
        environment=manifest.environment,
        serial=manifest.serial,
        build_time=manifest.build_time,
        commit=manifest.source.commit,
        dirty=manifest.source.dirty,
        repo=repo.sha256,
        runtime=runtime.sha256,
        received=now,
    )
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=base))
    except OSError as exc:
        raise StateError(f"cannot write generations into {base}: {exc.strerror}") from None
    try:
        copy = work / BUNDLE_FILE
        _copy_file(bundle.path, copy)
        envelope = read_envelope(str(copy))
        if envelope.digest != bundle.digest:
            raise BundleError(
                f"{bundle.path} changed while it was applied",
                hint="keep bundles in a directory only root can write while they are applied",
            )
        # Every blob of the copy too: a rollback must find what was verified.
        BundleReader(envelope, bundle.manifest).check_blobs()
        os.chmod(copy, 0o400)
        info = json.dumps(generation.to_json(), indent=1, sort_keys=True).encode() + b"\n"
        write_atomic(str(work / INFO_FILE), info, mode=0o400, follow_symlinks=False)
        fsync_directory(str(work))
        os.rename(work, generation.directory(state_directory))
        fsync_directory(str(base))
    except OSError as exc:
        raise StateError(
            f"cannot keep the bundle as generation {generation.number} in {base}: {exc.strerror}",
            hint="check free space in the state directory ('executor gc' frees old generations)",
        ) from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return generation


def _copy_file(source: str, destination: Path) -> None:
    with open(source, "rb") as src, open(destination, "xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


def link(state_directory: str, name: str, generation: int | None) -> None:
    """Point STATE/name at the generation (or remove it), atomically."""
    path = os.path.join(state_directory, name)
    if generation is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    staged = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staged)
    os.symlink(os.path.join(GENERATIONS_DIR, str(generation)), staged)
    os.rename(staged, path)
    fsync_directory(state_directory)


def remove(state_directory: str, generation: Generation) -> None:
    """Remove a generation: renamed out of the way first, so a crash leaves
    a work directory for gc rather than a half-removed generation."""
    base = Path(state_directory, GENERATIONS_DIR)
    doomed = base / f"{WORK_PREFIX}removed-{generation.number}"
    os.rename(generation.directory(state_directory), doomed)
    fsync_directory(str(base))
    remove_tree(doomed)


def remove_tree(path: Path) -> None:
    """Remove a tree that has read-only directories (store trees, generations)."""
    for root, _dirs, _files in os.walk(path):
        os.chmod(root, 0o700)
    shutil.rmtree(path)
