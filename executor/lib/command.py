"""Guarded commands (``executor.lib.command``; consign's own, batou has none).

A ``Command`` runs a shell command (a string) or an argv list when its
guards say the work is not done yet: ``unless`` (a check command; exit 0
means done), ``creates`` (a path; existing means done) and
``onlyif_changed`` (components added before it; run only when one of them
changed in this run). A command without any guard runs on every deploy and
a dry run says so. Output and return code go to the run's log.

Example::

    from batou.component import Component
    from batou.lib.file import File
    from executor.lib.command import Command

    class App(Component):
        def configure(self):
            self += File("app.conf", content="port=8080\\n")
            config = self._
            self += Command("./configure --prefix=/srv/app && make install",
                            cwd="src", creates="/srv/app/bin/app")
            self += Command("systemctl reload app", onlyif_changed=config)
            self += Command(["createdb", "app"], unless="psql -lqt | grep -qw app")
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from executor import run as _run
from executor import template as _template

# N.B. _drain and _kill_group are Component.cmd's own: a timed-out or
# interrupted command is ended exactly as self.cmd ends one.
from executor.component import (
    Component,
    UpdateNeeded,
    command_limit,
    finish,
    handle_event,
    spawn,
)
from executor.errors import CommandError, ConfigurationError, DeployError, NotConvergedError
from executor.fs import write_atomic
from executor.redact import redact

__all__ = ["Command", "PendingMarker", "check_dependencies", "output_tail"]

# The run's log keeps the last lines of a command's output, each line and
# the whole tail cut to a size a person can read.
OUTPUT_TAIL_LINES = 20
OUTPUT_LINE_CHARS = 500
OUTPUT_TAIL_CHARS = 4000

# What a shell answers for a command it cannot run: found but not
# executable (126), not found (127).
_CANNOT_RUN = {126: "not executable", 127: "not found"}
_GUARDS = "unless=, creates= or onlyif_changed="


def output_tail(text: str) -> str:
    """The end of a command's output, bounded in lines and characters."""
    lines = text.rstrip("\n").splitlines()
    shown = [
        line if len(line) <= OUTPUT_LINE_CHARS else line[:OUTPUT_LINE_CHARS] + " [...]"
        for line in lines[-OUTPUT_TAIL_LINES:]
    ]
    while len(shown) > 1 and sum(len(line) + 1 for line in shown) > OUTPUT_TAIL_CHARS:
        shown.pop(0)
    hidden = len(lines) - len(shown)
    note = [f"[{hidden} earlier line{'s' if hidden != 1 else ''} not shown]"] if hidden else []
    return "\n".join(note + shown)


def _text_of(command: str | list[str]) -> str:
    return command if isinstance(command, str) else shlex.join(command)


class PendingMarker:
    """A file in the component's workdir saying that a reaction (a restart,
    a command) to a change is still owed: ``.consign-pending-KIND-<sha256
    of the breadcrumbs>``.

    A change is seen once, in the run that makes it; when that run fails
    or is killed before the reaction, the next run sees nothing changed.
    The owner sets the marker before a component it reacts to updates
    (``watch``, from a ``before-update`` handler), treats an existing one
    like a change in verify, and clears it once the reaction succeeded.
    A dry run never writes one.
    """

    def __init__(self, component: Component, kind: str) -> None:
        self.component = component
        self.kind = kind
        # Whether this run wrote it (else an earlier run left it).
        self.set_in_this_run = False

    @property
    def path(self) -> str:
        breadcrumbs = self.component._breadcrumbs
        digest = hashlib.sha256(breadcrumbs.encode("utf-8")).hexdigest()
        workdir = self.component.workdir
        assert workdir is not None
        return posixpath.join(workdir, f".consign-pending-{self.kind}-{digest}")

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def set(self) -> None:
        if _run.current().predicting or self.exists():
            return
        self.set_in_this_run = True
        path = self.path
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        note = f"{self.kind} pending for {_run.current().hide(self.component._breadcrumbs)}\n"
        write_atomic(path, note.encode("utf-8"), mode=0o600, follow_symlinks=False)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def watch(self, updating: Component, watched: Iterable[Component]) -> None:
        """Set the marker if `updating` is one of `watched` or inside one."""
        ids = {id(component) for component in watched}
        current: Component | None = updating
        while current is not None:
            if id(current) in ids:
                self.set()
                return
            current = current.parent


def check_dependencies(
    component: Component, value: Any, attribute: str, kind: str
) -> list[Component]:
    """`value` (None, a component or a list of them) as a list of components
    that deploy before `component`, which is being configured (not added
    yet); else ConfigurationError. Their ``changed`` then tells whether
    they changed in this run by the time `component` deploys."""
    if value is None:
        return []
    dependencies: Any = [value] if isinstance(value, Component) else value
    if (
        isinstance(dependencies, (str, bytes))
        or not isinstance(dependencies, Sequence)
        or not dependencies
        or not all(isinstance(d, Component) for d in dependencies)
    ):
        raise ConfigurationError(
            f"{attribute} must be a component or a non-empty list of components, got {value!r}",
            hint=f"add the component first (self += File(...)), then pass it: {attribute}=self._",
        )
    ancestors = set()
    current: Component | None = component.parent
    while current is not None:
        ancestors.add(id(current))
        current = current.parent
    for dependency in dependencies:
        if id(dependency) in ancestors:
            raise ConfigurationError(
                f"{attribute} names {dependency._breadcrumb}, which contains this {kind} "
                "and deploys after it",
                hint=f"name the components the {kind} depends on, added before it",
            )
        if not _in_tree(dependency, component.root):
            raise ConfigurationError(
                f"{attribute} names {dependency._breadcrumb}, which is not part of this "
                f"root's deployment before this {kind}",
                hint=f"add it with 'self += ...' before the {kind} ('self |= ...' does not "
                "deploy it)",
            )
    return list(dependencies)


def _in_tree(component: Component, root: Component) -> bool:
    """Whether `component` is in `root`'s tree already: then it deploys
    before a component being configured now (children deploy first)."""
    current = component
    while current.parent is not None:
        if not any(child is current for child in current.parent.sub_components):
            return False
        current = current.parent
    return current is root


class Command(Component):
    """A command run when its guards say the work is not done yet.

    ``command`` is a string (run by ``/bin/sh -c``; with ``shell=False`` it
    is split like a shell would and run without one) or a list (an argv,
    never through a shell). It and ``unless`` are templates, rendered with
    ``component`` bound to the component that adds the Command.

    Guards, all optional; the command runs only when none says "done":

    - ``unless``: a check command (string or list, like ``command``); exit 0
      means done. A guard that cannot run at all (exit 126/127, not found)
      is an error, not a reason to run.
    - ``creates``: a path (relative to ``cwd`` if given, else to the
      workdir; mapped like every path). Existing means done; after the
      command ran, the path must exist.
    - ``onlyif_changed``: a component or a list of them, added before this
      one; the command runs only when one of them changed in this run, or
      changed in an earlier run that failed before the command succeeded
      (a marker file in the workdir remembers that until it does).

    Without a guard the command runs on every deploy; a dry run lists it as
    a change and logs that it runs every time. ``cwd`` is the working
    directory (default: the workdir), ``env`` extra environment variables
    (their values are replaced by ``***`` in everything the run logs or
    raises), ``timeout`` seconds (never more than the run's own limit); a
    timeout or a non-zero exit fails the run.

    Example::

        self += Command("make install", cwd="src", creates="/srv/app/bin/app",
                        timeout=600)
        self += Command(["systemctl", "reload", "nginx"], onlyif_changed=self.config)
    """

    namevar = "command"
    command: str | Sequence[str]
    unless: str | Sequence[str] | None = None
    creates: str | None = None
    onlyif_changed: Component | Sequence[Component] | None = None
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    timeout: float | None = None
    shell = True

    def configure(self) -> None:
        context = self.parent or self
        self._command = self._prepare("command", self.command, context)
        self._unless = (
            None if self.unless is None else self._prepare("unless", self.unless, context)
        )
        self._cwd = None if self.cwd is None else self.map(str(self.cwd))
        self._creates = None
        if self.creates is not None:
            creates = str(self.creates)
            if self.cwd is not None:
                creates = posixpath.join(str(self.cwd), creates)
            self._creates = self.map(creates)
        self._env = self._check_env(context)
        self._timeout = self._check_timeout()
        self._dependencies = check_dependencies(
            self, self.onlyif_changed, "onlyif_changed", "Command"
        )
        self._pending = PendingMarker(self, "command")

    # -- configure helpers -------------------------------------------------

    def _prepare(self, what: str, value: Any, context: Component) -> str | list[str]:
        """The command as it runs: a string for the shell, or an argv."""
        name = f"{what} of {self._breadcrumb}"
        if isinstance(value, str):
            if not value.strip():
                raise ConfigurationError(f"{what} is empty", hint=f"give {what}= a command to run")
            text = _template.render(value, self._template_context(context, {}), name=name)
            if self.shell:
                return text
            try:
                argv = shlex.split(text)
            except ValueError as exc:
                raise ConfigurationError(
                    f"cannot split {what} {text!r} into arguments: {exc}",
                    hint="fix the quoting, or pass the command as a list",
                ) from None
            if not argv:
                raise ConfigurationError(f"{what} is empty", hint=f"give {what}= a command")
            return argv
        if (
            isinstance(value, Sequence)
            and not isinstance(value, (str, bytes))
            and value
            and all(isinstance(part, str) for part in value)
        ):
            return [
                _template.render(part, self._template_context(context, {}), name=name)
                for part in value
            ]
        raise ConfigurationError(
            f"{what} must be a string or a non-empty list of strings, got {value!r}",
            hint=f"write {what}='make install' or {what}=['make', 'install']",
        )

    def _check_env(self, context: Component) -> dict[str, str] | None:
        env: Any = self.env
        if env is None:
            return None
        hint = "write env={'NAME': 'value'}: names without '=', values str"
        if not isinstance(env, Mapping):
            raise ConfigurationError(
                f"env must map variable names to strings, got a {type(env).__name__}", hint=hint
            )
        for key, value in env.items():
            # N.B. the message names the type of a bad value, never the value.
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise ConfigurationError(f"env has a bad variable name {key!r}", hint=hint)
            if not isinstance(value, str):
                raise ConfigurationError(
                    f"env[{key!r}] has a value of type {type(value).__name__}, expected str",
                    hint=hint,
                )
        name = f"env of {self._breadcrumb}"
        return {
            key: _template.render(value, self._template_context(context, {}), name=name)
            for key, value in sorted(env.items())
        }

    def _check_timeout(self) -> float | None:
        if self.timeout is None:
            return None
        try:
            timeout = float(self.timeout)
        except (TypeError, ValueError):
            timeout = -1.0
        if isinstance(self.timeout, bool) or not timeout > 0:
            raise ConfigurationError(
                f"timeout must be a positive number of seconds, got {self.timeout!r}",
                hint="write timeout=600, or leave it out to use the run's limit",
            )
        return timeout

    # -- verify and update -------------------------------------------------

    def _redact(self, text: str) -> str:
        """`text` without the values of env and the host's secrets (for
        everything logged or raised, before it is cut to length)."""
        hidden = [*(self._env or {}).values(), *_run.current().secrets]
        return redact(text, hidden) if hidden else text

    @property
    def _text(self) -> str:
        return self._redact(_text_of(self._command))

    @handle_event("before-update", "precursor")
    def _note_pending(self, updating: Component) -> None:
        # Before a dependency changes, not after: a run that dies in between
        # (in the dependency's update, or in a component between it and this
        # Command) must not lose the run it owes.
        if self._dependencies:
            self._pending.watch(updating, self._dependencies)

    def verify(self, predicting: bool = False) -> None:
        if not (self._unless is not None or self._creates is not None or self._dependencies):
            if self._consign.reverifying:
                return  # It ran; running it is all there is to check.
            if predicting:
                self.log("runs every time: %s has no guard (%s)", self._text, _GUARDS)
            raise UpdateNeeded(f"no guard: {self._text} runs every time")
        if self._creates is not None and os.path.lexists(self._creates):
            return
        if self._dependencies:
            if self._consign.reverifying:
                return  # Changed dependencies were the reason it ran.
            if not (any(d.changed for d in self._dependencies) or self._pending.exists()):
                return
        if self._unless is not None:
            if self._cwd is not None and not os.path.isdir(self._cwd):
                if predicting:  # An earlier component would create it.
                    self.log(
                        "would run %s: working directory %s does not exist yet",
                        self._text,
                        self._cwd,
                    )
                    raise UpdateNeeded(f"working directory {self._cwd} does not exist yet")
            if self._guard_passes():
                return
        reason = self._reason()
        if predicting:
            self.log("would run %s: %s", self._text, reason)
        raise UpdateNeeded(f"{self._text}: {reason}")

    def _reason(self) -> str:
        reasons = []
        if self._creates is not None:
            reasons.append(f"{self._creates} does not exist")
        if self._dependencies:
            changed = [d._breadcrumb for d in self._dependencies if d.changed]
            if changed:
                reasons.append(f"{', '.join(changed)} changed")
            else:
                reasons.append("a run was pending from an earlier run")
        if self._unless is not None:
            reasons.append(f"unless guard {self._redact(_text_of(self._unless))} failed")
        return "; ".join(reasons)

    def _guard_passes(self) -> bool:
        assert self._unless is not None
        text = self._redact(_text_of(self._unless))
        stdout, stderr, returncode = self._run(self._unless)
        if returncode in _CANNOT_RUN:
            raise self._error(
                f"unless guard cannot run (exit {returncode}, {_CANNOT_RUN[returncode]}): {text}",
                text,
                returncode,
                stdout,
                stderr,
                hint="fix the guard: unless= must be a command that exits 0 when the work "
                "is done and non-zero when the command should run",
            )
        return returncode == 0

    def _error(
        self, message: str, text: str, returncode: int | None, stdout: str, stderr: str, hint: str
    ) -> CommandError:
        """A CommandError with the end of stderr in its message, env values
        redacted everywhere (`message` and `text` are redacted already)."""
        stderr = self._redact(stderr)
        if stderr.strip():
            message += f"\n  stderr: {output_tail(stderr)}"
        return CommandError(
            message,
            command=text,
            returncode=returncode,
            stdout=self._redact(stdout),
            stderr=stderr,
            hint=hint,
        )

    def _run(self, command: str | list[str]) -> tuple[str, str, int]:
        """Run `command` in cwd with env and timeout: (stdout, stderr, returncode).

        Like Component.cmd, but in ``cwd`` (Popen's, the executor's own
        directory stays) and with env values redacted from what it logs and
        raises. A timeout raises CommandError (with returncode None).
        """
        text = self._redact(_text_of(command))
        run = _run.current()
        run.emit(self._breadcrumbs, f"$ {text}", _run.Level.DEBUG)
        self._check_cwd()
        try:
            process = spawn(command, env=self._env, cwd=self._cwd)
        except OSError as exc:
            if self._cwd is not None and exc.filename == self._cwd:
                self._check_cwd(exc)
            if isinstance(exc, PermissionError):
                return "", f"{exc.strerror}: {exc.filename or text}", 126
            if isinstance(exc, FileNotFoundError):  # an argv whose program does not exist
                return "", f"{exc.strerror}: {exc.filename or text}", 127
            raise
        limit = command_limit(self._timeout)
        stdout, stderr, timed_out = finish(process, limit)
        if timed_out:
            assert limit is not None
            raise self._error(
                f"command timed out after {limit:.1f}s: {text}",
                text,
                None,
                stdout,
                stderr,
                hint="raise timeout= (or [environment] timeout, --timeout), or make the "
                "command faster",
            )
        return stdout, stderr, process.returncode

    def _check_cwd(self, error: OSError | None = None) -> None:
        """DeployError if cwd is given and is no directory we can enter."""
        if self._cwd is None:
            return
        if not os.path.lexists(self._cwd):
            raise DeployError(
                f"working directory {self._cwd} does not exist",
                hint="create it first (a Directory before this Command), or fix cwd=",
            )
        if not os.path.isdir(self._cwd):
            raise DeployError(f"working directory {self._cwd} is not a directory", hint="fix cwd=")
        if error is not None:
            raise DeployError(
                f"cannot enter working directory {self._cwd}: {error.strerror}",
                hint="fix cwd= or the directory's permissions",
            )

    def update(self) -> None:
        text = self._text
        if self._env:
            self.log("env: %s (values not shown)", ", ".join(self._env))
        if self._dependencies:
            self._pending.set()  # Already set unless nothing updated before.
        try:
            stdout, stderr, returncode = self._run(self._command)
        except CommandError as exc:
            if exc.returncode is None:  # timed out (the error is redacted)
                self.log("ran %s: timed out", text)
                self._log_output(exc.stdout, exc.stderr)
            raise
        self.log("ran %s: exit code %d", text, returncode)
        self._log_output(self._redact(stdout), self._redact(stderr))
        if returncode != 0:
            reason = _CANNOT_RUN.get(returncode)
            raise self._error(
                f"command exited with {returncode}"
                + (f" ({reason})" if reason else "")
                + f": {text}",
                text,
                returncode,
                stdout,
                stderr,
                hint="the run's log has the end of its output; fix the command or what it needs",
            )
        self._pending.clear()
        if self._creates is not None and not os.path.lexists(self._creates):
            raise NotConvergedError(
                f"{text} ran, but did not create {self._creates}",
                hint="make the command create that path, or fix creates= "
                "(relative to cwd= when given, else to the workdir)",
            )

    def _log_output(self, stdout: str, stderr: str) -> None:
        """Log the ends of (redacted) outputs."""
        if stdout.strip():
            self.log("stdout:\n%s", output_tail(stdout))
        if stderr.strip():
            self.log("stderr:\n%s", output_tail(stderr))
