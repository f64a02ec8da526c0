"""Service discovery: what ``provide`` and ``require`` talk to.

In the builder the resources are live: every host's roots provide and
require in one registry, configured until nothing changes (see
:mod:`builder.discovery`). On a host they are frozen: the executor
configures only its own roots, and ``require`` answers with the values the
builder recorded for them in the model, as plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .errors import ConfigurationError


class Resources(Protocol):
    def provide(self, host: str, root: str, key: str, value: Any) -> None: ...

    def require(
        self,
        host: str,
        root: str,
        key: str,
        provider_host: str | None,
        strict: bool,
        reverse: bool,
        dirty: bool,
    ) -> list[Any]: ...


class UnsatisfiedRequirement(ConfigurationError):
    """A strict require found no value (yet: the builder may try again)."""

    code = "unsatisfied"

    def __init__(self, key: str, provider_host: str | None) -> None:
        where = f" on host {provider_host!r}" if provider_host else ""
        super().__init__(
            f"requires {key!r}{where}, which no component provides",
            hint="add a component that calls provide() with this key to the environment, "
            "or require it with strict=False",
        )
        self.key = key
        self.provider_host = provider_host


class NoResources:
    """Outside a build and a host: service discovery has nothing to ask."""

    def provide(self, host: str, root: str, key: str, value: Any) -> None:
        raise ConfigurationError(
            "provide() needs service discovery, which only a build or an apply has",
            hint="configure components through 'bundle build'",
        )

    def require(
        self,
        host: str,
        root: str,
        key: str,
        provider_host: str | None,
        strict: bool,
        reverse: bool,
        dirty: bool,
    ) -> list[Any]:
        raise ConfigurationError(
            "require() needs service discovery, which only a build or an apply has",
            hint="configure components through 'bundle build'",
        )


RequirementKey = tuple[str, str, str | None]  # root, key, provider host


class FrozenResources:
    """On a host: the values the build recorded for each root's requirements."""

    def __init__(self, recorded: Mapping[RequirementKey, Iterable[Any]]) -> None:
        self._recorded = {key: list(values) for key, values in recorded.items()}

    def provide(self, host: str, root: str, key: str, value: Any) -> None:
        # What a root provides matters only to the build, which froze it into
        # the requiring hosts' models already.
        return None

    def require(
        self,
        host: str,
        root: str,
        key: str,
        provider_host: str | None,
        strict: bool,
        reverse: bool,
        dirty: bool,
    ) -> list[Any]:
        recorded = self._recorded.get((root, key, provider_host))
        if recorded is None:
            raise ConfigurationError(
                f"requires {key!r}"
                + (f" on host {provider_host!r}" if provider_host else "")
                + ", which the build did not record for this root",
                hint="configure must require the same things on the host as in the builder; "
                "rebuild the bundle",
            )
        # N.B. imported here: frozen values know components, and components
        # know their environment, which holds these resources.
        from .frozen import thaw

        return [thaw(value) for value in recorded]
