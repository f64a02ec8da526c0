"""What the host knows about itself, and keeping its state directory tidy:
``executor status``, ``executor gc`` and ``executor init``.

(Applying and rolling back are :mod:`executor.apply`.)
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import generations
from .bundle import decode_unverified, read_envelope
from .errors import ConsignError, StateError
from .generations import Generation
from .hostconfig import HostConfig, write_host_config
from .lock import DEFAULT_WAIT_SECONDS, Holder, lock_holder, state_lock
from .records import Status, read_audit, read_status
from .runtime import remove_stale_work, runtime_directory
from .state import HostState, check_private, load_state, prepare_directory, reset_serial
from .verify import DEFAULT_TRUST_FILE


@dataclass(frozen=True)
class HostStatus:
    state_directory: str
    state: HostState
    generations: tuple[Generation, ...]
    status: Status
    holder: Holder | None
    recent: tuple[dict[str, Any], ...] = ()

    def generation(self, number: int | None) -> Generation | None:
        return next((g for g in self.generations if g.number == number), None)

    def to_json(self) -> dict[str, Any]:
        current = self.generation(self.state.current)
        last_run = self.status.last_run or {}
        return {
            "state_directory": self.state_directory,
            "host": (current.host if current else None) or last_run.get("host"),
            "environment": self.state.environment,
            "highest_serial": self.state.highest_serial,
            "current": None if current is None else current.to_json(),
            "previous": self.state.previous,
            "generations": [g.to_json() for g in self.generations],
            "last_run": self.status.last_run,
            "last_success": self.status.last_success,
            "failed_bundles": list(self.state.failed),
            "locked_by": None
            if self.holder is None
            else {"pid": self.holder.pid, "started": self.holder.started, "purpose": self.holder.purpose},
            "history": [
                {"kind": c.kind, "time": c.time, "from": c.from_serial, "to": c.to_serial, "bundle": c.bundle}
                for c in self.state.history
            ],
        }


def host_status(state_directory: str, recent: int = 0) -> HostStatus:
    """Everything the state directory records; reads only, takes no lock."""
    if not os.path.isdir(state_directory):
        raise StateError(
            f"the state directory {state_directory} does not exist: nothing was applied here yet",
            hint="apply a bundle first, or pass --state-dir with the directory the executor uses",
        )
    return HostStatus(
        state_directory=state_directory,
        state=load_state(state_directory),
        generations=tuple(generations.generations(state_directory)),
        status=read_status(state_directory),
        holder=lock_holder(state_directory),
        recent=tuple(read_audit(state_directory, recent)) if recent else (),
    )


def reset_serial_floor(state_directory: str, serial: int, wait: float = DEFAULT_WAIT_SECONDS) -> HostState:
    """``executor reset-serial``: lower (or set) the serial floor, under the
    lock, recorded in the state's history."""
    check_private(state_directory)
    with state_lock(state_directory, f"reset-serial {serial}", wait):
        return reset_serial(state_directory, serial, int(time.time()))


@dataclass(frozen=True)
class GcResult:
    kept: tuple[int, ...]
    removed_generations: tuple[int, ...]
    removed_paths: tuple[str, ...]
    freed_bytes: int
    notes: tuple[str, ...] = field(default=())
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "kept": list(self.kept),
            "removed_generations": list(self.removed_generations),
            "removed_paths": list(self.removed_paths),
            "freed_bytes": self.freed_bytes,
            "notes": list(self.notes),
            "dry_run": self.dry_run,
        }


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def collect_garbage(
    state_directory: str,
    keep: int,
    runtime_dir: str | None = None,
    *,
    dry_run: bool = False,
    wait: float = DEFAULT_WAIT_SECONDS,
) -> GcResult:
    """Remove old generations and the store entries and runtimes no kept
    generation uses. Kept: the current and previous generation and the
    `keep` newest others. Runs under the lock, so never under an apply."""
    if keep < 0:
        raise StateError(f"--keep must be 0 or more, got {keep}")
    check_private(state_directory)
    with state_lock(state_directory, f"gc --keep {keep}", wait):
        state = load_state(state_directory)
        every = generations.generations(state_directory)
        pinned = {n for n in (state.current, state.previous) if n is not None}
        others = [g for g in reversed(every) if g.number not in pinned][:keep]
        kept = sorted(pinned | {g.number for g in others})
        doomed = [g for g in every if g.number not in kept]
        survivors = [g for g in every if g.number in kept]
        notes: list[str] = []
        removed: list[str] = []
        freed = 0
        for generation in doomed:
            directory = generation.directory(state_directory)
            freed += _size(directory)
            removed.append(str(directory))
            if not dry_run:
                generations.remove(state_directory, generation)
        repos = {g.repo for g in survivors}
        runtimes = {g.runtime for g in survivors}
        store = Path(state_directory, "store")
        for entry in sorted(store.iterdir()) if store.is_dir() else []:
            if not entry.name.startswith(".") and entry.name not in repos:
                freed += _size(entry)
                removed.append(str(entry))
                if not dry_run:
                    generations.remove_tree(entry)
        runtime_root = runtime_directory(state_directory, runtime_dir)
        if runtime_root.resolve().is_relative_to(Path(state_directory).resolve()):
            for entry in sorted(runtime_root.iterdir()) if runtime_root.is_dir() else []:
                if entry.name.startswith(".") or entry.name in runtimes:
                    continue
                if not entry.is_dir():
                    continue
                freed += _size(entry)
                removed.append(str(entry))
                if not dry_run:
                    generations.remove_tree(entry)
        else:
            notes.append(
                f"runtimes in {runtime_root} were kept: that directory is outside the state "
                "directory and may be shared with other state directories"
            )
        for path in _unused_downloads(state_directory, survivors):
            freed += path.stat().st_size
            removed.append(str(path))
            if not dry_run:
                path.unlink()
        if not dry_run:
            removed += remove_stale_work(state_directory, runtime_dir)
        return GcResult(
            kept=tuple(kept),
            removed_generations=tuple(g.number for g in doomed),
            removed_paths=tuple(removed),
            freed_bytes=freed,
            notes=tuple(notes),
            dry_run=dry_run,
        )


# A download (pull) this old in STATE/incoming is no pull's work in progress.
STALE_DOWNLOAD_SECONDS = 3600.0


def _unused_downloads(state_directory: str, kept: list[Generation]) -> list[Path]:
    """Blobs in STATE/blobs no kept generation uses, and old leftovers of
    pulls in STATE/incoming (executor.pull)."""
    used: set[str] = set()
    for generation in kept:
        with contextlib.suppress(ConsignError):
            envelope = read_envelope(generation.bundle_path(state_directory))
            used |= {entry.sha256 for entry in decode_unverified(envelope).blobs}
    found: list[Path] = []
    blobs = Path(state_directory, "blobs")
    for entry in sorted(blobs.iterdir()) if blobs.is_dir() else []:
        if entry.is_file() and not entry.name.startswith(".") and entry.name not in used:
            found.append(entry)
    incoming = Path(state_directory, "incoming")
    now = time.time()
    for directory in (blobs, incoming):
        for entry in sorted(directory.iterdir()) if directory.is_dir() else []:
            stale = now - entry.stat().st_mtime > STALE_DOWNLOAD_SECONDS
            if entry.is_file() and stale and (directory == incoming or entry.name.startswith(".")):
                found.append(entry)
    return found


@dataclass(frozen=True)
class InitResult:
    config_path: str
    config: HostConfig
    notes: tuple[str, ...]
    host_key: str | None


HOST_KEYS = ("/etc/ssh/ssh_host_ed25519_key.pub",)


def initialise(config: HostConfig, path: str, *, force: bool = False) -> InitResult:
    """Write the executor config and create the state directory (0700)."""
    notes: list[str] = []
    if os.path.lexists(path) and not force:
        # Before anything is created: a refused init changes nothing.
        write_host_config(config, path, force=False)
    state_directory = config.state_dir or "/var/lib/consign"
    prepare_directory(state_directory)
    trust = config.trust or DEFAULT_TRUST_FILE
    if not os.path.isfile(trust):
        notes.append(
            f"the trust file {trust} does not exist yet: put the builder's allowed_signers "
            "line there ('bundle keys generate' prints it) before the first apply"
        )
    write_host_config(config, path, force=force)
    host_key = None
    for candidate in HOST_KEYS:
        with contextlib.suppress(OSError):
            host_key = Path(candidate).read_text(encoding="utf-8").strip() or None
            break
    return InitResult(path, config, tuple(notes), host_key)
