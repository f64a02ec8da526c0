"""Configuring a host's root components from its model.

The builder calls this for every host of an environment, the executor for
its own host only; both must build the same tree, which the model records
(:attr:`RootRecord.tree`) and the executor checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .component import Component, user_location
from .environment import Environment, Host
from .errors import ConfigurationError, ConsignError
from .loader import Registry
from .model import HostModel, RootRecord
from .utils import family_defaults

TARGET_PLACEHOLDER = "{target}"


@dataclass
class ConfiguredRoot:
    record: RootRecord
    component: Component


def runtime_objects(
    model: HostModel, *, target_directory: str | None = None, base_dir: str | None = None
) -> tuple[Host, Environment]:
    environment = Environment(
        model.environment, target_directory=target_directory, base_dir=base_dir
    )
    host = Host(model.host, model.environment.service_user)
    return host, environment


def configure_host(
    model: HostModel,
    registry: Registry,
    *,
    target_directory: str | None = None,
    base_dir: str | None = None,
) -> tuple[list[ConfiguredRoot], list[ConsignError]]:
    """Configure every root of `model`; collect the errors of all roots."""
    host, environment = runtime_objects(
        model, target_directory=target_directory, base_dir=base_dir
    )
    configured: list[ConfiguredRoot] = []
    errors: list[ConsignError] = []
    with family_defaults(model.environment.require_v4, model.environment.require_v6):
        for record in model.roots:
            try:
                component = configure_root(record, registry, host, environment)
            except ConsignError as exc:
                errors.append(exc)
                continue
            configured.append(ConfiguredRoot(record, component))
    return configured, errors


def configure_root(
    record: RootRecord, registry: Registry, host: Host, environment: Environment
) -> Component:
    """Instantiate and configure one root component."""
    cls = registry.classes.get(record.name)
    if cls is None:
        raise ConfigurationError(
            f"no component {record.name!r} in this deployment",
            hint=f"known components: {', '.join(registry.names()) or '(none)'}",
        )
    try:
        component = cls()
    except Exception as exc:  # noqa: BLE001 - a root's constructor is user code
        error = exc if isinstance(exc, ConsignError) else ConfigurationError(
            f"creating the root component raised {type(exc).__name__}: {exc}"
        )
        location = user_location(exc) or registry.files[record.name]
        if not error.where:
            error.where = f"root {record.name!r} ({location})"
        error.hint = error.hint or "a root component is created without arguments"
        raise error from exc
    component.prepare_root(
        name=record.name,
        host=host,
        environment=environment,
        defdir=registry.defdirs[record.name],
        features=record.features,
        overrides=record.overrides,
    )
    return component


def walk(component: Component) -> Iterator[Component]:
    """The component and all its descendants, depth first, parents first."""
    yield component
    for child in component.sub_components:
        yield from walk(child)


def tree_of(component: Component, target_directory: str) -> tuple[str, ...]:
    """Breadcrumbs of a configured tree, with the target directory abstracted.

    The executor may place the deployment elsewhere (``--target-dir``), so
    the target directory is written as ``{target}`` in both trees.
    """
    return tuple(
        c._breadcrumbs.replace(target_directory, TARGET_PLACEHOLDER) for c in walk(component)
    )


def first_tree_difference(expected: tuple[str, ...], actual: tuple[str, ...]) -> str | None:
    """Describe the first place where two trees differ, or None."""
    for index, (want, got) in enumerate(zip(expected, actual)):
        if want != got:
            return f"component {index + 1}: the build had {want!r}, this host has {got!r}"
    if len(expected) > len(actual):
        return f"the build had {expected[len(actual)]!r}, which this host does not configure"
    if len(actual) > len(expected):
        return f"this host configures {actual[len(expected)]!r}, which the build did not"
    return None
