"""What a deploy did, root by root: shared by the runtime and the executor."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import ConsignError


class RootStatus(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_RUN = "not-run"


@dataclass(frozen=True, slots=True)
class RootOutcome:
    name: str
    status: RootStatus
    changed: tuple[str, ...] = ()
    duration_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class DeployOutcome:
    roots: tuple[RootOutcome, ...]
    error: ConsignError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changed(self) -> tuple[str, ...]:
        return tuple(c for root in self.roots for c in root.changed)
