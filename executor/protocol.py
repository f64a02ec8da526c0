"""The request and report between the host executor and the bundle's runtime.

The executor (verifier, state keeper) and the runtime (the bundle's own
consign and requirements) may be different consign versions, so what
passes between them is small, explicit JSON with a protocol number:

    executor  --file-->  {"protocol": 1, "model": <base64>, "repository": ...}
    executor  --stdin-->  the decrypted secrets (only when "secrets" is true)
    runtime   --file-->  {"protocol": 1, "roots": [...], "log": [...], ...}

Request and report go through files, not pipes: deployment code may print
anything, and may leave processes behind that hold inherited descriptors.
The secrets never touch a disk: the runtime reads them from its standard
input, to the end, before any deployment code runs, and then replaces it
with /dev/null.
"""

from __future__ import annotations

import base64
import json
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .outcome import RootOutcome, RootStatus
from .errors import ConsignError
from .redact import redact, redact_error
from .run import FileDiff, Level, LogEntry

PROTOCOL = 1
# The marker file of a prepared runtime entry (STATE/runtimes/<sha256>/),
# which holds the runtime's venv and the templates it compiled.
RUNTIME_READY = ".consign-ready"


class ProtocolError(ValueError):
    """A request or report that does not follow the protocol."""


class ReportedError(ConsignError):
    """An error the runtime reported; keeps its code, traceback text, and the
    errors it stands for (a failed configure reports them all)."""

    def __init__(
        self,
        code: str,
        message: str,
        where: str | None,
        hint: str | None,
        detail: str | None,
        errors: list[ReportedError] | None = None,
    ) -> None:
        super().__init__(message, where=where, hint=hint)
        self.code = code
        self.detail = detail
        self.errors = errors or []

    def parts(self) -> list[ConsignError]:
        return list(self.errors) or [self]

    def render(self) -> str:
        if not self.errors:
            return super().render()
        return "\n".join(error.render() for error in self.errors) + "\n" + self.message


def error_to_json(error: ConsignError) -> dict[str, Any]:
    data = error.to_json()
    if error.parts() != [error]:
        data["errors"] = [error_to_json(part) for part in error.parts()]
    cause = error.__cause__
    detail = getattr(error, "detail", None)
    if detail is None and cause is not None:
        detail = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    data["detail"] = detail
    return data


def error_from_json(data: dict[str, Any]) -> ReportedError:
    return ReportedError(
        str(data["code"]),
        str(data["message"]),
        data.get("where"),
        data.get("hint"),
        data.get("detail"),
        [error_from_json(part) for part in data.get("errors") or []],
    )


def _check(data: object, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError(f"the {what} is not a JSON object")
    if data.get("protocol") != PROTOCOL:
        raise ProtocolError(
            f"the {what} speaks protocol {data.get('protocol')!r}, this side {PROTOCOL}"
        )
    return data


@dataclass(frozen=True)
class RunRequest:
    model: bytes
    # What the signed manifest says; the runtime checks the model agrees.
    host: str
    environment: str
    repository: str
    target_directory: str | None
    dry_run: bool
    timeout: float | None
    report: str
    # The decrypted secrets follow on the runtime's standard input.
    secrets: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "protocol": PROTOCOL,
                "model": base64.b64encode(self.model).decode(),
                "host": self.host,
                "environment": self.environment,
                "repository": self.repository,
                "target_directory": self.target_directory,
                "dry_run": self.dry_run,
                "timeout": self.timeout,
                "report": self.report,
                "secrets": self.secrets,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunRequest:
        data = _check(json.loads(text), "request")
        timeout, target = data.get("timeout"), data.get("target_directory")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
            raise ProtocolError(f"the request's timeout is not a number: {timeout!r}")
        if target is not None and not isinstance(target, str):
            raise ProtocolError(f"the request's target_directory is not text: {target!r}")
        try:
            return cls(
                model=base64.b64decode(data["model"], validate=True),
                host=str(data["host"]),
                environment=str(data["environment"]),
                repository=str(data["repository"]),
                target_directory=data["target_directory"],
                dry_run=bool(data["dry_run"]),
                timeout=data["timeout"],
                report=str(data["report"]),
                secrets=data.get("secrets") is True,
            )
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"the request is incomplete: {exc}") from None


@dataclass(frozen=True)
class RunReport:
    roots: tuple[RootOutcome, ...]
    log: tuple[LogEntry, ...]
    diffs: tuple[FileDiff, ...]
    error: ConsignError | None
    target_directory: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "protocol": PROTOCOL,
                "roots": [
                    {
                        "name": r.name,
                        "status": r.status.value,
                        "changed": list(r.changed),
                        "duration_s": r.duration_s,
                        "reason": r.reason,
                    }
                    for r in self.roots
                ],
                "log": [
                    {"component": e.component, "message": e.message, "level": e.level.value}
                    for e in self.log
                ],
                "diffs": [
                    {"component": d.component, "path": d.path, "diff": d.diff, "note": d.note}
                    for d in self.diffs
                ],
                "error": None if self.error is None else error_to_json(self.error),
                "target_directory": self.target_directory,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunReport:
        data = _check(json.loads(text), "report")
        try:
            return cls(
                roots=tuple(
                    RootOutcome(
                        r["name"],
                        RootStatus(r["status"]),
                        tuple(r["changed"]),
                        float(r["duration_s"]),
                        r["reason"],
                    )
                    for r in data["roots"]
                ),
                log=tuple(
                    LogEntry(e["component"], e["message"], Level(e["level"])) for e in data["log"]
                ),
                diffs=tuple(
                    FileDiff(d["component"], d["path"], d["diff"], d["note"]) for d in data["diffs"]
                ),
                error=None if data["error"] is None else error_from_json(data["error"]),
                target_directory=str(data["target_directory"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ProtocolError(f"the report is incomplete: {exc}") from None


def redact_report(report: RunReport, secrets: Iterable[str]) -> RunReport:
    """`report` with every secret value hidden, wherever the runtime put it."""
    values = list(secrets)
    if not values:
        return report

    def hide(text: str) -> str:
        return redact(text, values)

    return replace(
        report,
        roots=tuple(
            replace(
                r,
                changed=tuple(hide(c) for c in r.changed),
                reason=hide(r.reason),
            )
            for r in report.roots
        ),
        log=tuple(LogEntry(hide(e.component), hide(e.message), e.level) for e in report.log),
        diffs=tuple(
            FileDiff(
                hide(d.component),
                hide(d.path),
                None if d.diff is None else hide(d.diff),
                hide(d.note),
            )
            for d in report.diffs
        ),
        error=None if report.error is None else redact_error(report.error, values),
    )
