"""consign against batou 2.7.1 on the same deployment (issue 8): whole
commands, side by side, with ratios batou/consign.

    .venv/bin/python bench/compare/run.py [--runs N] [--warmup N]
        [--roots N --files N] [--large | --series] [--bytes N]
        [--template-share F] [--seed N] [--workdir DIR] [--keep] [--no-save]

Default scales: 10 roots x 10 files and 100 roots x 10 files (one host);
`--roots/--files` runs one scale instead; `--large` adds 1,000 x 10;
`--series` runs 10, 100 and 1,000 roots. Points of 1,000 roots or more run
3 times unless `--runs` says otherwise. Besides the side-by-side figures,
consign's series times a cold `bundle build` (new runtime cache),
`executor verify`, and `executor pull` with nothing new from a loopback
nginx (skipped, with a note, when nginx is missing).
batou 2.7.1 lives in its own venv (`--batou-venv`, default
~/.cache/consign-bench/batou-2.7.1, made on first use with `python3 -m venv`
and `pip install batou==2.7.1`); it is never installed into consign's venv.
Results merge into bench/results/compare.json by scale, and compare.md is
rendered from the whole JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(PROJECT))

from scenario import ScenarioSpec, change_one_file, changed_file, commit, make_repository  # noqa: E402

from tests.nginx import nginx_unavailable, running_nginx  # noqa: E402

BIN = PROJECT / ".venv/bin"
RESULTS = PROJECT / "bench/results"
BATOU_VERSION = "2.7.1"
DEFAULT_BATOU_VENV = Path.home() / ".cache/consign-bench" / f"batou-{BATOU_VERSION}"
GNU_TIME = Path("/usr/bin/time")
# Cold builds download and build the runtime each run: a few are enough.
MAX_COLD_RUNS = 3
LARGE_ROOTS = 1000
LARGE_RUNS = 3


# -- running and timing ---------------------------------------------------


def _gnu_time() -> bool:
    if not GNU_TIME.exists():
        return False
    probe = subprocess.run([str(GNU_TIME), "--version"], capture_output=True, text=True, check=False)
    return "GNU" in probe.stdout + probe.stderr


USE_GNU_TIME = _gnu_time()


class Runner:
    """Spawns one whole command, waits for it with wait4, and returns wall
    time and peak RSS; output goes to a log file, shown on failure."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def __call__(self, args: list[str | Path], cwd: Path, env: dict[str, str]) -> dict[str, float]:
        argv = [str(a) for a in args]
        stats = self.log.with_suffix(".time")
        if USE_GNU_TIME:
            argv = [str(GNU_TIME), "-v", "-o", str(stats), *argv]
        os.sync()  # the previous run's write-back stays out of this one
        with self.log.open("w") as out:
            started = time.perf_counter()
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
            elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            tail = self.log.read_text(errors="replace")[-4000:]
            raise SystemExit(f"{shlex.join(argv)} (in {cwd}) failed with {process.returncode}:\n{tail}")
        # ru_maxrss is KiB on Linux; it covers the child's waited-for children
        # (the executor's runtime child, batou's git calls).
        result = {"wall_s": elapsed, "rusage_maxrss_mb": usage.ru_maxrss * 1024 / 1e6}
        if USE_GNU_TIME:
            match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stats.read_text())
            if match:
                result["gnu_time_maxrss_mb"] = int(match.group(1)) * 1024 / 1e6
        return result


def _figures(samples: list[dict[str, float]]) -> dict[str, Any]:
    walls = [s["wall_s"] for s in samples]
    rss = [s.get("gnu_time_maxrss_mb", s["rusage_maxrss_mb"]) for s in samples]
    return {
        "median_s": round(statistics.median(walls), 4),
        "min_s": round(min(walls), 4),
        "max_s": round(max(walls), 4),
        "runs": len(walls),
        "samples_s": [round(w, 4) for w in walls],
        "peak_rss_mb": round(max(rss), 1),
        "peak_rss_source": "GNU time -v" if USE_GNU_TIME else "wait4 rusage",
    }


def _sum(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per-run sums of two series measured in pairs (build then apply)."""
    walls = [x + y for x, y in zip(a["samples_s"], b["samples_s"], strict=True)]
    return {
        "median_s": round(statistics.median(walls), 4),
        "min_s": round(min(walls), 4),
        "max_s": round(max(walls), 4),
        "runs": len(walls),
        "samples_s": [round(w, 4) for w in walls],
    }


def measure(run: Any, warmup: int, runs: int, before: Any = None) -> dict[str, Any]:
    """`before(n)` runs untimed before run n (negative n: warm-up)."""
    samples = []
    for n in range(-warmup, runs):
        if before is not None:
            before(n)
        sample = run(n)
        if n >= 0:
            samples.append(sample)
    return _figures(samples)


# -- batou ----------------------------------------------------------------


def ensure_batou(venv: Path) -> Path:
    """batou's console script in its own venv, made on first use."""
    script = venv / "bin/batou"
    marker = venv / ".consign-bench-ok"
    if script.exists() and marker.exists():
        return script
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    python = shutil.which("python3") or sys.executable
    print(f"making batou {BATOU_VERSION}'s venv in {venv} ...", flush=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", f"batou=={BATOU_VERSION}"], check=True
    )
    marker.write_text(BATOU_VERSION + "\n")
    return script


def batou_series(repo: Path, spec: ScenarioSpec, batou: Path, work: Path, runs: int, warmup: int) -> dict[str, Any]:
    env = {**os.environ, "APPENV_BASEDIR": str(repo), "PATH": f"{batou.parent}{os.pathsep}{os.environ['PATH']}"}
    run = Runner(work / "batou.log")

    def deploy(_: int) -> dict[str, float]:
        return run([batou, "deploy", "bench"], cwd=repo, env=env)

    def fresh_target(_: int) -> None:
        # connect_method = local: batou's target is <repo>/work
        shutil.rmtree(repo / "work", ignore_errors=True)

    first = measure(deploy, warmup, runs, before=fresh_target)
    noop = measure(deploy, warmup, runs)
    changed = measure(deploy, warmup, runs, before=lambda n: change_one_file(repo, spec, n + 1000))
    return {"first_deploy": first, "noop_redeploy": noop, "changed_redeploy": changed}


# -- consign --------------------------------------------------------------


def build_argv(repo: Path, key: Path) -> list[str | Path]:
    return [BIN / "bundle", "build", "bench", "-C", repo, "--sign-key", key]


def cold_build(run: Runner, repo: Path, key: Path, env: dict[str, str], scratch: Path, runs: int) -> dict[str, Any]:
    """`bundle build` with a new, empty runtime cache each run: the runtime
    pex is resolved, downloaded and built, and the builder's import venv
    made, from scratch. PEX_ROOT lives in that cache (CONSIGN_PEX_ROOT is
    dropped), and with it pip's download cache: wheels come from the index."""
    cold_env = {k: v for k, v in env.items() if k != "CONSIGN_PEX_ROOT"}

    def one(n: int) -> dict[str, float]:
        cache = scratch / f"cold-cache{n}"
        try:
            return run(build_argv(repo, key), cwd=repo, env={**cold_env, "CONSIGN_CACHE_DIR": str(cache)})
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    figures = measure(one, 0, min(runs, MAX_COLD_RUNS))
    figures["cache"] = "new CONSIGN_CACHE_DIR per run, PEX_ROOT (and pip's cache) inside it"
    return figures


def _publish(repo: Path, key: Path, www: Path, env: dict[str, str]) -> None:
    argv = [str(a) for a in (BIN / "bundle", "publish", "bench", www, "-C", repo, "--sign-key", key)]
    done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed:\n{done.stdout}\n{done.stderr}")


def noop_pull(
    run: Runner, repo: Path, work: Path, key: Path, trust: Path, env: dict[str, str], runs: int, warmup: int
) -> dict[str, Any]:
    """`executor pull URL` with nothing new, from nginx on 127.0.0.1 serving
    `bundle publish` output; a first pull (untimed) applies the bundle."""
    reason = nginx_unavailable()
    if reason is not None:
        return {"skipped": reason}
    www = work / "www"
    _publish(repo, key, www, env)
    with running_nginx(work / "nginx", www) as nginx:

        def pull(_: int) -> dict[str, float]:
            return run(
                [BIN / "executor", "pull", nginx.url, "--host", "localhost", "--trust", trust,
                 "--state-dir", work / "pull-state", "--target-dir", work / "pull-target",
                 "--runtime-dir", work / "runtimes"],
                cwd=repo, env=env,
            )  # fmt: skip

        pull(-1)
        mark = nginx.mark()
        figures = measure(pull, warmup, runs)
        requests = nginx.requests(mark, at_least=warmup + runs)
    figures["requests_per_pull"] = round(len(requests) / (warmup + runs), 2)
    figures["http_statuses"] = sorted({r.status for r in requests})
    figures["bytes_per_pull"] = max((r.bytes_sent for r in requests), default=0)
    return figures


def consign_series(repo: Path, spec: ScenarioSpec, work: Path, key: Path, trust: Path, runs: int, warmup: int) -> dict[str, Any]:
    env = {**os.environ, "CONSIGN_DNS": "offline"}
    run = Runner(work / "consign.log")
    bundle = repo / "bundles/bench/localhost.bundle"
    runtimes = work / "runtimes"
    runtimes.mkdir()

    def build(_: int) -> dict[str, float]:
        return run(build_argv(repo, key), cwd=repo, env=env)

    def apply(state: Path, target: Path) -> dict[str, float]:
        return run(
            [BIN / "executor", "apply", bundle, "--host", "localhost", "--trust", trust,
             "--state-dir", state, "--target-dir", target, "--runtime-dir", runtimes],
            cwd=repo, env=env,
        )  # fmt: skip

    # Untimed: fills the build cache (runtime pex) and makes the shared
    # runtime, so that neither is part of any figure below.
    build(-1)
    apply(work / "prepare-state", work / "prepare-target")

    build_warm = measure(build, warmup, runs)
    bundle_bytes = bundle.stat().st_size

    def first_apply(n: int) -> dict[str, float]:
        return apply(work / f"state{n}", work / f"target{n}")

    first = measure(first_apply, warmup, runs)
    state, target = work / f"state{runs - 1}", work / f"target{runs - 1}"
    noop = measure(lambda _: apply(state, target), warmup, runs)
    verify = measure(
        lambda _: run([BIN / "executor", "verify", bundle, "--host", "localhost", "--trust", trust,
                       "--state-dir", state], cwd=repo, env=env),
        warmup, runs,
    )  # fmt: skip

    builds: list[dict[str, float]] = []
    applies: list[dict[str, float]] = []
    for n in range(-warmup, runs):
        change_one_file(repo, spec, n + 1000)
        b, a = build(n), apply(state, target)
        if n >= 0:
            builds.append(b)
            applies.append(a)
    changed_build, changed_apply = _figures(builds), _figures(applies)
    print("    no-op pull ...", flush=True)
    pull = noop_pull(run, repo, work, key, trust, env, runs, warmup)
    # Last: should a cold build's runtime differ from the cached one, no
    # apply above would meet it (and make a new runtime venv while timed).
    print("    cold builds ...", flush=True)
    build_cold = cold_build(run, repo, key, env, work, runs)
    return {
        "bundle_bytes": bundle_bytes,
        "build_warm": build_warm,
        "build_cold": build_cold,
        "verify": verify,
        "noop_pull": pull,
        "first_apply": first,
        "first_build_plus_apply": _sum(build_warm, first),
        "noop_apply": noop,
        "noop_build_plus_apply": _sum(build_warm, noop),
        "changed_build": changed_build,
        "changed_apply": changed_apply,
        "changed_build_plus_apply": _sum(changed_build, changed_apply),
    }


# -- one scale ------------------------------------------------------------


def _ratio(batou: dict[str, Any], consign: dict[str, Any]) -> float:
    return round(float(batou["median_s"]) / float(consign["median_s"]), 2)


def scale(spec: ScenarioSpec, work: Path, batou: Path, key: Path, trust: Path, runs: int, warmup: int) -> dict[str, Any]:
    work.mkdir(parents=True)
    repos = {}
    for side in ("batou", "consign"):
        repo = work / side / "repo"
        make_repository(repo, spec)
        # What a batou user does once: ./batou migrate, then commit.
        subprocess.run(
            [batou, "migrate"], cwd=repo, env={**os.environ, "APPENV_BASEDIR": str(repo)},
            check=True, capture_output=True,
        )  # fmt: skip
        repos[side] = commit(repo, "batou migrate")
    assert repos["batou"] == repos["consign"], "the two copies of the scenario differ"
    print(f"  {spec.label}: batou ...", flush=True)
    b = batou_series(work / "batou/repo", spec, batou, work / "batou", runs, warmup)
    print(f"  {spec.label}: consign ...", flush=True)
    c = consign_series(work / "consign/repo", spec, work / "consign", key, trust, runs, warmup)
    ratios = {
        "first_deploy_vs_apply": _ratio(b["first_deploy"], c["first_apply"]),
        "first_deploy_vs_build_plus_apply": _ratio(b["first_deploy"], c["first_build_plus_apply"]),
        "noop_vs_apply": _ratio(b["noop_redeploy"], c["noop_apply"]),
        "noop_vs_build_plus_apply": _ratio(b["noop_redeploy"], c["noop_build_plus_apply"]),
        "changed_vs_apply": _ratio(b["changed_redeploy"], c["changed_apply"]),
        "changed_vs_build_plus_apply": _ratio(b["changed_redeploy"], c["changed_build_plus_apply"]),
    }
    return {
        "spec": {"roots": spec.roots, "files_per_root": spec.files, "bytes_per_file": spec.file_bytes,
                 "template_share": spec.template_share, "seed": spec.seed,
                 "managed_files": spec.roots * spec.files, "changed_file": changed_file(spec)},
        "scenario_commit": repos["batou"],
        "batou": b,
        "consign": c,
        "ratios_batou_over_consign": ratios,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command_line": shlex.join(["bench/compare/run.py", *sys.argv[1:]]),
        "runs": runs,
        "warmup": warmup,
    }  # fmt: skip


# -- machine and versions -------------------------------------------------


def _out(*args: str | Path) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip()


def machine(work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The machine, and the versions of what ran (batou added by the caller)."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    # Not _out: stripping would eat the first line's leading status column.
    status = subprocess.run(["git", "-C", str(PROJECT), "status", "--porcelain"],
                            capture_output=True, text=True, check=False).stdout  # fmt: skip
    changed = [line[3:] for line in status.splitlines() if line and not line[3:].startswith("bench/")]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem) * 1024 / 1e9, 1),
        "kernel": platform.release(),
        "workdir_fs": _out("stat", "-f", "-c", "%T", work),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }, {
        "python": platform.python_version(),
        "consign": _out(BIN / "bundle", "--version"),
        "consign_commit": _out("git", "-C", PROJECT, "rev-parse", "--short", "HEAD"),
        "consign_changed_outside_bench": changed,
        "git": _out("git", "--version"),
    }


# -- rendering ------------------------------------------------------------


def cell(f: dict[str, Any]) -> str:
    return f"{f['median_s']:.3f} ({f['min_s']:.3f}–{f['max_s']:.3f})"


def _alone_row(what: str, f: dict[str, Any] | None, note: str = "") -> str:
    if f is None:
        return f"| {what} | not measured in this run | | | |"
    if "skipped" in f:
        return f"| {what} | skipped: {f['skipped']} | | | |"
    return f"| {what} | {cell(f)} | {f['runs']} | {f['peak_rss_mb']} MB | {note} |"


def _pull_note(f: dict[str, Any] | None) -> str:
    if f is None or "skipped" in f:
        return ""
    statuses = ", ".join(map(str, f["http_statuses"]))
    return f"{f['requests_per_pull']:g} request(s) per pull (HTTP {statuses}), {f['bytes_per_pull']} B"


def consign_alone(c: dict[str, Any]) -> list[str]:
    """consign's figures that have no batou counterpart."""
    return [
        "| consign alone | seconds, median (min–max) | runs | peak RSS | |",
        "| --- | ---: | ---: | ---: | --- |",
        _alone_row("`bundle build`, unchanged runtime (warm cache)", c["build_warm"]),
        _alone_row("`bundle build`, cold: new runtime cache and PEX_ROOT", c.get("build_cold"),
                   "runtime pex resolved, downloaded and built"),
        _alone_row("`executor verify BUNDLE`", c.get("verify")),
        _alone_row("`executor pull URL`, nothing new (nginx on loopback)", c.get("noop_pull"),
                   _pull_note(c.get("noop_pull"))),
        f"| bundle size per host | {c['bundle_bytes'] / 1e6:.2f} MB ({c['bundle_bytes']} bytes) | | | |",
        "",
    ]  # fmt: skip


def render(data: dict[str, Any]) -> str:
    lines = [
        "# consign against batou 2.7.1: results",
        "",
        "Written by `bench/compare/run.py`. Wall-clock seconds of whole commands, spawn to exit: "
        "median (min–max) of the measured runs after the warm-up. Ratios are batou's median over "
        "consign's: above 1, consign is faster.",
        "",
    ]
    for label in sorted(data["scales"], key=lambda k: (data["scales"][k]["spec"]["managed_files"], k)):
        s = data["scales"][label]
        b, c, r, sp = s["batou"], s["consign"], s["ratios_batou_over_consign"], s["spec"]
        lines += [
            f"## {sp['roots']} roots × {sp['files_per_root']} files ({sp['managed_files']} files, "
            f"{sp['bytes_per_file']} bytes each, {sp['template_share']:.0%} templates), one host",
            "",
            f"{s['date']}, `{s['command_line']}`, {s['runs']} runs after {s['warmup']} warm-up; "
            f"scenario commit {s['scenario_commit'][:12]}; consign bundle {c['bundle_bytes'] / 1e6:.2f} MB.",
            "",
            "| | batou 2.7.1 `batou deploy` | consign `executor apply` | consign `bundle build` | consign build + apply | ratio vs apply | ratio vs build + apply |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| first deploy (fresh target) | {cell(b['first_deploy'])} | {cell(c['first_apply'])} | "
            f"{cell(c['build_warm'])} | {cell(c['first_build_plus_apply'])} | "
            f"{r['first_deploy_vs_apply']} | {r['first_deploy_vs_build_plus_apply']} |",
            f"| no-op redeploy | {cell(b['noop_redeploy'])} | {cell(c['noop_apply'])} | "
            f"{cell(c['build_warm'])} | {cell(c['noop_build_plus_apply'])} | "
            f"{r['noop_vs_apply']} | {r['noop_vs_build_plus_apply']} |",
            f"| redeploy after one file changed | {cell(b['changed_redeploy'])} | {cell(c['changed_apply'])} | "
            f"{cell(c['changed_build'])} | {cell(c['changed_build_plus_apply'])} | "
            f"{r['changed_vs_apply']} | {r['changed_vs_build_plus_apply']} |",
            "",
            f"Peak RSS ({c['first_apply']['peak_rss_source']}, the command and its waited-for children): "
            f"executor apply first {c['first_apply']['peak_rss_mb']} MB, no-op {c['noop_apply']['peak_rss_mb']} MB, "
            f"after a change {c['changed_apply']['peak_rss_mb']} MB; bundle build {c['build_warm']['peak_rss_mb']} MB; "
            f"batou deploy first {b['first_deploy']['peak_rss_mb']} MB, no-op {b['noop_redeploy']['peak_rss_mb']} MB.",
            "",
            *consign_alone(c),
        ]
    lines += scaling(data["scales"])
    lines += [
        "## How the figures are taken",
        "",
        "- One generated repository (`bench/compare/scenario.py`), written twice from the same spec "
        "(identical commit ids), one copy per tool; `./batou migrate` ran once and was committed. "
        "`connect_method = local`: batou deploys into `<repo>/work`, consign ignores the key (with a note).",
        "- batou: `APPENV_BASEDIR=REPO batou deploy bench` from batou's own venv. First deploy: "
        "`<repo>/work` removed before each run. No-op: the same again. Change: one static file of "
        "`c000` edited and committed (untimed) before each run.",
        "- consign: `.venv/bin/bundle build bench -C REPO --sign-key KEY` (key from `bundle keys "
        "generate KEY --trust-file TRUST`) and `.venv/bin/executor apply BUNDLE --host localhost "
        "--trust TRUST --state-dir S --target-dir D --runtime-dir R`, with `CONSIGN_DNS=offline`. "
        "**Not measured**: the runtime pex build (build cache warmed by an untimed build) and the "
        "runtime venv creation (`--runtime-dir` shared by every run and made by an untimed apply "
        "first). First deploy: new state and target directories each run. No-op: the last of those "
        "again. Change: edit + commit (untimed), then `bundle build` and `executor apply` each timed.",
        "- Cold build: `bundle build` as above with `CONSIGN_CACHE_DIR` set to a new, empty directory "
        "each run (and `CONSIGN_PEX_ROOT` unset, so PEX_ROOT and pip's download cache are new too): "
        "pex resolves against PyPI, downloads pip and the wheels, builds the runtime pex, and the "
        "builder makes its import venv. Network time is in the figure; the OS page cache and any "
        "proxy or CDN on the way may be warm. At most 3 runs, no warm-up.",
        "- Verify: `executor verify BUNDLE --host localhost --trust TRUST --state-dir S`, S the state "
        "of the no-op applies (it accepted this bundle); reads the bundle, records nothing.",
        "- No-op pull: `bundle publish bench WWW -C REPO --sign-key KEY` (untimed), nginx serving WWW "
        "on 127.0.0.1 (`tests/nginx.py`), one untimed `executor pull URL --host localhost --trust "
        "TRUST --state-dir S --target-dir D --runtime-dir R` that applies the bundle, then the same "
        "command timed: it fetches the pointer and finds nothing new. Requests and bytes from "
        "nginx's access log.",
        "- `build + apply` adds each run's build to its apply; for first and no-op it pairs the "
        "warm unchanged builds with the applies run by run. consign's build runs once per fleet "
        "change, not per host, so the apply-only ratio is the per-host comparison.",
        "- `os.sync()` before every timed command. Peak RSS from GNU `time -v` when available, "
        "else `os.wait4` rusage of the one child.",
        "",
        machine_line(data["machine"], data["versions"]),
    ]
    return "\n".join(lines) + "\n"


def _fit(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares y = a + b x over `points`: (a, b, R²)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    b = sxy / sxx
    a = my - b * mx
    syy = sum((y - my) ** 2 for _, y in points)
    r2 = 1.0 - sum((y - a - b * x) ** 2 for x, y in points) / syy if syy else 1.0
    return a, b, r2


def scaling(scales: dict[str, dict[str, Any]]) -> list[str]:
    """How cost grows with managed files across the scales of one host, and
    the issue's targets at the largest scale."""
    ordered = sorted(scales.values(), key=lambda s: s["spec"]["managed_files"])
    if len(ordered) < 2:
        return []
    lines = [
        "## Scaling with managed files (one host)",
        "",
        "| managed files | batou no-op | consign no-op | batou first | consign first | no-op ratio | first ratio | executor peak RSS, first |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in ordered:
        b, c, r = s["batou"], s["consign"], s["ratios_batou_over_consign"]
        lines.append(
            f"| {s['spec']['managed_files']:,} | {b['noop_redeploy']['median_s']:.3f} | "
            f"{c['noop_apply']['median_s']:.3f} | {b['first_deploy']['median_s']:.3f} | "
            f"{c['first_apply']['median_s']:.3f} | {r['noop_vs_apply']} | {r['first_deploy_vs_apply']} | "
            f"{c['first_apply']['peak_rss_mb']} MB |"
        )
    noop = [(s["spec"]["managed_files"], s["consign"]["noop_apply"]["median_s"]) for s in ordered]
    fixed, per_file, r2 = _fit(noop)
    smallest = ordered[0]
    largest = ordered[-1]
    ratios = largest["ratios_batou_over_consign"]
    rss = largest["consign"]["first_apply"]["peak_rss_mb"]
    met = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    lines += [
        "",
        f"- consign no-op apply against managed files, least squares over the {len(noop)} scales: "
        f"{fixed:.3f} s + {per_file * 1000:.4f} ms per file (R² {r2:.4f}); "
        f"the smallest scale ({smallest['spec']['managed_files']} files) takes "
        f"{smallest['consign']['noop_apply']['median_s']:.3f} s, all of it fixed cost in practice.",
        f"- target, no-op of {largest['spec']['managed_files']:,} files at least 5 times faster than batou: "
        f"{ratios['noop_vs_apply']}×, {met(ratios['noop_vs_apply'] >= 5)}",
        f"- target, first deploy of {largest['spec']['managed_files']:,} files at least 2 times faster than batou: "
        f"{ratios['first_deploy_vs_apply']}×, {met(ratios['first_deploy_vs_apply'] >= 2)}",
        f"- target, executor peak memory under 150 MB at {largest['spec']['managed_files']:,} files: "
        f"{rss} MB on the first deploy, {met(rss < 150)}",
        f"- target, fixed part of a no-op under 0.3 s: {fixed:.3f} s by the fit, "
        f"{smallest['consign']['noop_apply']['median_s']:.3f} s measured at {smallest['spec']['managed_files']} "
        f"files, {met(max(fixed, 0) < 0.3)} by the fit",
        "",
    ]
    return lines


def machine_line(m: dict[str, Any], v: dict[str, Any]) -> str:
    """The machine and versions of `machine()`, as one sentence."""
    changed = ", ".join(v["consign_changed_outside_bench"]) or "none"
    batou = f"batou {v['batou']}, " if "batou" in v else ""
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"work directory on {m['workdir_fs']}, load average {m['load_average_1m']} at the start. "
        f"Python {v['python']}, {v['consign']} at {v['consign_commit']} (changed outside bench/: {changed}), "
        f"{batou}{v['git']}."
    )


def _sizes(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(roots, files per root) of the scales to run."""
    if args.roots:
        return [(args.roots, args.files)]
    if args.series:
        return [(10, args.files), (100, args.files), (LARGE_ROOTS, args.files)]
    return [(10, args.files), (100, args.files)] + ([(LARGE_ROOTS, 10)] if args.large else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, help=f"default 5, {LARGE_RUNS} from {LARGE_ROOTS} roots")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--roots", type=int, help="one scale: this many roots (with --files)")
    parser.add_argument("--files", type=int, default=10, help="files per root")
    extent = parser.add_mutually_exclusive_group()
    extent.add_argument("--large", action="store_true", help="add the 1,000 roots x 10 files point")
    extent.add_argument("--series", action="store_true", help="10, 100 and 1,000 roots x --files files")
    parser.add_argument("--bytes", type=int, default=1024, dest="file_bytes")
    parser.add_argument("--template-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batou-venv", type=Path, default=DEFAULT_BATOU_VENV)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--render", action="store_true", help="only rewrite compare.md from compare.json")
    args = parser.parse_args()
    if args.render:
        (RESULTS / "compare.md").write_text(render(json.loads((RESULTS / "compare.json").read_text())))
        return

    sizes = _sizes(args)
    batou = ensure_batou(args.batou_venv)
    work = Path(tempfile.mkdtemp(prefix="consign-compare-", dir=args.workdir))
    try:
        key, trust = work / "key", work / "trust"
        subprocess.run([BIN / "bundle", "keys", "generate", key, "--trust-file", trust],
                       check=True, capture_output=True)  # fmt: skip
        scales: dict[str, dict[str, Any]] = {}
        for roots, files in sizes:
            spec = ScenarioSpec(roots, files, args.file_bytes, args.template_share, args.seed)
            print(f"scale {spec.label} ...", flush=True)
            runs = args.runs if args.runs is not None else LARGE_RUNS if roots >= LARGE_ROOTS else 5
            scales[spec.label] = scale(spec, work / spec.label, batou, key, trust, runs, args.warmup)
        m, v = machine(work)
        v["batou"] = _out(batou.parent / "python", "-c", "import importlib.metadata as m; print(m.version('batou'))")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    path = RESULTS / "compare.json"
    data: dict[str, Any] = {"scales": {}}
    if not args.no_save and path.exists():
        data = json.loads(path.read_text())
    data["scales"].update(scales)
    data["machine"], data["versions"] = m, v
    text = render(data)
    print(text)
    if not args.no_save:
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        (RESULTS / "compare.md").write_text(text)


if __name__ == "__main__":
    main()
