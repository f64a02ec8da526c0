"""Load campaign (issue 11): many executors and many applies at once, and a
very large environment, with bounded time and memory and nothing lost.

    .venv/bin/python bench/load/run.py [pull|queue|build|all] [--pullers 100]
        [--queued 20] [--hosts 1000] [--no-save]

- pull: PULLERS executors (each its own state and target directory, one
  shared runtime directory made first) run `executor pull` at the same
  moment against one loopback nginx (tests/nginx.py). Every one must apply
  the bundle; nginx must have answered every request.
- queue: QUEUED `executor apply` of one bundle start at the same moment on
  one host (one state directory): they queue on its lock (--wait), every
  one must succeed, the audit log must hold QUEUED records, the host ends
  converged.
- build: `bundle build` of one environment of HOSTS hosts (two roots each)
  in one go; every host must get its bundle.

Peak memory is the largest maximum RSS of one process (from wait4), and for
concurrent processes also their sum. Writes bench/results/load.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT))

from tests.nginx import running_nginx  # noqa: E402

BIN = Path(sys.executable).parent
RESULTS = PROJECT / "bench" / "results"

APP = """
from batou.component import Component
from batou.lib.file import File

class App(Component):
    def configure(self):
        self += File("app.conf", content="host {{host.name}}\\n")

class Worker(Component):
    def configure(self):
        for i in range(5):
            self += File(f"worker-{i}.conf", content=f"worker {i} on {{{{host.name}}}}\\n")
"""


class Measured:
    """A process run to its end, with its maximum RSS from wait4."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.errors = log.with_suffix(".err")
        with open(log, "wb") as out, open(self.errors, "wb") as err:
            self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err)
        self.started = time.perf_counter()
        self.returncode: int | None = None
        self.rss_mb = 0.0
        self.seconds = 0.0

    def wait(self) -> Measured:
        _pid, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self.returncode = self.process.returncode
        self.seconds = time.perf_counter() - self.started
        self.rss_mb = usage.ru_maxrss / 1024
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") + self.errors.read_text(errors="replace")

    def result(self) -> dict[str, Any]:
        """The --json result on standard output ({} when there is none)."""
        try:
            data: dict[str, Any] = json.loads(self.log.read_text(errors="replace"))
        except json.JSONDecodeError:
            return {}
        return data


def together(commands: list[list[str]], cwd: Path, env: dict[str, str], logs: Path) -> tuple[float, list[Measured]]:
    """Start every command at the same moment; wait for all."""
    logs.mkdir(parents=True, exist_ok=True)
    gate = threading.Barrier(len(commands))
    runs: list[Measured | None] = [None] * len(commands)
    problems: list[str] = []

    def start(index: int) -> None:
        gate.wait()
        try:
            runs[index] = Measured(commands[index], cwd, env, logs / f"{index:03d}.log").wait()
        except OSError as error:  # could not even start (EMFILE, EAGAIN): a lost run
            problems.append(f"run {index}: {error}")

    started = time.perf_counter()
    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(commands))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if problems:
        raise SystemExit("runs could not start: " + "; ".join(problems))
    return time.perf_counter() - started, [r for r in runs if r is not None]


def repository(work: Path, hosts: list[str], env: dict[str, str]) -> Path:
    repo = work / "repo"
    (repo / "components" / "app").mkdir(parents=True)
    (repo / "components" / "app" / "component.py").write_text(APP)
    (repo / ".gitignore").write_text("bundles/\n")
    lines = ["[environment]", "require_v6 = optional", ""]
    for host in hosts:
        lines += [f"[host:{host}]", "components = app, worker", ""]
    (repo / "environments" / "load").mkdir(parents=True)
    (repo / "environments" / "load" / "environment.cfg").write_text("\n".join(lines))
    git = {**env, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x", "GIT_AUTHOR_DATE": "@1800000000 +0000",
           "GIT_COMMITTER_DATE": "@1800000000 +0000"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "load"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=git)
    return repo


def setup(work: Path, hosts: list[str]) -> tuple[Path, dict[str, str], Path]:
    key, trust = work / "key", work / "trust"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "CONSIGN_SIGN_KEY": str(key), "CONSIGN_DNS": "offline"}
    subprocess.run([str(BIN / "bundle"), "keys", "generate", str(key), "--trust-file", str(trust)],
                   check=True, env=env, capture_output=True)
    return repository(work, hosts, env), env, trust


def summary(wall: float, runs: list[Measured]) -> dict[str, Any]:
    return {
        "wall_s": round(wall, 2),
        "slowest_s": round(max(r.seconds for r in runs), 2),
        "peak_rss_mb_one": round(max(r.rss_mb for r in runs), 1),
        "peak_rss_mb_sum": round(sum(r.rss_mb for r in runs), 1),
        "failed": sum(1 for r in runs if r.returncode != 0),
    }


def pull(work: Path, count: int) -> dict[str, Any]:
    hosts = [f"h{n:03d}" for n in range(count)]
    repo, env, trust = setup(work, hosts)
    built = Measured([str(BIN / "bundle"), "build", "load"], repo, env, work / "build.log").wait()
    assert built.returncode == 0, built.output()
    www = work / "www"
    subprocess.run([str(BIN / "bundle"), "publish", "load", str(www)], cwd=repo, env=env, check=True,
                   capture_output=True)
    with running_nginx(work / "nginx", www) as nginx:
        def command(host: str) -> list[str]:
            home = work / "hosts" / host
            return [str(BIN / "executor"), "pull", nginx.url, "--host", host, "--trust", str(trust),
                    "--state-dir", str(home / "state"), "--target-dir", str(home / "target"),
                    "--runtime-dir", str(work / "runtimes"), "--json"]

        first = Measured(command(hosts[0]), work, env, work / "first.log").wait()
        assert first.returncode == 0, first.output()
        mark = nginx.mark()
        wall, runs = together([command(h) for h in hosts[1:]], work, env, work / "pull-logs")
        requests = nginx.requests(mark, at_least=3 * (count - 1), settle=5.0)
    applied = sum(
        1 for h in hosts[1:] if (work / "hosts" / h / "target" / "work" / "worker" / "worker-4.conf").is_file()
    )
    result = summary(wall, runs)
    errors = sum(1 for r in requests if r.status >= 400)
    result.update(executors=count - 1, applied=applied, requests=len(requests), http_errors=errors)
    # Lost is failed: a host that did not apply, a request nginx refused.
    result["failed"] += (count - 1 - applied) + errors
    return result


def queue(work: Path, count: int) -> dict[str, Any]:
    repo, env, trust = setup(work, ["web1"])
    built = Measured([str(BIN / "bundle"), "build", "load"], repo, env, work / "build.log").wait()
    assert built.returncode == 0, built.output()
    bundle = repo / "bundles" / "load" / "web1.bundle"
    state, target = work / "state", work / "target"
    command = [str(BIN / "executor"), "apply", str(bundle), "--host", "web1", "--trust", str(trust),
               "--state-dir", str(state), "--target-dir", str(target), "--runtime-dir", str(work / "runtimes"),
               "--wait", "600", "--json"]
    first = Measured(command, work, env, work / "first.log").wait()  # makes the runtime
    assert first.returncode == 0, first.output()
    wall, runs = together([command] * count, work, env, work / "queue-logs")
    records = [json.loads(line) for line in (state / "audit.log").read_text().splitlines()]
    recorded = sum(1 for r in records if r.get("kind") == "apply" and r.get("result") == "ok") - 1
    changed = [r.result().get("changed") for r in runs if r.returncode == 0]
    result = summary(wall, runs)
    result.update(applies=count, audit_records=recorded, runs_that_changed=sum(1 for c in changed if c))
    # Every queued apply must be recorded, and the host must end converged.
    converged = (target / "work" / "worker" / "worker-4.conf").is_file()
    result["failed"] += abs(count - recorded) + (not converged)
    return result


def build(work: Path, count: int) -> dict[str, Any]:
    hosts = [f"h{n:04d}" for n in range(count)]
    repo, env, _trust = setup(work, hosts)
    warm = Measured([str(BIN / "bundle"), "build", "load", "--host", hosts[0]], repo, env, work / "warm.log").wait()
    assert warm.returncode == 0, warm.output()  # the runtime, built once (not measured)
    shutil.rmtree(repo / "bundles")
    run = Measured([str(BIN / "bundle"), "build", "load"], repo, env, work / "build.log").wait()
    bundles = list((repo / "bundles" / "load").glob("*.bundle"))
    return {
        "hosts": count,
        "roots": 2 * count,
        "wall_s": round(run.seconds, 2),
        "peak_rss_mb": round(run.rss_mb, 1),
        "bundles": len(bundles),
        "failed": int(run.returncode != 0) + abs(count - len(bundles)),
        "per_host_ms": round(run.seconds / count * 1000, 2),
    }


def render(data: dict[str, Any]) -> str:
    lines = ["# Load campaign (issue 11)", "", f"`{data['command']}`, commit {data['commit']}, {data['date']}, "
             f"{os.cpu_count()} cores.", ""]
    if "pull" in data:
        p = data["pull"]
        lines += [f"- **{p['executors']} executors pulling at once** from one nginx: all done in {p['wall_s']} s "
                  f"(slowest {p['slowest_s']} s); applied {p['applied']} of {p['executors']}, failed {p['failed']}; "
                  f"{p['requests']} HTTP requests, {p['http_errors']} errors; peak RSS {p['peak_rss_mb_one']} MB "
                  f"per executor ({p['peak_rss_mb_sum']} MB summed over all: an upper bound, the peaks need not coincide)."]
    if "queue" in data:
        q = data["queue"]
        lines += [f"- **{q['applies']} applies queued on one host's lock**: all done in {q['wall_s']} s "
                  f"(slowest {q['slowest_s']} s), failed {q['failed']}; {q['audit_records']} audit records; "
                  f"{q['runs_that_changed']} runs changed something; peak RSS {q['peak_rss_mb_one']} MB per executor."]
    if "build" in data:
        b = data["build"]
        lines += [f"- **{b['hosts']}-host environment** ({b['roots']} roots) built in one go: {b['wall_s']} s "
                  f"({b['per_host_ms']} ms per host), {b['bundles']} bundles, peak RSS {b['peak_rss_mb']} MB, "
                  f"failed {b['failed']}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=("pull", "queue", "build", "all"), default="all", nargs="?")
    parser.add_argument("--pullers", type=int, default=100)
    parser.add_argument("--queued", type=int, default=20)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    path = RESULTS / "load.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() and not args.no_save else {}
    scenarios = ("pull", "queue", "build") if args.scenario == "all" else (args.scenario,)
    for scenario in scenarios:
        work = Path(tempfile.mkdtemp(prefix=f"consign-load-{scenario}-"))
        try:
            if scenario == "pull":
                data["pull"] = pull(work, args.pullers + 1)
            elif scenario == "queue":
                data["queue"] = queue(work, args.queued)
            else:
                data["build"] = build(work, args.hosts)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(scenario, json.dumps(data[scenario]), flush=True)
    commit = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    data.update(command="python bench/load/run.py " + " ".join(sys.argv[1:]), commit=commit,
                date=time.strftime("%Y-%m-%d"))
    for scenario in scenarios:  # each scenario keeps the commit it ran at
        data[scenario].update(commit=commit, date=data["date"])
    print(render(data))
    if not args.no_save:
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        (RESULTS / "load.md").write_text(render(data))
    failed = sum(data[s].get("failed", 0) for s in ("pull", "queue", "build") if s in data)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
