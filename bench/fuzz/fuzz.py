"""Coverage-guided fuzzing (atheris, libFuzzer) of what reads untrusted bytes
(issue 11). The property tests in tests/fuzz/ run a bounded set in the
suite; this is the longer campaign.

    .venv/bin/pip install atheris          # or: pip install -e '.[fuzz]'
    .venv/bin/python bench/fuzz/fuzz.py TARGET [libFuzzer options]
    .venv/bin/python bench/fuzz/fuzz.py seed              # (re)write the seed corpora
    .venv/bin/python bench/fuzz/fuzz.py campaign --seconds 180   # every target, results saved

TARGET is one of: environment (the environment file parser), bundle (the
bundle framing, manifest and blobs read without trust, as `bundle inspect`
does, and the signature parsing a host does before it checks a signature:
with an empty trust, nothing verifies), pointer (a pull pointer), model (the
host model decoder), secrets (the decrypted secrets selection), canonical
(the bounded msgpack unpacker). Each target accepts the documented errors
(ConsignError and its families, DecodeError, CanonicalError); any other
exception is a crash libFuzzer reports, with the input written to
bench/fuzz/crashes/. The corpus of each target is bench/fuzz/corpus/TARGET/.

`campaign` runs every target for --seconds, merges each corpus to a minimal
set, and writes bench/results/fuzz.json and fuzz.md (executions, time,
coverage, crashes).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"
RESULTS = ROOT / "bench" / "results"
# The program libFuzzer runs again for a merge (see campaign()).
ARGV0 = "CONSIGN_FUZZ_ARGV0"
TARGET = "CONSIGN_FUZZ_TARGET"
TARGETS = ("environment", "bundle", "pointer", "model", "secrets", "canonical")
sys.path.insert(0, str(ROOT))


def _load(target: str) -> Any:
    """The harness of `target`, its modules imported with coverage instrumentation."""
    import atheris

    with atheris.instrument_imports(include=["executor", "builder"]):
        from builder.environment import _Loader
        from executor import canonical
        from executor.bundle import open_unverified, read_envelope, verify_envelope
        from executor.canonical import CanonicalError
        from executor.decode import DecodeError
        from executor.errors import ConsignError
        from executor.model import decode_model
        from executor.pointer import read_pointer
        from executor.secrets import decode_secrets
        from executor.sshsig import Trust

    documented = (ConsignError, DecodeError, CanonicalError)
    directory = tempfile.mkdtemp(prefix="consign-fuzz-")
    atexit.register(shutil.rmtree, directory, True)
    scratch = Path(directory) / "bundle"
    trust = Trust([], set())

    def environment(data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        _Loader("prod", Path("/x/environment.cfg"), "environment.cfg", None).load(text)

    def bundle(data: bytes) -> None:
        scratch.write_bytes(data)
        try:
            reader = open_unverified(str(scratch))
            for entry in reader.manifest.blobs:
                for _chunk in reader.raw_chunks(entry.name):
                    pass
        except documented:
            pass
        try:
            verify_envelope(read_envelope(str(scratch)), trust, 1_700_000_000)
        except documented:
            pass

    harnesses = {
        "environment": environment,
        "bundle": bundle,
        "pointer": lambda data: read_pointer(data, "fuzz.pointer"),
        "model": decode_model,
        "secrets": decode_secrets,
        "canonical": lambda data: canonical.unpack(data, max_bytes=1 << 20),
    }
    harness = harnesses[target]

    def one(data: bytes) -> None:
        try:
            harness(data)
        except documented:
            pass

    return one


def seed() -> None:
    """Valid inputs of every target, made by consign itself."""
    from builder.signing import generate_key, load_signer
    from executor import canonical
    from executor.bundle import BlobData, bundle_chunks
    from executor.manifest import BlobEntry, Compression, Manifest, Source, Target, encode_manifest
    from executor.model import EnvironmentRecord, HostModel, HostRecord, RequirementRecord, RootRecord, encode_model
    from executor.pointer import Pointer, encode_pointer
    from executor.secrets import HostSecrets, encode_secrets
    import hashlib
    import zstandard

    for target in TARGETS:
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
    model = HostModel(
        EnvironmentRecord("prod", "/srv/app", host_domain="example.com"),
        HostRecord("web1", "web1.example.com", data=(("alias", "shop"),)),
        roots=(RootRecord("app", overrides=(("port", "8080"),), tree=("App",),
                          requires=(RequirementRecord("db", "db1", ({"$": "netloc", "host": "db1", "port": 5432},)),)),),
    )
    model_bytes = encode_model(model)
    (CORPUS / "model" / "seed-model").write_bytes(model_bytes)
    (CORPUS / "canonical" / "seed-model").write_bytes(model_bytes)
    (CORPUS / "secrets" / "seed").write_bytes(
        encode_secrets(HostSecrets(overrides=(("app", (("password", "pw-1234"),)),), data=(("t", "v"),),
                                   files=(("tls", b"key"),), names=("tls",)))
    )
    (CORPUS / "environment" / "seed").write_bytes(
        b"[environment]\nhost_domain = example.com\ntimeout = 30\n\n[hosts]\nweb1 = app, !db\n\n"
        b"[host:db1]\ncomponents = db:replica\ndata-alias = db.example.com\n\n[component:app]\nport = 8080\n\n"
        b"[resolver]\ndb1.example.com = 192.0.2.1\n\n[vfs]\nmode = map\n/srv = /tmp/srv\n"
    )
    with tempfile.TemporaryDirectory() as keys:
        generate_key(Path(keys) / "k", comment="fuzz")
        signer = load_signer(Path(keys) / "k")
        pointer = Pointer("web1", "prod", 7, "a" * 64, 900, 1_700_000_000, 1_800_000_000)
        (CORPUS / "pointer" / "seed").write_bytes(encode_pointer(pointer, [signer.sign(pointer.payload())]))
        raw = b"tiny repository tar stand-in"
        stored = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)

        def entry(name: str, stored_bytes: bytes, raw_bytes: bytes, compression: Compression) -> BlobEntry:
            return BlobEntry(name, compression, len(stored_bytes), hashlib.sha256(stored_bytes).hexdigest(),
                             len(raw_bytes), hashlib.sha256(raw_bytes).hexdigest())

        manifest = Manifest(
            "prod", "web1", "web1.example.com", 7, 1_700_000_000, "0.1.0", Source("a" * 40, False),
            Target(None, "3.11", None),
            (entry("repo", stored, raw, Compression.ZSTD), entry("runtime", stored, raw, Compression.ZSTD),
             entry("model", model_bytes, model_bytes, Compression.NONE)),
        )
        manifest_bytes = encode_manifest(manifest)
        data = b"".join(bundle_chunks(manifest_bytes, [signer.sign(manifest_bytes)],
                                      [BlobData(stored), BlobData(stored), BlobData(model_bytes)]))
        (CORPUS / "bundle" / "seed").write_bytes(data)
    _ = canonical


_STAT = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)")


def campaign(seconds: int) -> dict[str, Any]:
    CRASHES.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    for target in TARGETS:
        corpus = CORPUS / target
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, str(Path(__file__)), target, str(corpus), f"-max_total_time={seconds}",
             "-max_len=65536", "-rss_limit_mb=2048", f"-artifact_prefix={CRASHES}/{target}-",
             "-print_final_stats=1"],
            capture_output=True, text=True, check=False,
        )
        elapsed = time.perf_counter() - started
        output = completed.stdout + completed.stderr
        executions = re.findall(r"stat::number_of_executed_units:\s*(\d+)", output)
        done = _STAT.findall(output)
        # A crash leaves its input as an artifact; other exits are not crashes.
        artifacts = sorted(p.name for p in CRASHES.glob(f"{target}-*"))
        crashed = any(name.startswith(f"{target}-crash-") for name in artifacts)
        # Keep a minimal corpus in the repository. libFuzzer's merge starts
        # itself again by argv[0], which must be executable: a wrapper.
        with tempfile.TemporaryDirectory() as scratch:
            merged = Path(scratch, "merged")
            merged.mkdir()
            wrapper = Path(scratch, "fuzz")
            wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__)} \"$@\"\n")
            wrapper.chmod(0o755)
            subprocess.run([str(wrapper), target, "-merge=1", str(merged), str(corpus)],
                           capture_output=True, check=False, env={**os.environ, ARGV0: str(wrapper)})
            kept = list(merged.iterdir())
            if kept:  # never lose the corpus to a failed merge
                for path in corpus.iterdir():
                    path.unlink()
                for path in kept:
                    (corpus / path.name).write_bytes(path.read_bytes())
        results[target] = {
            "seconds": round(elapsed, 1),
            "executions": int(executions[-1]) if executions else None,
            "coverage": int(done[-1][1]) if done else None,
            "features": int(done[-1][2]) if done else None,
            "corpus_files": len(list(corpus.iterdir())),
            "crashed": crashed,
            "exit": completed.returncode,
            "artifacts": artifacts,
            "tail": output.strip().splitlines()[-12:] if crashed else [],
        }
        print(target, json.dumps(results[target]), flush=True)
    return results


def render(data: dict[str, Any]) -> str:
    lines = [
        "# Fuzzing campaign (atheris, issue 11)",
        "",
        f"`{data['command']}`, commit {data['commit']}, {data['date']}, atheris {data['atheris']}.",
        "",
        "| target | time | executions | coverage (edges) | corpus files | crash |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for target, r in data["targets"].items():
        lines.append(f"| {target} | {r['seconds']} s | {r['executions']:,} | {r['coverage']} | "
                     f"{r['corpus_files']} | {'YES' if r['crashed'] else 'none'} |")
    lines += ["", data.get("found", ""), ""]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "seed":
        seed()
        return
    if len(sys.argv) >= 2 and sys.argv[1] == "campaign":
        seconds = int(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 180
        import atheris  # noqa: F401 - fail early when it is missing
        from importlib.metadata import version

        seed()
        targets = campaign(seconds)
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=False).stdout.strip()
        data = {"command": "python bench/fuzz/fuzz.py " + " ".join(sys.argv[1:]), "commit": commit,
                "date": time.strftime("%Y-%m-%d"), "atheris": version("atheris"), "targets": targets}
        (RESULTS / "fuzz.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        (RESULTS / "fuzz.md").write_text(render(data))
        print(render(data))
        return
    if len(sys.argv) >= 2 and sys.argv[1] in TARGETS:
        # Kept for the runs libFuzzer starts itself (merge), which get only its options.
        os.environ[TARGET] = target = sys.argv[1]
        options = sys.argv[2:]
    elif os.environ.get(TARGET) in TARGETS:
        target, options = os.environ[TARGET], sys.argv[1:]
    else:
        sys.exit(f"usage: fuzz.py {{{'|'.join(TARGETS)}|seed|campaign}} [libFuzzer options]")
    import atheris

    one = _load(target)
    atheris.Setup([os.environ.get(ARGV0, sys.argv[0]), *options], one)
    atheris.Fuzz()


if __name__ == "__main__":
    os.environ.setdefault("CONSIGN_DNS", "offline")
    main()
