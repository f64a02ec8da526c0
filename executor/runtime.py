"""The bundle's runtime on the host: a venv made once per runtime digest.

The runtime blob is a pex built with its tools; ``PEX_TOOLS=1 python
runtime.pex venv`` turns it into a virtual environment whose ``python`` has
the deployment's requirements and the consign runtime that built the
bundle. It is made in a work directory and renamed into place, so a
runtime directory either holds a complete environment or nothing; later
applies of bundles with the same runtime reuse it. Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .bundle import VerifiedBundle
from .errors import RuntimeFailure
from .fs import die_with_parent
from .generations import GENERATIONS_DIR, remove_tree
from .manifest import Manifest
from .protocol import RUNTIME_READY
from .state import check_private

# The marker of a finished runtime entry.
READY = RUNTIME_READY

_WHY_PRIVATE = "whoever writes it decides the code that applies bundles"


def _version_of(python: str) -> str | None:
    try:
        completed = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def _trusted(path: str, real: str) -> bool:
    """Only an interpreter nobody but root (or we) could have put there runs
    deployments: the file `real` (what `path` resolves to), every directory
    above it, and the directory of the link `path` are not writable by
    others."""
    ancestors = []
    directory = os.path.dirname(real)
    while True:
        ancestors.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    strict = {os.path.dirname(path), real, os.path.dirname(real)}
    for candidate in (*strict, *ancestors):
        try:
            status = os.stat(candidate)
        except OSError:
            return False
        if status.st_uid not in (0, os.geteuid()):
            return False
        # Further up, a directory others may write is fine when sticky
        # (/tmp): nobody but an entry's owner can rename or replace it.
        sticky = candidate not in strict and status.st_mode & stat.S_ISVTX
        if status.st_mode & 0o022 and not sticky:
            return False
    return True


def _on_path(name: str) -> list[str]:
    """Every executable `name` in PATH's absolute directories, in order."""
    found = []
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory, name)
        if os.path.isabs(directory) and os.path.isfile(path) and os.access(path, os.X_OK):
            found.append(path)
    return found


def find_python(version: str | None) -> str:
    """An interpreter of `version` (X.Y) on this host; this one when it fits,
    else the first trusted python3.X or python3 on PATH (untrusted ones are
    passed over). The path returned is the interpreter's real file, so a
    link changed later cannot redirect it."""
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version is None or version == own:
        return sys.executable
    for name in (f"python{version}", "python3"):
        for path in _on_path(name):
            # Resolved once: the file checked is the file asked and returned.
            real = os.path.realpath(path)
            if _trusted(path, real) and _version_of(real) == version:
                return real
    raise RuntimeFailure(
        f"this bundle's runtime needs Python {version}, and this host has none "
        f"(the executor runs Python {own})",
        hint=f"install python{version}, or build the bundle for this host's Python: "
        f"[host:NAME] python = {own}, or a complete platform file from "
        "'executor inspect-platform'",
    )


def runtime_directory(state_directory: str, given: str | None) -> Path:
    # Absolute: the runtime runs from another working directory.
    return (Path(given) if given else Path(state_directory, "runtimes")).resolve()


def make_venv(
    interpreter: str, pex: Path, destination: Path, pex_root: Path, timeout: float | None = None
) -> str | None:
    """Turn a pex built with its tools into a virtual environment; None when
    done, else what went wrong. Nothing is downloaded: the pex holds it all."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PEX_")}
    environment.update(PEX_TOOLS="1", PEX_ROOT=str(pex_root), PEX_IGNORE_RCFILES="1")
    # --site-packages-copies: nothing links into pex_root, which goes away.
    # --compile: bytecode now, once, instead of on every run (hosts often
    # cannot write it next to root-owned sources later).
    command = [
        interpreter,
        str(pex),
        "venv",
        "--site-packages-copies",
        "--compile",
        str(destination),
    ]
    try:
        completed = subprocess.run(
            command,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            # A killed executor takes the half-made environment's maker along.
            preexec_fn=die_with_parent,
        )
    except subprocess.TimeoutExpired:
        return f"making the environment took longer than the {timeout:.3g}s it had"
    if completed.returncode != 0:
        return (completed.stdout + completed.stderr).strip()[-2000:]
    return None


def prepare_runtime(
    bundle: VerifiedBundle, directory: Path, timeout: float | None = None
) -> Path:
    """The python of the bundle's runtime environment, made now if needed."""
    manifest: Manifest = bundle.manifest
    entry = manifest.blob("runtime")
    assert entry is not None  # the manifest decoder requires it
    final = directory / entry.sha256
    python = final / "venv" / "bin" / "python"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot make the runtime directory {directory}: {exc.strerror}",
            hint="run as root, or pass --state-dir / --runtime-dir with a writable directory",
        ) from None
    # Checked on every use: whoever can write here decides what code runs.
    check_private(str(directory), "runtime directory", _WHY_PRIVATE)
    if (final / READY).is_file() and python.exists():
        return python
    interpreter = find_python(manifest.target.python)
    try:
        status = os.statvfs(directory)
        free = status.f_bavail * status.f_frsize
        # The pex, then the environment made from it: about three times its size.
        if free < 3 * entry.raw_size + (16 << 20):
            raise RuntimeFailure(
                f"not enough space in {directory}: {free} bytes free, making the runtime "
                f"needs about {3 * entry.raw_size}",
                hint="free space, or pass --runtime-dir on a file system with room",
            )
        work = Path(tempfile.mkdtemp(prefix=f".{entry.sha256[:12]}-", dir=directory))
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot make the runtime in {directory}: {exc.strerror}",
            hint="run as root, or pass --state-dir / --runtime-dir with a writable directory",
        ) from None
    try:
        pex = work / "runtime.pex"
        bundle.extract_to("runtime", str(pex))
        failure = make_venv(interpreter, pex, work / "venv", work / "pex-root", timeout)
        if failure is not None:
            raise RuntimeFailure(
                f"cannot make the runtime environment from {bundle.path}", hint=failure
            )
        (work / READY).write_text("")
        shutil.rmtree(work / "pex-root", ignore_errors=True)
        pex.unlink()
        try:
            os.rename(work, final)
        except OSError:
            if (final / READY).is_file() and python.exists():
                # Another apply finished the same runtime meanwhile.
                return python
            # A damaged runtime (its python gone, its marker lost): move it
            # aside, put ours in its place, then remove it.
            trash = Path(tempfile.mkdtemp(prefix=".damaged-", dir=directory))
            os.rename(final, trash / "runtime")
            os.rename(work, final)
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return python


# A work directory in a runtime directory that other state directories may
# share is another executor's until it is this old.
STALE_WORK_SECONDS = 3600.0


def remove_stale_work(state_directory: str, runtime_dir: str | None) -> list[str]:
    """Remove what interrupted runs left behind (work directories named
    ``.*``) in the store, the generations and the runtime directory.

    Called under the state directory's lock: nothing in the state directory
    is anyone else's work. A runtime directory elsewhere may be shared, so
    there only work directories older than STALE_WORK_SECONDS go.
    """
    removed: list[str] = []
    runtimes = runtime_directory(state_directory, runtime_dir)
    own = Path(state_directory).resolve()
    places = [own / "store", own / GENERATIONS_DIR, runtimes]
    now = time.time()
    for place in places:
        try:
            entries = list(os.scandir(place))
        except OSError:
            continue
        shared = not runtimes.resolve().is_relative_to(own) and place == runtimes
        for entry in entries:
            if not entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                if shared and now - entry.stat(follow_symlinks=False).st_mtime < STALE_WORK_SECONDS:
                    continue
                remove_tree(Path(entry.path))
            except OSError:
                continue
            removed.append(entry.path)
    return removed
