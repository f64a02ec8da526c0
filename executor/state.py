"""What a host remembers between runs, in its root-only state directory.

``state.msgpack`` (canonical msgpack, written atomically) holds the
environment the host belongs to, the highest serial it accepted (a floor
that never drops, except by an explicit ``executor reset-serial``), the
record of every downgrade, reset and rollback an operator allowed, the
current and previous generation (one write switches both), and the digests
of bundles that were refused or failed to apply. An attacker who controls the network or the
bundles cannot write here, which is what makes rollback protection work.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from typing import Any

from . import canonical
from .decode import DecodeError, Fields, str_item
from .errors import StateError
from .fs import write_atomic

DEFAULT_STATE_DIR = "/var/lib/consign"
STATE_FILE = "state.msgpack"
STATE_VERSION = 2
# Version 1 (before generations) is read as a state without generations.
_READABLE_VERSIONS = (1, 2)
MAX_STATE_BYTES = 16 << 20
# Keep the records of downgrades, resets and failures bounded.
MAX_HISTORY = 100
MAX_FAILED = 100


@dataclass(frozen=True, slots=True)
class SerialChange:
    """An operator's exception to rollback protection, kept for the record.

    kind "downgrade": a bundle older than the newest accepted was applied
    once (--allow-downgrade); the floor stayed. kind "reset": the floor was
    lowered (``executor reset-serial``), e.g. after a stolen key signed a
    serial far in the future. kind "rollback": ``executor rollback``
    applied a kept generation again; the floor stayed.
    """

    kind: str
    time: int
    from_serial: int
    to_serial: int
    bundle: str


@dataclass(frozen=True, slots=True)
class HostState:
    environment: str | None = None
    # Never decreases, except by an explicit reset.
    highest_serial: int | None = None
    bundle: str | None = None
    history: tuple[SerialChange, ...] = field(default=())
    # The generation the host runs (its last successful apply), the one before.
    current: int | None = None
    previous: int | None = None
    # Digests of bundles refused or whose apply failed, newest last.
    failed: tuple[str, ...] = field(default=())

    @property
    def downgrades(self) -> tuple[SerialChange, ...]:
        return tuple(c for c in self.history if c.kind == "downgrade")

    def _record(self, change: SerialChange) -> tuple[SerialChange, ...]:
        return (*self.history, change)[-MAX_HISTORY:]

    def accept(
        self, environment: str, serial: int, bundle: str, now: int, *, rollback: bool = False
    ) -> HostState:
        """This state after accepting a bundle; an older one is a recorded downgrade
        (or rollback) that leaves the floor where it was."""
        history = self.history
        highest = serial if self.highest_serial is None else max(serial, self.highest_serial)
        if rollback:
            history = self._record(
                SerialChange("rollback", now, self.highest_serial or 0, serial, bundle)
            )
        elif self.highest_serial is not None and serial < self.highest_serial:
            history = self._record(
                SerialChange("downgrade", now, self.highest_serial, serial, bundle)
            )
        return replace(
            self, environment=environment, highest_serial=highest, bundle=bundle, history=history
        )

    def switched(self, generation: int) -> HostState:
        """This state with `generation` current and the old current previous."""
        if generation == self.current:
            return self
        return replace(self, current=generation, previous=self.current)

    def rolled_back(self, generation: int) -> HostState:
        """This state after a rollback to `generation`: the generation left
        behind does not become previous, so a second rollback never goes
        back to what was rolled back from."""
        previous = self.previous if self.previous != generation else None
        return replace(self, current=generation, previous=previous)

    def failure(self, digest: str) -> HostState:
        """This state remembering that the bundle `digest` was refused or failed."""
        failed = tuple(d for d in self.failed if d != digest)
        return replace(self, failed=(*failed, digest)[-MAX_FAILED:])

    def succeeded(self, digest: str) -> HostState:
        if digest not in self.failed:
            return self
        return replace(self, failed=tuple(d for d in self.failed if d != digest))

    def reset(self, serial: int, now: int) -> HostState:
        """This state with its floor set to `serial` (recorded)."""
        change = SerialChange("reset", now, self.highest_serial or 0, serial, self.bundle or "")
        return replace(self, highest_serial=serial, history=self._record(change))


def state_to_data(state: HostState) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "environment": state.environment,
        "highest_serial": state.highest_serial,
        "bundle": state.bundle,
        "history": [
            {
                "kind": c.kind,
                "time": c.time,
                "from": c.from_serial,
                "to": c.to_serial,
                "bundle": c.bundle,
            }
            for c in state.history
        ],
        "current": state.current,
        "previous": state.previous,
        "failed": list(state.failed),
    }


def _change(value: object, path: str) -> SerialChange:
    f = Fields(value, path)
    kind = f.string("kind")
    if kind not in ("downgrade", "reset", "rollback"):
        raise DecodeError(
            f.path("kind"), f"expected 'downgrade', 'reset' or 'rollback', got {kind!r}"
        )
    change = SerialChange(
        kind=kind,
        time=f.integer("time"),
        from_serial=f.integer("from"),
        to_serial=f.integer("to"),
        bundle=f.string("bundle"),
    )
    f.done()
    return change


def state_from_data(data: object) -> HostState:
    f = Fields(data, "state")
    version = f.integer("version")
    if version not in _READABLE_VERSIONS:
        raise DecodeError(
            "state.version", f"expected one of {list(_READABLE_VERSIONS)}, got {version}"
        )
    state = HostState(
        environment=f.optional_string("environment"),
        highest_serial=f.optional_integer("highest_serial", minimum=0),
        bundle=f.optional_string("bundle"),
        history=f.array("history", _change),
    )
    if version >= 2:
        state = replace(
            state,
            current=f.optional_integer("current", minimum=1),
            previous=f.optional_integer("previous", minimum=1),
            failed=f.array("failed", str_item),
        )
    f.done()
    return state


def _state_path(state_directory: str) -> str:
    return os.path.join(state_directory, STATE_FILE)


def load_state(state_directory: str) -> HostState:
    """The host's state; a host that never accepted a bundle has an empty one."""
    path = _state_path(state_directory)
    if os.path.isdir(state_directory):
        # State that others could have written cannot protect against rollback.
        check_private(state_directory)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return HostState()
    except OSError as exc:
        raise StateError(
            f"cannot read {path}: {exc.strerror}",
            hint="run as root, or pass --state-dir with the directory the executor uses",
        ) from None
    try:
        return state_from_data(canonical.unpack(data, max_bytes=MAX_STATE_BYTES))
    except (canonical.CanonicalError, DecodeError) as exc:
        raise StateError(
            f"{path} is damaged: {exc}",
            hint="restore it from a backup; removing it forgets the highest serial this host "
            "accepted, so older bundles would be accepted again",
        ) from None


def prepare_directory(state_directory: str) -> None:
    """Create the state directory (0700) or check that it is only the owner's."""
    try:
        os.makedirs(state_directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot use the state directory {state_directory}: {exc.strerror}",
            hint="run as root, or pass --state-dir (CONSIGN_STATE_DIR) with a writable directory",
        ) from None
    check_private(state_directory)


def check_private(
    directory: str,
    what: str = "state directory",
    why: str = "whoever writes it can undo rollback protection",
) -> None:
    """Only the executor's user may write `directory`."""
    try:
        status = os.stat(directory)
    except OSError as exc:
        raise StateError(
            f"cannot use the {what} {directory}: {exc.strerror}",
            hint="run as root, or pass --state-dir (CONSIGN_STATE_DIR) with a writable directory",
        ) from None
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o022:
        raise StateError(
            f"the {what} {directory} is writable by others (mode {mode:o})",
            hint=f"chmod 700 {directory}: {why}",
        )
    if status.st_uid != os.geteuid():
        raise StateError(
            f"the {what} {directory} belongs to uid {status.st_uid}, "
            f"not to the executor's uid {os.geteuid()}",
            hint=f"chown {os.geteuid()} {directory}, or use a directory of the executor's own",
        )


def save_state(state_directory: str, state: HostState) -> None:
    prepare_directory(state_directory)
    try:
        write_atomic(
            _state_path(state_directory),
            canonical.pack(state_to_data(state)),
            mode=0o600,
            follow_symlinks=False,
        )
    except OSError as exc:
        raise StateError(
            f"cannot write {_state_path(state_directory)}: {exc.strerror}",
            hint="check free space and permissions of the state directory",
        ) from None


def reset_serial(state_directory: str, serial: int, now: int) -> HostState:
    """Lower (or set) the serial floor on purpose, and record it."""
    state = load_state(state_directory).reset(serial, now)
    save_state(state_directory, state)
    return state
