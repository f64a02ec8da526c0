"""What the host says about its runs: status, audit log, metrics.

- ``STATE/status.json``: the last run and the last successful one, replaced
  atomically after every run (``executor status`` reads it).
- ``STATE/audit.log``: one JSON line per run, appended, never rewritten.
- Prometheus text-format metrics at the path the host config names
  (``metrics = ...``), replaced atomically, for node_exporter's textfile
  collector: last success time, current serial, whether the last run failed.

Recording never hides the run's own result: a record that cannot be
written becomes a note of the run, not its error.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import StateError
from .fs import write_atomic

STATUS_FILE = "status.json"
AUDIT_FILE = "audit.log"
_MAX_STATUS_BYTES = 1 << 20
# A record names at most this many changed components (and counts them all),
# so that status.json stays small and every audit line fits read_audit's window.
MAX_RECORDED_CHANGES = 100

# What a run did: kind and result.
KINDS = ("apply", "rollback", "dry-run", "pull")
RESULTS = ("ok", "failed", "refused", "locked")


@dataclass(frozen=True)
class RunRecord:
    """One run of ``executor apply`` / ``rollback``, as recorded."""

    kind: str
    result: str
    started: float
    duration_s: float
    bundle_path: str
    host: str | None = None
    environment: str | None = None
    bundle: str | None = None
    serial: int | None = None
    commit: str | None = None
    generation: int | None = None
    changed: tuple[str, ...] = ()
    # Seconds per phase: verify, unpack, runtime, run.
    phases: dict[str, float] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    pid: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["changed"] = list(self.changed[:MAX_RECORDED_CHANGES])
        data["changed_count"] = len(self.changed)
        data["duration_s"] = round(self.duration_s, 6)
        data["phases"] = {k: round(v, 6) for k, v in self.phases.items()}
        return data


@dataclass(frozen=True)
class Status:
    """``status.json``: the last run, and the last run that succeeded."""

    last_run: dict[str, Any] | None = None
    last_success: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"last_run": self.last_run, "last_success": self.last_success}


def read_status(state_directory: str) -> Status:
    """The recorded status; an empty one before the first run."""
    path = os.path.join(state_directory, STATUS_FILE)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(_MAX_STATUS_BYTES))
    except FileNotFoundError:
        return Status()
    except (OSError, ValueError) as exc:
        raise StateError(
            f"{path} is damaged: {exc}",
            hint="the next apply writes it again; the state itself (state.msgpack) is intact",
        ) from None
    if not isinstance(data, dict):
        raise StateError(f"{path} is damaged: not a JSON object")
    last_run, last_success = data.get("last_run"), data.get("last_success")
    return Status(_record_or_none(last_run), _record_or_none(last_success))


# The fields of a recorded run that readers compute with, and their types.
_TYPED = {"started": (int, float), "duration_s": (int, float), "result": (str,), "kind": (str,)}


def _record_or_none(value: object) -> dict[str, Any] | None:
    """A recorded run as written by record_run, or None for anything else
    (a damaged or hand-edited status.json must not break the next run)."""
    if not isinstance(value, dict):
        return None
    for key, kinds in _TYPED.items():
        if not isinstance(value.get(key), kinds) or isinstance(value.get(key), bool):
            return None
    return value


def record_run(
    state_directory: str,
    record: RunRecord,
    metrics_path: str | None,
    report_url: str | None = None,
) -> list[str]:
    """Write status, audit line and metrics for `record`, and PUT the status
    to `report_url`/<host>.json when given; return notes about records that
    could not be written or sent (the run's result stands)."""
    notes: list[str] = []
    data = record.to_json()
    try:
        previous = read_status(state_directory)
    except StateError as exc:
        notes.append(exc.message)
        previous = Status()
    status = Status(data, data if record.result == "ok" and record.kind != "dry-run" else None)
    if status.last_success is None:
        status = replace(status, last_success=previous.last_success)
    try:
        write_atomic(
            os.path.join(state_directory, STATUS_FILE),
            json.dumps(status.to_json(), indent=1, sort_keys=True).encode() + b"\n",
            mode=0o600,
            follow_symlinks=False,
        )
    except OSError as exc:
        notes.append(f"cannot write {STATUS_FILE} in {state_directory}: {exc.strerror}")
    try:
        append_audit(state_directory, data)
    except OSError as exc:
        notes.append(f"cannot append to {AUDIT_FILE} in {state_directory}: {exc.strerror}")
    if metrics_path:
        try:
            write_atomic(
                metrics_path, metrics_text(status).encode(), mode=0o644, follow_symlinks=False
            )
        except OSError as exc:
            notes.append(f"cannot write the metrics file {metrics_path}: {exc.strerror}")
    if report_url and record.host:
        from .fetch import put_json

        target = report_url.rstrip("/") + f"/{record.host}.json"
        problem = put_json(target, {"host": record.host, **status.to_json()})
        if problem:
            notes.append(f"cannot report the status to {target}: {problem}")
    return notes


def append_audit(state_directory: str, data: dict[str, Any]) -> None:
    """One line, written with one write(2) to a file opened for appending,
    so concurrent writers (there are none under the lock) cannot interleave."""
    line = json.dumps(data, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    fd = os.open(
        os.path.join(state_directory, AUDIT_FILE),
        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_audit(state_directory: str, limit: int = 20) -> list[dict[str, Any]]:
    """The last `limit` audit entries, oldest first; unreadable lines skipped."""
    path = os.path.join(state_directory, AUDIT_FILE)
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - (256 << 10), 0))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines[-limit:]:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def _label(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(status: Status) -> str:
    """Prometheus text exposition format, for node_exporter's textfile collector."""
    run = status.last_run or {}
    success = status.last_success or {}
    host = run.get("host") or success.get("host") or ""
    labels = f'{{host="{_label(host)}"}}'
    metrics: list[tuple[str, str, str, object]] = [
        (
            "consign_last_success_timestamp_seconds",
            "gauge",
            "When the last successful apply or rollback finished (Unix time).",
            (success["started"] + success["duration_s"]) if success else 0,
        ),
        (
            "consign_current_serial",
            "gauge",
            "Serial of the bundle the last successful apply applied.",
            success.get("serial") or 0,
        ),
        (
            "consign_current_generation",
            "gauge",
            "Generation the host runs.",
            success.get("generation") or 0,
        ),
        (
            "consign_last_run_failed",
            "gauge",
            "1 when the last run failed or was refused, else 0.",
            1 if run and run.get("result") in ("failed", "refused") else 0,
        ),
        (
            "consign_last_run_timestamp_seconds",
            "gauge",
            "When the last run started (Unix time).",
            run.get("started") or 0,
        ),
        (
            "consign_last_run_duration_seconds",
            "gauge",
            "How long the last run took.",
            run.get("duration_s") or 0,
        ),
    ]
    lines = []
    for name, kind, help_text, value in metrics:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{labels} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(round(value, 3))
    return "0"
