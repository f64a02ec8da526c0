"""Errors of the builder.

Builder errors reuse the executor's base class, so that one renderer serves
both command lines. The families:

    ConsignError (executor.errors)
    └── BuildError                  the build cannot go on
        ├── RepositoryError         not a deployment repository, or git failed
        ├── EnvironmentNotFound     no such environment (lists the existing ones)
        ├── EnvironmentFileError    a problem in an environment file (file:line)
        ├── UnknownComponentError   the environment names a component nobody defines
        ├── SigningKeyError         a signing key cannot be read, written, or used
        ├── SecretsError            an environment's secrets cannot be read or written
        │   ├── SecretsFileError    a problem in a decrypted secrets.cfg (file:line)
        │   ├── AgeIdentityError    an identity file cannot be read or used
        │   ├── NotARecipientError  no identity decrypts a secrets file
        │   └── EditorError         the editor failed (EditRejected: the edit was kept)
        └── RuntimeBuildError       the runtime (pex) cannot be resolved or built
    ErrorList (executor.errors)
    ├── SecretsParseFailed          several problems in one secrets.cfg
    └── BuildFailed                 every error of a build, collected across all hosts
"""

from __future__ import annotations

from collections.abc import Sequence

from executor.errors import ConsignError, ErrorList, count


class BuildError(ConsignError):
    code = "build-error"


class RepositoryError(BuildError):
    code = "repository-error"


class EnvironmentNotFound(BuildError):
    code = "environment-not-found"


class EnvironmentFileError(BuildError):
    code = "environment-file"


class UnknownComponentError(BuildError):
    code = "unknown-component"


class SigningKeyError(BuildError):
    """A signing key is missing, unusable, or its ssh-agent does not sign."""

    code = "signing-key"


class BuildFailed(ErrorList):
    """The build found errors; all of them, merged across hosts and sorted."""

    code = "build-failed"

    def __init__(self, errors: Sequence[ConsignError], notes: Sequence[str] = ()) -> None:
        super().__init__(errors, "")
        self.message = f"the build found {count(len(self.errors), 'error')}; nothing was written"
        # Notes on the environment, shown with the errors.
        self.notes = tuple(notes)


class RuntimeBuildError(BuildError):
    """Resolving or building the bundle's runtime failed; says what to change."""

    code = "runtime"


class SecretsError(BuildError):
    code = "secrets"


class SecretsFileError(SecretsError):
    code = "secrets-file"


class SecretsParseFailed(ErrorList):
    """Every problem of one secrets.cfg, sorted by line."""

    code = "secrets-file"


class AgeIdentityError(SecretsError):
    code = "age-identity"


class NotARecipientError(SecretsError):
    """None of the operator's identities is a recipient of a secrets file."""

    code = "not-a-recipient"


class EditorError(SecretsError):
    code = "editor"


class EditRejected(EditorError):
    """An edit that was not saved; it is kept, encrypted, as a .rejected file."""

    code = "edit-rejected"
