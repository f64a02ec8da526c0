"""Errors of the executor and of the component API.

Every error a user can cause derives from :class:`ConsignError` and carries
what went wrong, where (host, component breadcrumb, file:line), and what to
do next. Anything else that escapes is a bug in consign and is reported as
such by the command line.

    ConsignError                   bad input or a failed operation; user-facing
    ├── ConfigurationError         configure found a problem in the deployment
    │   ├── ComponentLoadError     a component file failed to load
    │   ├── UnknownKeywordError    constructor keywords that are no attributes
    │   ├── MissingNamevarError    a component needs its first positional argument
    │   ├── AttributeValueError    an attribute has no value, or conversion failed
    │   ├── OverrideError          an override names no attribute of the root
    │   ├── TemplateError          a template failed to render
    │   ├── UnknownSecretFile      environment.secret_files has no such name (also a KeyError)
    │   └── ModeError              a file mode that is not octal or rwx notation
    ├── ErrorList                  several errors at once (a build, a host's configure)
    ├── StateError                 the state directory cannot be read or written
    ├── LockedError                another apply holds the state directory's lock
    ├── HostConfigError            the executor config (executor.toml) is unusable
    ├── RuntimeFailure             the bundle's runtime cannot be made, started, or crashed
    ├── ReportedError (protocol)   an error the runtime reported, with its code and traceback
    │   (from the runtime: InternalError, a bug; ModelError, a model it cannot read)
    ├── DeployError                applying a component failed
    │   ├── CommandError           a command exited non-zero or timed out
    │   ├── NotConvergedError      update() ran but verify() still fails
    │   └── RunTimeoutError        the whole run exceeded its time limit
    └── RefusedError               input the executor will not accept
        ├── BundleError            not a bundle, truncated, or damaged
        ├── WrongTargetError       a bundle for another host or environment
        ├── SignatureError         unsigned, or no signature by a trusted key
        ├── RollbackError          older than the newest bundle this host accepted
        ├── SecretsKeyError        this host's identity cannot decrypt the bundle's secrets
        └── TrustError             the allowed signers file cannot be used

Both command lines map these to exit codes in one place (:class:`ExitCode`).

(:class:`UpdateNeeded` is no error: it is the signal verify() raises.)
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable, Sequence


class ConsignError(Exception):
    """A problem the user can fix: what, where, and what to do next."""

    code = "consign-error"
    # The next step for errors of this family that name none of their own.
    default_hint: str | None = None

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        hint: str | None = None,
        hosts: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint if hint is not None else self.default_hint
        self.hosts: tuple[str, ...] = tuple(hosts)

    def for_host(self, host: str) -> ConsignError:
        """Return this error tagged with the host it occurred on."""
        self.hosts = tuple(sorted({*self.hosts, host}))
        return self

    def merge_key(self) -> tuple[str, str, str, str]:
        """Identical errors on several hosts share this key."""
        return (self.code, self.where or "", self.message, self.hint or "")

    def parts(self) -> list[ConsignError]:
        """The single errors this one stands for (several, for a collection)."""
        return [self]

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "where": self.where,
            "hint": self.hint,
            "hosts": list(self.hosts),
            "errors": [e.to_json() for e in self.parts()] if self.parts() != [self] else [],
        }

    def render(self) -> str:
        lines = []
        head = f"{self.where}: {self.message}" if self.where else self.message
        lines.append(head)
        if self.hosts:
            lines.append(f"  on {', '.join(self.hosts)}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


class ConfigurationError(ConsignError):
    code = "configuration-error"


class ComponentLoadError(ConfigurationError):
    code = "component-load-error"


class UnknownKeywordError(ConfigurationError):
    code = "unknown-keyword"


class MissingNamevarError(ConfigurationError):
    code = "missing-namevar"


class AttributeValueError(ConfigurationError):
    code = "attribute-value"


class OverrideError(ConfigurationError):
    code = "unknown-override"


class TemplateError(ConfigurationError):
    code = "template-error"


class UnknownSecretFile(ConfigurationError, KeyError):
    """A KeyError too, so that ``secret_files.get(name)`` works."""

    code = "unknown-secret-file"

    def __str__(self) -> str:
        return self.render()


class ModeError(ConfigurationError):
    code = "bad-mode"


class DeployError(ConsignError):
    code = "deploy-error"


class CommandError(DeployError):
    code = "command-failed"

    def __init__(
        self,
        message: str,
        *,
        command: str,
        returncode: int | None,
        stdout: str,
        stderr: str,
        where: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, where=where, hint=hint)
        self.command = command
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class NotConvergedError(DeployError):
    code = "not-converged"


class RunTimeoutError(DeployError):
    code = "run-timeout"


class StateError(ConsignError):
    """The executor's state directory cannot be used."""

    code = "state-directory"


class LockedError(ConsignError):
    """Another executor holds the state directory's lock (see executor.lock)."""

    code = "locked"


class HostConfigError(ConsignError):
    """The executor config (/etc/consign/executor.toml) cannot be used."""

    code = "host-config"


class RuntimeFailure(ConsignError):
    """The bundle's runtime cannot be made, started, or did not report."""

    code = "runtime"


class RefusedError(ConsignError):
    code = "refused"


class BundleError(RefusedError):
    code = "bad-bundle"
    default_hint = (
        "nothing was changed; copy the bundle again, or rebuild it with 'bundle build' "
        "(a bundle changed after it was built is refused)"
    )


class WrongTargetError(RefusedError):
    code = "wrong-target"


class SignatureError(RefusedError):
    code = "untrusted"


class RollbackError(RefusedError):
    code = "rollback"


class SecretsKeyError(RefusedError):
    """The bundle's secrets cannot be decrypted with this host's identity."""

    code = "secrets-key"


class TrustError(RefusedError):
    """The host's trust configuration (allowed signers) cannot be used."""

    code = "trust-file"


def merge_errors(errors: Sequence[ConsignError]) -> list[ConsignError]:
    """Merge identical errors from several hosts into one; sort the result.

    The builder reports every problem of a build at once; an error in a
    component used on thirty hosts should read once, "on web1, web2, ...".
    """
    merged: dict[tuple[str, str, str, str], ConsignError] = {}
    for error in errors:
        key = error.merge_key()
        if key in merged:
            merged[key].hosts = tuple(sorted({*merged[key].hosts, *error.hosts}))
        else:
            merged[key] = error
    return sorted(merged.values(), key=lambda e: (natural_key(e.where or ""), e.message, e.hosts))


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders 'cfg:3' before 'cfg:12'."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part
    )


class ErrorList(ConsignError):
    """Several errors reported together: merged across hosts and sorted."""

    code = "errors"

    def __init__(self, errors: Sequence[ConsignError], summary: str) -> None:
        self.errors = merge_errors(errors)
        super().__init__(summary)

    def parts(self) -> list[ConsignError]:
        return list(self.errors)

    def render(self) -> str:
        return "\n".join(error.render() for error in self.errors) + "\n" + self.message


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` was probably meant to be, for "did you mean" hints."""
    matches = difflib.get_close_matches(name, list(known), n=1)
    return matches[0] if matches else None


def suggest(name: str, known: Sequence[str]) -> str:
    """A hint: "did you mean 'x'?", or the list of known names."""
    guess = closest(name, known)
    if guess is not None:
        return f"did you mean {guess!r}?"
    return f"known: {', '.join(known) or '(none)'}"


def count(number: int, noun: str) -> str:
    """'1 error', '2 errors'."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


class ExitCode(enum.IntEnum):
    """Exit codes of both command lines (documented in the README)."""

    OK = 0
    FAILED = 1  # the run or the build failed
    USAGE = 2  # the command line is wrong
    REFUSED = 3  # input refused: not a bundle, damaged, for another host
    INTERNAL = 4  # a bug in consign
    LOCKED = 5  # another apply held the lock for longer than --wait


def exit_code_for(error: ConsignError) -> ExitCode:
    if isinstance(error, RefusedError):
        return ExitCode.REFUSED
    if isinstance(error, LockedError):
        return ExitCode.LOCKED
    return ExitCode.FAILED
