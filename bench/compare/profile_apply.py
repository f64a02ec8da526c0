"""Where an apply's time goes (issue 8): cProfile of one first apply and one
no-op apply of a generated scenario, the runtime included.

    .venv/bin/python bench/compare/profile_apply.py [--roots 1000] [--files 10]
        [--top 30] [--out bench/results/profile-apply.txt]

The executor normally runs the bundle's runtime in a child process, which
a profiler of the executor does not see. Here `executor.apply.run_runtime`
is replaced by a function that runs the child's code (`executor.child.run`)
in this process under cProfile, with the compiled-code cache the child
would use (a directory of the work tree). Everything else (verify, unpack,
the generation switch) is the executor's own code, unprofiled; its share
is the difference between the apply's duration and the profiled run.
Profiling roughly doubles the times; the shares are what matter.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from scenario import ScenarioSpec, make_repository  # noqa: E402

import executor.apply as apply_module  # noqa: E402
from executor import child, codecache  # noqa: E402
from executor.protocol import RunReport, RunRequest  # noqa: E402

BIN = PROJECT / ".venv/bin"


def _profiled_runs(work: Path, out: list[str], top: int) -> Any:
    """A run_runtime that runs the child in-process under cProfile and
    appends its statistics to `out`."""

    def run_runtime(python: Path, request: RunRequest, cleanup: Any, limit: float | None = None) -> RunReport:
        report = work / "report.json"
        request = replace(request, report=str(report))
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        result = child.run(request)
        profile.disable()
        elapsed = time.perf_counter() - started
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        out.append(f"runtime, profiled: {elapsed:.2f} s\n" + _trim(text.getvalue()))
        return result

    return run_runtime


def _trim(text: str) -> str:
    # Absolute paths of this machine say nothing to a reader elsewhere.
    for prefix in sorted({str(PROJECT) + "/", sys.prefix + "/", sys.base_prefix + "/"}, key=len, reverse=True):
        text = text.replace(prefix, "")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--roots", type=int, default=1000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, help="write the report here (default: print it)")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="consign-profile-", dir=args.workdir))
    try:
        spec = ScenarioSpec(args.roots, args.files)
        repo = work / "repo"
        commit = make_repository(repo, spec)
        key, trust = work / "key", work / "trust"
        subprocess.run([BIN / "bundle", "keys", "generate", key, "--trust-file", trust], check=True, capture_output=True)
        env = {**os.environ, "CONSIGN_DNS": "offline"}
        subprocess.run([BIN / "bundle", "build", "bench", "-C", repo, "--sign-key", key], check=True, capture_output=True, env=env)
        os.environ["CONSIGN_DNS"] = "offline"
        sections: list[str] = []
        apply_module.run_runtime = _profiled_runs(work, sections, args.top)
        codecache.use(work / "code-cache")
        options = apply_module.ApplyOptions(
            bundle=str(repo / "bundles/bench/localhost.bundle"),
            host="localhost",
            trust_file=str(trust),
            state_directory=str(work / "state"),
            runtime_directory=str(work / "runtimes"),
            target_directory=str(work / "target"),
        )
        parts = []
        for label in ("first apply (new target, empty code cache)", "no-op apply (the same again)"):
            os.sync()
            started = time.perf_counter()
            result = apply_module.apply_bundle(options)
            elapsed = time.perf_counter() - started
            if result.status is not apply_module.ApplyStatus.OK:
                raise SystemExit(f"{label}: {result.status}: {result.error}")
            parts.append(f"## {label}\n\napply, profiled: {elapsed:.2f} s, {len(result.changed)} components changed\n{sections[-1]}")
    finally:
        codecache.use(None)
        shutil.rmtree(work, ignore_errors=True)
    header = (
        f"# Profile of `executor apply`, {spec.roots} roots x {spec.files} files "
        f"({spec.roots * spec.files} files), scenario commit {commit[:12]}\n\n"
        f"`bench/compare/profile_apply.py {' '.join(sys.argv[1:])}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        "cProfile of the runtime in-process (see the module docstring); times are inflated by the profiler.\n\n"
    )
    text = header + "\n".join(parts)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
