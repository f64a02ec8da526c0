"""``bundle status ENV --from SOURCE``: the fleet as its hosts report it.

Hosts whose executor config has ``report = URL`` PUT their status after
every run to ``URL/<host>.json`` (any server that accepts PUT: nginx with
WebDAV, an object store's pre-signed prefix, a small receiver). SOURCE is
that URL, or a directory holding the same files. With ``--published``
(the ``bundle publish`` directory or its URL) each host's published serial
is shown too, so hosts that lag behind what was published stand out.

Reports are informational and unauthenticated: they say what a host
claims, and are never an input to a build or an apply.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.errors import ConsignError
from executor.pointer import MAX_POINTER_BYTES, read_pointer

from .environment import load_environment
from .errors import BuildError

MAX_REPORT_BYTES = 1 << 20
# A host whose last success is older than this stands out.
DEFAULT_STALE_AFTER = 24 * 3600


@dataclass(frozen=True)
class FleetRow:
    host: str
    state: str  # ok, lagging, failed, stale, silent
    published_serial: int | None = None
    applied_serial: int | None = None
    generation: int | None = None
    last_run: str | None = None  # "pull ok", "apply failed", ...
    last_run_time: float | None = None
    last_success_time: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "state": self.state,
            "published_serial": self.published_serial,
            "applied_serial": self.applied_serial,
            "generation": self.generation,
            "last_run": self.last_run,
            "last_run_time": self.last_run_time,
            "last_success_time": self.last_success_time,
            "error": self.error,
        }


def _read(source: str, name: str, limit: int) -> bytes | None:
    """`name` below `source` (a URL or a directory); None when absent."""
    if source.startswith(("http://", "https://")):
        url = source.rstrip("/") + "/" + name
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                data: bytes = response.read(limit + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                return None
            raise BuildError(f"cannot read {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise BuildError(f"cannot read {url}: {getattr(exc, 'reason', exc)}") from None
    else:
        path = Path(source, name)
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BuildError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise BuildError(f"{source}/{name} is larger than {limit} bytes")
    return data


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _row(host: str, report: dict[str, Any] | None, published: int | None, now: float, stale_after: float) -> FleetRow:
    if report is None:
        return FleetRow(host, "silent", published, error="no report from this host")
    run: dict[str, Any] = report["last_run"] if isinstance(report.get("last_run"), dict) else {}
    success: dict[str, Any] = (
        report["last_success"] if isinstance(report.get("last_success"), dict) else {}
    )
    applied = success.get("serial") if isinstance(success.get("serial"), int) else None
    started, duration = _number(success.get("started")), _number(success.get("duration_s"))
    success_time = started + (duration or 0.0) if started is not None else None
    result = run.get("result") if isinstance(run.get("result"), str) else None
    error = run.get("error") if isinstance(run.get("error"), dict) else None
    if result is not None and result != "ok":
        state = "failed"
    elif published is not None and (applied is None or applied < published):
        state = "lagging"
    elif success_time is None or now - success_time > stale_after:
        state = "stale"
    else:
        state = "ok"
    return FleetRow(
        host=host,
        state=state,
        published_serial=published,
        applied_serial=applied,
        generation=success.get("generation") if isinstance(success.get("generation"), int) else None,
        last_run=f"{run.get('kind')} {result}" if result else None,
        last_run_time=_number(run.get("started")),
        last_success_time=success_time,
        error=str(error.get("message")) if error else None,
    )


def fleet_status(
    environment: str,
    repository: Path,
    source: str,
    published: str | None = None,
    now: float | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
) -> list[FleetRow]:
    config, errors = load_environment(repository.resolve(), environment)
    if config is None or errors:
        raise errors[0] if errors else BuildError(f"environment {environment!r} not found")
    moment = time.time() if now is None else now
    rows = []
    for host in config.hosts:
        if host.ignored:
            continue
        serial = None
        if published is not None:
            data = _read(published, f"hosts/{host.name}.pointer", MAX_POINTER_BYTES)
            if data is not None:
                try:
                    serial = read_pointer(data, f"{published}/hosts/{host.name}.pointer").serial
                except ConsignError:
                    serial = None
        raw = _read(source, f"{host.name}.json", MAX_REPORT_BYTES)
        report = None
        if raw is not None:
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = None
            report = decoded if isinstance(decoded, dict) else None
        rows.append(_row(host.name, report, serial, moment, stale_after))
    return rows
