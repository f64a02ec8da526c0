"""Host-side benchmarks (issue 6): what generations, the lock and the run
records cost an apply, and what `bundle push` costs per host.

    .venv/bin/python bench/host_bench.py [--runs N] [--hosts N] [--no-save]

Uses the example deployment of this repository (environment `local`, one
host; `prod`-like copies for push), a throwaway signing key, and for push a
real sshd on 127.0.0.1 (tests/sshd.py; needs root and openssh-server).
Writes bench/results/host.json and host.md. Times are wall-clock medians of
whole commands, spawn to exit.
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
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from tests.sshd import running_sshd, sshd_unavailable  # noqa: E402

BIN = Path(sys.executable).parent
RESULTS = PROJECT / "bench/results"


def _run(*args: str | Path, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{shlex.join(map(str, args))} failed:\n{completed.stdout}\n{completed.stderr}")
    return elapsed


def _figures(samples: list[float]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(samples), 4),
        "min_s": round(min(samples), 4),
        "max_s": round(max(samples), 4),
        "runs": len(samples),
        "samples_s": [round(s, 4) for s in samples],
    }


def _git(repo: Path) -> None:
    env = {
        "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
        "GIT_AUTHOR_DATE": "@1700000000 +0000", "GIT_COMMITTER_DATE": "@1700000000 +0000",
        "PATH": "/usr/bin:/bin", "HOME": str(repo),
    }  # fmt: skip
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "bench"], check=True, env=env)


def _example(work: Path, env_text: str | None = None) -> Path:
    repo = work / "repo"
    for name in ("components", "environments"):
        shutil.copytree(PROJECT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "requirements.txt", repo / "requirements.txt")
    if env_text is not None:
        (repo / "environments/fleet").mkdir(parents=True, exist_ok=True)
        (repo / "environments/fleet/environment.cfg").write_text(env_text)
    _git(repo)
    return repo


def apply_benchmark(work: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    repo = _example(work)
    _run(BIN / "bundle", "build", "local", cwd=repo, env=env)
    bundle = repo / "bundles/local/localhost.bundle"
    runtimes = work / "runtimes"
    trust = work.parent / "trust"

    def apply(state: Path) -> float:
        return _run(
            BIN / "executor", "apply", bundle, "--host", "localhost", "--trust", trust,
            "--state-dir", state, "--target-dir", work / "target", "--runtime-dir", runtimes,
            cwd=repo, env=env,
        )  # fmt: skip

    apply(work / "warmup-state")  # makes the runtime: later runs measure the rest
    first = [apply(work / f"state-{n}") for n in range(runs)]
    state = work / "state-0"
    again = [apply(state) for _ in range(runs)]
    status = json.loads((state / "status.json").read_text())
    status_runs = [
        _run(BIN / "executor", "status", "--state-dir", state, cwd=repo, env=env) for _ in range(runs)
    ]
    generation = next((state / "generations").iterdir())
    return {
        "bundle_bytes": bundle.stat().st_size,
        "first_apply_new_state": _figures(first),
        "noop_reapply": _figures(again),
        "status": _figures(status_runs),
        "last_run_phases_s": status["last_run"]["phases"],
        "generation_bytes": sum(p.stat().st_size for p in generation.rglob("*") if p.is_file()),
    }


def push_benchmark(work: Path, env: dict[str, str], runs: int, hosts: int) -> dict[str, Any]:
    reason = sshd_unavailable()
    if reason:
        return {"skipped": reason}
    with running_sshd(work / "sshd") as sshd:
        names = [f"h{n:02d}" for n in range(1, hosts + 1)]
        sections = []
        for name in names:
            home = work / "hosts" / name
            home.mkdir(parents=True)
            config = home / "executor.toml"
            config.write_text(
                f'host = "{name}"\nstate_dir = "{home / "state"}"\ntarget_dir = "{home / "target"}"\n'
                f'trust = "{work.parent / "trust"}"\nruntime_dir = "{work / "runtimes"}"\n'
            )
            sections.append(
                f"[host:{name}]\ncomponents = app, test, database, frontend\n"
                f"executor = env CONSIGN_CONFIG={config} {BIN / 'executor'}\n"
            )
        env_text = (
            "[environment]\nhost_domain = example.com\nplatform = ubuntu\ntarget_directory = /srv/x\n"
            "require_v6 = optional\n\n"
            + "\n".join(sections)
            + "\n[component:app]\nlisten = app.example.local:8080\n\n[resolver]\napp.example.local = 127.0.0.1\n"
            + "\n[vfs]\nsandbox = Developer\n"
        )
        repo = _example(work / "push", env_text)
        (repo / "ssh_config").write_text(sshd.config_for(*(f"{n}.example.com" for n in names)))
        _git(repo)
        _run(BIN / "bundle", "build", "fleet", cwd=repo, env=env)
        first = _run(BIN / "bundle", "push", "fleet", "--jobs", str(hosts), cwd=repo, env=env)
        parallel = [
            _run(BIN / "bundle", "push", "fleet", "--jobs", str(hosts), cwd=repo, env=env)
            for _ in range(runs)
        ]
        serial = [
            _run(BIN / "bundle", "push", "fleet", "--jobs", "1", cwd=repo, env=env) for _ in range(runs)
        ]
        return {
            "hosts": hosts,
            "first_push_s": round(first, 4),
            "noop_push_parallel": _figures(parallel),
            "noop_push_one_at_a_time": _figures(serial),
        }


def _markdown(data: dict[str, Any]) -> str:
    a, p = data["apply"], data["push"]
    lines = [
        "# Host-side benchmarks: results",
        "",
        f"Written by `bench/host_bench.py` on {data['date']}; command line `{data['command_line']}`; "
        f"{data['machine']}, Python {data['python']}, consign at {data['commit']}.",
        "",
        "## apply with generations, lock and records (the example, `local`)",
        "",
        f"Bundle {a['bundle_bytes'] / 1e6:.1f} MB; runtime already made (shared `--runtime-dir`), "
        "so the figures are the executor's own work plus the run.",
        "",
        "| measured | median s | spread s | runs |",
        "| --- | ---: | --- | ---: |",
    ]
    for label, key in (
        ("`executor apply` into a new state directory (lock, verify, unpack, keep the generation, configure and verify 10 components that are already current)", "first_apply_new_state"),
        ("`executor apply` of the same bundle again (no-op)", "noop_reapply"),
        ("`executor status`", "status"),
    ):
        f = a[key]
        lines.append(f"| {label} | {f['median_s']:.3f} | {f['min_s']:.3f}–{f['max_s']:.3f} | {f['runs']} |")
    order = ["lock", "verify", "unpack", "runtime", "run"]
    measured = a["last_run_phases_s"]
    phases = ", ".join(f"{k} {measured[k]:.3f} s" for k in order if k in measured)
    lines += ["", f"Phases of the last no-op apply (status.json): {phases}.",
              f"A generation on disk: {a['generation_bytes'] / 1e6:.1f} MB (the bundle as accepted).", ""]
    lines += ["## bundle push over SSH (loopback sshd)", ""]
    if "skipped" in p:
        lines.append(f"Skipped: {p['skipped']}.")
    else:
        lines += [
            f"{p['hosts']} hosts behind one sshd on 127.0.0.1, each its own state and target; shared runtimes.",
            "",
            "| measured | median s | spread s | runs |",
            "| --- | ---: | --- | ---: |",
            f"| first push (every host: new state, runtime made once per host at the same time, 10 components applied) | {p['first_push_s']:.3f} | – | 1 |",
        ]
        for label, key in (
            (f"no-op push, `--jobs {p['hosts']}`", "noop_push_parallel"),
            ("no-op push, `--jobs 1`", "noop_push_one_at_a_time"),
        ):
            f = p[key]
            lines.append(f"| {label} | {f['median_s']:.3f} | {f['min_s']:.3f}–{f['max_s']:.3f} | {f['runs']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="consign-host-bench-") as scratch:
        work = Path(scratch)
        key = work / "key"
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "CONSIGN_SIGN_KEY": str(key), "CONSIGN_DNS": "offline"}  # fmt: skip
        _run(BIN / "bundle", "keys", "generate", key, "--trust-file", work / "trust", cwd=work, env=env)
        data = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command_line": shlex.join(["bench/host_bench.py", *sys.argv[1:]]),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.release()}",
            "python": platform.python_version(),
            "commit": subprocess.run(
                ["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True, check=False,
            ).stdout.strip(),  # fmt: skip
            "apply": apply_benchmark(work / "apply", env, args.runs),
            "push": push_benchmark(work / "pushing", env, args.runs, args.hosts),
        }
    text = _markdown(data)
    print(text)
    if not args.no_save:
        (RESULTS / "host.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        (RESULTS / "host.md").write_text(text)


if __name__ == "__main__":
    main()
