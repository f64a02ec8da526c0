"""``bundle build``: evaluate an environment once, write one bundle per host.

Snapshot the repository, and read everything from the snapshot (the
environment file, the components, their templates), so that the builder
configures exactly what hosts will configure. Check what the environment
names, configure every host's roots, and collect every error on the way:
one problem on thirty hosts reads once, all problems are reported together,
and nothing is written unless the whole build is clean.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from executor import bundle as _bundle
from executor.component import accepts_attribute, attribute_names
from executor.configure import configure_host, tree_of
from executor.errors import ConsignError, OverrideError, suggest
from executor.fs import fsync_directory, stage_file
from executor.loader import Registry, load_components
from executor.model import HostModel, HostRecord, RootRecord, SkippedRoot, encode_model
from executor.snapshot import extract_tar, write_tar

from .environment import EnvironmentConfig, HostConfig, load_environment
from .errors import BuildError, BuildFailed, UnknownComponentError
from .repository import Repository

BUNDLE_SUFFIX = ".bundle"


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
    removed: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()


def fqdn(name: str, host_domain: str | None) -> str:
    if not host_domain or name.endswith("." + host_domain):
        return name
    return f"{name}.{host_domain}"


Overrides = dict[str, tuple[tuple[str, str], ...]]


class _Build:
    """One build: its inputs, and the errors found so far."""

    def __init__(self, options: BuildOptions, config: EnvironmentConfig, registry: Registry) -> None:
        self.options = options
        self.config = config
        self.registry = registry
        self.errors: list[ConsignError] = []

    def _unknown_component(self, name: str) -> bool:
        # A component directory that failed to load already has its error.
        return name not in self.registry.classes and name not in self.registry.failed

    def check_names(self) -> None:
        config, known = self.config, self.registry.names()
        for host in config.hosts:
            for assignment in (*host.roots, *host.skipped):
                if self._unknown_component(assignment.component):
                    self.errors.append(
                        UnknownComponentError(
                            f"host {host.name!r} names component {assignment.component!r}, "
                            "which this deployment does not define",
                            where=str(assignment.location),
                            hint=suggest(assignment.component, known),
                        )
                    )
        for section in config.overrides:
            if self._unknown_component(section.component):
                self.errors.append(
                    UnknownComponentError(
                        f"[component:{section.component}] overrides a component this "
                        "deployment does not define",
                        where=str(section.location),
                        hint=suggest(section.component, known),
                    )
                )
        host_names = [h.name for h in config.hosts]
        options = (("--host", self.options.hosts), ("--skip-host", self.options.skip_hosts))
        for option, names in options:
            for name in names:
                if name not in host_names:
                    self.errors.append(
                        BuildError(
                            f"{option} {name}: environment {config.name!r} has no such host",
                            hint=suggest(name, host_names),
                        )
                    )
        listed = sorted({a.component for h in config.hosts for a in (*h.roots, *h.skipped)})
        for name in self.options.skip_components:
            if name.lower() not in listed:
                self.errors.append(
                    BuildError(
                        f"--skip-component {name}: no host of {config.name!r} has this component",
                        hint=suggest(name.lower(), listed),
                    )
                )

    def overrides(self) -> tuple[Overrides, dict[str, dict[str, str]]]:
        """Valid overrides by component, and where each was written."""
        values: Overrides = {}
        locations: dict[str, dict[str, str]] = {}
        for section in self.config.overrides:
            cls = self.registry.classes.get(section.component)
            if cls is None:
                continue
            valid = []
            for override in section.overrides:
                if accepts_attribute(cls, override.attribute):
                    valid.append((override.attribute, override.value))
                    locations.setdefault(section.component, {})[override.attribute] = str(
                        override.location
                    )
                    continue
                self.errors.append(
                    OverrideError(
                        f"[component:{section.component}] sets {override.attribute!r}, "
                        f"which {cls.__name__} does not have",
                        where=str(override.location),
                        hint=suggest(override.attribute, attribute_names(cls)),
                    )
                )
            values[section.component] = tuple(sorted(valid))
        return values, locations

    def host_model(self, host: HostConfig, overrides: Overrides) -> HostModel:
        skip = {name.lower() for name in self.options.skip_components}
        roots: list[RootRecord] = []
        skipped = [
            SkippedRoot(a.component, f"skipped in the environment ({a.location})")
            for a in host.skipped
        ]
        for assignment in host.roots:
            if assignment.component in skip:
                skipped.append(SkippedRoot(assignment.component, "skipped by --skip-component"))
            elif assignment.component in self.registry.classes:
                roots.append(
                    RootRecord(
                        name=assignment.component,
                        features=assignment.features,
                        overrides=overrides.get(assignment.component, ()),
                    )
                )
        record = self.config.record()
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

    def configure(
        self, model: HostModel, base_dir: Path, locations: dict[str, dict[str, str]]
    ) -> HostModel:
        """Configure the host's roots; record each root's tree in the model."""
        configured, errors = configure_host(
            model, self.registry, base_dir=str(base_dir), override_locations=locations
        )
        self.errors.extend(error.for_host(model.host.name) for error in errors)
        trees = {c.record.name: tree_of(c.component) for c in configured}
        roots = tuple(replace(r, tree=trees.get(r.name, ())) for r in model.roots)
        return replace(model, roots=roots)

    def select(self, host: HostConfig) -> str | None:
        """Why `host` gets no bundle in this build, or None."""
        if self.options.hosts and host.name not in self.options.hosts:
            return "not selected by --host"
        if host.ignored:
            return f"ignored in the environment ({host.location})"
        if host.name in self.options.skip_hosts:
            return "skipped by --skip-host"
        return None


def build(options: BuildOptions) -> BuildResult:
    """Build the bundles of one environment; raise BuildFailed on any error."""
    repository = Repository.open(options.repository)
    out = (options.out or repository.root / "bundles").resolve()
    snapshot = write_tar(repository.files(exclude=out), repository.source_time())
    with tempfile.TemporaryDirectory(prefix="consign-build-") as scratch:
        tree = Path(scratch, "repository")
        # Configure from what hosts receive, not from the working tree: a
        # file git ignores must fail the build, not the deploy.
        extract_tar(snapshot, str(tree))
        models, skipped_hosts, notes = _configure_all(options, tree)
    return _write(options, models, skipped_hosts, notes, _bundle.compress(snapshot), out)


def _configure_all(
    options: BuildOptions, tree: Path
) -> tuple[list[HostModel], list[SkippedHost], tuple[str, ...]]:
    config, environment_errors = load_environment(tree, options.environment, platform=options.platform)
    if config is None:
        if len(environment_errors) == 1:
            raise environment_errors[0]
        raise BuildFailed(environment_errors)
    registry, load_errors = load_components(tree)
    run = _Build(options, config, registry)
    run.errors.extend(environment_errors)
    run.errors.extend(load_errors)
    run.check_names()
    overrides, locations = run.overrides()
    models: list[HostModel] = []
    skipped_hosts: list[SkippedHost] = []
    for host in config.hosts:
        reason = run.select(host)
        if reason is not None:
            skipped_hosts.append(SkippedHost(host.name, reason))
            continue
        models.append(run.configure(run.host_model(host, overrides), tree, locations))
    if run.errors:
        raise BuildFailed(run.errors, notes=config.notes)
    return models, skipped_hosts, config.notes


def _write(
    options: BuildOptions,
    models: list[HostModel],
    skipped_hosts: list[SkippedHost],
    notes: tuple[str, ...],
    snapshot: bytes,
    out: Path,
) -> BuildResult:
    directory = out / options.environment
    directory.mkdir(parents=True, exist_ok=True)
    # Stage every bundle, then rename them all: a failure midway leaves the
    # previous bundles in place.
    staged: list[tuple[str, Path]] = []
    built = []
    try:
        for model in models:
            path = directory / f"{model.host.name}{BUNDLE_SUFFIX}"
            parts = _bundle.bundle_parts(
                environment=options.environment,
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
    removed = _remove_stale(options, directory, {h.path for h in built})
    fsync_directory(str(directory))
    return BuildResult(
        environment=options.environment,
        out=directory,
        hosts=tuple(built),
        skipped_hosts=tuple(skipped_hosts),
        removed=removed,
        notes=notes,
    )


def _remove_stale(options: BuildOptions, directory: Path, written: set[Path]) -> tuple[Path, ...]:
    """After a whole-environment build, only this build's bundles remain.

    A bundle of a host that was removed, ignored or skipped would otherwise
    wait to be applied by mistake. A build of selected hosts (--host)
    replaces those and leaves the others alone.
    """
    if options.hosts:
        return ()
    stale = sorted(p for p in directory.glob(f"*{BUNDLE_SUFFIX}") if p not in written)
    for path in stale:
        path.unlink()
    return tuple(stale)
