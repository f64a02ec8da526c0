"""What secrets cost (issue 10): the build with and without them, the secrets
blob, and the host's decryption.

    .venv/bin/python bench/secrets_bench.py [--hosts 1,10,100] [--runs 3] [--no-save]

For each host count, two environments of the same deployment: "secrets"
keeps three overrides, one data-* key and one 4 KB secret file per host in
secrets.cfg.age / secret-*.age (each host with its own recipient); "clear"
writes the same values into environment.cfg. Both are built with
`bundle build` (the console script, warm runtime cache; median of --runs).
In-process: sealing and opening one host's selection (executor.age), and
opening a real bundle's secrets as `executor apply` does (decrypt with the
host's SSH key, decode, collect the values to hide).

Writes bench/results/secrets.json and secrets.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyrage  # noqa: E402

from builder.secrets import encrypt_for, write_private  # noqa: E402
from executor import age  # noqa: E402
from executor.bundle import read_envelope, verify_envelope  # noqa: E402
from executor.sealed import open_secrets, secret_values  # noqa: E402
from executor.verify import load_trust  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent

COMPONENT = '''
from batou.component import Attribute, Component
from batou.lib.file import File

class App(Component):
    password = Attribute(str, None)
    api_key = Attribute(str, None)
    db_url = Attribute(str, None)

    def configure(self):
        self += File("app.conf", content="{{component.password}} {{component.api_key}} {{component.db_url}}\\n")
        self += File("token", content=self.host.data["token"])
        if "tls" in self.environment.secret_files:
            self += File("tls.key", content=self.environment.secret_files["tls"])
'''


def run(*args: str, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return elapsed


def git(repo: Path, *args: str) -> None:
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x", "GIT_AUTHOR_DATE": "@1700000000 +0000",
           "GIT_COMMITTER_DATE": "@1700000000 +0000", "PATH": os.environ["PATH"], "HOME": str(repo)}
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)


def make_repo(work: Path, hosts: int, host_key: Path, operator: str) -> Path:
    repo = work / f"repo-{hosts}"
    (repo / "components" / "app").mkdir(parents=True)
    (repo / "components" / "app" / "component.py").write_text(COMPONENT)
    (repo / ".gitignore").write_text("bundles/\n")
    recipient = host_key.with_suffix(".pub").read_text().strip()
    names = [f"host{i:03d}" for i in range(hosts)]
    tls = "".join(f"line-{i:04d}-" + "k" * 50 + "\n" for i in range(64))  # about 4 KB
    values = {"password": "pw-%s-0123456789", "api_key": "key-%s-abcdefabcdef", "db_url": "postgres://u:%s@db/x"}
    # The same values, once in secrets, once in the clear environment file.
    secret_lines = [f"[batou]\nmembers = {operator}\n"]
    clear_lines, secret_env = [], []
    for name in names:
        clear_lines.append(f"[host:{name}]\ncomponents = app\ndata-token = tok-{name}-000000\n")
        secret_env.append(f"[host:{name}]\ncomponents = app\nrecipient = {recipient}\n")
        secret_lines.append(f"[host:{name}]\ndata-token = tok-{name}-000000\n")
    clear_lines.append("[component:app]\n" + "".join(f"{k} = {v % 'x'}\n" for k, v in values.items()))
    secret_lines.append("[component:app]\n" + "".join(f"{k} = {v % 'x'}\n" for k, v in values.items()))
    for env_name, text in (("clear", "\n".join(clear_lines)), ("secrets", "\n".join(secret_env))):
        (repo / "environments" / env_name).mkdir(parents=True)
        (repo / "environments" / env_name / "environment.cfg").write_text(text)
    directory = repo / "environments" / "secrets"
    write_private(directory / "secrets.cfg.age", encrypt_for("\n".join(secret_lines).encode(), [operator]))
    write_private(directory / "secret-tls.age", encrypt_for(tls.encode(), [operator]))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench")
    return repo


def measure_builds(work: Path, hosts: int, runs: int, env: dict[str, str], keys: dict[str, Path], operator: str) -> dict[str, Any]:
    repo = make_repo(work, hosts, keys["host"], operator)
    point: dict[str, Any] = {"hosts": hosts}
    for name in ("clear", "secrets"):
        argv = [str(BIN / "bundle"), "build", name, "--sign-key", str(keys["sign"]), "--identity", str(keys["operator"])]
        run(*argv, cwd=repo, env=env)  # warm-up (runtime cache)
        times = [run(*argv, cwd=repo, env=env) for _ in range(runs)]
        bundle = repo / "bundles" / name / "host000.bundle"
        point[name] = {"median_s": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times],
                       "bundle_bytes": bundle.stat().st_size}
    point["overhead_s"] = round(point["secrets"]["median_s"] - point["clear"]["median_s"], 3)
    point["bundle"] = repo / "bundles" / "secrets" / "host000.bundle"
    return point


def in_process(bundle: Path, keys: dict[str, Path], trust: Path) -> dict[str, Any]:
    recipient = age.Recipient.parse(keys["host"].with_suffix(".pub").read_text())
    identities = age.read_identities(keys["host"].read_bytes())
    figures: dict[str, Any] = {}
    for label, size in (("1 KB", 1_000), ("1 MB", 1_000_000)):
        data = os.urandom(size)
        started = time.perf_counter()
        for _ in range(20):
            sealed = age.encrypt(data, recipient, b"s" * 32)
        seal_ms = (time.perf_counter() - started) / 20 * 1000
        started = time.perf_counter()
        for _ in range(20):
            age.decrypt(sealed, identities)
        open_ms = (time.perf_counter() - started) / 20 * 1000
        figures[label] = {"seal_ms": round(seal_ms, 2), "open_ms": round(open_ms, 2)}
    trusted, _notes = load_trust(str(trust))
    verified = verify_envelope(read_envelope(str(bundle)), trusted, int(time.time()))
    started = time.perf_counter()
    for _ in range(20):
        values = secret_values(open_secrets(verified, [str(keys["host"])]))
    figures["apply_open_ms"] = round((time.perf_counter() - started) / 20 * 1000, 2)
    figures["values_hidden"] = len(values)
    figures["secrets_blob_bytes"] = verified.manifest.blob("secrets").size  # type: ignore[union-attr]
    return figures


def render(data: dict[str, Any]) -> str:
    lines = [
        "# Secrets (issue 10)",
        "",
        f"`{data['command']}` on {data['machine']}, commit {data['commit']}, {data['date']}.",
        "",
        "Build of N hosts, one root each (3 overrides, 1 data-* key, one 4 KB secret file per host):",
        "same values in environment.cfg (clear) or in secrets.cfg.age / secret-tls.age (secrets).",
        "",
        "| hosts | clear build | secrets build | overhead | bundle (clear) | bundle (secrets) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in data["builds"]:
        lines.append(
            f"| {p['hosts']} | {p['clear']['median_s']} s | {p['secrets']['median_s']} s | "
            f"{p['overhead_s']:+} s | {p['clear']['bundle_bytes']:,} B | {p['secrets']['bundle_bytes']:,} B |"
        )
    f = data["in_process"]
    lines += [
        "",
        "In-process (executor.age, ssh-ed25519 recipient, mean of 20):",
        "",
        "| payload | seal | open |",
        "| --- | ---: | ---: |",
        *(f"| {k} | {v['seal_ms']} ms | {v['open_ms']} ms |" for k, v in f.items() if isinstance(v, dict)),
        "",
        f"Opening a real bundle's secrets as `executor apply` does (read the host key, decrypt, "
        f"decode, collect values): {f['apply_open_ms']} ms for a {f['secrets_blob_bytes']:,}-byte "
        f"secrets blob ({f['values_hidden']} values to hide).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", default="1,10,100")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="consign-secrets-bench-"))
    try:
        keys = {"host": work / "ssh_host_ed25519_key", "sign": work / "sign"}
        for path in keys.values():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        identity = pyrage.x25519.Identity.generate()
        keys["operator"] = work / "operator.txt"
        keys["operator"].write_text(f"{identity}\n")
        trust = work / "allowed_signers"
        trust.write_text("builder " + keys["sign"].with_suffix(".pub").read_text())
        env = {**os.environ, "CONSIGN_DNS": "offline"}
        builds = [
            measure_builds(work, int(n), args.runs, env, keys, str(identity.to_public()))
            for n in args.hosts.split(",")
        ]
        figures = in_process(builds[0]["bundle"], keys, trust)
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=False).stdout.strip()
        data = {
            "command": "python bench/secrets_bench.py " + " ".join(sys.argv[1:]),
            "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
            "commit": commit,
            "date": time.strftime("%Y-%m-%d"),
            "builds": [{k: v for k, v in p.items() if k != "bundle"} for p in builds],
            "in_process": figures,
        }
        text = render(data)
        print(text)
        if not args.no_save:
            (RESULTS / "secrets.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            (RESULTS / "secrets.md").write_text(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
