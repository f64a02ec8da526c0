"""Applying a bundle on this host.

Accept the bundle first (:mod:`executor.verify`: trust, signature,
manifest, target, serial, blob hashes) and record it as accepted; then
unpack the repository snapshot into the store, load the deployment's
components from it, configure this host's roots from the frozen model,
check that configure built the tree the builder built, and deploy.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .canonical import CanonicalError
from .configure import ConfiguredRoot, configure_host, first_tree_difference, tree_of
from .decode import DecodeError
from .deploy import DeployOutcome, RootOutcome, RootStatus, deploy_roots
from .environment import Environment
from .errors import (
    BundleError,
    ConfigurationError,
    ConsignError,
    ErrorList,
    RunTimeoutError,
    StateError,
    count,
)
from .loader import load_components
from .manifest import MAX_MODEL_BYTES
from .model import HostModel, decode_model
from .run import DeadlineReached, FileDiff, Level, LogEntry, RunContext, alarm, interruptible
from .bundle import VerifiedBundle
from .snapshot import extract_tar
from .state import DEFAULT_STATE_DIR, prepare_directory, save_state
from .verify import DEFAULT_TRUST_FILE, VerifyOptions, accept_bundle



class ApplyStatus(enum.Enum):
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class ApplyOptions:
    bundle: str
    host: str | None = None
    environment: str | None = None
    target_directory: str | None = None
    state_directory: str = DEFAULT_STATE_DIR
    trust_file: str = DEFAULT_TRUST_FILE
    revoked_file: str | None = None
    dry_run: bool = False
    timeout: float | None = None
    allow_downgrade: bool = False
    now: int | None = None

    def verify_options(self) -> VerifyOptions:
        return VerifyOptions(
            bundle=self.bundle,
            host=self.host,
            environment=self.environment,
            trust_file=self.trust_file,
            revoked_file=self.revoked_file,
            state_directory=self.state_directory,
            allow_downgrade=self.allow_downgrade,
            now=self.now,
        )


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
            "error": None if self.error is None else self.error.to_json(),
            "target_directory": self.target_directory,
            "duration_s": round(self.duration_s, 6),
        }


def load_model(bundle: VerifiedBundle) -> HostModel:
    try:
        model = decode_model(bundle.read("model", MAX_MODEL_BYTES))
    except (CanonicalError, DecodeError) as exc:
        raise BundleError(
            f"the bundle's model is invalid: {exc}",
            where=bundle.path,
            hint="the model is signed, so the builder wrote it this way: rebuild the bundle "
            "with the same consign version as this executor",
        ) from None
    manifest = bundle.manifest
    if (model.host.name, model.environment.name) != (manifest.host, manifest.environment):
        raise BundleError(
            f"the bundle's manifest names host {manifest.host!r} in {manifest.environment!r}, "
            f"its model host {model.host.name!r} in {model.environment.name!r}",
            hint="the bundle was assembled from different builds; build it again",
        )
    return model


def _free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def store_entry(bundle: VerifiedBundle, state_directory: str) -> Path:
    """Where the store keeps (or will keep) the bundle's repository snapshot."""
    entry = bundle.manifest.blob("repo")
    assert entry is not None  # the manifest decoder requires it
    # Keyed by the stored bytes' digest: a hit means the very bytes that were
    # fully checked (decompressed, raw size and hash) when first unpacked.
    return Path(state_directory, "store").resolve() / entry.sha256


def unpack_snapshot(bundle: VerifiedBundle, store: Path) -> Path:
    """The repository snapshot, unpacked once into `store` by its digest.

    The tree appears under its final name only when complete (work
    directory, then rename), so the store never holds a half-unpacked entry.
    """
    entry = bundle.manifest.blob("repo")
    assert entry is not None  # the manifest decoder requires it
    final = store / entry.sha256
    if final.is_dir():
        return final
    try:
        store.mkdir(parents=True, exist_ok=True)
        free = _free_bytes(str(store))
        # The tar, then the tree: about twice the raw size.
        if free < 2 * entry.raw_size + (16 << 20):
            raise StateError(
                f"not enough space in {store}: {free} bytes free, unpacking needs about "
                f"{2 * entry.raw_size}",
                hint="free space, or run 'executor gc' when it exists",
            )
        work = tempfile.mkdtemp(prefix=f".{entry.sha256[:12]}-", dir=store)
    except OSError as exc:
        raise StateError(
            f"cannot unpack into {store}: {exc.strerror}",
            hint="run as root, or pass --state-dir (CONSIGN_STATE_DIR) with a writable directory",
        ) from None
    try:
        tar = os.path.join(work, "repo.tar")
        bundle.extract_to("repo", tar)
        tree = os.path.join(work, "tree")
        try:
            extract_tar(tar, tree, durable=True)
        except BundleError as exc:
            raise BundleError(
                exc.message,
                where=bundle.path,
                hint="the repository snapshot is hostile or damaged; nothing was written. "
                "Do not apply this bundle; rebuild it from a repository you trust",
            ) from None
        os.chmod(tree, 0o555)
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
    """Accept, unpack, configure and deploy one bundle; see the module doc.

    Raises RefusedError (a bundle this host does not accept) or StateError
    before anything changes. A run that fails returns a result with an error.
    """
    with contextlib.ExitStack() as cleanup:
        return _apply(options, cleanup)


def _apply(options: ApplyOptions, cleanup: contextlib.ExitStack) -> ApplyResult:
    started = time.monotonic()
    deadline = started + options.timeout if options.timeout else None
    acceptance = accept_bundle(options.verify_options())
    bundle = acceptance.bundle
    model = load_model(bundle)
    run = RunContext(
        predicting=options.dry_run, deadline=deadline, command_timeout=model.environment.timeout
    )
    for note in acceptance.notes:
        run.emit("", note, Level.WARNING)
    if acceptance.downgrade_from is not None:
        run.emit(
            "",
            f"downgrade allowed: serial {acceptance.downgrade_from} -> {bundle.manifest.serial}",
            Level.WARNING,
        )
    # Unpacking is the last check of the bundle (its archive); only a bundle
    # that passed all of them raises the serial this host accepts. A dry run
    # writes nothing of the host's own: it unpacks into a temporary store.
    cached = store_entry(bundle, options.state_directory)
    if options.dry_run and not cached.is_dir():
        scratch = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="consign-dry-run-"))
        repository = unpack_snapshot(bundle, Path(scratch))
    else:
        prepare_directory(options.state_directory)
        repository = unpack_snapshot(bundle, cached.parent)
    if not options.dry_run:
        now = options.now if options.now is not None else int(time.time())
        accepted = acceptance.state.accept(
            bundle.manifest.environment, bundle.manifest.serial, bundle.digest, now
        )
        save_state(options.state_directory, accepted)
    target = None if options.target_directory is None else os.path.abspath(options.target_directory)
    target_directory = Environment(model.environment, target_directory=target).target_directory
    skipped = [(s.name, s.reason) for s in model.skipped]
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
