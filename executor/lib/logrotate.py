"""Log rotation, collected into one logrotate configuration per host
(``batou.lib.logrotate``).

A ``RotatedLogfile`` changes nothing by itself: it provides its section,
through service discovery, to the ``Logrotate`` of its host, which writes
every logfile of every root on that host into ``logrotate.conf`` in its
workdir and adds a daily ``CronJob`` running logrotate on it (so the host
needs a ``CronTab`` too).

Example::

    from batou.component import Component
    from batou.lib.cron import CronTab
    from batou.lib.logrotate import Logrotate, RotatedLogfile

    class App(Component):
        def configure(self):
            self += RotatedLogfile("/srv/app/log/*.log",
                                   postrotate="kill -USR1 $(cat /srv/app/app.pid)")

    class Housekeeping(Component):      # [hosts] web1 = app, housekeeping
        def configure(self):
            self += Logrotate()
            self += CronTab()
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
from collections.abc import Sequence
from typing import Any

from executor.component import Component, UpdateNeeded
from executor.errors import ConfigurationError, DeployError
from executor.fs import fsync_directory, stage_file
from executor.lib.cron import local_paths, portable_paths, provide_job, require_collector
from executor.lib.file import Content

__all__ = ["Logrotate", "LogrotateConfig", "RotatedLogfile"]

#: Each RotatedLogfile provides ``{"root", "path", "args", "prerotate", "postrotate"}`` here.
LOGFILE_KEY = "batou.lib.logrotate:logfile"
#: Each Logrotate provides ``{"root"}`` here: RotatedLogfiles check that one
#: collects them, Logrotates that no other does.
LOGROTATE_KEY = "batou.lib.logrotate:logrotate"

DEFAULT_ARGS = (
    "daily", "rotate 14", "create", "missingok", "notifempty", "compress", "delaycompress"
)
HEADER = "# Managed by consign: changes made here are lost at the next deployment.\n"
# Directives that open a script block: only prerotate= / postrotate= write those.
_SCRIPT_WORDS = frozenset(
    {"prerotate", "postrotate", "firstaction", "lastaction", "preremove", "endscript"}
)
# Characters that make logrotate read a path as several words, or a section.
_QUOTED = frozenset(" \t#'")
_REFUSED = frozenset('"\\{}\n\r\0')


def _directives(what: str, value: Any) -> list[str]:
    """Directives from a sequence, or (as batou wrote them) a comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigurationError(
            f"{what} must be a list of logrotate directives, got {value!r}",
            hint="write e.g. ('weekly', 'rotate 4', 'compress')",
        )
    directives = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(
                f"{what}: the directive {item!r} is no string",
                hint="write each directive as text, e.g. 'rotate 4'",
            )
        text = item.strip()
        if not text:
            continue
        if any(c in text for c in "{}\n\r\0"):
            raise ConfigurationError(
                f"{what}: the directive {text!r} holds a brace or a line break",
                hint="give one directive per item, without { } (logrotate's section markers)",
            )
        if text.split()[0] in _SCRIPT_WORDS:
            raise ConfigurationError(
                f"{what}: the directive {text!r} opens a script block",
                hint="pass the script as prerotate=... or postrotate=... instead",
            )
        directives.append(text)
    return directives


def _script(what: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be shell code as text, got {value!r}")
    if any(line.strip() == "endscript" for line in value.splitlines()):
        raise ConfigurationError(
            f"{what} contains a line 'endscript', which would end the script early",
            hint="leave 'endscript' out: consign closes the script itself",
        )
    return value.strip("\n")


def _path_word(path: str) -> str:
    return f'"{path}"' if any(c in _QUOTED for c in path) else path


class RotatedLogfile(Component):
    """A logfile (or glob) for the host's Logrotate to rotate.

    ``path`` is relative to the workdir unless absolute and may be a glob;
    ``args`` are logrotate directives (a tuple, or a comma-separated string
    as in batou) and default to ``DEFAULT_ARGS``: daily, 14 rotations,
    compressed from the second, missing and empty files left alone.
    ``prerotate`` / ``postrotate`` are shell code run around the rotation.
    A RotatedLogfile needs a ``Logrotate`` in some root on the same host.

    Example::

        self += RotatedLogfile("log/app.log", args=("weekly", "rotate 8", "copytruncate"))
        self += RotatedLogfile("/var/log/app/*.log", postrotate="systemctl reload app")
    """

    namevar = "path"
    path: str
    args: Sequence[str] | str = DEFAULT_ARGS
    prerotate: str | None = None
    postrotate: str | None = None

    def configure(self) -> None:
        self.path = self.map(self.path)
        refused = sorted({c for c in self.path if c in _REFUSED})
        if refused:
            raise ConfigurationError(
                f"logfile path {self.path!r} contains {', '.join(map(repr, refused))}, "
                "which a logrotate configuration cannot hold",
                hint="rename the logfile, or match it with a glob (?)",
            )
        self.args = _directives("args", self.args)
        self.prerotate = _script("prerotate", self.prerotate)
        self.postrotate = _script("postrotate", self.postrotate)
        collectors = require_collector(
            self,
            LOGROTATE_KEY,
            f"no Logrotate on host {self.host.name!r} collects {self.path}",
            "add Logrotate() (with a CronTab) to a root on this host",
        )
        if not collectors:
            return
        path = portable_paths(self, self.path)
        root = self._root_name()
        for other in self.require(LOGFILE_KEY, host=self.host, strict=False, dirty=True):
            if other["path"] == path and other["root"] != root:
                raise ConfigurationError(
                    f"{self.path} is rotated by root {other['root']!r} already",
                    hint="keep one RotatedLogfile per path and host (logrotate refuses duplicates)",
                )
        self.provide(
            LOGFILE_KEY,
            {
                "root": root,
                "path": path,
                "args": list(self.args),
                "prerotate": self.prerotate and portable_paths(self, self.prerotate),
                "postrotate": self.postrotate and portable_paths(self, self.postrotate),
            },
        )


class LogrotateConfig(Content):
    """A logrotate configuration file, checked with ``logrotate -d`` before
    it replaces the current one (when logrotate is installed), and never
    writable by group or others (logrotate would ignore it)."""

    is_template = False
    logrotate = "/usr/sbin/logrotate"

    def verify(self) -> None:
        super().verify()
        mode = os.stat(self.path).st_mode & 0o777
        if mode & 0o022:
            raise UpdateNeeded(f"{self.path} is writable by group or others (mode {mode:o})")

    def _binary(self) -> str | None:
        if os.access(self.logrotate, os.X_OK):
            return self.logrotate
        return shutil.which("logrotate")

    def _check(self, staged: str) -> None:
        binary = self._binary()
        if binary is None:
            self.log(f"logrotate is not installed: {self.path} was not checked")
            return
        # -d changes nothing; /dev/null: no state to read or lock. Missing
        # logfiles make it exit non-zero, so only errors naming the file count.
        stdout, stderr = self.cmd(
            [binary, "-d", "--state", "/dev/null", staged], ignore_returncode=True, expand=False
        )
        errors = [
            line.replace(staged, self.path)
            for line in (stderr + stdout).splitlines()
            if line.startswith("error:") and staged in line
        ]
        if errors:
            raise DeployError(
                f"logrotate rejects {self.path}: " + "; ".join(errors),
                hint="fix the directives it names (RotatedLogfile args=, Logrotate common=)",
            )

    def update(self) -> None:
        staged = stage_file(self.path, [self._data], mode=0o644)
        try:
            os.chmod(staged, 0o644)
            self._check(staged)
            os.rename(staged, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
            raise
        fsync_directory(os.path.dirname(self.path))


class Logrotate(Component):
    """The host's logrotate configuration: every RotatedLogfile of the host.

    Writes ``logrotate.conf`` in the workdir (sections sorted by path,
    ``common`` directives first, then batou's raw ``common_config``) and
    provides a cron job, as a ``CronJob`` does, running ``logrotate --state
    <workdir>/logrotate.state <workdir>/logrotate.conf`` at ``timing``
    (default ``@daily``) for ``user`` (default: the CronTab's default user).
    ``logrotate`` is the program's path, in full: cron's PATH lacks /usr/sbin.

    Example::

        self += Logrotate(common=("su app app",))
    """

    common: Sequence[str] | str = ()
    common_config: str | bytes = ""
    timing = "@daily"
    user: str | None = None
    logrotate = "/usr/sbin/logrotate"

    logfiles: list[dict[str, Any]]
    config: str
    state: str
    job: dict[str, Any]

    def configure(self) -> None:
        self.common = _directives("common", self.common)
        common_config = self.common_config
        if isinstance(common_config, bytes):
            common_config = common_config.decode("utf-8")
        self._check_unique()
        self.provide(LOGROTATE_KEY, {"root": self._root_name()})
        # Sorted as provided ({target} for the target), then made local.
        provided = sorted(
            self.require(LOGFILE_KEY, host=self.host, strict=False), key=lambda f: str(f["path"])
        )
        logfiles = [
            {
                **logfile,
                "path": local_paths(self, logfile["path"]),
                "prerotate": logfile["prerotate"] and local_paths(self, logfile["prerotate"]),
                "postrotate": logfile["postrotate"] and local_paths(self, logfile["postrotate"]),
            }
            for logfile in provided
        ]
        unique: list[dict[str, Any]] = []
        for logfile in logfiles:
            if unique and unique[-1]["path"] == logfile["path"]:
                # Two of one root (each RotatedLogfile checks other roots').
                if unique[-1] == logfile:
                    continue
                raise ConfigurationError(
                    f"{logfile['path']} is rotated twice, with different settings, "
                    f"by root {logfile['root']!r}",
                    hint="keep one RotatedLogfile per path and host (logrotate refuses duplicates)",
                )
            unique.append(logfile)
        self.logfiles = unique
        self.config = self.map("logrotate.conf")
        self.state = self.map("logrotate.state")
        self += LogrotateConfig(
            "logrotate.conf", content=self._render(common_config), logrotate=self.logrotate
        )
        # Provided like a CronJob's, but no CronJob child: its command names
        # the workdir, which differs between the builder and the host, and
        # the tree of components must not.
        self.job = provide_job(
            self,
            f"{shlex.quote(self.logrotate)} --state {shlex.quote(self.state)} "
            f"{shlex.quote(self.config)}",
            self.timing,
            user=self.user,
            comment="logrotate: the RotatedLogfiles of this host",
        )

    def _check_unique(self) -> None:
        root = self._root_name()
        for other in self.require(LOGROTATE_KEY, host=self.host, strict=False, dirty=True):
            if other["root"] != root:
                raise ConfigurationError(
                    f"host {self.host.name!r} has a Logrotate in root {other['root']!r} already",
                    hint="keep one Logrotate per host: the RotatedLogfiles of every root reach it",
                )

    def _render(self, common_config: str) -> str:
        lines = [HEADER.rstrip("\n"), *self.common]
        if common_config.strip():
            lines.append(common_config.strip("\n"))
        for logfile in self.logfiles:
            lines.append("")
            lines.append(f"{_path_word(logfile['path'])} {{")
            lines.extend(f"    {directive}" for directive in logfile["args"])
            for word in ("prerotate", "postrotate"):
                script = logfile[word]
                if script:
                    lines.append(f"    {word}")
                    lines.extend(f"        {line}".rstrip() for line in script.splitlines())
                    lines.append("    endscript")
            lines.append("}")
        return "\n".join(lines) + "\n"
