"""The state of one run, reachable from any component while it runs.

A run is one configure or one deploy of a host. Components reach it through
:func:`current` to log, to report diffs, to learn whether they only predict,
and to bound commands by the time left. Domain code never prints: what a
run has to say is collected here and rendered by the command line.
"""

from __future__ import annotations

import contextlib
import enum
import signal
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from .errors import RunTimeoutError
from .redact import redact


class Level(enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class LogEntry:
    component: str
    message: str
    level: Level = Level.INFO


@dataclass(frozen=True, slots=True)
class FileDiff:
    """A content change of a managed file; `diff` is None when withheld."""

    component: str
    path: str
    diff: str | None
    note: str = ""


@dataclass
class RunContext:
    predicting: bool = False
    # time.monotonic() value after which the run must stop.
    deadline: float | None = None
    # The environment's per-command limit in seconds.
    command_timeout: float | None = None
    log: list[LogEntry] = field(default_factory=list)
    diffs: list[FileDiff] = field(default_factory=list)
    # The host's secret values (executor.secrets): never shown in a diff.
    secrets: frozenset[str] = frozenset()

    def holds_secret(self, data: bytes, encoding: str = "utf-8") -> bool:
        """Whether `data` (a file's content in `encoding`) contains a secret value."""
        if not self.secrets:
            return False
        text = data.decode(encoding, "replace")
        return any(secret in text for secret in self.secrets)

    def hide(self, text: str) -> str:
        """`text` with the host's secret values masked."""
        return redact(text, self.secrets) if self.secrets else text

    def emit(self, component: str, message: str, level: Level = Level.INFO) -> None:
        self.log.append(LogEntry(component, message, level))

    def time_left(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def check_deadline(self) -> None:
        left = self.time_left()
        if left is not None and left <= 0:
            raise RunTimeoutError(
                "the run exceeded its time limit",
                hint="raise --timeout, or look at what took long in the run's log",
            )

    def command_limit(self) -> float | None:
        """Seconds a command may take: the per-command limit, capped by the run's."""
        limits = [t for t in (self.command_timeout, self.time_left()) if t is not None]
        if not limits:
            return None
        return max(min(limits), 0.001)


_current: ContextVar[RunContext | None] = ContextVar("consign_run", default=None)


def current() -> RunContext:
    # Outside any run (a component used from a test, say) logs go nowhere.
    return _current.get() or RunContext()


@contextlib.contextmanager
def running(context: RunContext) -> Iterator[RunContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


class DeadlineReached(BaseException):
    """Raised by the run's alarm when its time is up.

    A BaseException, so that deployment code catching Exception cannot
    swallow it; the deploy loop turns it into a RunTimeoutError.
    """


# Only deployment code (configure, verify, update, handlers) is interrupted;
# consign's own bookkeeping between them never is, and sees the deadline
# through RunContext.check_deadline instead.
_interruptible = False


def _on_alarm(signum: int, frame: object) -> None:
    if _interruptible:
        raise DeadlineReached()


class interruptible:  # noqa: N801 - used like the context managers it sits with
    """Let the run's alarm interrupt the block. (A class, not a generator:
    it wraps every component's verify, 31,000 times in a large run.)"""

    __slots__ = ("previous",)

    def __enter__(self) -> None:
        global _interruptible
        self.previous, _interruptible = _interruptible, True

    def __exit__(self, *exc_info: object) -> None:
        global _interruptible
        _interruptible = self.previous


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Keep the run's alarm out of the block (cleanup that must finish)."""
    global _interruptible
    previous, _interruptible = _interruptible, False
    try:
        yield
    finally:
        _interruptible = previous


@contextlib.contextmanager
def alarm(seconds: float | None) -> Iterator[None]:
    """Interrupt `interruptible` blocks once `seconds` have passed.

    Main thread only (elsewhere a no-op). Checks between components and
    command timeouts bound most of a run; the alarm also stops Python code
    that loops or sleeps. It repeats every 0.1 s once due, so a block
    entered after the deadline is stopped too.
    """
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001), 0.1)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
