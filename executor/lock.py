"""One apply at a time per state directory.

The lock is ``flock(2)`` on ``STATE/lock``: the kernel releases it when the
holder exits, however it exits (SIGKILL included), so a crash never leaves
a stale lock behind. While holding it, the holder writes its pid, start
time and purpose into the file, so that a second executor that gives up
waiting can say who holds it.

The file descriptor is close-on-exec: the runtime child and the commands it
runs never inherit it, so a lock never outlives the executor that took it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import LockedError, StateError

LOCK_FILE = "lock"
# How long a second apply waits for the first by default.
DEFAULT_WAIT_SECONDS = 300.0
_POLL_SECONDS = 0.1
_MAX_HOLDER_BYTES = 4096


@dataclass(frozen=True)
class Holder:
    """Who holds the lock: process, start time (Unix seconds), what it does."""

    pid: int
    started: int
    purpose: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"pid {self.pid} ({self.purpose}, started {when})"


def _read_holder(fd: int) -> Holder | None:
    try:
        data = os.pread(fd, _MAX_HOLDER_BYTES, 0)
        document = json.loads(data)
        return Holder(int(document["pid"]), int(document["started"]), str(document["purpose"]))
    except (OSError, ValueError, KeyError, TypeError):
        # Taken a moment ago and not yet described, or described by a
        # consign that writes something else: say what we know.
        return None


def _write_holder(fd: int, holder: Holder) -> None:
    data = json.dumps(
        {"pid": holder.pid, "started": holder.started, "purpose": holder.purpose},
        sort_keys=True,
    ).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


@contextlib.contextmanager
def state_lock(state_directory: str, purpose: str, wait: float = DEFAULT_WAIT_SECONDS) -> Iterator[Holder]:
    """Hold the state directory's lock for the block; wait up to `wait`
    seconds for another holder, then raise LockedError naming it."""
    path = os.path.join(state_directory, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot open the lock {path}: {exc.strerror}",
            hint="run as root, or pass --state-dir (CONSIGN_STATE_DIR) with a writable directory",
        ) from None
    try:
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise StateError(f"cannot lock {path}: {exc.strerror}") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                holder = _read_holder(fd)
                who = holder.describe() if holder else "another executor"
                raise LockedError(
                    f"the state directory {state_directory} is busy: {who} holds {path}, "
                    f"and it did not finish within {wait:g} s",
                    hint="wait for it to finish and run again, or give --wait SECONDS; "
                    "the lock goes away by itself when its holder exits",
                )
            time.sleep(min(_POLL_SECONDS, remaining))
        holder = Holder(os.getpid(), int(time.time()), purpose)
        with contextlib.suppress(OSError):
            _write_holder(fd, holder)
        try:
            yield holder
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_holder(state_directory: str) -> Holder | None:
    """Who holds the lock now, if anyone (for status). Reads the holder's
    note without touching the lock itself: a monitoring script polling
    status must never make an apply wait or fail."""
    path = os.path.join(state_directory, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        holder = _read_holder(fd)
    finally:
        os.close(fd)
    if holder is None:
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        # Killed while holding it: the kernel released the lock, the note stayed.
        return None
    except PermissionError:
        pass
    return holder
