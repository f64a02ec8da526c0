"""``bundle build --check``: the same commit builds the same bytes elsewhere.

Clone the repository's commit into a temporary directory, build it there in
a separate process with another home directory and working directory, and
compare each host's bundle byte for byte. A difference names the first
manifest field or blob that differs, which is where to look.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from executor.bundle import decode_unverified, read_envelope
from executor.manifest import Manifest, manifest_to_data

from .build import BuildOptions, BuildResult
from .errors import BuildError, RepositoryError
from .repository import Repository
from .runtime import cache_directory


class NotReproducible(BuildError):
    code = "not-reproducible"


def _git(*args: str, cwd: Path) -> str:
    completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RepositoryError(f"git {' '.join(args)} failed: {completed.stderr.strip()}")
    return completed.stdout.strip()


def _rebuild_command(options: BuildOptions, result: BuildResult, repository: Path, out: Path) -> list[str]:
    command = [sys.executable, "-m", "builder", "build", options.environment, "-C", str(repository)]
    command += ["--out", str(out)]
    if options.serial is not None:
        command += ["--serial", str(options.serial)]
    for host in options.hosts:
        command += ["--host", host]
    for host in options.skip_hosts:
        command += ["--skip-host", host]
    for component in options.skip_components:
        command += ["--skip-component", component]
    if options.platform:
        command += ["--platform", options.platform]
    for key in result.key_paths:
        command += ["--sign-key", str(key.resolve())]
    # The rebuild runs with another home: name the identities that decrypted.
    for identity in result.identity_paths:
        command += ["--identity", str(identity.resolve())]
    return command


def first_difference(ours: Manifest, theirs: Manifest) -> str:
    """The first manifest field (or blob) that differs, for the report."""
    mine, other = manifest_to_data(ours), manifest_to_data(theirs)
    for key in sorted(set(mine) | set(other)):
        if key == "blobs":
            continue
        if mine.get(key) != other.get(key):
            return f"manifest field {key!r}: {mine.get(key)!r} here, {other.get(key)!r} in the rebuild"
    for a, b in zip(ours.blobs, theirs.blobs, strict=False):
        if a != b:
            return f"blob {a.name!r} (sha256 {a.sha256[:12]} here, {b.sha256[:12]} in the rebuild)"
    if len(ours.blobs) != len(theirs.blobs):
        names = [b.name for b in ours.blobs], [b.name for b in theirs.blobs]
        return f"the list of blobs ({names[0]} here, {names[1]} in the rebuild)"
    return "the signatures"


def check_possible(options: BuildOptions) -> None:
    """Refuse --check before building when it cannot succeed."""
    if options.dirty:
        raise BuildError(
            "--check compares a rebuild of the commit; --dirty builds a changed working tree",
            hint="commit the changes and build without --dirty",
        )


def check_reproducible(options: BuildOptions, result: BuildResult) -> str:
    """Rebuild `result` in a fresh clone; raise NotReproducible on any difference."""
    if result.source.dirty or result.source.commit is None:
        raise BuildError(
            "--check compares a rebuild of the commit; this build was of a changed working tree",
            hint="commit the changes first",
        )
    repository = Repository.open(options.repository)
    top = Path(_git("rev-parse", "--show-toplevel", cwd=repository.root))
    relative = repository.root.relative_to(top)
    with tempfile.TemporaryDirectory(prefix="consign-check-") as scratch:
        clone = Path(scratch, "elsewhere", "clone")
        _git("clone", "-q", "--no-checkout", str(top), str(clone), cwd=Path(scratch))
        _git("checkout", "-q", "--detach", result.source.commit, cwd=clone)
        out = Path(scratch, "out")
        home = Path(scratch, "home")
        home.mkdir()
        # Another home, time zone and umask: none of them may reach the bytes.
        # An empty runtime cache, so the runtime is really built again (pex's
        # download cache is shared: the same wheels, no second download).
        cache = cache_directory(options.cache)
        environment = {
            **os.environ,
            "HOME": str(home),
            "TZ": "Pacific/Chatham",
            "CONSIGN_CACHE_DIR": str(Path(scratch, "cache")),
            "CONSIGN_PEX_ROOT": os.environ.get("CONSIGN_PEX_ROOT") or str(cache / "pex-root"),
        }
        completed = subprocess.run(
            _rebuild_command(options, result, clone / relative, out),
            cwd=scratch,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
            umask=0o077,
        )
        if completed.returncode != 0:
            raise NotReproducible(
                f"the rebuild in a fresh clone failed: {completed.stderr.strip()}",
                hint="the build depends on something outside the commit",
            )
        for host in result.hosts:
            theirs = out / options.environment / host.path.name
            if host.path.read_bytes() == theirs.read_bytes():
                continue
            ours_manifest = decode_unverified(read_envelope(str(host.path)))
            theirs_manifest = decode_unverified(read_envelope(str(theirs)))
            raise NotReproducible(
                f"{host.name}: the rebuild differs in "
                f"{first_difference(ours_manifest, theirs_manifest)}",
                hint="something outside the commit (a path, the clock, the environment) "
                "reached the bundle",
            )
    count = len(result.hosts)
    verb = "equals" if count == 1 else "equal"
    return (
        f"{count} bundle{'s' if count != 1 else ''} {verb} a rebuild of "
        f"{result.source.commit[:12]} in a fresh clone"
    )
