"""``bundle build``: evaluate an environment once, write one bundle per host.

Load the environment and the components, check what the environment names,
configure every host's roots, and collect every error on the way: one
problem on thirty hosts reads once, all problems are reported together, and
nothing is written unless the whole build is clean.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from executor import bundle as _bundle
from executor.component import accepts_attribute, attribute_names
from executor.configure import configure_host, tree_of
from executor.environment import Environment
from executor.errors import ConsignError, OverrideError
from executor.fs import fsync_directory, stage_file
from executor.loader import Registry, load_components
from executor.model import HostModel, HostRecord, RootRecord, SkippedRoot, encode_model
from executor.snapshot import write_tar

from .environment import EnvironmentConfig, HostConfig, load_environment
from .errors import BuildError, BuildFailed, UnknownComponentError
from .repository import Repository


@dataclass(frozen=True)
class BuildOptions:
    environment: str
    repository: Path = Path(".")
    out: Path | None = None
    hosts: tuple[str, ...] = ()
    skip_hosts: tuple[str, ...] = ()
    skip_components: tuple[str, ...] = ()
    platform: str | None = None


@dataclass(frozen=True)
class BuiltHost:
    name: str
    path: Path
    size: int
    roots: tuple[str, ...]
    skipped: tuple[SkippedRoot, ...]


@dataclass(frozen=True)
class SkippedHost:
    name: str
    reason: str


@dataclass(frozen=True)
class BuildResult:
    environment: str
    out: Path
    hosts: tuple[BuiltHost, ...]
    skipped_hosts: tuple[SkippedHost, ...]
    notes: tuple[str, ...] = field(default=())


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known: {', '.join(known) or '(none)'}"


def fqdn(name: str, host_domain: str | None) -> str:
    if not host_domain or name.endswith("." + host_domain):
        return name
    return f"{name}.{host_domain}"


class _Build:
    """One build: the inputs, and the errors found so far."""

    def __init__(self, options: BuildOptions, repository: Repository) -> None:
        self.options = options
        self.repository = repository
        self.errors: list[ConsignError] = []

    def check_names(self, config: EnvironmentConfig, registry: Registry) -> None:
        known = registry.names()
        for host in config.hosts:
            for assignment in (*host.roots, *host.skipped):
                if assignment.component not in registry.classes:
                    self.errors.append(
                        UnknownComponentError(
                            f"host {host.name!r} names component {assignment.component!r}, "
                            "which this deployment does not define",
                            where=str(assignment.location),
                            hint=_suggest(assignment.component, known),
                        )
                    )
        for section in config.overrides:
            if section.component not in registry.classes:
                self.errors.append(
                    UnknownComponentError(
                        f"[component:{section.component}] overrides a component this "
                        "deployment does not define",
                        where=str(section.location),
                        hint=_suggest(section.component, known),
                    )
                )
        host_names = [h.name for h in config.hosts]
        for option, names in (("--host", self.options.hosts), ("--skip-host", self.options.skip_hosts)):
            for name in names:
                if name not in host_names:
                    self.errors.append(
                        BuildError(
                            f"{option} {name}: environment {config.name!r} has no such host",
                            hint=_suggest(name, host_names),
                        )
                    )
        listed = sorted({a.component for h in config.hosts for a in (*h.roots, *h.skipped)})
        for name in self.options.skip_components:
            if name.lower() not in listed:
                self.errors.append(
                    BuildError(
                        f"--skip-component {name}: no host of {config.name!r} has this component",
                        hint=_suggest(name.lower(), listed),
                    )
                )

    def overrides(self, config: EnvironmentConfig, registry: Registry) -> dict[str, tuple[tuple[str, str], ...]]:
        """Valid overrides by component; bad ones become errors."""
        result: dict[str, tuple[tuple[str, str], ...]] = {}
        for section in config.overrides:
            cls = registry.classes.get(section.component)
            if cls is None:
                continue
            valid = []
            for override in section.overrides:
                if accepts_attribute(cls, override.attribute):
                    valid.append((override.attribute, override.value))
                    continue
                self.errors.append(
                    OverrideError(
                        f"[component:{section.component}] sets {override.attribute!r}, "
                        f"which {cls.__name__} does not have",
                        where=str(override.location),
                        hint=_suggest(override.attribute, attribute_names(cls)),
                    )
                )
            result[section.component] = tuple(sorted(valid))
        return result

    def host_model(
        self,
        config: EnvironmentConfig,
        host: HostConfig,
        registry: Registry,
        overrides: dict[str, tuple[tuple[str, str], ...]],
    ) -> HostModel:
        skip = {name.lower() for name in self.options.skip_components}
        roots: list[RootRecord] = []
        skipped: list[SkippedRoot] = []
        for assignment in host.skipped:
            skipped.append(
                SkippedRoot(assignment.component, f"skipped in the environment ({assignment.location})")
            )
        for assignment in host.roots:
            if assignment.component in skip:
                skipped.append(SkippedRoot(assignment.component, "skipped by --skip-component"))
            elif assignment.component in registry.classes:
                roots.append(
                    RootRecord(
                        name=assignment.component,
                        features=assignment.features,
                        overrides=overrides.get(assignment.component, ()),
                    )
                )
        record = config.record()
        return HostModel(
            environment=record,
            host=HostRecord(
                name=host.name,
                fqdn=fqdn(host.name, record.host_domain),
                platform=host.platform,
                data=host.data,
            ),
            roots=tuple(roots),
            skipped=tuple(skipped),
        )

    def configure(self, model: HostModel, registry: Registry) -> HostModel:
        """Configure the host's roots; record each root's tree in the model."""
        configured, errors = configure_host(model, registry, base_dir=str(self.repository.root))
        self.errors.extend(error.for_host(model.host.name) for error in errors)
        target = Environment(model.environment).target_directory
        trees = {c.record.name: tree_of(c.component, target) for c in configured}
        roots = tuple(replace(r, tree=trees.get(r.name, ())) for r in model.roots)
        return replace(model, roots=roots)


def build(options: BuildOptions) -> BuildResult:
    """Build the bundles of one environment; raise BuildFailed on any error."""
    repository = Repository.open(options.repository)
    out = (options.out or repository.root / "bundles").resolve()
    run = _Build(options, repository)
    config, environment_errors = load_environment(
        repository.root, options.environment, platform=options.platform
    )
    if config is None:
        if len(environment_errors) == 1:
            raise environment_errors[0]
        raise BuildFailed(environment_errors)
    run.errors.extend(environment_errors)
    registry, load_errors = load_components(repository.root)
    run.errors.extend(load_errors)
    run.check_names(config, registry)
    overrides = run.overrides(config, registry)

    models: list[HostModel] = []
    skipped_hosts: list[SkippedHost] = []
    for host in config.hosts:
        if options.hosts and host.name not in options.hosts:
            continue
        if host.ignored:
            skipped_hosts.append(SkippedHost(host.name, f"ignored in the environment ({host.location})"))
            continue
        if host.name in options.skip_hosts:
            skipped_hosts.append(SkippedHost(host.name, "skipped by --skip-host"))
            continue
        model = run.host_model(config, host, registry, overrides)
        models.append(run.configure(model, registry))
    if run.errors:
        raise BuildFailed(run.errors)

    files = repository.files(exclude=out)
    snapshot = _bundle.compress(write_tar(files, repository.source_time()))
    directory = out / config.name
    directory.mkdir(parents=True, exist_ok=True)
    # Stage every bundle, then rename them all: a failure midway leaves the
    # previous bundles in place.
    staged: list[tuple[str, Path]] = []
    built = []
    try:
        for model in models:
            path = directory / f"{model.host.name}.bundle"
            parts = _bundle.bundle_parts(
                environment=config.name,
                host=model.host.name,
                blobs=[("repo", snapshot), ("model", encode_model(model))],
            )
            staged.append((stage_file(str(path), parts, mode=0o644), path))
            built.append(
                BuiltHost(
                    name=model.host.name,
                    path=path,
                    size=sum(len(p) for p in parts),
                    roots=tuple(r.name for r in model.roots),
                    skipped=model.skipped,
                )
            )
    except BaseException:
        for temporary, _path in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        raise
    for temporary, path in staged:
        os.rename(temporary, path)
    fsync_directory(str(directory))
    return BuildResult(
        environment=config.name,
        out=directory,
        hosts=tuple(built),
        skipped_hosts=tuple(skipped_hosts),
        notes=config.notes,
    )

