"""Applying a bundle on this host.

Under the state directory's lock (:mod:`executor.lock`): accept the bundle
first (:mod:`executor.verify`: trust, signature, manifest, target, serial,
blob hashes); unpack the repository snapshot into the store and make the
bundle's runtime environment (both checked as they are unpacked); record
the bundle as accepted and keep it as a generation
(:mod:`executor.generations`); then hand the model and the repository to
the runtime in a child process (:mod:`executor.child`), which configures
this host's roots and deploys them, and read its report. A successful run
makes its generation current. Every run, refused or not, is recorded
(:mod:`executor.records`).

The executor never decodes the model itself: the runtime that built it
reads it, so a host executor of another consign version can still apply.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import canonical
from .bundle import VerifiedBundle
from . import generations
from .errors import (
    BundleError,
    ConsignError,
    LockedError,
    RefusedError,
    RunTimeoutError,
    RuntimeFailure,
    StateError,
)
from .fs import die_with_parent
from .generations import Generation
from .lock import DEFAULT_WAIT_SECONDS, state_lock
from .manifest import MAX_MODEL_BYTES
from .outcome import RootOutcome, RootStatus
from .protocol import ProtocolError, RunReport, RunRequest, redact_report
from .redact import MASK, redact
from .run import FileDiff, Level, LogEntry
from .records import RunRecord, append_audit, record_run
from .runtime import READY, prepare_runtime, remove_stale_work, runtime_directory
from .sealed import DEFAULT_IDENTITY, open_secrets, secret_values
from .snapshot import extract_tar
from .state import DEFAULT_STATE_DIR, load_state, prepare_directory, save_state
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
    # Where runtime environments are made [default: STATE/runtimes].
    runtime_directory: str | None = None
    # How long to wait for another apply holding the lock.
    wait: float = DEFAULT_WAIT_SECONDS
    # Where to write Prometheus metrics after the run (host config `metrics`).
    metrics_path: str | None = None
    # Where to PUT the run's status (host config `report`); None: nowhere.
    report_url: str | None = None
    # Re-applying a kept generation (executor rollback): recorded as such.
    # The generation is `rollback_to`, else the previous one; `bundle` is
    # then replaced by that generation's kept bundle.
    rollback: bool = False
    rollback_to: int | None = None
    # Where the bundle came from when not a file the user named (executor
    # pull: the pointer's URL); recorded instead of `bundle`.
    origin: str | None = None
    # Files that may decrypt the bundle's secrets (executor.sealed).
    identities: tuple[str, ...] = (DEFAULT_IDENTITY,)

    @property
    def kind(self) -> str:
        if self.dry_run:
            return "dry-run"
        if self.rollback:
            return "rollback"
        return "pull" if self.origin else "apply"

    def verify_options(self) -> VerifyOptions:
        return VerifyOptions(
            bundle=self.bundle,
            host=self.host,
            environment=self.environment,
            trust_file=self.trust_file,
            revoked_file=self.revoked_file,
            state_directory=self.state_directory,
            allow_downgrade=self.allow_downgrade or self.rollback,
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
    # The generation this run applied (None for a dry run).
    generation: int | None = None
    kind: str = "apply"

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
            "generation": self.generation,
            "kind": self.kind,
        }


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
                hint="free space, e.g. with 'executor gc --keep 1'",
            )
        work = tempfile.mkdtemp(prefix=f".{entry.sha256[:12]}-", dir=store)
    except OSError as exc:
        raise StateError(
            f"cannot unpack into {store}: {exc.strerror}",
            hint="run as root, or pass --state-dir (CONSIGN_STATE_DIR) with a writable directory",
        ) from None
    try:
        tar = os.path.join(work, "repo.tar")
        tree = os.path.join(work, "tree")
        try:
            bundle.extract_to("repo", tar)
            extract_tar(tar, tree, durable=True)
            os.chmod(tree, 0o555)
            os.rename(tree, final)
        except BundleError as exc:
            raise BundleError(
                exc.message,
                where=bundle.path,
                hint="the repository snapshot is hostile or damaged; nothing was written. "
                "Do not apply this bundle; rebuild it from a repository you trust",
            ) from None
        except OSError as exc:
            raise StateError(
                f"cannot unpack the repository into {store}: {exc.strerror}",
                hint="free space ('executor gc --keep 1' removes old generations), "
                "then apply again; nothing was applied",
            ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _model_bytes(bundle: VerifiedBundle) -> bytes:
    """The model's bytes, refused unless canonical msgpack within the limits.

    Its fields are the runtime's to read (it may be another consign version);
    hostile msgpack is refused here, before anything is unpacked or recorded.
    """
    data = bundle.read("model", MAX_MODEL_BYTES)
    try:
        canonical.unpack(data, max_bytes=MAX_MODEL_BYTES)
    except canonical.CanonicalError as exc:
        raise BundleError(
            f"the bundle's model is invalid: {exc}",
            where=bundle.path,
            hint="the model is signed, so the builder wrote it this way: rebuild the bundle",
        ) from None
    return data


@dataclass
class _Run:
    """What is known about a run so far, for its record."""

    options: ApplyOptions
    started: float = field(default_factory=time.time)
    clock: float = field(default_factory=time.monotonic)
    phases: dict[str, float] = field(default_factory=dict)
    bundle: VerifiedBundle | None = None
    generation: Generation | None = None
    mark: float = field(default_factory=time.monotonic)

    def phase(self, name: str) -> None:
        """The phase `name` ended now."""
        now = time.monotonic()
        self.phases[name] = now - self.mark
        self.mark = now

    def record(self, result: str, error: ConsignError | None, changed: tuple[str, ...] = ()) -> RunRecord:
        manifest = None if self.bundle is None else self.bundle.manifest
        return RunRecord(
            kind=self.options.kind,
            result=result,
            started=self.started,
            duration_s=time.monotonic() - self.clock,
            bundle_path=self.options.origin or self.options.bundle,
            host=manifest.host if manifest else self.options.host,
            environment=manifest.environment if manifest else self.options.environment,
            bundle=None if self.bundle is None else self.bundle.digest,
            serial=manifest.serial if manifest else None,
            commit=manifest.source.commit if manifest else None,
            generation=None if self.generation is None else self.generation.number,
            changed=changed,
            phases=dict(self.phases),
            error=None if error is None else error.to_json(),
            pid=os.getpid(),
        )


def apply_bundle(options: ApplyOptions) -> ApplyResult:
    """Accept, unpack, configure and deploy one bundle; see the module doc.

    Raises RefusedError (a bundle this host does not accept), LockedError
    (another apply did not finish in time) or StateError before anything
    changes. A run that fails returns a result with an error. Either way
    the run is recorded in the state directory's status and audit log.
    """
    run = _Run(options)
    state_directory = options.state_directory
    with contextlib.ExitStack() as cleanup:
        if options.dry_run:
            # A dry run changes nothing on a host without a state; with one,
            # it waits for a running apply and leaves a line in the audit log.
            if os.path.isdir(state_directory):
                _lock(run, cleanup)
        else:
            prepare_directory(state_directory)
            _lock(run, cleanup)
            remove_stale_work(state_directory, options.runtime_directory)
        try:
            if options.rollback:
                run.options = replace(options, bundle=_rollback_bundle(options))
            result = _apply(run, cleanup)
        except ConsignError as error:
            refused = isinstance(error, RefusedError)
            _record(run, "refused" if refused else "failed", error)
            raise
        except BaseException as exc:
            # Stopped (SIGTERM, ^C) or an error of consign's own: the record
            # must not keep saying the last run was fine.
            what = "stopped" if isinstance(exc, (SystemExit, KeyboardInterrupt)) else "failed"
            with contextlib.suppress(Exception):
                _record(run, "failed", ConsignError(f"the run {what}: {type(exc).__name__}: {exc}"))
            raise
        notes = _record(run, "ok" if result.error is None else "failed", result.error, result.changed)
        if notes:
            log = tuple(LogEntry("", note, Level.WARNING) for note in notes)
            result = replace(result, log=(*result.log, *log))
        return result


def _rollback_bundle(options: ApplyOptions) -> str:
    """The kept bundle of the generation a rollback goes to: the one named,
    else the current one when the last apply failed (the host is part way
    into a bundle that never became current: back to what ran), else the
    previous one."""
    state_directory = options.state_directory
    state = load_state(state_directory)
    number = options.rollback_to
    if number is None:
        current = None if state.current is None else generations.find(state_directory, state.current)
        failed_since = current is not None and state.bundle != current.digest
        number = state.current if failed_since else state.previous
    if number is None:
        raise StateError(
            "there is no previous generation to roll back to",
            hint="'executor status' lists the generations kept; name one: executor rollback N",
        )
    return generations.find(state_directory, number).bundle_path(state_directory)


def _lock(run: _Run, cleanup: contextlib.ExitStack) -> None:
    options = run.options
    try:
        cleanup.enter_context(
            state_lock(options.state_directory, f"{options.kind} {options.bundle}", options.wait)
        )
    except LockedError as error:
        # The holder owns status and metrics; the audit log takes a line.
        with contextlib.suppress(OSError):
            append_audit(options.state_directory, run.record("locked", error).to_json())
        raise
    run.mark = time.monotonic()
    run.phases["lock"] = run.mark - run.clock


def _record(
    run: _Run, result: str, error: ConsignError | None, changed: tuple[str, ...] = ()
) -> list[str]:
    """Record the run; notes about records that could not be written."""
    options = run.options
    if not os.path.isdir(options.state_directory):
        return []
    record = run.record(result, error, changed)
    if options.dry_run:
        try:
            append_audit(options.state_directory, record.to_json())
        except OSError as exc:
            return [f"cannot append to the audit log: {exc.strerror}"]
        return []
    notes = []
    if run.bundle is not None and result in ("failed", "refused"):
        try:
            state = load_state(options.state_directory)
            save_state(options.state_directory, state.failure(run.bundle.digest))
        except StateError as exc:
            notes.append(exc.message)
    return notes + record_run(
        options.state_directory, record, options.metrics_path, options.report_url
    )


def _apply(run: _Run, cleanup: contextlib.ExitStack) -> ApplyResult:
    options = run.options
    # --timeout bounds the run from here: waiting for the lock is not part of it.
    started = time.monotonic()

    def left() -> float | None:
        if options.timeout is None:
            return None
        return max(options.timeout - (time.monotonic() - started), 0.001)

    acceptance = accept_bundle(options.verify_options())
    bundle = acceptance.bundle
    run.bundle = bundle
    manifest = bundle.manifest
    model = _model_bytes(bundle)
    # Before anything is unpacked or accepted: a host that cannot read its
    # secrets changes nothing. The plaintext stays in memory.
    secrets = open_secrets(bundle, options.identities)
    hidden = secret_values(secrets)
    run.phase("verify")
    notes = [LogEntry("", note, Level.WARNING) for note in acceptance.notes]
    if acceptance.downgrade_from is not None and not options.rollback:
        notes.append(
            LogEntry(
                "",
                f"downgrade allowed: serial {acceptance.downgrade_from} -> "
                f"{bundle.manifest.serial}",
                Level.WARNING,
            )
        )
    # Unpacking is the last check of the bundle (its archive); only a bundle
    # that passed all of them raises the serial this host accepts. A dry run
    # writes nothing of the host's own: it unpacks into a temporary store.
    cached = store_entry(bundle, options.state_directory)
    runtimes = runtime_directory(options.state_directory, options.runtime_directory)
    runtime_entry = bundle.manifest.blob("runtime")
    assert runtime_entry is not None  # the manifest decoder requires it
    if options.dry_run:
        # What the host has already is used; what it lacks is made in a
        # scratch directory that goes away with the run.
        scratch = Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix="consign-dry-run-"))
        )
        store = cached.parent if cached.is_dir() else scratch / "store"
        repository = unpack_snapshot(bundle, store)
        run.phase("unpack")
        ready = (runtimes / runtime_entry.sha256 / READY).is_file()
        python = prepare_runtime(bundle, runtimes if ready else scratch / "runtimes", left())
    else:
        repository = unpack_snapshot(bundle, cached.parent)
        run.phase("unpack")
        python = prepare_runtime(bundle, runtimes, left())
    run.phase("runtime")
    now = options.now if options.now is not None else int(time.time())
    if not options.dry_run:
        accepted = acceptance.state.accept(
            bundle.manifest.environment,
            bundle.manifest.serial,
            bundle.digest,
            now,
            rollback=options.rollback,
        )
        run.generation = generations.record(bundle, options.state_directory, now)
        save_state(options.state_directory, accepted)
    target = None if options.target_directory is None else os.path.abspath(options.target_directory)
    report = run_runtime(
        python,
        RunRequest(
            model=model,
            host=manifest.host,
            environment=manifest.environment,
            repository=str(repository),
            target_directory=target,
            dry_run=options.dry_run,
            timeout=left(),
            report="",
            secrets=secrets is not None,
        ),
        cleanup,
        limit=options.timeout,
        secrets=secrets,
        hidden=hidden,
    )
    # Everything the runtime reports, and what deployment code printed.
    report = redact_report(report, hidden)
    run.phase("run")
    if run.generation is not None and report.error is None:
        notes += [
            LogEntry("", note, Level.WARNING)
            for note in _switch(
                options.state_directory, run.generation, bundle.digest, options.rollback
            )
        ]
    return ApplyResult(
        host=manifest.host,
        environment=manifest.environment,
        bundle_digest=bundle.digest,
        status=ApplyStatus.OK if report.error is None else ApplyStatus.FAILED,
        dry_run=options.dry_run,
        roots=report.roots,
        duration_s=time.monotonic() - started,
        log=tuple(notes) + report.log,
        diffs=report.diffs,
        error=report.error,
        target_directory=report.target_directory or target or "",
        generation=None if run.generation is None else run.generation.number,
        kind=options.kind,
    )


def _switch(
    state_directory: str, generation: Generation, digest: str, rollback: bool
) -> list[str]:
    """Make `generation` current: the state first (it is the truth), then
    the links; notes about links that could not be updated."""
    state = load_state(state_directory)
    moved = state.rolled_back(generation.number) if rollback else state.switched(generation.number)
    switched = moved.succeeded(digest)
    if switched != state:
        save_state(state_directory, switched)
    try:
        generations.link(state_directory, generations.PREVIOUS_LINK, switched.previous)
        generations.link(state_directory, generations.CURRENT_LINK, switched.current)
    except OSError as exc:
        return [
            f"cannot update the generation links in {state_directory}: {exc.strerror} "
            "(the state records the switch; the next apply repairs them)"
        ]
    return []


# Past the run's own time limit, the runtime gets this long to report
# before it is killed.
KILL_GRACE = 10.0
MAX_RUNTIME_OUTPUT = 64 << 10


def run_runtime(
    python: Path,
    request: RunRequest,
    cleanup: contextlib.ExitStack,
    limit: float | None = None,
    secrets: bytes | None = None,
    hidden: frozenset[str] = frozenset(),
) -> RunReport:
    """Run the bundle's runtime in a child process and read its report.

    The child enforces the time limit itself (and reports where it stopped);
    if it does not finish shortly after, it is killed, with everything it
    started. A crash of deployment code takes only the child down. Request,
    report and output all go through files: a process that deployment code
    leaves running can hold no pipe of ours open. `secrets` (decrypted) go
    through the runtime's standard input, which it reads whole and closes
    before deployment code runs: they never touch a disk.
    """
    scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="consign-run-")))
    request_path = scratch / "request.json"
    report_path = scratch / "report.json"
    output_path = scratch / "output"
    request = replace(request, report=str(report_path))
    request_path.write_text(request.to_json(), encoding="utf-8")
    with open(output_path, "wb") as output:
        process = subprocess.Popen(
            [str(python), "-I", "-u", "-m", "executor.child", str(request_path)],
            stdin=subprocess.DEVNULL if secrets is None else subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=runtime_environment(),
            cwd="/",
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    feeding = None if secrets is None else _feed(process, secrets)
    wait = None if request.timeout is None else request.timeout + KILL_GRACE
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        _kill(process)
        shown = limit if limit is not None else request.timeout or 0
        return _failed_report(
            RunTimeoutError(
                f"the runtime did not stop within its limit of {shown:g}s and was killed",
                hint="raise --timeout, or find what hangs with --verbose",
            )
        )
    except BaseException:
        # The executor is stopping (SIGTERM, ^C): let the runtime clean up.
        _kill(process, TERM_GRACE)
        raise
    text = _tail(output_path, hidden)
    if feeding is not None:
        feeding.join(timeout=KILL_GRACE)
        if feeding.error is not None and not isinstance(feeding.error, BrokenPipeError):
            return _failed_report(
                RuntimeFailure(
                    f"the secrets could not be handed to the runtime: {feeding.error}",
                    hint="try again; if it persists, run with --verbose and report it",
                )
            )
    if not report_path.is_file():
        how = (
            f"was killed by signal {-process.returncode}"
            if process.returncode < 0
            else f"exited with {process.returncode}"
        )
        return _failed_report(
            RuntimeFailure(
                f"the runtime {how} without a report",
                hint="its output: " + (text[-2000:] or "(none)"),
            )
        )
    try:
        report = RunReport.from_json(report_path.read_text(encoding="utf-8"))
    except (ProtocolError, ValueError) as exc:
        return _failed_report(RuntimeFailure(f"the runtime's report is unreadable: {exc}"))
    if text:
        # Deployment code printed something: keep it, it may matter.
        report = replace(report, log=(*report.log, LogEntry("runtime output", text, Level.INFO)))
    return report


# Variables that would make the runtime's tools run another Python, other
# packages or the executor's own environment, or that hold secrets of the
# builder (consign's own settings mean nothing to deployment code).
_WITHHELD = ("PYTHON", "PEX", "VIRTUAL_ENV", "CONDA_", "CONSIGN_", "__PYVENV")


# consign's settings the runtime itself reads.
_PASSED = ("CONSIGN_DNS",)


def runtime_environment() -> dict[str, str]:
    """The executor's environment, minus what must not reach deployment code."""
    return {
        k: v for k, v in os.environ.items() if k in _PASSED or not k.startswith(_WITHHELD)
    }


class _Feeder(threading.Thread):
    """Writes `data` to the runtime's standard input, then closes it: from a
    thread, since a large selection fills the pipe before the runtime reads."""

    def __init__(self, process: subprocess.Popen[bytes], data: bytes) -> None:
        super().__init__(name="consign-secrets", daemon=True)
        assert process.stdin is not None
        self.stream = process.stdin
        self.data = data
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            with self.stream:
                self.stream.write(self.data)
        except OSError as error:  # the runtime died first (EPIPE), or worse
            self.error = error


def _feed(process: subprocess.Popen[bytes], data: bytes) -> _Feeder:
    feeder = _Feeder(process, data)
    feeder.start()
    return feeder


def _tail(path: Path, hidden: frozenset[str] = frozenset()) -> str:
    """The last MAX_RUNTIME_OUTPUT bytes of what the runtime printed, with
    the host's secrets hidden before it is cut (a secret cut in half would
    escape redaction)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        start = max(f.tell() - MAX_RUNTIME_OUTPUT, 0)
        f.seek(start)
        text = redact(f.read().decode("utf-8", errors="replace"), hidden)
    if start > 0:
        # The cut may have left the end of a secret at the start.
        for secret in sorted(hidden, key=lambda s: (-len(s), s)):
            ends = (secret[-k:] for k in range(len(secret) - 1, 0, -1))
            end = next((e for e in ends if text.startswith(e)), None)
            if end is not None:
                text = MASK + text[len(end) :]
                break
    return text.strip()


def _failed_report(error: ConsignError) -> RunReport:
    return RunReport((), (), (), error, "")


# How long the runtime gets to clean up after SIGTERM before SIGKILL.
TERM_GRACE = 5.0


def _kill(process: subprocess.Popen[bytes], grace: float = 0.0) -> None:
    """Stop the runtime and what it started: SIGTERM first when there is a
    `grace` (it removes its temporary files), then SIGKILL to the group."""
    if grace > 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
