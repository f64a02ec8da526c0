"""Speed of the bundle's runtime (the pex of requirements and consign), against issue 4's targets.

    .venv/bin/python bench/runtime_bench.py rebuild   # unchanged rebuild: what the runtime costs, warm and cold
    .venv/bin/python bench/runtime_bench.py hosts     # 100 hosts, one requirements set: how many pex builds
    .venv/bin/python bench/runtime_bench.py prepare   # first apply of a new runtime digest: the venv from the pex
    .venv/bin/python bench/runtime_bench.py startup   # later apply: launch -> first configure, and where it goes
    .venv/bin/python bench/runtime_bench.py all       # the four above, sharing one work directory

Each benchmark writes its section of ``bench/results/runtime.json`` (other
sections are kept) and renders ``bench/results/runtime.md`` from it.

Every build runs with a runtime cache of its own (``CONSIGN_CACHE_DIR``: a
new, empty directory for a cold build, the work directory's shared one for
a warm build) and one shared ``CONSIGN_PEX_ROOT`` below the work directory,
pex's download cache: the first build of a run fills it from the package
index (reported apart, as "first build on this machine"); every later cold
build resolves against the index again but downloads nothing.

The harness reuses the measuring helpers of ``bundle_bench.py`` (wall time
from spawn to exit, peak RSS, the machine record) and the repositories of
``scenarios.py``. In-process figures come from a fresh worker interpreter
(this script with a ``_worker`` subcommand). The start-up benchmark takes
the launch time (``time.time()`` just before the executor is spawned) and
the moment the first root's ``configure`` runs in the runtime's child
process (a probe component appends ``time.time()`` to a file), both on the
same wall clock.

Sizes are decimal: 1 MB = 10**6 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import bundle_bench as bb
from scenarios import MB, Scenario, ScenarioSpec, host_names, make_repository

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
RESULTS = BENCH / "results"
RESULTS_JSON = RESULTS / "runtime.json"
RESULTS_MD = RESULTS / "runtime.md"

ENVIRONMENT = "prod"
REQUIREMENT = "SQLAlchemy==2.1.9"
# Small repositories: what is measured is the runtime, not the snapshot.
SMALL_SPEC = ScenarioSpec(files=200, total_bytes=2 * MB, hosts=1, seed=41)
HOSTS = 100
HOSTS_SPEC = replace(SMALL_SPEC, hosts=HOSTS, seed=42)
PROBE_SPEC = ScenarioSpec(files=8, total_bytes=80_000, hosts=1, components=2, seed=43)
EXAMPLE_ENVIRONMENT = "local"
EXAMPLE_HOST = "localhost"

TARGET_REBUILD_RUNTIME_SECONDS = 0.5
TARGET_PEX_BUILDS = 1
TARGET_PREPARE_SECONDS = 5.0
TARGET_START_SECONDS = 0.5

# A component that imports a package of requirements.txt at load time and
# uses it in configure, as the example's components/db does.
SCHEMA_COMPONENT = '''\
# Uses a package of requirements.txt, as the example's components/db does.
import sqlalchemy
from batou.component import Component


class Schema(Component):
    def configure(self):
        metadata = sqlalchemy.MetaData()
        sqlalchemy.Table(
            "items", metadata, sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True)
        )
        assert "items" in metadata.tables
'''

# The start-up probe: when its file was loaded, and when configure ran.
PROBE_COMPONENT = '''\
# Appends "<file loaded> <configure ran>" (time.time()) to the file `stamps`.
import time

LOADED = time.time()

from batou.component import Attribute, Component  # noqa: E402


class Probe(Component):
    stamps = Attribute(str, default="")

    def configure(self):
        now = time.time()
        if self.stamps:
            with open(self.stamps, "a") as f:
                f.write(f"{LOADED!r} {now!r}\\n")
'''

# Runs the executor's console script in-process with timestamps around the
# steps of an apply; writes [(label, time.time()), ...] as JSON to
# $CONSIGN_BENCH_TIMELINE, and with $CONSIGN_BENCH_REQUEST the child's
# command line and the request sent to its stdin. The lazy imports of the apply command happen
# up front here, so that they show as their own step. Only accept_bundle,
# run_runtime and the spawn are needed for the phases; the other names are
# recorded when executor.apply has them.
TIMELINE_DRIVER = r'''
import sys, time
_T = [("ready", time.time())]
import json, os, subprocess
import executor.cli
_T.append(("imported executor.cli", time.time()))
import executor.apply as _apply
import executor.render
_T.append(("imported executor.apply", time.time()))

def _timed(module, name):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        _T.append((name + " start", time.time()))
        try:
            return original(*args, **kwargs)
        finally:
            _T.append((name + " end", time.time()))
    setattr(module, name, wrapper)

for _name in ("accept_bundle", "load_model", "_model_bytes", "unpack_snapshot",
              "prepare_runtime", "save_state", "run_runtime"):
    if hasattr(_apply, _name):
        _timed(_apply, _name)

class _Popen(subprocess.Popen):
    def __init__(self, *args, **kwargs):
        _T.append(("spawn start", time.time()))
        super().__init__(*args, **kwargs)
        _T.append(("spawn end", time.time()))
        # The request the executor hands the runtime, to replay the child by
        # hand: a JSON file named on its command line, or its stdin.
        argv = [str(a) for a in args[0]]
        files = {}
        for arg in argv[1:]:
            if arg.endswith(".json") and os.path.isfile(arg):
                with open(arg) as f:
                    files[arg] = f.read()
        self._bench_capture = {"argv": argv, "files": files, "stdin": None}
        self._bench_save()

    def _bench_save(self):
        if os.environ.get("CONSIGN_BENCH_REQUEST"):
            with open(os.environ["CONSIGN_BENCH_REQUEST"], "w") as f:
                json.dump(self._bench_capture, f)

    def communicate(self, input=None, timeout=None):
        if input is not None:
            self._bench_capture["stdin"] = input.decode()
            self._bench_save()
        return super().communicate(input, timeout)

subprocess.Popen = _Popen
sys.argv = ["executor", *sys.argv[1:]]
_code = 0
try:
    executor.cli.main()
except SystemExit as exc:
    _code = exc.code
_T.append(("done", time.time()))
with open(os.environ["CONSIGN_BENCH_TIMELINE"], "w") as f:
    json.dump(_T, f)
sys.exit(_code)
'''


def _fail(what: str, argv: Sequence[str], out: str) -> SystemExit:
    return SystemExit(f"{what} failed: {shlex.join(argv)}\n{out[-4000:]}")


def run_checked(argv: Sequence[str], env: dict[str, str] | None = None) -> bb.CommandRun:
    """One run of a command (bundle_bench's run_command, after a sync); fail loudly."""
    os.sync()
    run = bb.run_command(argv, env=env)
    if run.exit_code != 0:
        raise _fail(f"command (exit {run.exit_code})", argv, run.stdout + run.stderr)
    return run


def _command_figures(runs: list[bb.CommandRun], argv: Sequence[str], command: str) -> dict[str, Any]:
    return {
        "command": command,
        "argv": list(argv),
        "wall_seconds": bb.summary([r.wall_seconds for r in runs]),
        "peak_rss_bytes": bb.summary([r.rss_bytes for r in runs]),
        "cpu_seconds": bb.summary([r.user_seconds + r.system_seconds for r in runs]),
        "warmup": 0,
    }


def _tree_bytes(path: Path) -> tuple[int, int]:
    """Files and bytes below `path`."""
    files = size = 0
    for entry in path.rglob("*"):
        if entry.is_file() and not entry.is_symlink():
            files += 1
            size += entry.stat().st_size
    return files, size


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- the work directory ----------------------------------------------------------


class Workspace:
    """Repositories, keys, caches and host directories of one benchmark run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # pex's download cache, shared by every runtime cache of this run.
        self.pex_root = root / "pex-root"
        self.pex_root.mkdir(exist_ok=True)
        # The runtime cache of warm builds.
        self.cache = root / "cache"
        self._keys = bb.Workspace(root)
        self._repositories: dict[str, Scenario] = {}
        self._counter = 0

    def keys(self) -> bb.Keys:
        return self._keys.keys()

    def fresh(self, name: str) -> Path:
        """A new directory (mode 0700) that did not exist before."""
        self._counter += 1
        path = self.root / f"{name}-{self._counter:03d}"
        path.mkdir(mode=0o700)
        return path

    def env(self, cache: Path, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "CONSIGN_CACHE_DIR": str(cache),
            "CONSIGN_PEX_ROOT": str(self.pex_root),
            **extra,
        }

    def repository(
        self, name: str, spec: ScenarioSpec, extra: dict[str, str] | None = None
    ) -> Scenario:
        if name not in self._repositories:
            started = time.perf_counter()
            scenario = make_repository(self.root / name, spec, extra)
            print(
                f"  scenario {name}: {scenario.data_files} files, "
                f"{scenario.data_bytes / MB:.1f} MB, {len(scenario.hosts)} hosts "
                f"({time.perf_counter() - started:.1f} s to write and commit)",
                flush=True,
            )
            self._repositories[name] = scenario
        return self._repositories[name]

    def build_argv(self, root: Path, environment: str = ENVIRONMENT) -> list[str]:
        return [
            bb._script("bundle"), "build", environment, "-C", str(root),
            "--sign-key", str(self.keys().private),
        ]

    def build(self, root: Path, cache: Path, environment: str = ENVIRONMENT) -> bb.CommandRun:
        return run_checked(self.build_argv(root, environment), env=self.env(cache))


def requirements_files(hosts: Sequence[str], roots: str) -> dict[str, str]:
    """requirements.txt, the schema component, and hosts with `roots`."""
    return {
        "requirements.txt": REQUIREMENT + "\n",
        "components/schema/component.py": SCHEMA_COMPONENT,
        f"environments/{ENVIRONMENT}/environment.cfg": _environment_cfg(hosts, roots),
    }


def _environment_cfg(hosts: Sequence[str], roots: str, extra: str = "") -> str:
    lines = [
        "[environment]",
        "host_domain = bench.example",
        "platform = ubuntu",
        "target_directory = /srv/bench",
        "",
        "[hosts]",
        *(f"{host} = {roots}" for host in hosts),
    ]
    return "\n".join(lines) + "\n" + extra


def probe_files(stamps: Path, schema: bool) -> dict[str, str]:
    files = {
        "requirements.txt": REQUIREMENT + "\n",
        "components/probe/component.py": PROBE_COMPONENT,
        f"environments/{ENVIRONMENT}/environment.cfg": _environment_cfg(
            ["host001"],
            "probe, site, schema" if schema else "probe, site",
            f"\n[component:probe]\nstamps = {stamps}\n",
        ),
    }
    if schema:
        files["components/schema/component.py"] = SCHEMA_COMPONENT
    return files


def _pex_files(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "runtimes").glob("*.pex"))


def _venvs(cache: Path) -> int:
    directory = cache / "venvs"
    return len(list(directory.iterdir())) if directory.is_dir() else 0


def _bundles(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.bundle"))


def _runtime_entries(bundles: Sequence[Path]) -> dict[str, int]:
    """How many of `bundles` carry each runtime blob (by its sha256)."""
    from executor.bundle import decode_unverified, read_envelope

    counts: dict[str, int] = {}
    for path in bundles:
        entry = decode_unverified(read_envelope(str(path))).blob("runtime")
        assert entry is not None
        counts[entry.sha256] = counts.get(entry.sha256, 0) + 1
    return counts


# -- in-process workers ----------------------------------------------------------


def _timed_names(module: Any, names: Sequence[str], sink: Callable[[], dict[str, float]],
                 calls: dict[str, int]) -> None:
    """Wrap module-level functions so that each call adds its time to sink()[name]."""
    for name in names:
        original = getattr(module, name)

        def wrapper(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                bucket = sink()
                bucket[_name] = bucket.get(_name, 0.0) + time.perf_counter() - started
                calls[_name] = calls.get(_name, 0) + 1

        setattr(module, name, wrapper)


class _SubprocessCounter:
    """Counts the subprocess.run calls of a build: pex builds, venvs from pexes, git."""

    def __init__(self) -> None:
        self.pex_builds = 0
        self.pex_venvs = 0
        self.other: dict[str, int] = {}
        self._original = subprocess.run

    def install(self) -> None:
        def counting(argv: Any, *args: Any, **kwargs: Any) -> Any:
            words = [str(a) for a in argv] if isinstance(argv, (list, tuple)) else [str(argv)]
            if "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["pex"]:
                self.pex_builds += 1
            elif len(words) > 2 and words[1].endswith(".pex") and "venv" in words:
                self.pex_venvs += 1
            else:
                name = Path(words[0]).name
                self.other[name] = self.other.get(name, 0) + 1
            return self._original(argv, *args, **kwargs)

        subprocess.run = counting  # type: ignore[assignment]


def worker_rebuild(job: dict[str, Any]) -> dict[str, Any]:
    """Unchanged rebuilds, in-process: the time of each runtime step."""
    import builder.build as build_module
    from builder.build import BuildOptions, build

    counter = _SubprocessCounter()
    counter.install()
    phases: list[dict[str, float]] = []
    calls: dict[str, int] = {}
    names = ("_runtimes", "_importable_requirements", "runtime_blob", "import_environment",
             "load_components", "_write")
    _timed_names(build_module, names, lambda: phases[-1], calls)
    options = BuildOptions(
        ENVIRONMENT, repository=Path(job["repository"]), sign_keys=(Path(job["key"]),),
        cache=Path(job["cache"]),
    )
    def call() -> None:
        phases.append({})
        build(options)

    figures = bb._in_process_runs(call, job["runs"], job["warmup"])
    measured = phases[job["warmup"]:]
    figures["phases_seconds"] = {
        name: bb.summary([p.get(name, 0.0) for p in measured]) for name in names
    }
    figures["runtime_seconds"] = bb.summary(
        [p.get("runtime_blob", 0.0) + p.get("import_environment", 0.0) for p in measured]
    )
    figures["runtime_total_seconds"] = bb.summary(
        [p.get("_runtimes", 0.0) + p.get("_importable_requirements", 0.0) for p in measured]
    )
    runs = job["runs"] + job["warmup"]
    figures["calls_per_build"] = {name: count / runs for name, count in calls.items()}
    figures["pex_builds"] = counter.pex_builds
    figures["pex_venvs"] = counter.pex_venvs
    figures["call"] = (
        "builder.build.build(BuildOptions('prod', repository=REPO, sign_keys=(KEY,), cache=CACHE))"
    )
    return figures


def worker_count(job: dict[str, Any]) -> dict[str, Any]:
    """One build with a new cache, counting the pex builds it starts."""
    from builder.build import BuildOptions, build

    counter = _SubprocessCounter()
    counter.install()
    options = BuildOptions(
        ENVIRONMENT, repository=Path(job["repository"]), sign_keys=(Path(job["key"]),),
        cache=Path(job["cache"]),
    )
    os.sync()
    started = time.perf_counter()
    result = build(options)
    wall = time.perf_counter() - started
    return {
        "wall_seconds": wall,
        "hosts": len(result.hosts),
        "pex_builds": counter.pex_builds,
        "pex_venvs": counter.pex_venvs,
        "other_subprocesses": counter.other,
        "cached_pex_files": len(_pex_files(Path(job["cache"]))),
    }


def worker_prepare(job: dict[str, Any]) -> dict[str, Any]:
    """prepare_runtime into a new, empty runtime directory each run."""
    from executor.runtime import prepare_runtime
    from executor.verify import VerifyOptions, accept_bundle

    bundle = accept_bundle(
        VerifyOptions(bundle=job["bundle"], host=job["host"], trust_file=job["trust"],
                      state_directory=job["state"])
    ).bundle
    steps: list[dict[str, float]] = []
    # The bundle is a frozen dataclass: wrap its class's method.
    bundle_class = type(bundle)
    original_extract = bundle_class.extract_to
    original_run = subprocess.run

    def extract_to(self: Any, name: str, destination: str) -> None:
        started = time.perf_counter()
        try:
            original_extract(self, name, destination)
        finally:
            steps[-1]["extract the pex from the bundle"] = time.perf_counter() - started

    def run(argv: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_run(argv, *args, **kwargs)
        finally:
            steps[-1]["PEX_TOOLS=1 python runtime.pex venv"] = time.perf_counter() - started

    bundle_class.extract_to = extract_to  # type: ignore[method-assign]
    subprocess.run = run  # type: ignore[assignment]
    root = Path(job["root"])
    directories: list[Path] = []
    pythons: list[Path] = []

    def before() -> None:
        for previous in directories:
            shutil.rmtree(previous, ignore_errors=True)
        directories.append(root / f"runtimes-{len(directories):03d}")

    def call() -> None:
        steps.append({})
        pythons.append(prepare_runtime(bundle, directories[-1]))

    figures = bb._in_process_runs(call, job["runs"], job["warmup"], before=before)
    measured = steps[job["warmup"]:]
    figures["steps_seconds"] = {
        name: bb.summary([s.get(name, 0.0) for s in measured]) for name in measured[0]
    }
    venv = pythons[-1].parent.parent
    files, size = _tree_bytes(venv)
    entry = bundle.manifest.blob("runtime")
    assert entry is not None
    figures["venv_files"] = files
    figures["venv_bytes"] = size
    figures["pex_bytes"] = entry.raw_size
    figures["blob_bytes"] = entry.size
    figures["runtime_sha256"] = entry.sha256
    figures["call"] = "executor.runtime.prepare_runtime(bundle, NEW_EMPTY_DIRECTORY)"
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
    return figures


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "rebuild": worker_rebuild,
    "count": worker_count,
    "prepare": worker_prepare,
}


def run_worker(kind: str, job: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_worker", kind, json.dumps(job)],
        capture_output=True, text=True, check=False, cwd=PROJECT, env=env,
    )
    if completed.returncode != 0:
        raise SystemExit(f"the {kind} worker failed:\n{completed.stdout}{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# -- start-up measurements ---------------------------------------------------------


def read_stamps(path: Path) -> tuple[float, float]:
    """The probe's last line: when its file was loaded, when configure ran."""
    last = path.read_text().strip().splitlines()[-1]
    loaded, configured = (float(v) for v in last.split())
    return loaded, configured


def launch(argv: Sequence[str], env: dict[str, str] | None = None,
           stdin: bytes | None = None, cwd: str | None = None) -> tuple[float, float, str, str]:
    """Run `argv`: (time.time() at launch, wall seconds to exit, stdout, stderr)."""
    os.sync()
    started_wall = time.time()
    started = time.perf_counter()
    feed: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    completed = subprocess.run(argv, capture_output=True, env=env, cwd=cwd, check=False, **feed)
    wall = time.perf_counter() - started
    out, err = completed.stdout.decode(errors="replace"), completed.stderr.decode(errors="replace")
    if completed.returncode != 0:
        raise _fail(f"command (exit {completed.returncode})", argv, out + err)
    return started_wall, wall, out, err


def measure_start(argv: Sequence[str], stamps: Path, runs: int, warmup: int,
                  env: dict[str, str] | None = None) -> dict[str, Any]:
    """Launch -> the probe's configure, `runs` times after `warmup` untimed runs."""
    to_configure, to_loaded, walls = [], [], []
    for index in range(warmup + runs):
        launched, wall, _out, _err = launch(argv, env=env)
        loaded, configured = read_stamps(stamps)
        if configured < launched:
            raise SystemExit(f"no new probe stamp in {stamps} after {shlex.join(argv)}")
        if index >= warmup:
            to_configure.append(configured - launched)
            to_loaded.append(loaded - launched)
            walls.append(wall)
    return {
        "launch_to_configure_seconds": bb.summary(to_configure),
        "launch_to_probe_loaded_seconds": bb.summary(to_loaded),
        "wall_seconds": bb.summary(walls),
        "warmup": warmup,
    }


def parse_importtime(stderr: str) -> list[dict[str, Any]]:
    """`python -X importtime` lines: depth, self and cumulative microseconds, module."""
    rows = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)", line)
        if match:
            rows.append({
                "depth": (len(match.group(3)) - 1) // 2,
                "self_us": int(match.group(1)),
                "cumulative_us": int(match.group(2)),
                "module": match.group(4),
            })
    return rows


# Modules whose cumulative import time the breakdown names wherever they appear.
NAMED_IMPORTS = (
    "executor.cli", "typer", "rich", "pydantic", "executor.verify", "cryptography",
    "zstandard", "executor.apply", "executor.configure", "executor.component", "jinja2",
    "executor.render", "executor.child", "executor.deploy", "msgpack", "dns", "sqlalchemy",
    "batou.c.probe", "batou.c.schema",
)


def importtime_summary(rows: list[dict[str, Any]], top: int = 12) -> dict[str, Any]:
    top_level = [r for r in rows if r["depth"] == 0]
    named: dict[str, int] = {}
    for row in rows:
        if row["module"] in NAMED_IMPORTS and row["module"] not in named:
            named[row["module"]] = row["cumulative_us"]
    return {
        "total_us": sum(r["cumulative_us"] for r in top_level),
        "modules": len(rows),
        "top_level": sorted(top_level, key=lambda r: -r["cumulative_us"])[:top],
        "named_cumulative_us": named,
    }


def importtime_of(argv: Sequence[str], runs: int, env: dict[str, str] | None = None,
                  stdin: bytes | None = None, cwd: str | None = None) -> dict[str, Any]:
    """`-X importtime` of a command (argv includes it): the run with the median total."""
    results = []
    for _ in range(runs):
        _launched, wall, _out, err = launch(argv, env=env, stdin=stdin, cwd=cwd)
        summary = importtime_summary(parse_importtime(err))
        summary["wall_seconds"] = wall
        results.append(summary)
    results.sort(key=lambda s: s["total_us"])
    chosen = results[len(results) // 2]
    chosen["totals_us"] = [s["total_us"] for s in results]
    return chosen


TIMELINE_PHASES = (
    # label, from, to
    ("interpreter start-up (python, site, the editable install's .pth)", "launch", "ready"),
    ("import executor.cli (typer, rich, executor.verify, cryptography, zstandard)", "ready",
     "imported executor.cli"),
    ("import executor.apply + executor.render (lazy in the apply command)",
     "imported executor.cli", "imported executor.apply"),
    ("typer: parse and convert the command line", "imported executor.apply",
     "accept_bundle start"),
    ("verify the bundle (accept_bundle)", "accept_bundle start", "accept_bundle end"),
    ("after verification: the model, store hit, runtime hit, save state", "accept_bundle end",
     "run_runtime start"),
    ("run_runtime: scratch directory, spawn the child", "run_runtime start", "spawn end"),
    ("child: interpreter, imports, read request, load the first component file", "spawn end",
     "probe loaded"),
    ("child: load the other component files, configure prologue", "probe loaded",
     "probe configure"),
)
TIMELINE_AFTER = (
    ("child: configure, verify, deploy, report, exit", "probe configure", "run_runtime end"),
    ("render the result", "run_runtime end", "done"),
    ("interpreter exit", "done", "exit"),
)


def measure_timeline(argv_tail: Sequence[str], stamps: Path, runs: int,
                     env: dict[str, str]) -> dict[str, Any]:
    """The executor's apply in-process with timestamps (TIMELINE_DRIVER), `runs` times."""
    samples: dict[str, list[float]] = {}
    totals = []
    with tempfile.TemporaryDirectory(prefix="consign-bench-timeline-") as scratch:
        out = Path(scratch, "timeline.json")
        argv = [sys.executable, "-c", TIMELINE_DRIVER, *argv_tail]
        for _ in range(runs):
            launched, wall, _o, _e = launch(argv, env={**env, "CONSIGN_BENCH_TIMELINE": str(out)})
            marks = {"launch": launched, "exit": launched + wall}
            for label, moment in json.loads(out.read_text()):
                marks.setdefault(label, moment)
            loaded, configured = read_stamps(stamps)
            marks["probe loaded"], marks["probe configure"] = loaded, configured
            for label, start, end in TIMELINE_PHASES + TIMELINE_AFTER:
                samples.setdefault(label, []).append(marks[end] - marks[start])
            totals.append(configured - launched)
    return {
        "phases": [
            {"phase": label, "seconds": _median(samples[label]), "samples": samples[label],
             "until_configure": (label, start, end) in TIMELINE_PHASES}
            for label, start, end in TIMELINE_PHASES + TIMELINE_AFTER
        ],
        "launch_to_configure_seconds": bb.summary(totals),
        "runs": runs,
    }


# -- the benchmarks ------------------------------------------------------------------


def bench_rebuild(ws: Workspace, runs: int, warmup: int, cold_runs: int) -> dict[str, Any]:
    print("rebuild: an unchanged rebuild with requirements.txt "
          f"({REQUIREMENT}): the runtime's share, warm and cold", flush=True)
    scenario = ws.repository(
        "rebuild", SMALL_SPEC, requirements_files(host_names(1), "site, schema")
    )
    control = ws.repository("rebuild-no-requirements", SMALL_SPEC)
    argv = ws.build_argv(scenario.root)
    command = "bundle build prod -C REPO --sign-key KEY"

    # The first build of this work directory: empty runtime cache, empty PEX_ROOT.
    fully_cold = not any(ws.pex_root.iterdir()) and not ws.cache.exists()
    first = ws.build(scenario.root, ws.cache)
    first_record = {
        "wall_seconds": first.wall_seconds,
        "cpu_seconds": first.user_seconds + first.system_seconds,
        "pex_root_was_empty": fully_cold,
        "pex_builds": len(_pex_files(ws.cache)),
        "stderr": first.stderr.strip().splitlines(),
    }
    print(f"  first build (empty cache{' and PEX_ROOT' if fully_cold else ''}): "
          f"{first.wall_seconds:.2f} s", flush=True)

    cold_runs_list, cold_pex = [], []
    for _ in range(cold_runs):
        cache = ws.fresh("cache-cold")
        cold_runs_list.append(ws.build(scenario.root, cache))
        cold_pex.append(len(_pex_files(cache)))
        shutil.rmtree(cache)
    cold = _command_figures(cold_runs_list, argv, command + "  (new CONSIGN_CACHE_DIR each run)")
    cold["pex_builds_per_run"] = cold_pex
    print(f"  cold:       {bb._seconds_line(cold)}", flush=True)

    before = len(_pex_files(ws.cache))
    warm = bb.measure_command(argv, runs, warmup, env=ws.env(ws.cache))
    warm["command"] = command + "  (warm cache)"
    # Each of consign's source files is part of the runtime's key: an edit
    # during the benchmark would show here as a new pex.
    warm["new_pex_files"] = len(_pex_files(ws.cache)) - before
    print(f"  warm:       {bb._seconds_line(warm)}", flush=True)

    job = {"repository": str(scenario.root), "key": str(ws.keys().private),
           "cache": str(ws.cache), "runs": runs, "warmup": warmup}
    in_process = run_worker("rebuild", job, env=ws.env(ws.cache))
    print(f"  in-process: {bb._seconds_line(in_process)}; runtime_blob + import_environment "
          f"median {in_process['runtime_seconds']['median'] * 1000:.1f} ms", flush=True)

    # Without requirements.txt (and without the component that imports
    # SQLAlchemy): the same build, consign's own runtime only.
    control_cache = ws.fresh("cache-control")
    ws.build(control.root, control_cache)
    control_argv = ws.build_argv(control.root)
    control_warm = bb.measure_command(control_argv, runs, warmup, env=ws.env(control_cache))
    control_warm["command"] = command + "  (no requirements.txt, warm cache)"
    control_job = dict(job, repository=str(control.root), cache=str(control_cache))
    control_in_process = run_worker("rebuild", control_job, env=ws.env(control_cache))
    print(f"  no requirements, warm: {bb._seconds_line(control_warm)}", flush=True)

    # As a shell with PYTHONDONTWRITEBYTECODE=1 runs it: the import
    # environment, made under it, never gets bytecode, so every build
    # compiles SQLAlchemy's sources again.
    no_bytecode_cache = ws.fresh("cache-no-bytecode")
    no_bytecode_env = ws.env(no_bytecode_cache, PYTHONDONTWRITEBYTECODE="1")
    run_checked(argv, env=no_bytecode_env)
    no_bytecode = bb.measure_command(argv, runs, warmup, env=no_bytecode_env)
    no_bytecode["command"] = command + "  (warm cache, PYTHONDONTWRITEBYTECODE=1 throughout)"
    print(f"  warm, PYTHONDONTWRITEBYTECODE=1: {bb._seconds_line(no_bytecode)}", flush=True)
    shutil.rmtree(no_bytecode_cache)

    # What importing the requirement costs the builder's configure (a fresh
    # interpreter, the import environment appended to sys.path as the build does).
    site = [str(p) for p in ws.cache.glob("venvs/*/lib/python*/site-packages")]
    import_seconds = []
    code = ("import sys, time; sys.path.extend(sys.argv[1:]); t = time.perf_counter(); "
            "import sqlalchemy; print(time.perf_counter() - t)")
    for _ in range(runs):
        completed = subprocess.run([sys.executable, "-c", code, *site], capture_output=True,
                                   text=True, check=True)
        import_seconds.append(float(completed.stdout.strip()))

    bundle = scenario.root / "bundles" / ENVIRONMENT / f"{scenario.hosts[0]}.bundle"
    control_bundle = control.root / "bundles" / ENVIRONMENT / f"{control.hosts[0]}.bundle"
    blobs = {}
    for name, cache in (("with_requirements", ws.cache), ("without_requirements", control_cache)):
        facts = [json.loads(p.read_text()) for p in (cache / "runtimes").glob("*.json")]
        blobs[name] = facts
    record = {
        "scenario": bb._scenario_record(scenario),
        "requirement": REQUIREMENT,
        "bundle_bytes": bundle.stat().st_size,
        "control_bundle_bytes": control_bundle.stat().st_size,
        "runtime_blobs": blobs,
        "first_build": first_record,
        "cold_command": cold,
        "warm_command": warm,
        "in_process": in_process,
        "control_warm_command": control_warm,
        "control_in_process": control_in_process,
        "warm_command_no_bytecode": no_bytecode,
        "import_sqlalchemy_seconds": bb.summary(import_seconds),
        "targets": {"runtime_seconds": TARGET_REBUILD_RUNTIME_SECONDS},
        "met": {
            "in_process_runtime": in_process["runtime_seconds"]["median"]
            < TARGET_REBUILD_RUNTIME_SECONDS,
            "no_pex_build_when_warm": in_process["pex_builds"] == 0,
        },
    }
    shutil.rmtree(control_cache)
    return record


def bench_hosts(ws: Workspace, runs: int) -> dict[str, Any]:
    print(f"hosts: {HOSTS} hosts, one requirements set, a new runtime cache", flush=True)
    scenario = ws.repository(
        f"hosts-{HOSTS}", HOSTS_SPEC, requirements_files(host_names(HOSTS), "site, schema")
    )
    argv = ws.build_argv(scenario.root)
    command = f"bundle build prod -C REPO --sign-key KEY  ({HOSTS} hosts, new CONSIGN_CACHE_DIR)"
    if not any(ws.pex_root.iterdir()):
        # Run alone: fill PEX_ROOT first, so that no measured build downloads.
        filler = ws.fresh("cache-fill")
        print(f"  filling PEX_ROOT: {ws.build(scenario.root, filler).wall_seconds:.1f} s", flush=True)
        shutil.rmtree(filler)
    out = scenario.root / "bundles" / ENVIRONMENT
    cold_list, per_run = [], []
    last_cache: Path | None = None
    for _ in range(runs):
        cache = ws.fresh("cache-hosts")
        run = ws.build(scenario.root, cache)
        bundles = _bundles(out)
        runtimes = _runtime_entries(bundles)
        per_run.append({
            "pex_files": len(_pex_files(cache)),
            "import_venvs": _venvs(cache),
            "bundles": len(bundles),
            "bundle_bytes": sum(p.stat().st_size for p in bundles),
            "distinct_runtime_blobs": len(runtimes),
        })
        cold_list.append(run)
        if last_cache is not None:
            shutil.rmtree(last_cache)
        last_cache = cache
        print(f"  cold build: {run.wall_seconds:.2f} s, {per_run[-1]['pex_files']} pex file(s), "
              f"{per_run[-1]['bundles']} bundles, {per_run[-1]['distinct_runtime_blobs']} "
              "distinct runtime blob(s)", flush=True)
    cold = _command_figures(cold_list, argv, command)
    assert last_cache is not None
    before = len(_pex_files(last_cache))
    warm = bb.measure_command(argv, runs, 1, env=ws.env(last_cache))
    warm["command"] = f"bundle build prod -C REPO --sign-key KEY  ({HOSTS} hosts, warm cache)"
    warm["new_pex_files"] = len(_pex_files(last_cache)) - before
    print(f"  warm:       {bb._seconds_line(warm)}", flush=True)
    shutil.rmtree(last_cache)

    counted_cache = ws.fresh("cache-count")
    counted = run_worker(
        "count",
        {"repository": str(scenario.root), "key": str(ws.keys().private),
         "cache": str(counted_cache)},
        env=ws.env(counted_cache),
    )
    shutil.rmtree(counted_cache)
    print(f"  in-process, counted: {counted['pex_builds']} `python -m pex` run(s), "
          f"{counted['pex_venvs']} venv(s) from a pex, {counted['wall_seconds']:.2f} s", flush=True)

    # The same hosts with a complete platform file: their target differs from
    # the builder's own Python (by its key), so the builder's configure needs
    # a second runtime.
    platform = subprocess.run([bb._script("executor"), "inspect-platform"], capture_output=True,
                              text=True, check=True).stdout
    files = requirements_files(host_names(HOSTS), "site, schema")
    files[f"environments/{ENVIRONMENT}/platform.json"] = platform
    variant = ws.repository(f"hosts-{HOSTS}-platform", HOSTS_SPEC, files)
    variant_cache = ws.fresh("cache-platform")
    variant_counted = run_worker(
        "count",
        {"repository": str(variant.root), "key": str(ws.keys().private),
         "cache": str(variant_cache)},
        env=ws.env(variant_cache),
    )
    variant_runtimes = _runtime_entries(_bundles(variant.root / "bundles" / ENVIRONMENT))
    variant_counted["distinct_runtime_blobs"] = len(variant_runtimes)
    shutil.rmtree(variant_cache)
    shutil.rmtree(variant.root / "bundles")
    print(f"  with environments/prod/platform.json: {variant_counted['pex_builds']} pex builds, "
          f"{variant_counted['wall_seconds']:.2f} s", flush=True)

    builds = [r["pex_files"] for r in per_run] + [counted["pex_builds"]]
    record = {
        "scenario": bb._scenario_record(scenario),
        "requirement": REQUIREMENT,
        "cold_command": cold,
        "cold_runs": per_run,
        "warm_command": warm,
        "in_process_counted": counted,
        "platform_file_variant": variant_counted,
        "targets": {"pex_builds": TARGET_PEX_BUILDS},
        "met": {"pex_builds": max(builds) <= TARGET_PEX_BUILDS},
    }
    shutil.rmtree(out)
    return record


def example_repository(ws: Workspace) -> Path:
    """The example deployment of this repository, committed in a new git repository."""
    from scenarios import _git

    root = ws.root / "example"
    if root.exists():
        return root
    root.mkdir()
    for name in ("components", "environments"):
        shutil.copytree(PROJECT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("requirements.txt", ".gitignore"):
        shutil.copy(PROJECT / name, root / name)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "the example deployment")
    return root


def bench_prepare(ws: Workspace, runs: int, warmup: int) -> dict[str, Any]:
    print("prepare: the first apply of a new runtime digest", flush=True)
    example = example_repository(ws)
    build = ws.build(example, ws.cache, EXAMPLE_ENVIRONMENT)
    bundle = example / "bundles" / EXAMPLE_ENVIRONMENT / f"{EXAMPLE_HOST}.bundle"
    keys = ws.keys()
    state = ws.fresh("prepare-state")
    in_process = run_worker("prepare", {
        "bundle": str(bundle), "host": EXAMPLE_HOST, "trust": str(keys.trust),
        "state": str(state), "root": str(ws.fresh("prepare-runtimes")),
        "runs": runs, "warmup": warmup,
    })
    print(f"  prepare_runtime in-process: {bb._seconds_line(in_process)}", flush=True)

    first, second = [], []
    argv_template = [bb._script("executor"), "apply", str(bundle), "--host", EXAMPLE_HOST,
                     "--trust", str(keys.trust)]
    for index in range(warmup + runs):
        host_dirs = ws.fresh("prepare-host")
        argv = [*argv_template, "--state-dir", str(host_dirs / "state"),
                "--runtime-dir", str(host_dirs / "runtimes"),
                "--target-dir", str(host_dirs / "target")]
        one = run_checked(argv)
        two = run_checked(argv)
        if "0 components changed" not in two.stdout:
            raise SystemExit(f"the second apply changed something:\n{two.stdout}")
        if index >= warmup:
            first.append(one)
            second.append(two)
        shutil.rmtree(host_dirs)
    command = ("executor apply BUNDLE --host localhost --trust TRUST --state-dir NEW "
               "--runtime-dir NEW --target-dir NEW")
    first_figures = _command_figures(first, argv, command + "  (first apply)")
    first_figures["warmup"] = warmup
    second_figures = _command_figures(second, argv, command.replace("NEW", "SAME")
                                      + "  (second apply)")
    second_figures["warmup"] = warmup
    print(f"  first apply:  {bb._seconds_line(first_figures)}", flush=True)
    print(f"  second apply: {bb._seconds_line(second_figures)}", flush=True)
    shutil.rmtree(state)
    return {
        "bundle": {"environment": EXAMPLE_ENVIRONMENT, "host": EXAMPLE_HOST,
                   "bytes": bundle.stat().st_size, "build_seconds": build.wall_seconds},
        "in_process": in_process,
        "first_apply": first_figures,
        "second_apply": second_figures,
        "targets": {"prepare_seconds": TARGET_PREPARE_SECONDS},
        "met": {
            "in_process": in_process["wall_seconds"]["median"] < TARGET_PREPARE_SECONDS,
            "first_apply_command": first_figures["wall_seconds"]["median"]
            < TARGET_PREPARE_SECONDS,
        },
    }


def replay_request(capture: dict[str, Any], directory: Path) -> tuple[list[str], bytes | None]:
    """The child's command line and stdin from what TIMELINE_DRIVER captured, with
    the request rewritten to report into `directory` (the executor's scratch
    directory is gone by now)."""
    argv = list(capture["argv"])
    report = str(directory / "child-report.json")
    for path, text in capture["files"].items():
        data = json.loads(text)
        if isinstance(data, dict) and "report" in data:
            data["report"] = report
            replayed = directory / "child-request.json"
            replayed.write_text(json.dumps(data))
            argv[argv.index(path)] = str(replayed)
            return argv, None
    if capture["stdin"]:
        data = json.loads(capture["stdin"])
        data["report"] = report
        return argv, json.dumps(data).encode()
    raise SystemExit(f"found no request for the runtime's child in {capture}")


def _find_pex_venv(pex_root: Path) -> tuple[Path, Path] | None:
    """The venv python and entry script executor.pex installed under PEX_ROOT."""
    scripts = [p for p in pex_root.glob("venvs/*/*/*/pex") if p.is_file()]
    if len(scripts) != 1:
        return None
    python = scripts[0].parent / "bin" / "python"
    return (python, scripts[0]) if python.exists() else None


def bench_startup(ws: Workspace, runs: int, warmup: int, python3: str) -> dict[str, Any]:
    print("startup: a later apply, from launch to the first component's configure", flush=True)
    stamps = ws.root / "stamps.txt"
    variants = {
        "probe": ws.repository("probe", PROBE_SPEC, probe_files(stamps, schema=False)),
        "probe+schema": ws.repository("probe-schema", PROBE_SPEC, probe_files(stamps, schema=True)),
    }
    bundles = {}
    for name, scenario in variants.items():
        ws.build(scenario.root, ws.cache)
        bundles[name] = scenario.root / "bundles" / ENVIRONMENT / f"{scenario.hosts[0]}.bundle"
    keys = ws.keys()

    executor_pex = ws.root / "executor.pex"
    pex_build = run_checked([bb._script("bundle"), "executor-pex", "--out", str(executor_pex)],
                            env=ws.env(ws.cache))
    pex_root = ws.fresh("executor-pex-root")
    pex_env = {**os.environ, "PEX_ROOT": str(pex_root)}
    pex_first = run_checked([python3, str(executor_pex), "--version"], env=pex_env)
    python3_version = subprocess.run([python3, "--version"], capture_output=True, text=True,
                                     check=True).stdout.strip()
    print(f"  executor.pex: built in {pex_build.wall_seconds:.1f} s; first start (installs "
          f"into PEX_ROOT) {pex_first.wall_seconds:.2f} s", flush=True)

    executors = {
        "venv": ([bb._script("executor")], dict(os.environ)),
        "pex": ([python3, str(executor_pex)], pex_env),
    }
    series: dict[str, dict[str, Any]] = {}
    arguments: dict[tuple[str, str], list[str]] = {}
    host_dirs: dict[str, Path] = {}
    for executor_name, (prefix, env) in executors.items():
        host_dirs[executor_name] = dirs = ws.fresh(f"host-{executor_name}")
        for variant, bundle in bundles.items():
            tail = ["apply", str(bundle), "--host", "host001", "--trust", str(keys.trust),
                    "--state-dir", str(dirs / "state"), "--runtime-dir", str(dirs / "runtimes"),
                    "--target-dir", str(dirs / "target")]
            arguments[(executor_name, variant)] = tail
            figures = measure_start([*prefix, *tail], stamps, runs, warmup, env=env)
            figures["command"] = (
                ("executor" if executor_name == "venv" else f"{Path(python3).name} executor.pex")
                + " apply BUNDLE --host host001 --trust TRUST --state-dir S --runtime-dir R "
                "--target-dir T"
            )
            series[f"{executor_name}/{variant}"] = figures
            median = figures["launch_to_configure_seconds"]["median"]
            print(f"  {executor_name:>4} {variant:<13} launch -> configure median "
                  f"{median:.3f} s, exit {figures['wall_seconds']['median']:.3f} s", flush=True)

    # Where the time goes (.venv executor).
    breakdown: dict[str, Any] = {}
    venv_env = dict(os.environ)
    for variant in bundles:
        breakdown[f"timeline/{variant}"] = measure_timeline(
            arguments[("venv", variant)], stamps, max(5, runs // 3), venv_env
        )
    breakdown["importtime/executor"] = importtime_of(
        [sys.executable, "-X", "importtime", bb._script("executor"), *arguments[("venv", "probe")]],
        3, env=venv_env,
    )
    # The child as run_runtime runs it, replayed by hand with the request
    # the executor sent (its report goes to a file of ours).
    captured = ws.root / "child-capture.json"
    launch([sys.executable, "-c", TIMELINE_DRIVER, *arguments[("venv", "probe")]],
           env={**venv_env, "CONSIGN_BENCH_TIMELINE": str(ws.root / "timeline.json"),
                "CONSIGN_BENCH_REQUEST": str(captured)})
    child_argv, request = replay_request(json.loads(captured.read_text()), ws.root)
    runtime_python = Path(child_argv[0])
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PEX_")}
    child_runs: dict[str, list[float]] = {"configure": [], "loaded": [], "exit": []}
    for _ in range(runs):
        launched, wall, _o, _e = launch(child_argv, env=child_env, stdin=request, cwd="/")
        loaded, configured = read_stamps(stamps)
        child_runs["configure"].append(configured - launched)
        child_runs["loaded"].append(loaded - launched)
        child_runs["exit"].append(wall)
    breakdown["child_alone"] = {
        "argv": child_argv,
        "launch_to_probe_loaded_seconds": bb.summary(child_runs["loaded"]),
        "launch_to_configure_seconds": bb.summary(child_runs["configure"]),
        "wall_seconds": bb.summary(child_runs["exit"]),
    }
    breakdown["importtime/child"] = importtime_of(
        [child_argv[0], "-X", "importtime", *child_argv[1:]], 3,
        env=child_env, stdin=request, cwd="/",
    )
    # Start-up references.
    references = {
        "venv python -c pass": [sys.executable, "-c", "pass"],
        "executor --version": [bb._script("executor"), "--version"],
        "runtime python -I -c pass": [str(runtime_python), "-I", "-c", "pass"],
        "runtime python -I -c 'import executor.child'": [
            str(runtime_python), "-I", "-c", "import executor.child"],
        f"{python3} -I -c pass": [python3, "-I", "-c", "pass"],
        f"{Path(python3).name} executor.pex --version": [python3, str(executor_pex), "--version"],
    }
    installed = _find_pex_venv(pex_root)
    if installed is not None:
        references["executor.pex's installed venv: python -I pex --version"] = [
            str(installed[0]), "-I", str(installed[1]), "--version"]
        breakdown["importtime/executor.pex"] = importtime_of(
            [str(installed[0]), "-X", "importtime", "-I", str(installed[1]),
             *arguments[("pex", "probe")]], 3, env=pex_env,
        )
    startup = {}
    for label, argv in references.items():
        figures = bb.measure_command(argv, runs, 1, env=pex_env if "pex" in label else None)
        figures["command"] = label
        startup[label] = figures
    breakdown["startup_references"] = startup

    for dirs in host_dirs.values():
        shutil.rmtree(dirs)
    met = {name: figures["launch_to_configure_seconds"]["median"] < TARGET_START_SECONDS
           for name, figures in series.items()}
    return {
        "scenario": bb._scenario_record(variants["probe"]),
        "requirement": REQUIREMENT,
        "python3": {"path": python3, "version": python3_version},
        "executor_pex": {"bytes": executor_pex.stat().st_size,
                         "build_seconds": pex_build.wall_seconds,
                         "first_start_seconds": pex_first.wall_seconds},
        "series": series,
        "breakdown": breakdown,
        "targets": {"launch_to_configure_seconds": TARGET_START_SECONDS},
        "met": met,
    }


# -- results -------------------------------------------------------------------------


def environment_record(workdir: Path) -> dict[str, Any]:
    from builder.runtime import PIP_VERSION

    record = bb.environment_record(workdir)
    record["command_line"] = shlex.join(
        [os.path.relpath(sys.executable, PROJECT), os.path.relpath(__file__, PROJECT), *sys.argv[1:]]
    )
    record["libraries"]["pex"] = metadata.version("pex")
    record["libraries"]["pip"] = PIP_VERSION
    record["pex_root"] = "one CONSIGN_PEX_ROOT below the work directory, shared by every build"
    return record


def load_results() -> dict[str, Any]:
    if RESULTS_JSON.exists():
        data: dict[str, Any] = json.loads(RESULTS_JSON.read_text())
        return data
    return {"benchmarks": {}}


def save_results(results: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    RESULTS_MD.write_text(render_markdown(results))


_s, _spread, _mb, _yes = bb._s, bb._spread, bb._mb, bb._yes


def _ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def _row(label: str, figures: dict[str, Any], *rest: str) -> str:
    wall = figures["wall_seconds"]
    return f"| {label} | {_s(wall['median'])} | {_spread(wall)} | " + " | ".join(rest) + " |"


def _render_rebuild(r: dict[str, Any]) -> list[str]:
    in_process, control = r["in_process"], r["control_in_process"]
    phases = in_process["phases_seconds"]
    first = r["first_build"]
    scenario = r["scenario"]
    lines = [
        f"## Unchanged rebuild (target: under {r['targets']['runtime_seconds']} s on the runtime)",
        "",
        f"Repository: {scenario['data_files']} data files, {_mb(scenario['data_bytes'])} MB, one "
        f"host with `site` and `schema` (imports SQLAlchemy), `requirements.txt`: "
        f"`{r['requirement']}`; commit {scenario['commit'][:12]}. Bundle "
        f"{_mb(r['bundle_bytes'])} MB (without requirements {_mb(r['control_bundle_bytes'])} MB).",
        "",
        "| measured | median s | spread s | runs | target met |",
        "| --- | ---: | --- | ---: | --- |",
        f"| `runtime_blob` + `import_environment` in a warm rebuild (in-process) | "
        f"{_s(in_process['runtime_seconds']['median'])} | {_spread(in_process['runtime_seconds'])} "
        f"| {in_process['runtime_seconds']['runs']} | "
        f"{_yes(r['met']['in_process_runtime'])} |",
        f"| … of which `runtime_blob` (key digest, cache lookup; "
        f"{in_process['calls_per_build'].get('runtime_blob', 0):g} calls per build) | "
        f"{_s(phases['runtime_blob']['median'])} | {_spread(phases['runtime_blob'])} | | |",
        f"| … of which `import_environment` (the builder's venv, existing) | "
        f"{_s(phases['import_environment']['median'])} | "
        f"{_spread(phases['import_environment'])} | | |",
        f"| `build()` in-process, warm | {_s(in_process['wall_seconds']['median'])} | "
        f"{_spread(in_process['wall_seconds'])} | {in_process['wall_seconds']['runs']} | |",
        f"| … of which loading components (`import sqlalchemy` only in the first, untimed build) | "
        f"{_s(phases['load_components']['median'])} | {_spread(phases['load_components'])} | | |",
        f"| … of which writing the bundle (`_write`) | {_s(phases['_write']['median'])} | "
        f"{_spread(phases['_write'])} | | |",
        f"| `build()` in-process, warm, no requirements.txt | "
        f"{_s(control['wall_seconds']['median'])} | {_spread(control['wall_seconds'])} | "
        f"{control['wall_seconds']['runs']} | |",
        _row(f"`{r['warm_command']['command']}`", r["warm_command"],
             str(r["warm_command"]["wall_seconds"]["runs"]), ""),
        _row(f"`{r['control_warm_command']['command']}`", r["control_warm_command"],
             str(r["control_warm_command"]["wall_seconds"]["runs"]), ""),
        *([_row(f"`{r['warm_command_no_bytecode']['command']}`", r["warm_command_no_bytecode"],
                str(r["warm_command_no_bytecode"]["wall_seconds"]["runs"]), "")]
          if r.get("warm_command_no_bytecode") else []),
        _row(f"`{r['cold_command']['command']}`", r["cold_command"],
             str(r["cold_command"]["wall_seconds"]["runs"]), ""),
        f"| the first build of the run: empty cache"
        f"{' and empty PEX_ROOT (downloads pip, SQLAlchemy, ...)' if first['pex_root_was_empty'] else ''}"
        f" | {_s(first['wall_seconds'])} | – | 1 | |",
        f"| `import sqlalchemy` from the import environment, fresh interpreter | "
        f"{_s(r['import_sqlalchemy_seconds']['median'])} | {_spread(r['import_sqlalchemy_seconds'])}"
        f" | {r['import_sqlalchemy_seconds']['runs']} | |",
        "",
        f"New pex files in the cache during the warm command runs: "
        f"{r['warm_command'].get('new_pex_files', '?')}. "
        f"Warm rebuilds started {in_process['pex_builds']} pex builds and "
        f"{in_process['pex_venvs']} venvs (in-process count over all "
        f"{in_process['wall_seconds']['runs'] + in_process['warmup']} builds); each cold build "
        f"built {', '.join(map(str, r['cold_command']['pex_builds_per_run']))} pex file(s). "
        f"Warm command minus warm command without requirements: "
        f"{_ms(r['warm_command']['wall_seconds']['median'] - r['control_warm_command']['wall_seconds']['median'])} ms "
        "(SQLAlchemy's import in configure, the larger runtime blob in the bundle, the runtime steps).",
        "",
    ]
    return lines


def _render_hosts(r: dict[str, Any]) -> list[str]:
    counted, variant = r["in_process_counted"], r["platform_file_variant"]
    cold_runs = r["cold_runs"]
    lines = [
        f"## {r['scenario']['hosts']} hosts, one requirements set (target: the pex is built once)",
        "",
        f"Repository: {r['scenario']['data_files']} data files, "
        f"{_mb(r['scenario']['data_bytes'])} MB, {r['scenario']['hosts']} hosts with `site` and "
        f"`schema`, `requirements.txt`: `{r['requirement']}`. Each build starts with a new, empty "
        "CONSIGN_CACHE_DIR; CONSIGN_PEX_ROOT (pex's downloads) is shared and warm, so no build "
        "downloads a package, though pip still asks the index.",
        "",
        "| measured | median s | spread s | runs | pex builds | target met |",
        "| --- | ---: | --- | ---: | --- | --- |",
        _row(f"`{r['cold_command']['command']}`", r["cold_command"],
             str(r["cold_command"]["wall_seconds"]["runs"]),
             ", ".join(str(c["pex_files"]) for c in cold_runs) + " (cached .pex files)",
             _yes(r["met"]["pex_builds"])),
        f"| `build()` in-process, new cache, counting subprocesses | "
        f"{_s(counted['wall_seconds'])} | – | 1 | {counted['pex_builds']} × `python -m pex`, "
        f"{counted['pex_venvs']} × `runtime.pex venv` | {_yes(counted['pex_builds'] <= 1)} |",
        _row(f"`{r['warm_command']['command']}`", r["warm_command"],
             str(r["warm_command"]["wall_seconds"]["runs"]),
             f"{r['warm_command'].get('new_pex_files', '?')} (new .pex files)", ""),
        f"| variant: `environments/prod/platform.json` (this machine's `executor inspect-platform`), "
        f"in-process, new cache | {_s(variant['wall_seconds'])} | – | 1 | "
        f"{variant['pex_builds']} × `python -m pex`, {variant['pex_venvs']} × venv | (see below) |",
        "",
        f"Every cold run wrote {cold_runs[0]['bundles']} bundles "
        f"({_mb(cold_runs[0]['bundle_bytes'])} MB in all) carrying "
        f"{cold_runs[0]['distinct_runtime_blobs']} distinct runtime blob(s); the builder's own "
        f"import environment ({cold_runs[0]['import_venvs']} venv) is made from the same pex. "
        f"With a complete platform file the hosts' runtime (key `complete-platform:…`) and the "
        f"builder's own (key `python:3.11`) differ, so the build runs pex "
        f"{variant['pex_builds']} times even though the platform file describes this very "
        f"interpreter; the bundles still carry {variant['distinct_runtime_blobs']} runtime blob.",
        "",
    ]
    return lines


def _render_prepare(r: dict[str, Any]) -> list[str]:
    in_process = r["in_process"]
    steps = in_process["steps_seconds"]
    lines = [
        f"## First apply of a new runtime digest (target: prepared in under "
        f"{r['targets']['prepare_seconds']:g} s)",
        "",
        f"The example deployment (`{r['bundle']['environment']}`, host `{r['bundle']['host']}`, "
        f"`requirements.txt`: SQLAlchemy), bundle {_mb(r['bundle']['bytes'])} MB; runtime pex "
        f"{_mb(in_process['pex_bytes'])} MB ({_mb(in_process['blob_bytes'])} MB compressed), "
        f"its venv {in_process['venv_files']} files, {_mb(in_process['venv_bytes'])} MB.",
        "",
        "| measured | median s | spread s | runs | target met |",
        "| --- | ---: | --- | ---: | --- |",
        f"| `prepare_runtime(bundle, NEW_DIR)` in-process | "
        f"{_s(in_process['wall_seconds']['median'])} | {_spread(in_process['wall_seconds'])} | "
        f"{in_process['wall_seconds']['runs']} | {_yes(r['met']['in_process'])} |",
    ]
    for name, figures in steps.items():
        lines.append(f"| … {name} | {_s(figures['median'])} | {_spread(figures)} | | |")
    lines += [
        _row(f"`{r['first_apply']['command']}`", r["first_apply"],
             str(r["first_apply"]["wall_seconds"]["runs"]), _yes(r["met"]["first_apply_command"])),
        _row(f"`{r['second_apply']['command']}`", r["second_apply"],
             str(r["second_apply"]["wall_seconds"]["runs"]), ""),
        "",
    ]
    return lines


def _render_startup(r: dict[str, Any]) -> list[str]:
    lines = [
        f"## A later apply starts running components (target: within "
        f"{r['targets']['launch_to_configure_seconds']} s of the launch)",
        "",
        "A deployment of two components, `probe` (first root; its configure appends "
        "`time.time()` to a file) and `site` (three small files), with `requirements.txt` "
        f"(`{r['requirement']}`); `probe+schema` adds the `schema` component, which imports "
        "SQLAlchemy at load time (every component file is loaded before the first configure). "
        "The runtime is prepared and the snapshot unpacked by the untimed warm-up runs. "
        f"`executor.pex` runs with {r['python3']['path']} ({r['python3']['version']}), PEX_ROOT "
        f"warmed (its first start took {_s(r['executor_pex']['first_start_seconds'])} s).",
        "",
        "| executor | deployment | launch → first configure, median s | spread s | "
        "launch → exit, median s | runs | target met |",
        "| --- | --- | ---: | --- | ---: | ---: | --- |",
    ]
    for name, figures in r["series"].items():
        executor_name, variant = name.split("/")
        label = ".venv/bin/executor" if executor_name == "venv" else "python3 executor.pex"
        to_configure = figures["launch_to_configure_seconds"]
        lines.append(
            f"| `{label}` | {variant} | {_s(to_configure['median'])} | {_spread(to_configure)} | "
            f"{_s(figures['wall_seconds']['median'])} | {to_configure['runs']} | "
            f"{_yes(r['met'][name])} |"
        )
    breakdown = r["breakdown"]
    for variant in ("probe", "probe+schema"):
        timeline = breakdown.get(f"timeline/{variant}")
        if not timeline:
            continue
        lines += [
            "",
            f"### Where the time goes: `.venv/bin/executor`, {variant} "
            f"(timestamps, median of {timeline['runs']} runs; launch → configure "
            f"{_s(timeline['launch_to_configure_seconds']['median'])} s)",
            "",
            "| step | median ms |",
            "| --- | ---: |",
        ]
        for phase in timeline["phases"]:
            marker = "" if phase["until_configure"] else " (after the first configure)"
            lines.append(f"| {phase['phase']}{marker} | {_ms(phase['seconds'])} |")
    child = breakdown["child_alone"]
    shown = ["RUNTIME/venv/bin/python", *child["argv"][1:]]
    if shown[-1].endswith(".json"):
        shown[-1] = "REQUEST.json"
    else:
        shown.append("< REQUEST")
    lines += [
        "",
        "### The child alone, and start-up references",
        "",
        "| measured | median ms | spread s |",
        "| --- | ---: | --- |",
        f"| the child as the executor starts it, by hand: `{' '.join(shown)}` (probe); "
        "launch → probe loaded | "
        f"{_ms(child['launch_to_probe_loaded_seconds']['median'])} | "
        f"{_spread(child['launch_to_probe_loaded_seconds'])} |",
        f"| … launch → configure | {_ms(child['launch_to_configure_seconds']['median'])} | "
        f"{_spread(child['launch_to_configure_seconds'])} |",
        f"| … launch → exit | {_ms(child['wall_seconds']['median'])} | "
        f"{_spread(child['wall_seconds'])} |",
    ]
    for label, figures in breakdown["startup_references"].items():
        lines.append(f"| `{label}` | {_ms(figures['wall_seconds']['median'])} | "
                     f"{_spread(figures['wall_seconds'])} |")
    for key in ("importtime/executor", "importtime/executor.pex", "importtime/child"):
        data = breakdown.get(key)
        if not data:
            continue
        named = ", ".join(f"{name} {us / 1000:.0f}" for name, us in
                          sorted(data["named_cumulative_us"].items(), key=lambda kv: -kv[1])
                          if us >= 1000)
        top = ", ".join(f"{row['module']} {row['cumulative_us'] / 1000:.0f}"
                        for row in data["top_level"][:8])
        lines += [
            "",
            f"`-X importtime`, {key.split('/')[1]} (the run with the median total of 3): "
            f"{data['total_us'] / 1000:.0f} ms of imports, {data['modules']} modules. "
            f"Largest top-level imports (cumulative ms): {top}. Named modules of 1 ms or more "
            f"(cumulative ms, where first imported): {named}.",
        ]
    lines.append("")
    return lines


def _bytecode_md(bytecode: dict[str, Any] | None) -> list[str]:
    if not bytecode:
        return []
    if bytecode["removed_for_the_benchmarks"]:
        text = (f"PYTHONDONTWRITEBYTECODE={bytecode['PYTHONDONTWRITEBYTECODE_in_caller']} in the "
                "caller's environment, removed for everything the harness starts")
    else:
        text = "PYTHONDONTWRITEBYTECODE not set"
    return [f"| bytecode | {text}; `python -m compileall` of "
            f"{', '.join(bytecode['compiled_first'])} first |"]


def render_markdown(results: dict[str, Any]) -> str:
    benchmarks = results["benchmarks"]
    lines = [
        "# Runtime benchmarks: results",
        "",
        "Written by `bench/runtime_bench.py`; see `bench/README.md`. Times in seconds (median "
        "of the measured runs, then min–max and standard deviation) unless marked ms; sizes "
        "in MB = 10^6 bytes.",
        "",
    ]
    renderers = {"rebuild": _render_rebuild, "hosts": _render_hosts,
                 "prepare": _render_prepare, "startup": _render_startup}
    for name, render in renderers.items():
        if name in benchmarks:
            lines += render(benchmarks[name])
    groups: list[tuple[list[str], dict[str, Any]]] = []
    for name in renderers:
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
        loads = [
            f"{name} {benchmarks[name]['load_average']['before'][0]:.2f} → "
            f"{benchmarks[name]['load_average']['after'][0]:.2f}"
            for name in names if "load_average" in benchmarks[name]
        ]
        lines += [f"## Environment of {title}", "", *bb._environment_md(env),
                  *([f"| load average (1 min), start → end | {'; '.join(loads)} |"]
                    if loads else []),
                  f"| pex | {env['libraries']['pex']} (pip {env['libraries']['pip']} for "
                  f"resolving); {env['pex_root']} |",
                  *_bytecode_md(env.get("bytecode")),
                  ""]
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------


def prepare_bytecode() -> dict[str, Any]:
    """Let every process of the benchmarks read and write bytecode caches.

    A shell that sets PYTHONDONTWRITEBYTECODE=1 (this project's sandbox
    does) leaves the editable install's own modules and the builder's
    import environment without .pyc files, so that every start compiles
    them again; installed hosts and builders do not run that way. The
    variable is removed for everything the harness starts (the rebuild
    benchmark measures it once apart), and consign's packages are compiled
    first (their __pycache__ directories are git-ignored).
    """
    original = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "builder", "executor", "batou"],
        cwd=PROJECT, check=True, env=dict(os.environ),
    )
    return {
        "PYTHONDONTWRITEBYTECODE_in_caller": original,
        "removed_for_the_benchmarks": original is not None,
        "compiled_first": ["builder", "executor", "batou"],
        "compile_seconds": time.perf_counter() - started,
    }


def _default_python3() -> str:
    """A stock python3 for executor.pex: /usr/bin/python3 when it is 3.11 or newer."""
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                               capture_output=True, text=True, check=False)
        if probe.stdout.strip() == "True":
            return candidate
    return sys.executable


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=None,
                        help="measured runs (default: rebuild 7, hosts 3, prepare 5, startup 15)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed runs first (default 1; startup 2)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold rebuilds (default 3)")
    parser.add_argument("--python3", default=None,
                        help="the python3 that runs executor.pex (default /usr/bin/python3)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to put everything (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-save", action="store_true",
                        help="print, but do not write bench/results/")
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name in ("rebuild", "hosts", "prepare", "startup", "all"):
        sub.add_parser(name)
    sub.add_parser("render", help="rewrite bench/results/runtime.md from runtime.json")
    worker = sub.add_parser("_worker")
    worker.add_argument("kind", choices=sorted(WORKERS))
    worker.add_argument("job")
    args = parser.parse_args(argv)

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
        workdir = Path(tempfile.mkdtemp(prefix="consign-bench-runtime-"))
    ws = Workspace(workdir)
    python3 = args.python3 or _default_python3()
    try:
        bytecode = prepare_bytecode()
        env = environment_record(workdir)
        env["bytecode"] = bytecode
        chosen = (
            ("rebuild", "hosts", "prepare", "startup") if args.benchmark == "all"
            else (args.benchmark,)
        )
        defaults = {"rebuild": 7, "hosts": 3, "prepare": 5, "startup": 15}
        results = load_results()
        for name in chosen:
            runs = args.runs if args.runs is not None else defaults[name]
            warmup = args.warmup if args.warmup is not None else (2 if name == "startup" else 1)
            # Other work on the machine (a test run) shows here.
            load_before = os.getloadavg()
            if name == "rebuild":
                record = bench_rebuild(ws, runs, warmup, args.cold_runs)
            elif name == "hosts":
                record = bench_hosts(ws, runs)
            elif name == "prepare":
                record = bench_prepare(ws, runs, warmup)
            else:
                record = bench_startup(ws, runs, warmup, python3)
            record["environment"] = env
            record["load_average"] = {"before": load_before, "after": os.getloadavg()}
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
