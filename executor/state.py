"""What a host remembers between runs, in its root-only state directory.

``state.msgpack`` (canonical msgpack, written atomically) holds the
environment the host belongs to, the highest serial it accepted, and every
downgrade an operator allowed. An attacker who controls the network or the
bundles cannot write here, which is what makes rollback protection work.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from typing import Any

from . import canonical
from .decode import DecodeError, Fields
from .errors import StateError
from .fs import write_atomic

DEFAULT_STATE_DIR = "/var/lib/consign"
STATE_FILE = "state.msgpack"
STATE_VERSION = 1
MAX_STATE_BYTES = 16 << 20
# Keep the audit trail of downgrades bounded.
MAX_DOWNGRADES = 100


@dataclass(frozen=True, slots=True)
class Downgrade:
    """An accepted bundle older than the newest before it (--allow-downgrade)."""

    time: int
    from_serial: int
    to_serial: int
    bundle: str


@dataclass(frozen=True, slots=True)
class HostState:
    environment: str | None = None
    highest_serial: int | None = None
    bundle: str | None = None
    downgrades: tuple[Downgrade, ...] = field(default=())

    def accept(self, environment: str, serial: int, bundle: str, now: int) -> HostState:
        """This state after accepting a bundle (a lower serial counts as a downgrade)."""
        downgrades = self.downgrades
        if self.highest_serial is not None and serial < self.highest_serial:
            downgrades = (*downgrades, Downgrade(now, self.highest_serial, serial, bundle))
            downgrades = downgrades[-MAX_DOWNGRADES:]
            highest = serial
        else:
            highest = max(serial, self.highest_serial or 0)
        return replace(
            self,
            environment=environment,
            highest_serial=highest,
            bundle=bundle,
            downgrades=downgrades,
        )


def state_to_data(state: HostState) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "environment": state.environment,
        "highest_serial": state.highest_serial,
        "bundle": state.bundle,
        "downgrades": [
            {"time": d.time, "from": d.from_serial, "to": d.to_serial, "bundle": d.bundle}
            for d in state.downgrades
        ],
    }


def _downgrade(value: object, path: str) -> Downgrade:
    f = Fields(value, path)
    downgrade = Downgrade(
        time=f.integer("time"),
        from_serial=f.integer("from"),
        to_serial=f.integer("to"),
        bundle=f.string("bundle"),
    )
    f.done()
    return downgrade


def state_from_data(data: object) -> HostState:
    f = Fields(data, "state")
    version = f.integer("version")
    if version != STATE_VERSION:
        raise DecodeError("state.version", f"expected {STATE_VERSION}, got {version}")
    state = HostState(
        environment=f.optional_string("environment"),
        highest_serial=f.optional_integer("highest_serial", minimum=0),
        bundle=f.optional_string("bundle"),
        downgrades=f.array("downgrades", _downgrade),
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
        _check_private(state_directory)
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
    _check_private(state_directory)


def _check_private(state_directory: str) -> None:
    """Only the executor's user may write the state directory."""
    try:
        status = os.stat(state_directory)
    except OSError as exc:
        raise StateError(
            f"cannot use the state directory {state_directory}: {exc.strerror}",
            hint="run as root, or pass --state-dir (CONSIGN_STATE_DIR) with a writable directory",
        ) from None
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o022:
        raise StateError(
            f"the state directory {state_directory} is writable by others (mode {mode:o})",
            hint=f"chmod 700 {state_directory}: whoever writes it can undo rollback protection",
        )
    if status.st_uid != os.geteuid():
        raise StateError(
            f"the state directory {state_directory} belongs to uid {status.st_uid}, "
            f"not to the executor's uid {os.geteuid()}",
            hint=f"chown {os.geteuid()} {state_directory}, or pass --state-dir with the "
            "executor's own directory",
        )


def save_state(state_directory: str, state: HostState) -> None:
    prepare_directory(state_directory)
    try:
        write_atomic(_state_path(state_directory), canonical.pack(state_to_data(state)), mode=0o600)
    except OSError as exc:
        raise StateError(
            f"cannot write {_state_path(state_directory)}: {exc.strerror}",
            hint="check free space and permissions of the state directory",
        ) from None
