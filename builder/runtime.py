"""The bundle's runtime: the deployment's requirements and consign's own
runtime, resolved together into one reproducible pex.

The pex holds the ``executor`` and ``batou`` packages of the consign that
builds the bundle, its runtime dependencies pinned to the versions the
builder itself runs with, and the packages the repository's
``requirements.txt`` asks for. The host applies the bundle with this pex,
so the code that applies a bundle is always the code that built it.

Builds are cached in the builder's cache directory by the digest of their
inputs (requirements, pins, consign's sources, pex version, target); hosts
with the same requirements and target share one build.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

import batou
import executor
from executor.bundle import compress_file
from executor.errors import ConsignError
from executor.runtime import make_venv

from .errors import BuildError, RuntimeBuildError

REQUIREMENTS_FILE = "requirements.txt"
# What the runtime imports: the component API and library, nothing of the
# host executor's (signatures, compression, command line).
RUNTIME_DISTRIBUTIONS = ("Jinja2", "MarkupSafe", "msgpack", "dnspython")
# What the host executor imports: verification, state, the command line.
EXECUTOR_DISTRIBUTIONS = ("typer", "rich", "msgpack", "zstandard", "cryptography", "packaging")
PACKAGES = (executor, batou)
PIP_VERSION = "26.2.1"
# Options a requirements file may carry, passed on to pex.
_PASSED_OPTIONS = {
    "--index-url": "--index-url",
    "-i": "--index-url",
    "--extra-index-url": "--extra-index-url",
    "--find-links": "--find-links",
    "-f": "--find-links",
}



@dataclass(frozen=True)
class Step:
    """What a long build step is doing now ("Resolving sqlalchemy"), or, when
    `final`, a result worth keeping on screen ("Built the runtime ...")."""

    message: str
    final: bool = False


Progress = Callable[[Step], None]


def _quiet(_step: Step) -> None:
    pass


# pip's download log, as pex preserves it, turned into steps.
_PIP_STEPS = (
    (re.compile(r"^\S+ Collecting (\S+)"), "Resolving {0}"),
    (re.compile(r"^\S+ +Downloading (\S+) \(([^)]*)\)"), "Downloading {0} ({1})"),
    (re.compile(r"^\S+ +Building wheel for (\S+)"), "Building a wheel for {0}"),
    (re.compile(r"^\S+ Successfully downloaded (.+)"), "Installing {0}"),
)
# How often a running pex's log is read for steps.
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Target:
    """The Python a runtime is built for: a version, or a complete platform."""

    python: str
    # The complete platform file's content and where it came from.
    platform_json: bytes | None = None
    platform_file: str | None = None

    @property
    def key(self) -> str:
        if self.platform_json is not None:
            return "complete-platform:" + hashlib.sha256(self.platform_json).hexdigest()
        return f"python:{self.python}"

    def fits_here(self) -> bool:
        """Whether this builder's own interpreter can import a runtime built
        for this target (same Python, same machine and operating system)."""
        if self.python != own_python():
            return False
        if self.platform_json is None:
            return True
        from packaging.markers import default_environment

        theirs = json.loads(self.platform_json).get("marker_environment", {})
        ours = {key: str(value) for key, value in default_environment().items()}
        keys = ("implementation_name", "platform_machine", "sys_platform", "python_version")
        return all(theirs.get(key) == ours.get(key) for key in keys)

    def describe(self) -> str:
        if self.platform_file:
            return f"Python {self.python} ({self.platform_file})"
        return f"Python {self.python}"


@dataclass(frozen=True)
class Requirements:
    """The user's requirement lines and index options, in file order."""

    lines: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    # For messages: where each requirement line was written.
    locations: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def names(self) -> list[str]:
        return [Requirement(line).name for line in self.lines]


def own_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def pins(names: Sequence[str] = RUNTIME_DISTRIBUTIONS) -> tuple[str, ...]:
    """Distributions and everything they require, pinned to the versions
    running here (requirements whose markers exclude this Python are left
    for the resolver)."""
    found: dict[str, str] = {}
    queue = list(names)
    while queue:
        name = queue.pop()
        key = canonicalize_name(name)
        if key in found:
            continue
        distribution = importlib.metadata.distribution(name)
        found[key] = f"{distribution.metadata['Name']}=={distribution.version}"
        for text in distribution.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                queue.append(requirement.name)
    return tuple(sorted(found.values(), key=str.lower))


def read_requirements(tree: Path) -> tuple[Requirements, list[ConsignError]]:
    """Parse requirements.txt (and files it includes with -r) below `tree`."""
    lines: list[str] = []
    options: list[str] = []
    locations: dict[str, str] = {}
    errors: list[ConsignError] = []
    seen: set[Path] = set()

    def read(relative: str, included_at: str | None = None) -> None:
        path = (tree / relative).resolve()
        if path in seen:
            return
        seen.add(path)
        if not path.is_relative_to(tree.resolve()):
            errors.append(
                BuildError(f"{relative} lies outside the repository", where=included_at)
            )
            return
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if relative != REQUIREMENTS_FILE:
                errors.append(
                    BuildError(f"requirements file {relative} does not exist", where=included_at)
                )
            return
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(BuildError(f"cannot read {relative}: {exc}"))
            return
        for number, raw in enumerate(text.splitlines(), 1):
            where = f"{relative}:{number}"
            line = re.sub(r"(^|\s)#.*$", "", raw).strip()
            if not line:
                continue
            if line.startswith("-"):
                option, _, value = line.partition(" ")
                if "=" in option and option.startswith("--"):
                    option, _, value = option.partition("=")
                value = value.strip()
                if option in ("-r", "--requirement") and value:
                    read(str(Path(relative).parent / value), where)
                elif option in _PASSED_OPTIONS and value:
                    flag = _PASSED_OPTIONS[option]
                    if flag == "--find-links" and "://" not in value:
                        # Like pip: a local path is relative to the file naming it.
                        value = str((path.parent / value).resolve())
                    options.extend([flag, value])
                else:
                    errors.append(
                        BuildError(
                            f"requirements option {option!r} is not supported",
                            where=where,
                            hint="use requirement lines, -r FILE, --index-url, "
                            "--extra-index-url or --find-links",
                        )
                    )
                continue
            try:
                Requirement(line)
            except InvalidRequirement as exc:
                errors.append(
                    BuildError(
                        f"invalid requirement {line!r}: {exc}",
                        where=where,
                        hint="write e.g. 'SQLAlchemy==2.1.9' (pin versions for reproducible runtimes)",
                    )
                )
                continue
            lines.append(line)
            locations[line] = where

    read(REQUIREMENTS_FILE)
    return Requirements(tuple(lines), tuple(options), locations), errors


def conflicts(requirements: Requirements) -> list[ConsignError]:
    """User requirements that contradict consign's own pins, each with both sides."""
    ours: dict[str, str] = {canonicalize_name(Requirement(pin).name): pin for pin in pins()}
    ours["consign"] = f"consign=={executor.__version__}"
    found: list[ConsignError] = []
    for line in requirements.lines:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name not in ours:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pinned = Requirement(ours[name])
        version = next(iter(pinned.specifier)).version
        if name == "consign" or not requirement.specifier.contains(version, prereleases=True):
            found.append(
                RuntimeBuildError(
                    f"the requirements ask for {line!r}, but consign's runtime needs "
                    f"{ours[name]!r}",
                    where=requirements.locations.get(line),
                    hint=f"allow {requirement.name} {version} (or drop the line: consign "
                    "provides it), or run the builder with a consign that uses a version you allow",
                )
            )
    return found


def _package_files(package: object) -> list[tuple[str, Path]]:
    root = Path(getattr(package, "__file__", "")).parent
    name = root.name
    files = []
    for path in sorted(root.rglob("*")):
        # Only the package's own files: never editor backups or stray files
        # of a working tree, which would change the runtime's bytes.
        if "__pycache__" in path.parts or not path.is_file():
            continue
        if path.suffix != ".py" and path.name != "py.typed":
            continue
        files.append((f"{name}/{path.relative_to(root).as_posix()}", path))
    return files


def sources() -> list[tuple[str, Path]]:
    """The files of the executor and batou packages this builder runs."""
    return [entry for package in PACKAGES for entry in _package_files(package)]


def pex_version() -> str:
    return importlib.metadata.version("pex")


def runtime_key(requirements: Requirements, target: Target) -> str:
    """The cache key: a digest of everything that goes into the pex."""
    digest = hashlib.sha256()
    for name, path in sources():
        digest.update(f"file {name}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    document = {
        "pex": pex_version(),
        "pip": PIP_VERSION,
        "pins": list(pins()),
        "requirements": list(requirements.lines),
        "options": list(requirements.options),
        "target": target.key,
    }
    digest.update(json.dumps(document, sort_keys=True).encode())
    return digest.hexdigest()


def cache_directory(given: Path | None) -> Path:
    if given is not None:
        return given
    if os.environ.get("CONSIGN_CACHE_DIR"):
        return Path(os.environ["CONSIGN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "consign")


def _pex_environment(cache: Path) -> dict[str, str]:
    # Nothing of the caller's pex configuration may change the bytes.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PEX_")}
    # CONSIGN_PEX_ROOT shares pex's download cache between runtime caches.
    environment["PEX_ROOT"] = os.environ.get("CONSIGN_PEX_ROOT") or str(cache / "pex-root")
    environment["PEX_IGNORE_RCFILES"] = "1"
    environment["PYTHONHASHSEED"] = "0"
    return environment


def _target_arguments(target: Target, scratch: Path) -> list[str]:
    if target.platform_json is not None:
        platform = scratch / "platform.json"
        platform.write_bytes(target.platform_json)
        return ["--complete-platform", str(platform)]
    if target.python == own_python():
        return ["--python", sys.executable]
    return ["--python", f"python{target.python}"]


def _explain(output: str, requirements: Requirements, target: Target) -> RuntimeBuildError:
    """A pex failure as an error that names what to change."""
    tail = "\n".join(output.strip().splitlines()[-12:])
    if (
        "Failed to find compatible interpreter" in output
        or "Failed to find interpreter" in output
        or "No interpreter" in output
    ):
        return RuntimeBuildError(
            f"there is no {target.describe()} here to build the runtime for",
            hint=f"install python{target.python} on the builder, or put a complete platform "
            "file made on the host ('executor inspect-platform > FILE') at "
            "environments/ENV/platforms/HOST.json",
        )
    match = re.search(r"(?:No matching distribution found for|Could not find a version that satisfies the requirement) ([^\s(]+)", output)
    if match:
        name = match.group(1)
        return RuntimeBuildError(
            f"no distribution of {name!r} for {target.describe()} can be found",
            where=requirements.locations.get(name),
            hint="check the requirement's name and version, and that the index is reachable:\n"
            + tail,
        )
    if "conflict" in output.lower() or "ResolutionImpossible" in output:
        lines = _conflict_causes(output)
        named = [
            where
            for line in lines
            for requirement, where in requirements.locations.items()
            if canonicalize_name(Requirement(requirement).name) in _names_in(line)
        ]
        return RuntimeBuildError(
            "the requirements contradict each other or consign's runtime: "
            + ("; ".join(lines) if lines else tail),
            where=named[0] if named else None,
            hint="change the requirement that pulls in the contradicting version (consign's "
            f"own pins are {', '.join(pins())}); pin versions that agree",
        )
    return RuntimeBuildError(f"building the runtime failed for {target.describe()}", hint=tail)


def _names_in(line: str) -> set[str]:
    """The distribution names a line of pip's mentions, canonicalised (so
    that 'py' is not found in 'pyyaml')."""
    return {canonicalize_name(word) for word in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)}


def _conflict_causes(output: str) -> list[str]:
    """The lines under pip's "The conflict is caused by:", up to the blank
    line that ends them (pex prefixes each line of pip's with "pip: ")."""
    text = [re.sub(r"^pip:\s?", "", line).strip() for line in output.splitlines()]
    try:
        start = text.index("The conflict is caused by:") + 1
    except ValueError:
        return []
    causes = []
    for line in text[start:]:
        if not line:
            break
        causes.append(line)
    return causes


def build_runtime(
    requirements: Requirements,
    target: Target,
    cache: Path,
    progress: Progress | None = None,
) -> Path:
    """The runtime pex for `requirements` and `target`, from the cache or built now."""
    key = runtime_key(requirements, target)
    cached = cache / "runtimes" / f"{key}.pex"
    if cached.is_file():
        return cached
    say = progress or _quiet
    names = dict.fromkeys([Requirement(p).name for p in pins()] + requirements.names)
    say(Step(f"Resolving the runtime for {target.describe()}: {', '.join(names)}"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="consign-runtime-", dir=cached.parent) as scratch:
        output = _run_pex(
            Path(scratch),
            [*pins(), *requirements.lines, *requirements.options, "--include-tools", "--no-compress"],
            requirements,
            target,
            cache,
            say,
        )
        os.replace(output, cached)
    say(
        Step(
            f"Built the runtime for {target.describe()} ({cached.stat().st_size // 1024} KiB, "
            f"{time.monotonic() - started:.1f} s)",
            final=True,
        )
    )
    return cached


def import_environment(runtime: Path, cache: Path) -> Path:
    """site-packages of a venv made from `runtime`, for the builder's own
    configure: components may import the repository's requirements.

    Made in a work directory and renamed into place, so builders sharing a
    cache never see (or remove) each other's half-made environments.
    """
    venv = cache / "venvs" / runtime.stem
    if not venv.is_dir():
        venv.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".venv-", dir=venv.parent) as scratch:
            work = Path(scratch, "venv")
            failure = make_venv(sys.executable, runtime, work, Path(scratch, "pex-root"))
            if failure is not None:
                raise RuntimeBuildError(
                    f"cannot make an environment from the runtime {runtime}", hint=failure
                )
            try:
                os.rename(work, venv)
            except OSError:
                if not venv.is_dir():
                    raise
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise RuntimeBuildError(f"the environment {venv} has no site-packages")
    return found[0]


class ImportAudit:
    """Configure in the builder with the runtime's packages, and find what it
    imports from elsewhere.

    While active, the runtime's site-packages come first on ``sys.path``, so
    components import the versions hosts will run. Afterwards
    :meth:`foreign` names every module imported from outside the runtime,
    the standard library and the repository: on a host that import would
    fail, so the build fails now. It sees both kinds of import: modules
    loaded for the first time while configuring (wherever the import
    statement is), and ``import`` statements in the repository's code of
    modules the builder had loaded before (typer, rich, ...), which Python
    answers from ``sys.modules`` without looking at the path.
    """

    def __init__(self, site_packages: Path, repository: Path) -> None:
        self.site = str(site_packages)
        self.repository = str(repository)
        self.before: set[str] = set()
        self.new: dict[str, str] = {}
        # Top-level names the repository's code imported while active.
        self.requested: set[str] = set()
        self.names = {_top_level_name(entry) for entry in os.listdir(self.site)}
        self._import: Callable[..., Any] | None = None

    def __enter__(self) -> ImportAudit:
        self.before = set(sys.modules)
        sys.path.insert(0, self.site)
        original = builtins.__import__
        self._import = original
        repository = self.repository + os.sep
        requested = self.requested

        def audited_import(
            name: str,
            globals: Mapping[str, object] | None = None,
            locals: Mapping[str, object] | None = None,
            fromlist: Sequence[str] | None = (),
            level: int = 0,
        ) -> types.ModuleType:
            if level == 0 and globals is not None:
                importer = globals.get("__file__")
                if isinstance(importer, str) and importer.startswith(repository):
                    requested.add(name.split(".", 1)[0])
            module: types.ModuleType = original(name, globals, locals, fromlist, level)
            return module

        builtins.__import__ = audited_import
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._import is not None:
            builtins.__import__ = self._import
            self._import = None
        if self.site in sys.path:
            sys.path.remove(self.site)
        for name in set(sys.modules) - self.before:
            module = sys.modules.get(name)
            location = getattr(module, "__file__", None)
            if isinstance(location, str):
                self.new[name] = location
        for name in self.requested - set(self.new):
            location = getattr(sys.modules.get(name), "__file__", None)
            if isinstance(location, str):
                self.new[name] = location

    def foreign(self) -> list[ConsignError]:
        stdlib = [sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")]
        found: dict[str, str] = {}
        for name, location in sorted(self.new.items()):
            top = name.split(".", 1)[0]
            if top in self.names or location.startswith((self.site, self.repository)):
                continue
            if top in sys.stdlib_module_names:
                continue
            in_stdlib = location.startswith(tuple(stdlib)) and not any(
                part in ("site-packages", "dist-packages") for part in Path(location).parts
            )
            if not in_stdlib:
                found.setdefault(top, location)
        return [
            RuntimeBuildError(
                f"the components import {top!r} (found at {location} here), which the "
                "bundle's runtime does not have, so the import would fail on the hosts",
                hint=f"add the distribution that provides {top!r} to requirements.txt",
            )
            for top, location in sorted(found.items())
        ]


def _top_level_name(entry: str) -> str:
    """The importable name a site-packages entry provides (module.py, pkg/, x.so)."""
    return entry.split(".", 1)[0].split("-", 1)[0]


# -- targets and blobs -------------------------------------------------------------


PLATFORMS_DIR = "platforms"


def host_target(tree: Path, environment: str, host: str, python: str | None) -> Target:
    """The target of a host's runtime: its complete platform file when there
    is one (environments/ENV/platforms/HOST.json, else .../platform.json),
    else its python version (default: the builder's own)."""
    base = Path("environments", environment)
    for relative in (base / PLATFORMS_DIR / f"{host}.json", base / "platform.json"):
        path = tree / relative
        if path.is_file():
            return _platform_target(path.read_bytes(), relative.as_posix())
    return Target(python or own_python())


# Marker values that vary between machines of one platform (the kernel) and
# that no requirement marker a runtime depends on should look at.
_VOLATILE_MARKERS = ("platform_release", "platform_version")


def _platform_target(data: bytes, where: str) -> Target:
    """A target from a complete platform file, normalised: only the tags and
    the markers that matter, so that hosts with one Python on different
    kernels (or files made by different executors) share a runtime."""
    try:
        document = json.loads(data)
        markers = document["marker_environment"]
        version = markers["python_version"]
        tags = document["compatible_tags"]
    except (ValueError, KeyError, TypeError):
        raise RuntimeBuildError(
            f"{where} is not a complete platform file",
            hint="make it on the host with 'executor inspect-platform > FILE'",
        ) from None
    if not isinstance(version, str) or not isinstance(tags, list) or not tags:
        raise RuntimeBuildError(
            f"{where} is not a complete platform file: it needs python_version and compatible_tags",
            hint="make it on the host with 'executor inspect-platform > FILE'",
        )
    normalised = {
        "compatible_tags": tags,
        "marker_environment": {
            k: v for k, v in sorted(markers.items()) if k not in _VOLATILE_MARKERS
        },
    }
    data = json.dumps(normalised, sort_keys=True, indent=1).encode()
    return Target(version, data, where)


@dataclass(frozen=True)
class RuntimeBlob:
    """A runtime ready to go into bundles: the pex, compressed, and its entry."""

    target: Target
    pex: Path
    compressed: Path
    size: int
    sha256: str
    raw_size: int
    raw_sha256: str


def runtime_blob(
    requirements: Requirements, target: Target, cache: Path, progress: Progress | None = None
) -> RuntimeBlob:
    """The runtime for `target`, built and compressed once, then from the cache."""
    pex = build_runtime(requirements, target, cache, progress)
    compressed = pex.with_suffix(".pex.zst")
    facts = pex.with_suffix(".json")
    if not (compressed.is_file() and facts.is_file()):
        raw = hashlib.sha256()
        with open(pex, "rb") as f:
            while chunk := f.read(1 << 20):
                raw.update(chunk)
        staged = compressed.with_name(f".{compressed.name}.{os.getpid()}")
        size, sha256 = compress_file(str(pex), str(staged))
        os.replace(staged, compressed)
        document = {
            "size": size,
            "sha256": sha256,
            "raw_size": pex.stat().st_size,
            "raw_sha256": raw.hexdigest(),
        }
        staged_facts = facts.with_name(f".{facts.name}.{os.getpid()}")
        staged_facts.write_text(json.dumps(document, sort_keys=True))
        os.replace(staged_facts, facts)
    document = json.loads(facts.read_text())
    return RuntimeBlob(
        target=target,
        pex=pex,
        compressed=compressed,
        size=document["size"],
        sha256=document["sha256"],
        raw_size=document["raw_size"],
        raw_sha256=document["raw_sha256"],
    )


def build_executor_pex(
    out: Path, target: Target, cache: Path, progress: Progress | None = None
) -> Path:
    """The host executor as one reproducible pex that runs with a stock python3.

    It holds the executor and batou packages of this consign and the
    distributions the executor imports, pinned as they run here. It runs
    in pex's venv mode: the first start installs it under PEX_ROOT, later
    starts take a tenth of a second.
    """
    say = progress or _quiet
    say(Step(f"Building the executor for {target.describe()}"))
    with tempfile.TemporaryDirectory(prefix="consign-executor-") as scratch:
        output = _run_pex(
            Path(scratch),
            [*pins(EXECUTOR_DISTRIBUTIONS), "--entry-point", "executor.cli:main", "--venv"],
            Requirements(),
            target,
            cache,
            say,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        os.close(fd)
        try:
            shutil.copyfile(output, staged)
            os.chmod(staged, 0o755)
            os.replace(staged, out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
            raise
    return out


def executor_key(target: Target) -> str:
    """The cache key of the host executor pex for `target`: consign's sources,
    the pinned distributions it imports, pex, pip and the target."""
    digest = hashlib.sha256(runtime_key(Requirements(), target).encode())
    for pin in pins(EXECUTOR_DISTRIBUTIONS):
        digest.update(pin.encode() + b"\0")
    return digest.hexdigest()


def _run_pex(
    work: Path,
    arguments: list[str],
    requirements: Requirements,
    target: Target,
    cache: Path,
    say: Progress = _quiet,
) -> Path:
    """Run pex over consign's sources with `arguments`; the pex it wrote.

    The settings every pex of consign shares: the sources of this consign,
    the pinned pip, a shebang that does not name the builder's Python (it
    is part of the bytes), and no environment of the caller's. While pex
    runs, pip's log tells `say` what is being resolved and downloaded.
    """
    source_root = work / "src"
    for name, path in sources():
        destination = source_root / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    output = work / "out.pex"
    pip_log = work / "pip.log"
    command = [
        sys.executable,
        "-m",
        "pex",
        "-D",
        str(source_root),
        *arguments,
        *_target_arguments(target, work),
        "--pip-version",
        PIP_VERSION,
        "--pip-log",
        str(pip_log),
        "--python-shebang",
        "/usr/bin/env python3",
        "--no-emit-warnings",
        "-o",
        str(output),
    ]
    with open(work / "pex.out", "w+", encoding="utf-8", errors="replace") as captured:
        process = subprocess.Popen(
            command, cwd=work, env=_pex_environment(cache), stdout=captured, stderr=subprocess.STDOUT
        )
        try:
            _follow_pip_log(process, pip_log, say)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        captured.seek(0)
        text = captured.read()
    if process.returncode != 0 or not output.is_file():
        raise _explain(text, requirements, target)
    return output


def _follow_pip_log(process: subprocess.Popen[bytes], log: Path, say: Progress) -> None:
    """Until `process` ends, turn the new lines of pip's log into steps."""
    offset = 0
    pending = b""
    while True:
        running = process.poll() is None
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            step = pip_step(line.decode("utf-8", "replace"))
            if step is not None:
                say(step)
        if not running:
            return
        time.sleep(_POLL_SECONDS)


def pip_step(line: str) -> Step | None:
    """The step a line of pip's download log reports, if it reports one."""
    for pattern, template in _PIP_STEPS:
        match = pattern.match(line)
        if match:
            groups = [g.strip() for g in match.groups()]
            if template.startswith("Installing"):
                groups = [", ".join(groups[0].split())]
            return Step(template.format(*groups))
    return None


def target_for(python: str | None, platform_file: Path | None) -> Target:
    """A target from command-line options: a complete platform file, a
    python version, or this builder's own Python."""
    if platform_file is not None:
        try:
            data = platform_file.read_bytes()
        except OSError as exc:
            raise RuntimeBuildError(f"cannot read {platform_file}: {exc.strerror}") from None
        return _platform_target(data, str(platform_file))
    return Target(python or own_python())
