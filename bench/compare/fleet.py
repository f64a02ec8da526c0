"""The build for a fleet (issue 8): one environment of 1, 10 and 100 hosts,
each listing the same 20 root components, built by `bundle build` with an
unchanged runtime pex; the 1-host point is also built cold.

    .venv/bin/python bench/compare/fleet.py [--hosts 1,10,100] [--roots 20]
        [--files 10] [--runs N] [--warmup N] [--bytes N] [--template-share F]
        [--seed N] [--results DIR] [--workdir DIR] [--keep] [--no-save]

The scenario is `scenario.py`'s with hosts `host001` ... (`ScenarioSpec.hosts`).
Target (issue 8): 100 hosts of 20 root components build in under 10 s with
an unchanged runtime pex. Points merge into bench/results/fleet.json by
label (`20x10@100h`), and fleet.md is rendered from the whole JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import (  # noqa: E402
    BIN,
    RESULTS,
    Runner,
    build_argv,
    cell,
    cold_build,
    machine,
    machine_line,
    measure,
)
from scenario import ScenarioSpec, make_repository  # noqa: E402

TARGET_HOSTS = 100
TARGET_SECONDS = 10.0
# Linear: the cost per added host of the last step is within this factor of
# the first step's (less is better than linear).
LINEAR_MAX_STEP_RATIO = 1.25


# -- measuring ------------------------------------------------------------


def point(spec: ScenarioSpec, work: Path, key: Path, runs: int, warmup: int) -> dict[str, Any]:
    """Build one fleet: warm (every point), cold (the 1-host point)."""
    repo = work / "repo"
    scenario_commit = make_repository(repo, spec)
    env = {**os.environ, "CONSIGN_DNS": "offline"}
    run = Runner(work / "build.log")

    def build(_: int) -> dict[str, float]:
        return run(build_argv(repo, key), cwd=repo, env=env)

    build(-1)  # untimed: the runtime pex is in the build cache, as after any earlier build
    warm = measure(build, warmup, runs)
    bundles = sorted((repo / "bundles/bench").glob("*.bundle"))
    if len(bundles) != spec.hosts:
        raise SystemExit(f"expected {spec.hosts} bundles in {repo / 'bundles/bench'}, found {len(bundles)}")
    result: dict[str, Any] = {
        "spec": {"roots": spec.roots, "files_per_root": spec.files, "bytes_per_file": spec.file_bytes,
                 "template_share": spec.template_share, "seed": spec.seed, "hosts": spec.hosts},
        "scenario_commit": scenario_commit,
        "build_warm": warm,
        "per_host_s": round(warm["median_s"] / spec.hosts, 4),
        "bundle_bytes_per_host": bundles[0].stat().st_size,
        "bundles_total_bytes": sum(b.stat().st_size for b in bundles),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command_line": shlex.join(["bench/compare/fleet.py", *sys.argv[1:]]),
        "runs": runs,
        "warmup": warmup,
    }  # fmt: skip
    if spec.hosts == 1:
        print("    cold builds ...", flush=True)
        result["build_cold"] = cold_build(run, repo, key, env, work, runs)
    return result


# -- analysis -------------------------------------------------------------


def _fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least squares t = a + b * hosts, with R²."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    total = sum((y - my) ** 2 for y in ys)
    residual = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return {"fixed_s": round(a, 4), "per_host_s": round(b, 5), "r2": round(1 - residual / total, 5) if total else 1.0}


def analyse(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth of the warm build with the number of hosts, over `points`
    (one roots x files size, any host counts)."""
    points = sorted(points, key=lambda p: p["spec"]["hosts"])
    hosts = [p["spec"]["hosts"] for p in points]
    medians = [p["build_warm"]["median_s"] for p in points]
    steps = [
        {"from": h0, "to": h1, "s_per_added_host": round((t1 - t0) / (h1 - h0), 5)}
        for h0, h1, t0, t1 in zip(hosts, hosts[1:], medians, medians[1:], strict=False)
    ]
    found: dict[str, Any] = {"steps": steps}
    if len(points) >= 2:
        found["fit"] = _fit([float(h) for h in hosts], medians)
    # A first step within the noise (not positive) gives no ratio, and no verdict.
    if len(steps) >= 2 and steps[0]["s_per_added_host"] > 0:
        ratio = steps[-1]["s_per_added_host"] / steps[0]["s_per_added_host"]
        found["step_ratio_last_over_first"] = round(ratio, 3)
        found["linear"] = ratio <= LINEAR_MAX_STEP_RATIO
    per_host = {p["spec"]["hosts"]: p["per_host_s"] for p in points}
    if 10 in per_host and 100 in per_host:
        found["per_host_100_over_10"] = round(per_host[100] / per_host[10], 3)
    if TARGET_HOSTS in per_host:
        target = next(p for p in points if p["spec"]["hosts"] == TARGET_HOSTS)["build_warm"]["median_s"]
        found["target_met"] = target < TARGET_SECONDS
    return found


# -- rendering ------------------------------------------------------------


def _groups(data: dict[str, Any]) -> dict[tuple[int, int, int, float, int], list[dict[str, Any]]]:
    """Points by scenario size (roots, files, bytes, template share, seed)."""
    groups: dict[tuple[int, int, int, float, int], list[dict[str, Any]]] = {}
    for p in data["points"].values():
        s = p["spec"]
        key = (s["roots"], s["files_per_root"], s["bytes_per_file"], s["template_share"], s["seed"])
        groups.setdefault(key, []).append(p)
    return groups


def _hosts(n: int) -> str:
    return "1 host" if n == 1 else f"{n} hosts"


def _point_row(p: dict[str, Any]) -> str:
    w = p["build_warm"]
    return (
        f"| {p['spec']['hosts']} | {cell(w)} | {1000 * p['per_host_s']:.1f} ms | {w['runs']} | "
        f"{w['peak_rss_mb']} MB | {p['bundle_bytes_per_host'] / 1e6:.2f} MB | "
        f"{p['bundles_total_bytes'] / 1e6:.1f} MB |"
    )


def _growth(found: dict[str, Any]) -> list[str]:
    lines = [
        f"- cost per added host, {s['from']} → {_hosts(s['to'])}: {1000 * s['s_per_added_host']:.1f} ms"
        for s in found["steps"]
    ]
    if "fit" in found:
        f = found["fit"]
        sign = "+" if f["per_host_s"] >= 0 else "−"
        lines.append(f"- least squares: t = {f['fixed_s']:.3f} s {sign} {1000 * abs(f['per_host_s']):.1f} ms × hosts, "
                     f"R² = {f['r2']}")  # fmt: skip
    if "per_host_100_over_10" in found:
        lines.append(f"- time per host at 100 hosts over time per host at 10: {found['per_host_100_over_10']}")
    if "linear" in found:
        verdict = "linear or better" if found["linear"] else "grows faster than linear"
        lines.append(f"- verdict: {verdict} (last step's cost per added host / first step's = "
                     f"{found['step_ratio_last_over_first']}; linear when ≤ {LINEAR_MAX_STEP_RATIO})")  # fmt: skip
    elif len(found["steps"]) >= 2:
        lines.append("- verdict: none (the first step's cost per added host is not above zero: noise)")
    if "target_met" in found:
        lines.append(f"- target, {TARGET_HOSTS} hosts with an unchanged pex under {TARGET_SECONDS:g} s: "
                     f"{'met' if found['target_met'] else 'not met'}")  # fmt: skip
    return lines


def _cold_line(points: list[dict[str, Any]]) -> list[str]:
    cold = [p for p in points if "build_cold" in p]
    if not cold:
        return []
    c = cold[0]["build_cold"]
    return [
        f"Cold, 1 host (new `CONSIGN_CACHE_DIR` and PEX_ROOT: the runtime pex resolved, downloaded "
        f"and built): {cell(c)} s, {c['runs']} runs, peak RSS {c['peak_rss_mb']} MB.",
        "",
    ]


def _group(key: tuple[int, int, int, float, int], points: list[dict[str, Any]]) -> list[str]:
    roots, files, size, share, seed = key
    points = sorted(points, key=lambda p: p["spec"]["hosts"])
    return [
        f"## {roots} roots × {files} files per host ({roots * files} files, {size} bytes each, "
        f"{share:.0%} templates, seed {seed})",
        "",
        "| hosts | `bundle build`, unchanged pex: s, median (min–max) | per host | runs | peak RSS | bundle per host | all bundles |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *map(_point_row, points),
        "",
        *_cold_line(points),
        *_growth(analyse(points)),
        "",
        *(f"- {_hosts(p['spec']['hosts'])}: {p['date']}, `{p['command_line']}`, {p['runs']} runs after "
          f"{p['warmup']} warm-up; scenario commit {p['scenario_commit'][:12]}" for p in points),
        "",
    ]  # fmt: skip


def render(data: dict[str, Any]) -> str:
    lines = [
        "# consign fleet build: results",
        "",
        "Written by `bench/compare/fleet.py`. Wall-clock seconds of `bundle build`, spawn to exit: "
        "median (min–max) of the measured runs after the warm-up; per host = median / hosts.",
        "",
    ]
    for key, points in sorted(_groups(data).items()):
        lines += _group(key, points)
    lines += [
        "## How the figures are taken",
        "",
        "- One generated repository per point (`bench/compare/scenario.py` with `hosts`): environment "
        "`bench`, hosts `host001` ..., each listing every root.",
        "- `.venv/bin/bundle build bench -C REPO --sign-key KEY` with `CONSIGN_DNS=offline`, one "
        "signed bundle per host. An untimed build first puts the runtime pex in the build cache; "
        "every timed build rebuilds the same commit with that pex unchanged.",
        "- Cold (1-host point only): the same command with `CONSIGN_CACHE_DIR` a new, empty "
        "directory per run and `CONSIGN_PEX_ROOT` unset, so PEX_ROOT and pip's download cache are "
        "new too: network time to PyPI is in the figure. At most 3 runs, no warm-up.",
        "- Cost per added host: the difference of two medians over the difference of their host "
        "counts. Not measured: pushing or pulling the bundles, applying them.",
        "- `os.sync()` before every timed command. Peak RSS from GNU `time -v` when available, "
        "else `os.wait4` rusage of the one child.",
        "",
        machine_line(data["machine"], data["versions"]),
    ]
    return "\n".join(lines) + "\n"


# -- main -----------------------------------------------------------------


def _host_counts(text: str) -> list[int]:
    counts = sorted({int(part) for part in text.split(",") if part.strip()})
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"expected host counts like 1,10,100, got {text!r}")
    return counts


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=_host_counts, default=[1, 10, 100], help="default 1,10,100")
    parser.add_argument("--roots", type=int, default=20, help="root components per host")
    parser.add_argument("--files", type=int, default=10, help="files per root")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--bytes", type=int, default=1024, dest="file_bytes")
    parser.add_argument("--template-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where fleet.json and fleet.md go")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-save", action="store_true", help="print only; write no results")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    work = Path(tempfile.mkdtemp(prefix="consign-fleet-", dir=args.workdir))
    try:
        key, trust = work / "key", work / "trust"
        subprocess.run([BIN / "bundle", "keys", "generate", key, "--trust-file", trust],
                       check=True, capture_output=True)  # fmt: skip
        points = {}
        for hosts in args.hosts:
            spec = ScenarioSpec(args.roots, args.files, args.file_bytes, args.template_share, args.seed, hosts)
            print(f"{spec.label} ...", flush=True)
            points[spec.label] = point(spec, work / spec.label, key, args.runs, args.warmup)
        m, v = machine(work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    path = args.results / "fleet.json"
    data: dict[str, Any] = {"points": {}}
    if not args.no_save and path.exists():
        data = json.loads(path.read_text())
    data["points"].update(points)
    data["machine"], data["versions"] = m, v
    text = render(data)
    print(text)
    if not args.no_save:
        args.results.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        (args.results / "fleet.md").write_text(text)


if __name__ == "__main__":
    main()
