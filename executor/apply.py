"""Applying a bundle on this host.

Read and check the bundle (framing, sizes, hashes) before anything else,
refuse a bundle meant for another host, unpack the repository snapshot into
the store, load the deployment's components from it, configure this host's
roots from the frozen model, check that configure built the tree the builder
built, and deploy.
"""

from __future__ import annotations

import enum
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import bundle as _bundle
from .configure import ConfiguredRoot, configure_host, first_tree_difference, tree_of
from .decode import DecodeError
from .canonical import CanonicalError
from .environment import Environment
from .deploy import DeployOutcome, RootOutcome, RootStatus, deploy_roots
from .errors import (
    BundleError,
    ConfigurationError,
    ConsignError,
    ErrorList,
    RunTimeoutError,
    StateError,
    WrongTargetError,
    count,
)
from .loader import load_components
from .model import HostModel, decode_model
from .run import DeadlineReached, FileDiff, LogEntry, RunContext, alarm, interruptible
from .snapshot import extract_tar

DEFAULT_STATE_DIR = "/var/lib/consign"
# Until the manifest records uncompressed sizes, a snapshot may not unpack
# to more than this.
MAX_SNAPSHOT_BYTES = 2 << 30


class ApplyStatus(enum.Enum):
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class ApplyOptions:
    bundle: str
    host: str | None = None
    target_directory: str | None = None
    state_directory: str = DEFAULT_STATE_DIR
    dry_run: bool = False
    timeout: float | None = None


@dataclass(frozen=True)
class ApplyResult:
    host: str
    environment: str
    bundle_digest: str
    status: ApplyStatus
    dry_run: bool
    roots: tuple[RootOutcome, ...]
    duration_s: float
    log: tuple[LogEntry, ...] = ()
    diffs: tuple[FileDiff, ...] = ()
    error: ConsignError | None = None
    target_directory: str = ""

    @property
    def changed(self) -> tuple[str, ...]:
        return tuple(c for root in self.roots for c in root.changed)

    @property
    def skipped(self) -> tuple[RootOutcome, ...]:
        return tuple(r for r in self.roots if r.status is RootStatus.SKIPPED)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "environment": self.environment,
            "bundle": self.bundle_digest,
            "status": self.status.value,
            "dry_run": self.dry_run,
            "changed": list(self.changed),
            "skipped": [{"name": r.name, "reason": r.reason} for r in self.skipped],
            "roots": [
                {
                    "name": r.name,
                    "status": r.status.value,
                    "changed": list(r.changed),
                    "duration_s": round(r.duration_s, 6),
                    "reason": r.reason,
                }
                for r in self.roots
            ],
            "diffs": [
                {"component": d.component, "path": d.path, "diff": d.diff, "note": d.note}
                for d in self.diffs
            ],
            "log": [
                {"component": e.component, "message": e.message, "level": e.level.value}
                for e in self.log
            ],
            "error": error_to_json(self.error),
            "target_directory": self.target_directory,
            "duration_s": round(self.duration_s, 6),
        }


def error_to_json(error: ConsignError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "code": error.code,
        "message": error.message,
        "where": error.where,
        "hint": error.hint,
    }


def this_host() -> str:
    return socket.gethostname()


def check_target(model: HostModel, identity: str) -> None:
    """Refuse a bundle built for another host."""
    if identity not in (model.host.name, model.host.fqdn):
        raise WrongTargetError(
            f"this bundle is for host {model.host.name!r} ({model.host.fqdn}), "
            f"but this host is {identity!r}",
            hint="apply the bundle built for this host, or name the host with --host",
        )


def _load_model(bundle: _bundle.Bundle) -> HostModel:
    try:
        model = decode_model(bundle.blobs[bundle.manifest.blob("model").name])
    except (CanonicalError, DecodeError) as exc:
        raise BundleError(f"the bundle's model is invalid: {exc}") from None
    manifest = bundle.manifest
    if (model.host.name, model.environment.name) != (manifest.host, manifest.environment):
        raise BundleError(
            f"the bundle's manifest names host {manifest.host!r} in {manifest.environment!r}, "
            f"its model host {model.host.name!r} in {model.environment.name!r}",
            hint="the bundle was assembled from different builds; build it again",
        )
    return model


def unpack_snapshot(bundle: _bundle.Bundle, state_directory: str) -> Path:
    """The repository snapshot, unpacked once into the store by its digest."""
    entry = bundle.manifest.blob("repo")
    store = Path(state_directory, "store").resolve()
    final = store / entry.sha256
    if final.is_dir():
        return final
    try:
        store.mkdir(parents=True, exist_ok=True)
        work = tempfile.mkdtemp(prefix=f".{entry.sha256[:12]}-", dir=store)
    except OSError as exc:
        raise StateError(
            f"cannot use the state directory {state_directory}: {exc.strerror}",
            hint="run as root, or pass --state-dir (CONSIGN_STATE_DIR) with a writable directory",
        ) from None
    tar = _bundle.decompress(bundle.blobs["repo"], max_size=MAX_SNAPSHOT_BYTES)
    try:
        # extract_tar wants a new directory; the work directory keeps the
        # half-written tree out of the store's namespace until it is whole.
        tree = os.path.join(work, "tree")
        extract_tar(tar, tree)
        os.rename(tree, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _configure(
    model: HostModel, repository: Path, target: str | None
) -> tuple[list[ConfiguredRoot], ConsignError | None]:
    """Configure this host's roots and check they form the build's trees."""
    registry, errors = load_components(repository)
    if errors:
        return [], ErrorList(errors, f"{count(len(errors), 'component file')} failed to load")
    configured, errors = configure_host(
        model, registry, target_directory=target, base_dir=str(repository)
    )
    if errors:
        return [], ErrorList(errors, f"configure failed on this host ({count(len(errors), 'error')})")
    for root in configured:
        difference = first_tree_difference(root.record.tree, tree_of(root.component))
        if difference:
            return [], ConfigurationError(
                f"configure on this host built another tree than the build did: {difference}",
                where=root.record.name,
                hint="configure must not depend on the host it runs on; "
                "compute host-specific values in verify/update",
            )
    return configured, None


def apply_bundle(options: ApplyOptions) -> ApplyResult:
    """Check, unpack, configure and deploy one bundle; see the module doc.

    Raises RefusedError (BundleError, WrongTargetError) for a bundle this
    host will not run. A run that fails returns a result with an error.
    """
    started = time.monotonic()
    deadline = started + options.timeout if options.timeout else None
    bundle = _bundle.read_bundle(options.bundle)
    model = _load_model(bundle)
    check_target(model, options.host or this_host())
    repository = unpack_snapshot(bundle, options.state_directory)
    target = None if options.target_directory is None else os.path.abspath(options.target_directory)
    target_directory = Environment(model.environment, target_directory=target).target_directory
    skipped = [(s.name, s.reason) for s in model.skipped]
    run = RunContext(
        predicting=options.dry_run, deadline=deadline, command_timeout=model.environment.timeout
    )
    with alarm(options.timeout):
        try:
            with interruptible():
                configured, error = _configure(model, repository, target)
        except DeadlineReached:
            error = RunTimeoutError(
                "the run exceeded its time limit while configuring", hint="raise --timeout"
            )
        if error is None:
            outcome = deploy_roots(configured, run, skipped=skipped)
        else:
            not_run = [RootOutcome(r.name, RootStatus.NOT_RUN, reason="configure failed") for r in model.roots]
            skips = [RootOutcome(n, RootStatus.SKIPPED, reason=why) for n, why in skipped]
            outcome = DeployOutcome(tuple(not_run + skips), error)
    return ApplyResult(
        host=model.host.name,
        environment=model.environment.name,
        bundle_digest=bundle.digest,
        status=ApplyStatus.OK if outcome.error is None else ApplyStatus.FAILED,
        dry_run=options.dry_run,
        roots=outcome.roots,
        duration_s=time.monotonic() - started,
        log=tuple(run.log),
        diffs=tuple(run.diffs),
        error=outcome.error,
        target_directory=target_directory,
    )
