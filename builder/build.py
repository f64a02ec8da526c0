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
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, cast

from executor import __version__
from executor import bundle as _bundle
from executor.component import accepts_attribute, attribute_names
from executor.component import Component
from executor.configure import configure_root, runtime_objects, tree_of
from executor.dns import Recorder, overrides_table, recording, resolving
from executor.decode import DecodeError
from executor.errors import ConfigurationError, ConsignError, OverrideError, suggest
from executor.fs import HashingWriter, fsync_directory, stage_file
from executor.redact import redact_error
from executor.canonical import CanonicalError
from executor.secrets import HostSecrets, SecretFiles, decode_secrets, encode_secrets
from executor.loader import Registry, load_components
from executor.manifest import BlobEntry, Compression, Manifest, Source, encode_manifest
from executor.manifest import Target as ManifestTarget
from executor.model import (
    DnsRecord,
    HostModel,
    HostRecord,
    RequirementRecord,
    RootRecord,
    SkippedRoot,
    encode_model,
    model_from_data,
    model_to_data,
)
from executor.utils import family_defaults
from executor.snapshot import SnapshotFile, extract_tar, write_tar

from .discovery import LiveResources, RootId, configure_all
from .environment import ENVIRONMENTS_DIR, EnvironmentConfig, HostConfig, load_environment
from .errors import (
    BuildError,
    BuildFailed,
    RepositoryError,
    SecretsError,
    SigningKeyError,
    UnknownComponentError,
)
from .hostsecrets import EnvironmentSecrets, MergedSecrets, leaks, merge_secrets, read_secrets, seal, split
from .repository import Repository, Status, last_change, source_date_epoch
from .runtime import (
    ImportAudit,
    Progress,
    Requirements,
    RuntimeBlob,
    Target,
    cache_directory,
    conflicts,
    host_target,
    import_environment,
    own_python,
    read_requirements,
    runtime_blob,
)
from .signing import Signer, load_signers, sign_all

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
    # Build a working tree with uncommitted changes (or outside git).
    dirty: bool = False
    serial: int | None = None
    # Signing keys: private key files, or .pub files of keys in ssh-agent.
    sign_keys: tuple[Path, ...] = ()
    # The one clock the builder reads: serial and time of --dirty builds.
    clock: Callable[[], int] = field(default=lambda: int(time.time()), compare=False)
    # Runtime builds are cached here [default: CONSIGN_CACHE_DIR, ~/.cache/consign].
    cache: Path | None = None
    # Told what the build is doing when it takes long (resolving a runtime).
    progress: Progress | None = field(default=None, compare=False)
    # Decrypt the environment's secrets with these (else CONSIGN_AGE_IDENTITIES, ...).
    identities: tuple[Path, ...] = ()


@dataclass(frozen=True)
class BuiltHost:
    name: str
    path: Path
    size: int
    roots: tuple[str, ...]
    skipped: tuple[SkippedRoot, ...]
    # What of the host's secrets its bundle carries (names, never values).
    secrets: tuple[str, ...] = ()


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
    serial: int
    source: Source
    signers: tuple[str, ...]
    key_paths: tuple[Path, ...]
    removed: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()
    # Hosts in the order they must apply (cross-host requirements).
    waves: tuple[tuple[str, ...], ...] = ()
    # The identity files that decrypted the environment's secrets.
    identity_paths: tuple[Path, ...] = ()


def fqdn(name: str, host_domain: str | None) -> str:
    if not host_domain or name.endswith("." + host_domain):
        return name
    return f"{name}.{host_domain}"


Overrides = dict[str, tuple[tuple[str, str], ...]]


class _Build:
    """One build: its inputs, and the errors found so far."""

    def __init__(
        self,
        options: BuildOptions,
        config: EnvironmentConfig,
        registry: Registry,
        secrets: MergedSecrets | None = None,
    ) -> None:
        self.options = options
        self.config = config
        self.registry = registry
        self.secrets = secrets or MergedSecrets()
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
        self, models: list[HostModel], base_dir: Path, locations: dict[str, dict[str, str]]
    ) -> tuple[list[HostModel], dict[str, HostSecrets], list[list[str]]]:
        """Configure every host's roots against one registry until they settle;
        record trees, requirements, order and DNS answers in the models, and
        take each host's secrets out of its model. Returns the models, the
        hosts' secrets and the waves hosts must apply in."""
        by_host = {model.host.name: model for model in models}
        roots = [(model.host.name, record.name) for model in models for record in model.roots]
        records = {
            (model.host.name, record.name): record for model in models for record in model.roots
        }
        resources = LiveResources(roots)
        recorders = {name: Recorder() for name in by_host}
        # Each host's own view, to learn which secret files it reads.
        secret_files = {
            name: SecretFiles(self.secrets.files) for name in by_host
        }
        objects = {}
        for name, model in by_host.items():
            host, environment = runtime_objects(
                model, base_dir=str(base_dir), secret_files=secret_files[name]
            )
            environment.resources = resources
            objects[name] = (host, environment)

        def configure(root: RootId) -> Component:
            host, environment = objects[root[0]]
            model = by_host[root[0]]
            with recording(recorders[root[0]]), family_defaults(
                model.environment.require_v4, model.environment.require_v6
            ):
                return configure_root(
                    records[root], self.registry, host, environment, locations.get(root[1])
                )

        def breadcrumb(root: RootId) -> str:
            cls = self.registry.classes.get(root[1])
            return f"{cls.__name__ if cls else root[1]} on {root[0]}"

        table = overrides_table(self.config.resolver)
        with resolving(table):
            outcome = configure_all(roots, configure, resources, breadcrumb)
        for root, error in outcome.errors:
            self.errors.append(error.for_host(root[0]) if root else error)
        updated = []
        selections = {}
        for model in models:
            name = model.host.name
            ordered = [r for r in outcome.order if r[0] == name]
            new_roots = []
            for root in ordered:
                new_roots.append(
                    replace(
                        records[root],
                        requires=tuple(
                            RequirementRecord(r.key, r.provider_host, tuple(r.values))
                            for r in resources.requirements.get(root, [])
                        ),
                        provides=tuple(sorted(resources.published.get(root, {}))),
                        after=tuple(f"{h}/{n}" for h, n in outcome.after.get(root, [])),
                    )
                )
            answers = recorders[name].answers
            public, selection = split(
                replace(
                    model,
                    roots=tuple(new_roots),
                    resolver=tuple(sorted(self.config.resolver)),
                    dns=tuple(
                        DnsRecord(n, answers[n].v4, answers[n].v6) for n in sorted(answers)
                    ),
                ),
                self.secrets,
                secret_files[name],
            )
            # The trees hide this host's secrets, as the host's own will.
            hidden = selection.values()
            trees = {
                root[1]: tree_of(component, hidden) if component is not None else ()
                for root in ordered
                for component in [outcome.components.get(root)]
            }
            final = replace(public, roots=tuple(replace(r, tree=trees[r.name]) for r in public.roots))
            for leak in leaks(final, selection, hidden):
                self.errors.append(
                    SecretsError(
                        f"the clear model of host {name!r} would hold the value of {leak}",
                        hint="a secret value must not appear in names, provided keys or the "
                        "environment file: if it is no secret, move it to the environment file",
                    ).for_host(name)
                )
            updated.append(final)
            selections[name] = selection
        return updated, selections, outcome.waves

    def select(self, host: HostConfig) -> str | None:
        return self.select_host(self.options, host)

    @staticmethod
    def select_host(options: BuildOptions, host: HostConfig) -> str | None:
        """Why `host` gets no bundle in this build, or None."""
        if options.hosts and host.name not in options.hosts:
            return "not selected by --host"
        if host.ignored:
            return f"ignored in the environment ({host.location})"
        if host.name in options.skip_hosts:
            return "skipped by --skip-host"
        return None


@dataclass(frozen=True)
class _Inputs:
    """What the build reads besides the deployment: source state, time, keys."""

    source: Source
    serial: int
    build_time: int
    key_paths: tuple[Path, ...]
    signers: list[Signer]


def _check_clean(options: BuildOptions, status: Status) -> None:
    if status.commit is None and not options.dirty:
        reason = status.changes[0].strip("()")
        raise RepositoryError(
            f"{options.repository} has no commit to build from ({reason}), so its bundles "
            "could not be reproduced",
            hint="commit it with git, or pass --dirty to build the files as they are",
        )
    if status.dirty and not options.dirty:
        shown = ", ".join(status.changes[:5]) + (
            f" and {len(status.changes) - 5} more" if len(status.changes) > 5 else ""
        )
        raise RepositoryError(
            f"the working tree differs from its commit: {shown}",
            hint="commit the changes, or pass --dirty to build the working tree as it is "
            "(such a bundle is not reproducible)",
        )


def _times(options: BuildOptions, status: Status) -> tuple[int, int]:
    """The serial and the build time (also the snapshot's file times).

    A clean tree's moment is its commit, never the clock, so that equal
    sources give equal bytes; SOURCE_DATE_EPOCH overrides the build time.
    """
    epoch = source_date_epoch()
    moment = options.clock() if status.dirty or status.commit_time is None else status.commit_time
    serial = options.serial if options.serial is not None else moment
    return serial, epoch if epoch is not None else moment


def _snapshot_time(
    options: BuildOptions, repository: Repository, status: Status, build_time: int, out: Path
) -> int:
    """The file times of the shipped snapshot: the last commit that changed a
    shipped file, so that a commit touching only environments/ (which stays
    on the builder) leaves the repository blob's bytes, and what pulling
    hosts download, unchanged. Dirty trees, SOURCE_DATE_EPOCH and trees
    outside git use the build time."""
    if status.dirty or source_date_epoch() is not None:
        return build_time
    excluded = [ENVIRONMENTS_DIR]
    with contextlib.suppress(ValueError):
        excluded.append(out.relative_to(repository.root).as_posix())
    changed = last_change(repository, tuple(excluded))
    return changed if changed is not None else build_time


def key_paths(
    given: tuple[Path, ...],
    repository: Repository,
    configured: tuple[str, ...],
    snapshot: set[str],
) -> list[Path]:
    """--sign-key, else CONSIGN_SIGN_KEY, else [environment] sign_key; never a
    private key in the repository snapshot, which every bundle carries."""
    if given:
        paths = list(given)
    elif os.environ.get("CONSIGN_SIGN_KEY", "").strip():
        variable = os.environ["CONSIGN_SIGN_KEY"]
        paths = [Path(p).expanduser() for p in variable.split(os.pathsep) if p.strip()]
    elif configured:
        paths = [repository.root / Path(p).expanduser() for p in configured]
    else:
        raise SigningKeyError(
            "no signing key: every bundle must be signed",
            hint="make one with 'bundle keys generate ~/.config/consign/builder-key', then pass "
            "--sign-key, set CONSIGN_SIGN_KEY, or set sign_key in [environment]",
        )
    for path in paths:
        if path.suffix != ".pub" and _shipped(path, repository, snapshot):
            raise SigningKeyError(
                f"the signing key {path} lies inside the repository {repository.root} and is "
                "part of its snapshot, so it would travel in every bundle",
                hint="move the private key out of the repository (e.g. ~/.config/consign/), or "
                "keep it in ssh-agent and name its .pub file",
            )
    return paths


def _shipped(path: Path, repository: Repository, snapshot: set[str]) -> bool:
    """Whether `path` is a file of the repository snapshot every bundle carries."""
    resolved = path.resolve()
    return (
        resolved.is_relative_to(repository.root)
        and resolved.relative_to(repository.root).as_posix() in snapshot
    )


def _check_identities(secrets: EnvironmentSecrets | None, repository: Repository, snapshot: set[str]) -> None:
    for path in () if secrets is None else secrets.identity_paths:
        if _shipped(path, repository, snapshot):
            raise SecretsError(
                f"the identity {path} lies inside the repository {repository.root} and is part "
                "of its snapshot, so it would travel in every bundle",
                hint="move it out of the repository (e.g. ~/.config/consign/) and pass --identity",
            )


def build(options: BuildOptions) -> BuildResult:
    """Build the bundles of one environment; raise BuildFailed on any error."""
    repository = Repository.open(options.repository)
    out = (options.out or repository.root / "bundles").resolve()
    status = repository.status(exclude=out)
    _check_clean(options, status)
    serial, build_time = _times(options, status)
    with tempfile.TemporaryDirectory(prefix="consign-build-") as scratch:
        tar = os.path.join(scratch, "repo.tar")
        files = repository.files(exclude=out)
        # environments/ stays on the builder: every host's settings, data
        # and overrides are in it, and the models carry what each host needs.
        definitions = [f for f in files if _is_definition(f.name)]
        shipped = [f for f in files if not _is_definition(f.name)]
        raw_size, raw_sha256 = _write_snapshot(
            shipped, _snapshot_time(options, repository, status, build_time, out), tar
        )
        tree = Path(scratch, "repository")
        # Configure from what hosts receive, not from the working tree: a
        # file git ignores must fail the build, not the deploy.
        extract_tar(tar, str(tree))
        environments = Path(scratch, "definitions")
        definitions_tar = os.path.join(scratch, "definitions.tar")
        _write_snapshot(definitions, build_time, definitions_tar)
        extract_tar(definitions_tar, str(environments))
        config, environment_errors = load_environment(
            environments, options.environment, platform=options.platform
        )
        if config is None:
            if len(environment_errors) == 1:
                raise environment_errors[0]
            raise BuildFailed(environment_errors)
        # The keys before any long work: a build that cannot sign, or cannot
        # read the environment's secrets, stops now.
        snapshot = {f.name for f in files}
        try:
            keys = tuple(
                key_paths(options.sign_keys, repository, config.settings.sign_keys, snapshot)
            )
            signers = load_signers(keys)
            secrets = read_secrets(environments, options.environment, options.identities)
            _check_identities(secrets, repository, snapshot)
        except ConsignError as exc:
            if not environment_errors:
                raise
            raise BuildFailed([*environment_errors, exc], notes=config.notes) from None
        config, merged, secret_errors = merge_secrets(config, secrets)
        try:
            models, selections, skipped_hosts, runtimes, waves = _configure_all(
                options, tree, environments, config, [*environment_errors, *secret_errors], merged
            )
        except ConsignError as exc:
            # A configure error may quote an attribute's value.
            raise redact_error(exc, merged.values) from None
        inputs = _Inputs(
            source=Source(commit=status.commit, dirty=status.dirty),
            serial=serial,
            build_time=build_time,
            key_paths=keys,
            signers=signers,
        )
        compressed = os.path.join(scratch, "repo.tar.zst")
        size, sha256 = _bundle.compress_file(tar, compressed)
        repo = BlobEntry("repo", Compression.ZSTD, size, sha256, raw_size, raw_sha256)
        result = _write(
            options,
            inputs,
            [(model, selections[model.host.name]) for model in models],
            skipped_hosts,
            config.notes,
            (repo, compressed),
            runtimes,
            out,
            merged,
        )
        return replace(
            result,
            waves=tuple(tuple(wave) for wave in waves),
            identity_paths=() if secrets is None else secrets.identity_paths,
        )


def _write_snapshot(files: list[SnapshotFile], mtime: int, path: str) -> tuple[int, str]:
    with open(path, "wb") as f:
        hashing = HashingWriter(f)
        write_tar(files, mtime, cast(BinaryIO, hashing))
    return hashing.written, hashing.digest.hexdigest()


def _is_definition(name: str) -> bool:
    return name == ENVIRONMENTS_DIR or name.startswith(ENVIRONMENTS_DIR + "/")


def _configure_all(
    options: BuildOptions,
    tree: Path,
    environments: Path,
    config: EnvironmentConfig,
    environment_errors: list[ConsignError],
    secrets: MergedSecrets,
) -> tuple[
    list[HostModel], dict[str, HostSecrets], list[SkippedHost], dict[str, RuntimeBlob], list[list[str]]
]:
    requirements, requirement_errors = read_requirements(tree)
    requirement_errors.extend(conflicts(requirements))
    if requirement_errors:
        # Components may import the requirements: nothing else is worth checking.
        raise BuildFailed([*environment_errors, *requirement_errors], notes=config.notes)
    cache = cache_directory(options.cache)
    selected = [h for h in config.hosts if _Build.select_host(options, h) is None]
    runtimes = _runtimes(options, environments, config, selected, requirements, cache)
    site = _import_environment(requirements, cache, options, runtimes)
    imports = ImportAudit(site, tree)
    with imports:
        registry, load_errors = load_components(tree)
        run = _Build(options, config, registry, secrets)
        run.errors.extend(environment_errors)
        run.errors.extend(load_errors)
        run.check_names()
        overrides, locations = run.overrides()
        # Every host takes part in service discovery; only the selected
        # ones get bundles.
        participants: list[HostModel] = []
        skipped_hosts: list[SkippedHost] = []
        for host in config.hosts:
            reason = run.select(host)
            if reason is not None:
                skipped_hosts.append(SkippedHost(host.name, reason))
            if not host.ignored:
                participants.append(run.host_model(host, overrides))
        configured, selections, waves = run.configure(participants, tree, locations)
    run.errors.extend(imports.foreign())
    if run.errors:
        raise BuildFailed(run.errors, notes=config.notes)
    built = {h.name for h in config.hosts if run.select(h) is None}
    models = [m for m in configured if m.host.name in built]
    hosts = {h.name: h for h in config.hosts}
    for model in models:
        selection = selections[model.host.name]
        if selection and model.host.name not in secrets.recipients:
            run.errors.append(
                SecretsError(
                    f"host {model.host.name!r} uses secrets ({', '.join(selection.described())}) "
                    "but has no recipient to encrypt them to",
                    where=str(hosts[model.host.name].location),
                    hint=f"add 'recipient = ssh-ed25519 AAAA...' to [host:{model.host.name}]: "
                    "the host's SSH host key, which 'executor init' prints there",
                )
            )
    if run.errors:
        raise BuildFailed(run.errors, notes=config.notes)
    # What the host will decode, decoded here: a model a host would refuse
    # (a value frozen too deep, say) fails the build, not the deploy.
    unreadable = []
    for model in models:
        try:
            model_from_data(model_to_data(model))
            decode_secrets(encode_secrets(selections[model.host.name]))
        except (DecodeError, CanonicalError) as exc:
            unreadable.append(
                ConfigurationError(
                    f"the model of host {model.host.name!r} holds what hosts cannot read: {exc}",
                    hint="provide flatter values (nesting is limited), plain data or Addresses",
                ).for_host(model.host.name)
            )
    if unreadable:
        raise BuildFailed(unreadable, notes=config.notes)
    return models, selections, skipped_hosts, runtimes, waves


def _runtimes(
    options: BuildOptions,
    environments: Path,
    config: EnvironmentConfig,
    hosts: list[HostConfig],
    requirements: Requirements,
    cache: Path,
) -> dict[str, RuntimeBlob]:
    """Each selected host's runtime; hosts with one target share one build."""
    by_target: dict[str, RuntimeBlob] = {}
    by_host: dict[str, RuntimeBlob] = {}
    for host in hosts:
        target = host_target(environments, config.name, host.name, host.python)
        if target.key not in by_target:
            by_target[target.key] = runtime_blob(requirements, target, cache, options.progress)
        by_host[host.name] = by_target[target.key]
    return by_host


def _import_environment(
    requirements: Requirements,
    cache: Path,
    options: BuildOptions,
    runtimes: dict[str, RuntimeBlob],
) -> Path:
    """site-packages of a runtime for the builder's own configure: a hosts'
    runtime that fits the builder's Python, else one built for it."""
    fitting = [r for r in runtimes.values() if r.target.fits_here()]
    own = fitting[0] if fitting else runtime_blob(
        requirements, Target(own_python()), cache, options.progress
    )
    return import_environment(own.pex, cache)


def _plain_entry(name: str, data: bytes) -> BlobEntry:
    sha256 = hashlib.sha256(data).hexdigest()
    return BlobEntry(name, Compression.NONE, len(data), sha256, len(data), sha256)


def _write(
    options: BuildOptions,
    inputs: _Inputs,
    models: list[tuple[HostModel, HostSecrets]],
    skipped_hosts: list[SkippedHost],
    notes: tuple[str, ...],
    repo: tuple[BlobEntry, str],
    runtimes: dict[str, RuntimeBlob],
    out: Path,
    secrets: MergedSecrets,
) -> BuildResult:
    directory = out / options.environment
    directory.mkdir(parents=True, exist_ok=True)
    repo_entry, repo_path = repo
    # Stage every bundle, then rename them all: a failure midway leaves the
    # previous bundles in place.
    staged: list[tuple[str, Path]] = []
    built = []
    try:
        for model, selection in models:
            path = directory / f"{model.host.name}{BUNDLE_SUFFIX}"
            model_bytes = encode_model(model)
            runtime = runtimes[model.host.name]
            runtime_entry = BlobEntry(
                "runtime",
                Compression.ZSTD,
                runtime.size,
                runtime.sha256,
                runtime.raw_size,
                runtime.raw_sha256,
            )
            target = runtime.target
            manifest = Manifest(
                environment=options.environment,
                host=model.host.name,
                fqdn=model.host.fqdn,
                serial=inputs.serial,
                build_time=inputs.build_time,
                consign_version=__version__,
                source=inputs.source,
                target=ManifestTarget(
                    platform=model.host.platform,
                    python=target.python,
                    complete_platform=(
                        None
                        if target.platform_json is None
                        else hashlib.sha256(target.platform_json).hexdigest()
                    ),
                ),
                blobs=(repo_entry, runtime_entry, _plain_entry("model", model_bytes)),
            )
            blobs = [
                _bundle.BlobData(path=repo_path),
                _bundle.BlobData(path=str(runtime.compressed)),
                _bundle.BlobData(data=model_bytes),
            ]
            if selection:
                sealed = seal(
                    selection, secrets.recipients[model.host.name], secrets.digest, model.host.name
                )
                manifest = replace(manifest, blobs=(*manifest.blobs, _plain_entry("secrets", sealed)))
                blobs.append(_bundle.BlobData(data=sealed))
            manifest_bytes = encode_manifest(manifest)
            chunks = _bundle.bundle_chunks(
                manifest_bytes, sign_all(inputs.signers, manifest_bytes), blobs
            )
            staged.append((stage_file(str(path), chunks, mode=0o644), path))
            built.append(
                BuiltHost(
                    name=model.host.name,
                    path=path,
                    size=os.path.getsize(staged[-1][0]),
                    roots=tuple(r.name for r in model.roots),
                    skipped=model.skipped,
                    secrets=tuple(selection.described()),
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
        serial=inputs.serial,
        source=inputs.source,
        signers=tuple(f"{s.key.fingerprint()} ({s.source})" for s in inputs.signers),
        key_paths=inputs.key_paths,
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
