"""systemd units that pull on a timer: ``executor systemd-units`` prints
them, ``executor init --timer URL`` installs them.

The timer fires on a calendar interval with a random delay
(``RandomizedDelaySec``), so a fleet does not hit the server at once, and
``Persistent=true`` catches up a run missed while the host was off. The
service is a oneshot that runs ``executor pull``; exit 5 (another apply held
the lock) counts as success: the other run does the work.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys

from .errors import ConsignError
from .fs import write_atomic

SERVICE = "consign-pull.service"
TIMER = "consign-pull.timer"
DEFAULT_UNIT_DIR = "/etc/systemd/system"
DEFAULT_INTERVAL = "15min"
_INTERVAL = re.compile(r"([1-9][0-9]*)(min|h)")


class UnitError(ConsignError):
    code = "systemd-units"


def default_executor() -> str:
    """How this executor was started, as a command line for the service."""
    pex = os.environ.get("PEX")
    if pex:
        return f"/usr/bin/python3 {shlex.quote(os.path.abspath(pex))}"
    found = shutil.which("executor")
    if found:
        return shlex.quote(os.path.abspath(found))
    return shlex.quote(os.path.abspath(sys.argv[0]))


def _calendar(interval: str) -> str:
    match = _INTERVAL.fullmatch(interval)
    if not match:
        raise UnitError(
            f"--interval must be minutes or hours like 15min or 1h, got {interval!r}",
            hint="systemd runs the pull on that calendar step, plus a random delay",
        )
    number, unit = int(match.group(1)), match.group(2)
    if unit == "min":
        if 60 % number:
            raise UnitError(f"--interval {interval} does not divide an hour", hint="use 5min, 10min, 15min, 20min, 30min")
        return f"*-*-* *:00/{number}:00"
    if 24 % number:
        raise UnitError(f"--interval {interval} does not divide a day", hint="use 1h, 2h, 3h, 4h, 6h, 8h, 12h")
    return f"*-*-* 00/{number}:00:00"


def render_units(
    url: str, interval: str = DEFAULT_INTERVAL, executor: str | None = None, config: str | None = None
) -> dict[str, str]:
    """The two unit files, by name."""
    calendar = _calendar(interval)
    command = executor or default_executor()
    arguments = ["pull", url]
    if config:
        arguments += ["--config", config]
    delay = "5min" if interval.endswith("min") else "30min"
    service = f"""\
[Unit]
Description=Pull and apply this host's consign bundle
Documentation=man:systemd.timer(5)
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
Environment=PEX_ROOT=/var/lib/consign/pex
ExecStart={command} {shlex.join(arguments)}
# 5: another apply held the lock; it does the work.
SuccessExitStatus=5
TimeoutStartSec=1h
Nice=10
"""
    timer = f"""\
[Unit]
Description=Pull consign bundles every {interval}

[Timer]
OnCalendar={calendar}
RandomizedDelaySec={delay}
Persistent=true
AccuracySec=1min

[Install]
WantedBy=timers.target
"""
    return {SERVICE: service, TIMER: timer}


def install_units(units: dict[str, str], directory: str = DEFAULT_UNIT_DIR) -> list[str]:
    """Write the unit files (0644); the paths written."""
    written = []
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        for name, text in units.items():
            path = os.path.join(directory, name)
            write_atomic(path, text.encode(), mode=0o644, follow_symlinks=False)
            written.append(path)
    except OSError as exc:
        raise UnitError(
            f"cannot write the systemd units into {directory}: {exc.strerror}",
            hint="run as root, or print them with 'executor systemd-units URL' and install by hand",
        ) from None
    return written
