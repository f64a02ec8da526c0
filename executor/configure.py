"""Configuring a host's root components from its model.

The builder calls this for every host of an environment, the executor for
its own host only; both must build the same tree, which the model records
(:attr:`RootRecord.tree`) and the executor checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from dataclasses import dataclass

from .redact import mask_url, redact
from .component import Component, user_location
from .environment import Environment, Host
from .errors import ConfigurationError, ConsignError, ErrorList, count
from .loader import Registry, load_components
from .model import HostModel, RootRecord
from .resources import FrozenResources
from .secrets import HostSecrets, SecretFiles, merge
from .utils import family_defaults



@dataclass
class ConfiguredRoot:
    record: RootRecord
    component: Component


def runtime_objects(
    model: HostModel,
    *,
    target_directory: str | None = None,
    base_dir: str | None = None,
    secret_files: SecretFiles | None = None,
) -> tuple[Host, Environment]:
    environment = Environment(
        model.environment, target_directory=target_directory, base_dir=base_dir
    )
    if secret_files is not None:
        environment.secret_files = secret_files
    host = Host(model.host, model.environment.service_user)
    return host, environment


def configure_host(
    model: HostModel,
    registry: Registry,
    *,
    target_directory: str | None = None,
    base_dir: str | None = None,
    secret_files: SecretFiles | None = None,
) -> tuple[list[ConfiguredRoot], list[ConsignError]]:
    """Configure every root of `model` on its host; collect the errors of all roots.

    require() answers with what the build recorded (the executor configures
    only its own roots, so it cannot ask the providers).
    """
    host, environment = runtime_objects(
        model, target_directory=target_directory, base_dir=base_dir, secret_files=secret_files
    )
    environment.resources = FrozenResources(
        {
            (record.name, requirement.key, requirement.host): requirement.values
            for record in model.roots
            for requirement in record.requires
        }
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
    record: RootRecord,
    registry: Registry,
    host: Host,
    environment: Environment,
    override_locations: Mapping[str, str] | None = None,
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
        override_locations=override_locations,
    )
    return component


def walk(component: Component) -> Iterator[Component]:
    """The component and all its descendants, depth first, parents first."""
    yield component
    for child in component.sub_components:
        yield from walk(child)


def _places(environment: Environment) -> list[tuple[str, str]]:
    places = [(environment.target_directory, "{target}"), (os.path.expanduser("~"), "{home}")]
    if environment.base_dir:
        places.append((environment.base_dir, "{repository}"))
    # Longest first: a target inside the home directory is {target}.
    return sorted(((p.rstrip("/") or "/", t) for p, t in places), key=lambda p: -len(p[0]))


def _abstract(value: str, places: list[tuple[str, str]]) -> str:
    for prefix, token in places:
        if value == prefix or value.startswith(prefix + "/"):
            return token + value[len(prefix) :]
    return value


def tree_of(component: Component, secrets: Iterable[str] = ()) -> tuple[str, ...]:
    """Breadcrumbs of a configured tree, with machine-specific places abstracted.

    The builder and the host see the target directory (``--target-dir``),
    the repository (a checkout, or the host's store) and the home directory
    at different paths; both trees write them as ``{target}``,
    ``{repository}`` and ``{home}``, so that equal configurations compare
    equal and the model holds no path of the machine that built it. URL
    credentials in names (a Download's URL) and the host's `secrets` (a
    Command's text) are masked.
    """
    places = _places(component.environment)
    hidden = list(secrets)
    trees = []
    for c in walk(component):
        parts = []
        node: Component | None = c
        while node is not None:
            name = type(node).namevar
            if name:
                # Masked: the tree travels in the bundle and shows in errors.
                value = redact(mask_url(_abstract(str(node.__dict__.get(name)), places)), hidden)
                parts.append(f"{type(node).__name__}({value!r})")
            else:
                parts.append(type(node).__name__)
            node = node.parent
        trees.append(" > ".join(reversed(parts)))
    return tuple(trees)


def first_tree_difference(expected: tuple[str, ...], actual: tuple[str, ...]) -> str | None:
    """Describe the first place where two trees differ, or None."""
    for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want != got:
            return f"component {index + 1}: the build had {want!r}, this host has {got!r}"
    if len(expected) > len(actual):
        return f"the build had {expected[len(actual)]!r}, which this host does not configure"
    if len(actual) > len(expected):
        return f"this host configures {actual[len(expected)]!r}, which the build did not"
    return None


def configure_for_host(
    model: HostModel, repository: str, target: str | None, secrets: HostSecrets | None = None
) -> tuple[list[ConfiguredRoot], ConsignError | None]:
    """Load the snapshot's components, configure this host's roots with its
    secrets merged in, and check that they form the trees the build recorded."""
    secrets = secrets or HostSecrets()
    registry, errors = load_components(Path(repository))
    if errors:
        return [], ErrorList(errors, f"{count(len(errors), 'component file')} failed to load")
    try:
        model = merge(model, secrets)
    except ConsignError as error:
        return [], error
    configured, errors = configure_host(
        model,
        registry,
        target_directory=target,
        base_dir=repository,
        secret_files=SecretFiles(dict(secrets.files), secrets.names),
    )
    if errors:
        return [], ErrorList(errors, f"configure failed on this host ({count(len(errors), 'error')})")
    hidden = secrets.values()
    for root in configured:
        difference = first_tree_difference(root.record.tree, tree_of(root.component, hidden))
        if difference:
            return [], ConfigurationError(
                f"configure on this host built another tree than the build did: {difference}",
                where=root.record.name,
                hint="configure must not depend on the host it runs on; "
                "compute host-specific values in verify/update",
            )
    return configured, None
