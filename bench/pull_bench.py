"""Pull benchmarks (issue 7): what a pull with nothing new costs, what a
model-only change downloads, and 50 executors pulling at once from nginx.

    .venv/bin/python bench/pull_bench.py [--hosts 50] [--runs 7] [--no-save]

A fleet of the example's components (app, test, database, frontend per
host), built and published into a directory served by a real nginx on
127.0.0.1 (tests/nginx.py; needs nginx installed). Every executor has its
own state and target directory; all share one runtime directory, made by
the first pull, so the figures are the pulls, not venv creation. Writes
bench/results/pull.json and pull.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from tests.nginx import running_nginx  # noqa: E402

BIN = Path(sys.executable).parent
RESULTS = PROJECT / "bench/results"


def _git(repo: Path, when: int) -> None:
    env = {
        "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
        "GIT_AUTHOR_DATE": f"@{when} +0000", "GIT_COMMITTER_DATE": f"@{when} +0000",
        "PATH": "/usr/bin:/bin", "HOME": str(repo),
    }  # fmt: skip
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", f"bench {when}"], check=True, env=env)


def _environment(hosts: list[str], colour: dict[str, str]) -> str:
    lines = [
        "[environment]", "host_domain = example.com", "platform = ubuntu",
        "target_directory = /srv/x", "require_v6 = optional", "",
    ]  # fmt: skip
    for host in hosts:
        lines += [f"[host:{host}]", "components = app, test, database, frontend"]
        lines += [f"data-colour = {colour.get(host, 'blue')}", ""]
    lines += ["[component:app]", "listen = app.example.local:8080", "", "[resolver]"]
    lines += ["app.example.local = 127.0.0.1", "", "[vfs]", "sandbox = Developer", ""]
    return "\n".join(lines)


def _run(args: list[str | Path], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    completed = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, completed


def _ok(completed: subprocess.CompletedProcess[str]) -> None:
    if completed.returncode != 0:
        raise SystemExit(f"{shlex.join(completed.args)} failed:\n{completed.stdout}\n{completed.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    hosts = [f"h{n:03d}" for n in range(1, args.hosts + 1)]
    with tempfile.TemporaryDirectory(prefix="consign-pull-bench-") as scratch:
        work = Path(scratch)
        key, trust = work / "key", work / "trust"
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "CONSIGN_SIGN_KEY": str(key), "CONSIGN_DNS": "offline"}  # fmt: skip
        _ok(_run([BIN / "bundle", "keys", "generate", key, "--trust-file", trust], work, env)[1])
        repo = work / "repo"
        for name in ("components",):
            shutil.copytree(PROJECT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(PROJECT / "requirements.txt", repo / "requirements.txt")
        (repo / "environments/fleet").mkdir(parents=True)
        (repo / "environments/fleet/environment.cfg").write_text(_environment(hosts, {}))
        _git(repo, 1_800_000_000)
        www = work / "www"
        build_s, done = _run([BIN / "bundle", "build", "fleet"], repo, env)
        _ok(done)
        _ok(_run([BIN / "bundle", "publish", "fleet", www], repo, env)[1])
        bundle_bytes = (repo / "bundles/fleet/h001.bundle").stat().st_size

        with running_nginx(work / "nginx", www) as nginx:

            def pull(host: str, *extra: str) -> tuple[float, subprocess.CompletedProcess[str]]:
                home = work / "hosts" / host
                return _run(
                    [BIN / "executor", "pull", nginx.url, "--host", host, "--trust", trust,
                     "--state-dir", home / "state", "--target-dir", home / "target",
                     "--runtime-dir", work / "runtimes", "--json", *extra],
                    work, env,
                )  # fmt: skip

            # The shared runtime, made once (untimed).
            first_s, done = pull(hosts[0])
            _ok(done)

            def fleet_pull() -> dict[str, Any]:
                mark = nginx.mark()
                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                    outcomes = list(pool.map(pull, hosts))
                wall = time.perf_counter() - started
                failed = [h for h, (_t, c) in zip(hosts, outcomes, strict=True) if c.returncode != 0]
                requests = nginx.requests(mark, at_least=3 * len(hosts), settle=5.0)
                return {
                    "hosts": len(hosts),
                    "wall_s": round(wall, 3),
                    "per_executor_median_s": round(statistics.median(t for t, _c in outcomes), 3),
                    "failed": failed,
                    "requests": len(requests),
                    "bytes_sent": sum(r.bytes_sent for r in requests),
                }

            everyone_first = fleet_pull()

            # Nothing new: one host, several runs.
            mark = nginx.mark()
            noop = [pull(hosts[1]) for _ in range(args.runs)]
            for _t, c in noop:
                _ok(c)
            noop_requests = nginx.requests(mark, at_least=args.runs)
            noop_figures = {
                "median_s": round(statistics.median(t for t, _c in noop), 3),
                "min_s": round(min(t for t, _c in noop), 3),
                "max_s": round(max(t for t, _c in noop), 3),
                "requests_per_pull": len(noop_requests) / args.runs,
                "bytes_per_pull": max(r.bytes_sent for r in noop_requests),
                "statuses": sorted({r.status for r in noop_requests}),
                "runs": args.runs,
            }

            # A model-only change for one host (its host data).
            (repo / "environments/fleet/environment.cfg").write_text(_environment(hosts, {hosts[1]: "red"}))
            _git(repo, 1_800_000_100)
            _ok(_run([BIN / "bundle", "build", "fleet", "--host", hosts[1]], repo, env)[1])
            _ok(_run([BIN / "bundle", "publish", "fleet", www, "--host", hosts[1]], repo, env)[1])
            mark = nginx.mark()
            model_s, done = pull(hosts[1])
            _ok(done)
            model_requests = nginx.requests(mark, at_least=3)
            model_bytes = sum(r.body_bytes_sent for r in model_requests)
            model_only = {
                "seconds": round(model_s, 3),
                "files": [r.path.rsplit("/", 2)[-2] for r in model_requests],
                "body_bytes": model_bytes,
                "bundle_bytes": (repo / "bundles/fleet" / f"{hosts[1]}.bundle").stat().st_size,
            }
            model_only["share"] = round(model_bytes / model_only["bundle_bytes"], 5)

            # A new generation for everyone (a component changed), pulled at once.
            app = repo / "components/app/app.conf"
            app.write_text(app.read_text() + "# bench: a new generation\n")
            _git(repo, 1_800_000_200)
            _ok(_run([BIN / "bundle", "build", "fleet"], repo, env)[1])
            _ok(_run([BIN / "bundle", "publish", "fleet", www], repo, env)[1])
            everyone_new = fleet_pull()

    data = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command_line": shlex.join(["bench/pull_bench.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.release()}",
        "python": platform.python_version(),
        "commit": subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, check=False).stdout.strip(),
        "build_fleet_s": round(build_s, 3),
        "bundle_bytes": bundle_bytes,
        "first_pull_s": round(first_s, 3),
        "fleet_first_pull": everyone_first,
        "noop_pull": noop_figures,
        "model_only_change": model_only,
        "fleet_new_generation": everyone_new,
    }  # fmt: skip
    text = _markdown(data)
    print(text)
    if not args.no_save:
        (RESULTS / "pull.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        (RESULTS / "pull.md").write_text(text)


def _markdown(d: dict[str, Any]) -> str:
    n, m, a, b = d["noop_pull"], d["model_only_change"], d["fleet_first_pull"], d["fleet_new_generation"]
    return "\n".join(
        [
            "# Pull benchmarks: results",
            "",
            f"Written by `bench/pull_bench.py` on {d['date']}; command line `{d['command_line']}`; "
            f"{d['machine']}, Python {d['python']}, consign at {d['commit']}. nginx on 127.0.0.1 "
            f"serves `bundle publish` output; bundle {d['bundle_bytes'] / 1e6:.1f} MB per host; "
            "one shared runtime directory (made by the first pull, "
            f"{d['first_pull_s']:.1f} s, untimed below).",
            "",
            "| measured | figure | target | met |",
            "| --- | --- | --- | --- |",
            f"| pull with nothing new: requests | {n['requests_per_pull']:g} (HTTP {', '.join(map(str, n['statuses']))}) | 1 | {'yes' if n['requests_per_pull'] == 1 else 'no'} |",
            f"| pull with nothing new: bytes on the wire (headers included) | {n['bytes_per_pull']} B | < 2 KB | {'yes' if n['bytes_per_pull'] < 2000 else 'no'} |",
            f"| pull with nothing new: `executor pull` spawn to exit, median of {n['runs']} | {n['median_s']:.3f} s ({n['min_s']:.3f}–{n['max_s']:.3f}) | < 0.3 s | {'yes' if n['median_s'] < 0.3 else 'no'} |",
            f"| new generation, only the model changed: downloaded | {m['body_bytes']} B of {m['bundle_bytes']} B ({100 * m['share']:.3f} %; {', '.join(m['files'])}) | < 5 % | {'yes' if m['share'] < 0.05 else 'no'} |",
            f"| {a['hosts']} executors pull their first generation at once | {a['wall_s']:.1f} s wall, {len(a['failed'])} failed, {a['requests']} requests, {a['bytes_sent'] / 1e6:.1f} MB | all converge | {'yes' if not a['failed'] else 'no'} |",
            f"| {b['hosts']} executors pull a new generation at once | {b['wall_s']:.1f} s wall (median executor {b['per_executor_median_s']:.1f} s), {len(b['failed'])} failed, {b['requests']} requests, {b['bytes_sent'] / 1e6:.1f} MB | all converge | {'yes' if not b['failed'] else 'no'} |",
            "",
            f"Building the {a['hosts']}-host fleet: {d['build_fleet_s']:.1f} s.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
