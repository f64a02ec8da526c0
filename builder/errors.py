"""Errors of the builder.

Builder errors reuse the executor's base class, so that one renderer serves
both command lines. The families:

    ConsignError (executor.errors)
    └── BuildError                  the build cannot go on
        ├── RepositoryError         not a deployment repository, or git failed
        ├── EnvironmentNotFound     no such environment (lists the existing ones)
        ├── EnvironmentFileError    a problem in an environment file (file:line)
        ├── UnknownComponentError   the environment names a component nobody defines
        └── BuildFailed             many errors, collected across all hosts
"""

from __future__ import annotations

from collections.abc import Sequence

from executor.errors import ConsignError, merge_errors


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


class BuildFailed(BuildError):
    """The build found errors; all of them, merged across hosts and sorted."""

    code = "build-failed"

    def __init__(self, errors: Sequence[ConsignError]) -> None:
        self.errors = merge_errors(errors)
        count = len(self.errors)
        super().__init__(
            f"the build found {count} error{'s' if count != 1 else ''}; nothing was written"
        )

    def parts(self) -> list[ConsignError]:
        return list(self.errors)

    def render(self) -> str:
        return "\n".join(error.render() for error in self.errors) + "\n" + self.message
