"""Speed and memory of building and verifying bundles, against issue 3's targets.

    .venv/bin/python bench/bundle_bench.py build       # build+sign, 50 MB / 2,500 files, 1 host
    .venv/bin/python bench/bundle_bench.py verify      # verify a 100 MB bundle
    .venv/bin/python bench/bundle_bench.py linearity   # verify 25, 50, 100, 200 MB bundles
    .venv/bin/python bench/bundle_bench.py all         # the three above
    .venv/bin/python bench/bundle_bench.py profile build|verify   # where time and memory go

Each benchmark writes its section of ``bench/results/bundle.json`` (other
sections are kept) and renders ``bench/results/bundle.md`` from it.

In-process figures come from a fresh worker interpreter (this script run
with a ``_worker`` subcommand) that imports consign, warms up, and times only
the call. Its per-run peak RSS is the kernel's high-water mark (VmHWM), reset
before each run through ``/proc/self/clear_refs``. Command figures time the
console script from spawn to exit, interpreter start-up included; their peak
RSS comes from GNU ``time -v`` and, as a cross-check and fallback, from the
rusage ``wait4`` returns for that one child (it covers the child's own
children too). ``RUSAGE_CHILDREN`` is not used: it is the maximum over every
child this process ever waited for, not the figure of one run.

Sizes are decimal: 1 MB = 10**6 bytes, for data, bundles and memory alike.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import hashlib
import io
import json
import os
import platform
import pstats
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from scenarios import MB, Scenario, ScenarioSpec, make_repository

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
RESULTS = BENCH / "results"
RESULTS_JSON = RESULTS / "bundle.json"
RESULTS_MD = RESULTS / "bundle.md"

BUILD_SPEC = ScenarioSpec(files=2500, total_bytes=50 * MB, hosts=1, seed=1)
# Data files per byte in the verification scenarios: the build scenario's density.
FILES_PER_BYTE = BUILD_SPEC.files / BUILD_SPEC.total_bytes
VERIFY_TARGET_MB = 100
LINEARITY_MB = (25, 50, 100, 200)
# A bundle counts as "N MB" within this tolerance of N.
SIZE_TOLERANCE = 0.05

TARGET_BUILD_SECONDS = 2.0
TARGET_BUILD_RSS_BYTES = 150 * MB
TARGET_VERIFY_SECONDS = 0.3
# Linear: the fit t = a + b * size explains the medians (R^2), and the cost
# per MB of the largest step is close to that of the smallest.
LINEAR_MIN_R2 = 0.99
LINEAR_MAX_SLOPE_RATIO = 1.25

ENVIRONMENT = "prod"
KEY_NAME = "builder-key"
TMPFS = "/dev/shm"

# --scale shrinks every size for a quick smoke run; such results are never saved.
SCALE = 1.0


def build_spec() -> ScenarioSpec:
    if SCALE == 1.0:
        return BUILD_SPEC
    return replace(
        BUILD_SPEC,
        files=max(4, round(BUILD_SPEC.files * SCALE)),
        total_bytes=round(BUILD_SPEC.total_bytes * SCALE),
    )


def scaled_mb(megabytes: int) -> int:
    """A nominal size in bytes."""
    return round(megabytes * MB * SCALE)


# -- measuring -----------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int | None:
    rss = _status_kib("VmRSS")
    return None if rss is None else rss * 1024


def summary(samples: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {
        "runs": len(ordered),
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
        "stdev": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        "q1": quartiles[0],
        "q3": quartiles[2],
        "samples": list(samples),
    }


@dataclass(frozen=True)
class CommandRun:
    wall_seconds: float
    exit_code: int
    # Peak RSS by GNU time -v (None without it) and by wait4's rusage.
    rss_time_bytes: int | None
    rss_wait4_bytes: int
    user_seconds: float
    system_seconds: float
    stdout: str
    stderr: str

    @property
    def rss_bytes(self) -> int:
        return self.rss_time_bytes if self.rss_time_bytes is not None else self.rss_wait4_bytes


def _gnu_time() -> str | None:
    path = "/usr/bin/time"
    if not os.access(path, os.X_OK):
        return None
    probe = subprocess.run([path, "-v", "true"], capture_output=True, text=True, check=False)
    return path if "Maximum resident set size" in probe.stderr else None


GNU_TIME = _gnu_time()


def run_command(argv: Sequence[str], env: dict[str, str] | None = None) -> CommandRun:
    """Run `argv` once: wall time from spawn to exit, peak RSS, CPU time."""
    with tempfile.TemporaryDirectory(prefix="consign-bench-cmd-") as scratch:
        report = os.path.join(scratch, "time")
        full = [GNU_TIME, "-v", "-o", report, *argv] if GNU_TIME else list(argv)
        with open(os.path.join(scratch, "out"), "w+") as out, open(
            os.path.join(scratch, "err"), "w+"
        ) as err:
            start = time.perf_counter()
            process = subprocess.Popen(full, stdout=out, stderr=err, env=env)
            _pid, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - start
            process.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        rss_time = None
        exit_code = process.returncode
        if GNU_TIME and os.path.exists(report):
            text = Path(report).read_text()
            rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
            rss_time = int(rss.group(1)) * 1024 if rss else None
            child_exit = re.search(r"Exit status: (\d+)", text)
            if child_exit:
                exit_code = int(child_exit.group(1))
    return CommandRun(
        wall_seconds=wall,
        exit_code=exit_code,
        rss_time_bytes=rss_time,
        rss_wait4_bytes=usage.ru_maxrss * 1024,
        user_seconds=usage.ru_utime,
        system_seconds=usage.ru_stime,
        stdout=stdout,
        stderr=stderr,
    )


def measure_command(
    argv: Sequence[str], runs: int, warmup: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Time a command `runs` times after `warmup` untimed runs; fail loudly if it fails."""
    measured: list[CommandRun] = []
    for index in range(warmup + runs):
        # N.B. start each run on a quiet disk: otherwise the writeback of the
        # previous run's files (and ext4's discards) lands in this one.
        os.sync()
        run = run_command(argv, env=env)
        if run.exit_code != 0:
            raise SystemExit(
                f"benchmark command failed with exit code {run.exit_code}: {shlex.join(argv)}\n"
                f"{run.stdout}{run.stderr}"
            )
        if index >= warmup:
            measured.append(run)
    rss_time = [r.rss_time_bytes for r in measured if r.rss_time_bytes is not None]
    return {
        "argv": list(argv),
        "wall_seconds": summary([r.wall_seconds for r in measured]),
        "peak_rss_bytes": summary([r.rss_bytes for r in measured]),
        "peak_rss_method": "GNU time -v" if GNU_TIME else "wait4 rusage of the child",
        "peak_rss_wait4_bytes": summary([r.rss_wait4_bytes for r in measured]),
        "peak_rss_time_bytes": summary(rss_time) if rss_time else None,
        "cpu_seconds": summary([r.user_seconds + r.system_seconds for r in measured]),
        "warmup": warmup,
    }


# -- in-process workers ----------------------------------------------------------
#
# Run as `python bundle_bench.py _worker KIND JSON` by the benchmarks: a fresh
# interpreter, so that the harness's own memory (the generated data) and
# earlier runs do not blur the figures.


def _in_process_runs(call: Callable[[], object], runs: int, warmup: int,
                     before: Callable[[], None] | None = None) -> dict[str, Any]:
    per_run_peak = True
    walls: list[float] = []
    peaks: list[int] = []
    baselines: list[int] = []
    for index in range(warmup + runs):
        os.sync()  # a quiet disk, as in measure_command
        if before is not None:
            before()
        per_run_peak = reset_peak_rss() and per_run_peak
        baseline = current_rss_bytes() or 0
        start = time.perf_counter()
        call()
        wall = time.perf_counter() - start
        if index >= warmup:
            walls.append(wall)
            peaks.append(peak_rss_bytes())
            baselines.append(baseline)
    return {
        "wall_seconds": summary(walls),
        "peak_rss_bytes": summary(peaks),
        "rss_before_bytes": summary(baselines),
        "peak_rss_method": "VmHWM reset before each run"
        if per_run_peak
        else "process high-water mark (could not reset it per run)",
        "warmup": warmup,
    }


def _evict(path: str) -> None:
    """Drop the file's pages from the page cache (clean pages only: sync first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def worker_build(job: dict[str, Any]) -> dict[str, Any]:
    from builder.build import BuildOptions, build

    options = BuildOptions(
        ENVIRONMENT, repository=Path(job["repository"]), sign_keys=(Path(job["key"]),)
    )
    results: list[Any] = []
    figures = _in_process_runs(lambda: results.append(build(options)), job["runs"], job["warmup"])
    bundles = {str(h.path) for r in results for h in r.hosts}
    figures["bundle_sha256"] = sorted({_sha256_file(p) for p in bundles})
    figures["call"] = "builder.build.build(BuildOptions('prod', repository=REPO, sign_keys=(KEY,)))"
    return figures


def _verify_options(job: dict[str, Any]) -> Any:
    from executor.verify import VerifyOptions

    return VerifyOptions(
        bundle=job["bundle"],
        host=job["host"],
        trust_file=job["trust"],
        state_directory=job["state"],
    )


def worker_verify(job: dict[str, Any]) -> dict[str, Any]:
    from executor.verify import accept_bundle

    options = _verify_options(job)
    figures = _in_process_runs(lambda: accept_bundle(options), job["runs"], job["warmup"])
    if job.get("cold_runs"):
        cold = _in_process_runs(
            lambda: accept_bundle(options), job["cold_runs"], 0,
            before=lambda: _evict(job["bundle"]),
        )
        figures["cold_wall_seconds"] = cold["wall_seconds"]
    figures["call"] = (
        "executor.verify.accept_bundle(VerifyOptions(bundle=BUNDLE, host=HOST, "
        "trust_file=TRUST, state_directory=STATE))"
    )
    return figures


# -- profiling -----------------------------------------------------------------


class PhaseSampler:
    """Samples RSS and the main thread's stack every `interval` seconds while
    a call runs; attributes each sample to the function `root` called (the
    phase) and the deepest frame inside consign."""

    def __init__(self, root: str, interval: float = 0.002) -> None:
        self.root = root
        self.interval = interval
        self.samples: list[tuple[float, int, str, str]] = []
        self._stop = threading.Event()
        self._main = threading.main_thread().ident

    def _where(self) -> tuple[str, str]:
        frame = sys._current_frames().get(self._main or 0)
        stack = []
        while frame is not None:
            stack.append(frame)
            frame = frame.f_back
        stack.reverse()
        phase, inner = "(outside)", "(outside)"
        for depth, f in enumerate(stack):
            if f.f_code.co_name == self.root and depth + 1 < len(stack):
                nxt = stack[depth + 1].f_code
                phase = f"{Path(nxt.co_filename).stem}.{nxt.co_name}"
        for f in stack:
            name = f.f_code.co_filename
            if f"{os.sep}builder{os.sep}" in name or f"{os.sep}executor{os.sep}" in name:
                inner = f"{Path(name).parent.name}/{Path(name).name}:{f.f_code.co_name}"
        if stack:
            top = stack[-1].f_code
            inner += f" > {Path(top.co_filename).name}:{top.co_name}"
        return phase, inner

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.wait(self.interval):
            phase, inner = self._where()
            rss = current_rss_bytes() or 0
            self.samples.append((time.perf_counter() - start, rss, phase, inner))

    @contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()

    def report(self) -> str:
        if not self.samples:
            return "(no samples)\n"
        phases: dict[str, list[int]] = {}
        for _t, rss, phase, _inner in self.samples:
            phases.setdefault(phase, []).append(rss)
        lines = [
            f"{len(self.samples)} samples every {self.interval * 1000:.0f} ms; "
            "time by sample count, RSS as sampled",
            f"{'phase (called by ' + self.root + ')':<48} {'~time':>9} {'max RSS':>10}",
        ]
        total = len(self.samples)
        order = sorted(phases.items(), key=lambda kv: -len(kv[1]))
        for phase, values in order:
            share = len(values) * self.interval
            lines.append(f"{phase:<48} {share:>7.3f} s {max(values) / MB:>7.1f} MB")
        peak = max(self.samples, key=lambda s: s[1])
        lines.append(
            f"peak RSS {peak[1] / MB:.1f} MB at {peak[0]:.3f} s in {peak[2]}: {peak[3]}"
        )
        lines.append(f"({total} samples in all)")
        return "\n".join(lines) + "\n"


def _profile_text(profile: cProfile.Profile, limit: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)
    return out.getvalue()


def worker_profile(job: dict[str, Any]) -> dict[str, Any]:
    kind = job["target"]
    if kind == "build":
        from builder.build import BuildOptions, build

        options = BuildOptions(
            ENVIRONMENT, repository=Path(job["repository"]), sign_keys=(Path(job["key"]),)
        )

        def call() -> object:
            return build(options)

        root = "build"
    else:
        from executor.verify import accept_bundle

        verify_options = _verify_options(job)

        def call() -> object:
            return accept_bundle(verify_options)

        root = "accept_bundle"
    call()  # warm-up
    sampler = PhaseSampler(root)
    reset_peak_rss()
    start = time.perf_counter()
    with sampler.running():
        call()
    sampled_wall = time.perf_counter() - start
    sampled_peak = peak_rss_bytes()
    profile = cProfile.Profile()
    profile.enable()
    call()
    profile.disable()
    return {
        "sampled_wall_seconds": sampled_wall,
        "sampled_peak_rss_bytes": sampled_peak,
        "phases": sampler.report(),
        "cprofile": _profile_text(profile, job.get("limit", 30)),
    }


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "build": worker_build,
    "verify": worker_verify,
    "profile": worker_profile,
}


def run_worker(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_worker", kind, json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT,
    )
    if completed.returncode != 0:
        raise SystemExit(f"the {kind} worker failed:\n{completed.stdout}{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# -- the scenarios on disk -------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    private: Path
    trust: Path


@dataclass(frozen=True)
class PreparedBundle:
    path: Path
    size: int
    host: str
    scenario: dict[str, Any]
    build_seconds: float


class Workspace:
    """Scenarios, keys and bundles of one benchmark run, below one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._keys: Keys | None = None
        self._ratio: float | None = None
        self._bundles: dict[int, PreparedBundle] = {}
        self.state = root / "state"
        self.state.mkdir(mode=0o700, exist_ok=True)

    def keys(self) -> Keys:
        if self._keys is None:
            from builder.signing import allowed_signers_line, generate_key

            directory = self.root / "keys"
            public = generate_key(directory / KEY_NAME, comment="consign bench")
            trust = directory / "allowed_signers"
            trust.write_text(allowed_signers_line(public) + "\n")
            trust.chmod(0o644)
            self._keys = Keys(directory / KEY_NAME, trust)
        return self._keys

    def repository(self, name: str, spec: ScenarioSpec) -> Scenario:
        started = time.perf_counter()
        scenario = make_repository(self.root / name, spec)
        print(
            f"  scenario {name}: {scenario.data_files} files, {scenario.data_bytes / MB:.1f} MB "
            f"({time.perf_counter() - started:.1f} s to write and commit)",
            flush=True,
        )
        return scenario

    def build_once(self, scenario: Scenario) -> tuple[Path, float]:
        from builder.build import BuildOptions, build

        started = time.perf_counter()
        result = build(
            BuildOptions(
                ENVIRONMENT, repository=scenario.root, sign_keys=(self.keys().private,)
            )
        )
        return result.hosts[0].path, time.perf_counter() - started

    def _compression_ratio(self) -> float:
        """Bundle bytes per data byte of this generator, from a small build."""
        if self._ratio is None:
            spec = replace(build_spec(), files=max(4, build_spec().files // 5),
                           total_bytes=build_spec().total_bytes // 5, seed=99)
            scenario = self.repository("calibration", spec)
            path, _seconds = self.build_once(scenario)
            self._ratio = path.stat().st_size / scenario.data_bytes
            shutil.rmtree(scenario.root)
        return self._ratio

    def bundle(self, megabytes: int) -> PreparedBundle:
        """A bundle of about `megabytes` MB for one host, from a scenario with
        the build scenario's mix and file density."""
        if megabytes in self._bundles:
            return self._bundles[megabytes]
        ratio = self._compression_ratio()
        for _attempt in range(3):
            data_bytes = round(scaled_mb(megabytes) / ratio)
            spec = replace(
                BUILD_SPEC, files=max(4, round(data_bytes * FILES_PER_BYTE)),
                total_bytes=data_bytes,
            )
            scenario = self.repository(f"verify-{megabytes}mb", spec)
            path, seconds = self.build_once(scenario)
            size = path.stat().st_size
            target = self.root / "bundles" / f"{megabytes}mb.bundle"
            target.parent.mkdir(exist_ok=True)
            os.replace(path, target)
            shutil.rmtree(scenario.root)
            if abs(size / scaled_mb(megabytes) - 1) <= SIZE_TOLERANCE:
                break
            ratio = size / data_bytes  # the larger tree compressed differently: retry
            target.unlink()
        else:
            raise SystemExit(f"could not make a bundle of {megabytes} MB (last: {size} bytes)")
        prepared = PreparedBundle(target, size, scenario.hosts[0], _scenario_record(scenario), seconds)
        print(f"  bundle {megabytes} MB: {size / MB:.1f} MB", flush=True)
        self._bundles[megabytes] = prepared
        return prepared

    def verify_job(self, bundle: PreparedBundle, runs: int, warmup: int, cold_runs: int = 0) -> dict[str, Any]:
        return {
            "bundle": str(bundle.path),
            "host": bundle.host,
            "trust": str(self.keys().trust),
            "state": str(self.state),
            "runs": runs,
            "warmup": warmup,
            "cold_runs": cold_runs,
        }


def _scenario_record(scenario: Scenario) -> dict[str, Any]:
    return {
        "spec": asdict(scenario.spec),
        "commit": scenario.commit,
        "data_files": scenario.data_files,
        "data_bytes": scenario.data_bytes,
        "text_bytes": scenario.text_bytes,
        "binary_bytes": scenario.binary_bytes,
        "tracked_files": scenario.tracked_files,
        "tracked_bytes": scenario.tracked_bytes,
        "hosts": len(scenario.hosts),
    }


# -- the environment -------------------------------------------------------------


def _run_text(argv: Sequence[str]) -> str | None:
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=PROJECT)
    except OSError:
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _virtualised() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " hypervisor" in line for line in f)
    except OSError:
        return False


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _filesystem(path: Path) -> str:
    """The type and device of the mount holding `path` (ext4, tmpfs, ...)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                device, mount, fstype = line.split()[:3]
                inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, f"{fstype} ({device} on {mount})"
    except OSError:
        pass
    return kind


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment_record(workdir: Path) -> dict[str, Any]:
    import zstandard
    from cryptography.hazmat.backends.openssl import backend

    from executor import __version__

    commit = _run_text(["git", "rev-parse", "HEAD"])
    outside_bench = ["--", ".", ":(exclude)bench"]
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", *outside_bench],
        capture_output=True, text=True, check=False, cwd=PROJECT,
    ).stdout
    changes = [" ".join(line.split(maxsplit=1)) for line in status.splitlines() if line.strip()]
    # What the uncommitted code was: a digest of the diff and of new files.
    state = hashlib.sha256((_run_text(["git", "diff", "HEAD", *outside_bench]) or "").encode())
    for line in sorted(status.splitlines()):
        if line.startswith("??"):
            state.update(line.encode() + b"\0" + (PROJECT / line[3:]).read_bytes())
    return {
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "virtualised": _virtualised(),
            "memory_bytes": _memory_bytes(),
            "kernel": platform.release(),
            "workdir_filesystem": _filesystem(workdir),
            "gnu_time": GNU_TIME is not None,
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "consign": {
            "version": __version__,
            "commit": commit,
            # Uncommitted changes to consign itself (bench/ left out): the
            # figures then belong to the working tree, not to the commit.
            "changes_outside_bench": changes,
            "working_tree_sha256": state.hexdigest() if changes else None,
        },
        "libraries": {
            "zstandard": _version("zstandard"),
            "libzstd": zstandard.ZSTD_VERSION and ".".join(map(str, zstandard.ZSTD_VERSION)),
            "cryptography": _version("cryptography"),
            "openssl": backend.openssl_version_text(),
            "msgpack": _version("msgpack"),
            "typer": _version("typer"),
        },
        "git": _run_text(["git", "--version"]),
        "command_line": shlex.join(
            [os.path.relpath(sys.executable, PROJECT), os.path.relpath(__file__, PROJECT), *sys.argv[1:]]
        ),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


# -- the benchmarks ------------------------------------------------------------------


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def bench_build(ws: Workspace, runs: int, warmup: int) -> dict[str, Any]:
    print("build: build and sign a 50 MB / 2,500-file repository for one host", flush=True)
    scenario = ws.repository("build-50mb", build_spec())
    key = ws.keys().private
    argv = [_script("bundle"), "build", ENVIRONMENT, "-C", str(scenario.root), "--sign-key", str(key)]
    command = measure_command(argv, runs, warmup)
    command["command"] = "bundle build prod -C REPO --sign-key KEY"
    print(f"  command:    {_seconds_line(command)}", flush=True)
    in_process = run_worker(
        "build",
        {"repository": str(scenario.root), "key": str(key), "runs": runs, "warmup": warmup},
    )
    print(f"  in-process: {_seconds_line(in_process)}", flush=True)
    startup = measure_command([_script("bundle"), "--version"], runs, 1)
    startup["command"] = "bundle --version"
    # The same command with the builder's scratch directory (snapshot tar,
    # extracted tree, compressed blob) on tmpfs: isolates the cost of the
    # file system, creating the extracted tree's files above all.
    tmpfs = None
    if os.path.isdir(TMPFS) and os.access(TMPFS, os.W_OK):
        tmpfs = measure_command(argv, runs, warmup, env={**os.environ, "TMPDIR": TMPFS})
        tmpfs["command"] = f"TMPDIR={TMPFS} bundle build prod -C REPO --sign-key KEY"
        print(f"  on tmpfs:   {_seconds_line(tmpfs)}", flush=True)
    bundle = scenario.root / "bundles" / ENVIRONMENT / f"{scenario.hosts[0]}.bundle"
    record = {
        "scenario": _scenario_record(scenario),
        "bundle_bytes": bundle.stat().st_size,
        "command": command,
        "in_process": in_process,
        "startup": startup,
        "command_scratch_on_tmpfs": tmpfs,
        "targets": {"wall_seconds": TARGET_BUILD_SECONDS, "peak_rss_bytes": TARGET_BUILD_RSS_BYTES},
    }
    record["met"] = {
        "command_wall": command["wall_seconds"]["median"] < TARGET_BUILD_SECONDS,
        "command_rss": command["peak_rss_bytes"]["max"] < TARGET_BUILD_RSS_BYTES,
        "in_process_wall": in_process["wall_seconds"]["median"] < TARGET_BUILD_SECONDS,
        "in_process_rss": in_process["peak_rss_bytes"]["max"] < TARGET_BUILD_RSS_BYTES,
    }
    shutil.rmtree(scenario.root)
    return record


def bench_verify(ws: Workspace, runs: int, warmup: int) -> dict[str, Any]:
    print(f"verify: verify a {VERIFY_TARGET_MB} MB bundle", flush=True)
    bundle = ws.bundle(VERIFY_TARGET_MB)
    in_process = run_worker("verify", ws.verify_job(bundle, runs, warmup, cold_runs=max(3, runs // 2)))
    print(f"  in-process: {_seconds_line(in_process)}", flush=True)
    keys = ws.keys()
    argv = [
        _script("executor"), "verify", str(bundle.path), "--host", bundle.host,
        "--trust", str(keys.trust), "--state-dir", str(ws.state),
    ]
    command = measure_command(argv, runs, warmup)
    command["command"] = "executor verify BUNDLE --host HOST --trust TRUST --state-dir STATE"
    print(f"  command:    {_seconds_line(command)}", flush=True)
    startup = measure_command([_script("executor"), "--version"], runs, 1)
    startup["command"] = "executor --version"
    return {
        "bundle_bytes": bundle.size,
        "scenario": bundle.scenario,
        "in_process": in_process,
        "command": command,
        "startup": startup,
        "targets": {"wall_seconds": TARGET_VERIFY_SECONDS},
        "met": {"in_process_wall": in_process["wall_seconds"]["median"] < TARGET_VERIFY_SECONDS},
    }


def least_squares(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """y = intercept + slope * x, and R^2."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    total = sum((y - mean_y) ** 2 for y in ys)
    return {"slope": slope, "intercept": intercept, "r2": 1 - residual / total if total else 1.0}


def bench_linearity(ws: Workspace, runs: int, warmup: int) -> dict[str, Any]:
    print(f"linearity: verify bundles of {', '.join(map(str, LINEARITY_MB))} MB", flush=True)
    points = []
    for megabytes in LINEARITY_MB:
        bundle = ws.bundle(megabytes)
        figures = run_worker("verify", ws.verify_job(bundle, runs, warmup))
        median = figures["wall_seconds"]["median"]
        points.append(
            {
                "nominal_mb": megabytes,
                "bundle_bytes": bundle.size,
                "data_bytes": bundle.scenario["data_bytes"],
                "data_files": bundle.scenario["data_files"],
                "wall_seconds": figures["wall_seconds"],
                "ms_per_mb": median * 1000 / (bundle.size / MB),
            }
        )
        print(f"  {megabytes:>3} MB: {_seconds_line(figures)}", flush=True)
    xs = [p["bundle_bytes"] / MB for p in points]
    ys = [p["wall_seconds"]["median"] * 1000 for p in points]
    fit = least_squares(xs, ys)
    first = (ys[1] - ys[0]) / (xs[1] - xs[0])
    last = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    ratio = last / first if first > 0 else float("inf")
    linear = fit["r2"] >= LINEAR_MIN_R2 and 1 / LINEAR_MAX_SLOPE_RATIO <= ratio <= LINEAR_MAX_SLOPE_RATIO
    return {
        "points": points,
        "fit_ms": {
            "slope_ms_per_mb": fit["slope"],
            "intercept_ms": fit["intercept"],
            "r2": fit["r2"],
            "first_step_ms_per_mb": first,
            "last_step_ms_per_mb": last,
            "step_ratio": ratio,
        },
        "criteria": {"min_r2": LINEAR_MIN_R2, "max_step_ratio": LINEAR_MAX_SLOPE_RATIO},
        "linear": linear,
    }


def _seconds_line(figures: dict[str, Any]) -> str:
    wall = figures["wall_seconds"]
    rss = figures["peak_rss_bytes"]
    return (
        f"median {wall['median']:.3f} s (min {wall['min']:.3f}, max {wall['max']:.3f}), "
        f"peak RSS {rss['max'] / MB:.1f} MB"
    )


def _profile_command(argv: Sequence[str], limit: int) -> str:
    """The console script `argv` under cProfile (after one unprofiled run)."""
    run_command(argv)
    with tempfile.TemporaryDirectory(prefix="consign-bench-prof-") as scratch:
        out = os.path.join(scratch, "profile")
        completed = subprocess.run(
            [sys.executable, "-m", "cProfile", "-o", out, *argv],
            capture_output=True, text=True, check=False,
        )
        if completed.returncode != 0:
            raise SystemExit(f"profiling {shlex.join(argv)} failed:\n{completed.stderr}")
        text = io.StringIO()
        pstats.Stats(out, stream=text).sort_stats("cumulative").print_stats(limit)
    return text.getvalue()


def profile(ws: Workspace, target: str, limit: int) -> str:
    keys = ws.keys()
    if target == "build":
        scenario = ws.repository("profile-build-50mb", build_spec())
        job: dict[str, Any] = {"repository": str(scenario.root), "key": str(keys.private)}
        argv = [_script("bundle"), "build", ENVIRONMENT, "-C", str(scenario.root),
                "--sign-key", str(keys.private)]
    else:
        bundle = ws.bundle(VERIFY_TARGET_MB)
        job = ws.verify_job(bundle, 0, 0)
        argv = [_script("executor"), "verify", str(bundle.path), "--host", bundle.host,
                "--trust", str(keys.trust), "--state-dir", str(ws.state)]
    job.update(target=target, limit=limit)
    figures = run_worker("profile", job)
    return (
        f"# profile of one in-process {target} (after a warm-up)\n\n"
        f"sampled run: {figures['sampled_wall_seconds']:.3f} s, "
        f"peak RSS {figures['sampled_peak_rss_bytes'] / MB:.1f} MB\n\n"
        f"## phases (RSS and stack sampler)\n\n{figures['phases']}\n"
        f"## cProfile (a separate run; profiling overhead inflates Python-heavy code)\n\n"
        f"{figures['cprofile']}\n"
        f"## the command under cProfile: {Path(argv[0]).name} {argv[1]} ...\n\n"
        f"{_profile_command(argv, limit)}"
    )


# -- results -------------------------------------------------------------------------


def load_results() -> dict[str, Any]:
    if RESULTS_JSON.exists():
        data: dict[str, Any] = json.loads(RESULTS_JSON.read_text())
        return data
    return {"benchmarks": {}}


def save_results(results: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    RESULTS_MD.write_text(render_markdown(results))


def _s(value: float) -> str:
    return f"{value:.3f}"


def _spread(wall: dict[str, Any]) -> str:
    return f"{_s(wall['min'])}–{_s(wall['max'])} (σ {wall['stdev'] * 1000:.1f} ms)"


def _mb(value: float) -> str:
    return f"{value / MB:.1f}"


def _yes(met: bool) -> str:
    return "yes" if met else "**NO**"


def _environment_md(env: dict[str, Any]) -> list[str]:
    machine, libraries, consign = env["machine"], env["libraries"], env["consign"]
    changes = consign["changes_outside_bench"]
    state = (
        "clean"
        if not changes
        else f"uncommitted changes, digest {consign['working_tree_sha256'][:12]}: "
        + ", ".join(f"`{c}`" for c in changes)
    )
    memory = machine["memory_bytes"]
    return [
        "| | |",
        "| --- | --- |",
        f"| CPU | {machine['cpu']}, {machine['cores']} cores"
        f"{' (virtual machine)' if machine['virtualised'] else ''} |",
        f"| memory | {memory / 2**30:.1f} GiB |" if memory else "| memory | unknown |",
        f"| kernel, work dir | Linux {machine['kernel']}; {machine['workdir_filesystem']} |",
        f"| Python | {env['python']['implementation']} {env['python']['version']} |",
        f"| consign | {consign['version']}, commit {consign['commit']} ({state}) |",
        f"| libraries | zstandard {libraries['zstandard']} (libzstd {libraries['libzstd']}), "
        f"cryptography {libraries['cryptography']} ({libraries['openssl']}), "
        f"msgpack {libraries['msgpack']}, typer {libraries['typer']} |",
        f"| git | {env['git']} |",
        f"| command | `{env['command_line']}` |",
        f"| date | {env['date']} |",
    ]


def render_markdown(results: dict[str, Any]) -> str:
    benchmarks = results["benchmarks"]
    lines = [
        "# Bundle benchmarks: results",
        "",
        "Written by `bench/bundle_bench.py`; see `bench/README.md`. Times in seconds "
        "(median of the measured runs, then min–max and standard deviation); "
        "sizes and memory in MB = 10^6 bytes; RSS is the peak resident set size.",
        "",
    ]
    build = benchmarks.get("build")
    if build:
        scenario = build["scenario"]
        lines += [
            "## Build and sign (target: under 2 s, peak memory under 150 MB)",
            "",
            f"Repository: {scenario['data_files']} data files, {_mb(scenario['data_bytes'])} MB "
            f"({_mb(scenario['text_bytes'])} MB text, {_mb(scenario['binary_bytes'])} MB random), "
            f"commit {scenario['commit'][:12]}, one host; bundle {_mb(build['bundle_bytes'])} MB. "
            f"{build['command']['wall_seconds']['runs']} runs after "
            f"{build['command']['warmup']} warm-up.",
            "",
            "| measured | median s | spread s | peak RSS MB (max) | CPU s | wall met | memory met |",
            "| --- | ---: | --- | ---: | ---: | --- | --- |",
        ]
        command, in_process = build["command"], build["in_process"]
        met = build["met"]
        lines.append(
            f"| `{command['command']}` | {_s(command['wall_seconds']['median'])} | "
            f"{_spread(command['wall_seconds'])} | {_mb(command['peak_rss_bytes']['max'])} | "
            f"{_s(command['cpu_seconds']['median'])} | {_yes(met['command_wall'])} | "
            f"{_yes(met['command_rss'])} |"
        )
        lines.append(
            f"| `builder.build.build` in-process | {_s(in_process['wall_seconds']['median'])} | "
            f"{_spread(in_process['wall_seconds'])} | {_mb(in_process['peak_rss_bytes']['max'])} | "
            f"– | {_yes(met['in_process_wall'])} | {_yes(met['in_process_rss'])} |"
        )
        tmpfs = build.get("command_scratch_on_tmpfs")
        if tmpfs:
            lines.append(
                f"| `{tmpfs['command']}` (variant: scratch on tmpfs) | "
                f"{_s(tmpfs['wall_seconds']['median'])} | {_spread(tmpfs['wall_seconds'])} | "
                f"{_mb(tmpfs['peak_rss_bytes']['max'])} | {_s(tmpfs['cpu_seconds']['median'])} | | |"
            )
        startup = build["startup"]
        lines.append(
            f"| `{startup['command']}` (start-up alone) | {_s(startup['wall_seconds']['median'])} | "
            f"{_spread(startup['wall_seconds'])} | {_mb(startup['peak_rss_bytes']['max'])} | "
            f"{_s(startup['cpu_seconds']['median'])} | | |"
        )
        cross_check = ""
        if command.get("peak_rss_time_bytes"):
            cross_check = (
                f" (wait4's rusage of the same runs: max "
                f"{_mb(command['peak_rss_wait4_bytes']['max'])} MB)"
            )
        lines += [
            "",
            f"Command RSS by {command['peak_rss_method']}{cross_check}; in-process RSS: "
            f"{in_process['peak_rss_method']} (the worker held "
            f"{_mb(in_process['rss_before_bytes']['median'])} MB before each run). "
            f"All builds gave one bundle: sha256 {', '.join(in_process['bundle_sha256'])}.",
            "",
        ]
    verify = benchmarks.get("verify")
    if verify:
        in_process, command, startup = verify["in_process"], verify["command"], verify["startup"]
        met = verify["met"]
        lines += [
            "## Verify (target: under 0.3 s for a 100 MB bundle, in-process)",
            "",
            f"Bundle: {_mb(verify['bundle_bytes'])} MB from "
            f"{verify['scenario']['data_files']} files, {_mb(verify['scenario']['data_bytes'])} MB "
            f"of data. {in_process['wall_seconds']['runs']} runs after "
            f"{in_process['warmup']} warm-up.",
            "",
            "| measured | median s | spread s | peak RSS MB (max) | target met |",
            "| --- | ---: | --- | ---: | --- |",
            f"| `executor.verify.accept_bundle` in-process, bundle in page cache | "
            f"{_s(in_process['wall_seconds']['median'])} | {_spread(in_process['wall_seconds'])} | "
            f"{_mb(in_process['peak_rss_bytes']['max'])} | {_yes(met['in_process_wall'])} |",
        ]
        cold = in_process.get("cold_wall_seconds")
        if cold:
            lines.append(
                f"| the same, bundle evicted from the page cache before each run | "
                f"{_s(cold['median'])} | {_spread(cold)} | – | (disk-bound) |"
            )
        lines += [
            f"| `{command['command']}` | {_s(command['wall_seconds']['median'])} | "
            f"{_spread(command['wall_seconds'])} | {_mb(command['peak_rss_bytes']['max'])} | "
            "(includes start-up) |",
            f"| `{startup['command']}` (start-up alone) | {_s(startup['wall_seconds']['median'])} | "
            f"{_spread(startup['wall_seconds'])} | {_mb(startup['peak_rss_bytes']['max'])} | |",
            "",
        ]
    linearity = benchmarks.get("linearity")
    if linearity:
        fit = linearity["fit_ms"]
        lines += [
            "## Verification cost against bundle size (in-process, page cache warm)",
            "",
            "| bundle MB | data MB | files | median s | spread s | ms per MB |",
            "| ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        for point in linearity["points"]:
            lines.append(
                f"| {_mb(point['bundle_bytes'])} | {_mb(point['data_bytes'])} | "
                f"{point['data_files']} | {_s(point['wall_seconds']['median'])} | "
                f"{_spread(point['wall_seconds'])} | {point['ms_per_mb']:.3f} |"
            )
        verdict = "linear" if linearity["linear"] else "**NOT linear**"
        lines += [
            "",
            f"Least squares over the medians: t = {fit['intercept_ms']:.2f} ms + "
            f"{fit['slope_ms_per_mb']:.3f} ms/MB × size, R² = {fit['r2']:.5f}. Cost per MB of "
            f"the first step (25→50 MB) {fit['first_step_ms_per_mb']:.3f} ms, of the last "
            f"(100→200 MB) {fit['last_step_ms_per_mb']:.3f} ms (ratio {fit['step_ratio']:.2f}). "
            f"Verdict: {verdict} (criteria: R² ≥ {linearity['criteria']['min_r2']}, step ratio "
            f"within 1/{linearity['criteria']['max_step_ratio']}–"
            f"{linearity['criteria']['max_step_ratio']}).",
            "",
        ]
    # One table per distinct environment (runs of different days or code).
    groups: list[tuple[list[str], dict[str, Any]]] = []
    for name in ("build", "verify", "linearity"):
        if name not in benchmarks:
            continue
        env = benchmarks[name]["environment"]
        for names, seen in groups:
            if seen == env:
                names.append(name)
                break
        else:
            groups.append(([name], env))
    for names, env in groups:
        title = ", ".join(f"`{n}`" for n in names)
        lines += [f"## Environment of {title}", "", *_environment_md(env), ""]
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="measured runs (default per benchmark)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to put scenarios (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-save", action="store_true", help="print, but do not write bench/results/")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink all sizes (smoke runs; implies --no-save)")
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name in ("build", "verify", "linearity", "all"):
        sub.add_parser(name)
    sub.add_parser("render", help="rewrite bench/results/bundle.md from bundle.json")
    prof = sub.add_parser("profile")
    prof.add_argument("target", choices=("build", "verify"))
    prof.add_argument("--limit", type=int, default=30, help="rows of each cProfile table")
    prof.add_argument("--out", type=Path, default=None, help="also write the report here")
    worker = sub.add_parser("_worker")
    worker.add_argument("kind", choices=sorted(WORKERS))
    worker.add_argument("job")
    args = parser.parse_args(argv)

    global SCALE
    SCALE = args.scale
    if SCALE != 1.0:
        args.no_save = True
    if args.benchmark == "_worker":
        print(json.dumps(WORKERS[args.kind](json.loads(args.job))))
        return
    if args.benchmark == "render":
        save_results(load_results())
        return

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=False)
        workdir = args.workdir.resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="consign-bench-"))
    ws = Workspace(workdir)
    try:
        if args.benchmark == "profile":
            report = profile(ws, args.target, args.limit)
            print(report)
            if args.out:
                args.out.write_text(report)
            return
        env = environment_record(workdir)
        chosen = ("build", "verify", "linearity") if args.benchmark == "all" else (args.benchmark,)
        defaults = {"build": 7, "verify": 15, "linearity": 11}
        functions = {"build": bench_build, "verify": bench_verify, "linearity": bench_linearity}
        results = load_results()
        for name in chosen:
            runs = args.runs if args.runs is not None else defaults[name]
            record = functions[name](ws, runs, args.warmup)
            record["environment"] = env
            results["benchmarks"][name] = record
            if not args.no_save:
                save_results(results)
        if args.no_save:
            print(render_markdown(results))
        else:
            print(f"wrote {RESULTS_JSON.relative_to(PROJECT)} and {RESULTS_MD.relative_to(PROJECT)}")
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
