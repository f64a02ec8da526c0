"""Python virtual environments and packages installed with pip (``batou.lib.python``).

``VirtualEnv`` makes a venv with ``python -m venv`` from an interpreter
found on the host; ``Package`` installs a distribution into it with the
venv's pip.

N.B. unlike the bundle's runtime (a pex built with everything it needs),
``Package`` downloads at deploy time: the host must reach a package index
(``index=``, or pip's configured default) or a ``find_links=`` location.

Example::

    from batou.component import Component
    from batou.lib.python import Package, VirtualEnv

    class App(Component):
        def configure(self):
            self.venv = VirtualEnv("3.11", path="venv")
            self += self.venv
            self.venv += Package("gunicorn", version="22.0.0")
            self.venv += Package("app", version="1.4", index="https://pypi.example.com/simple")
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from executor import run as _run
from executor.component import Component, UpdateNeeded
from executor.errors import CommandError, ConfigurationError, DeployError
from executor.fs import make_work_directory
from executor.lib._shared import CREDENTIALS_HINT, split_credentials, swap_tree, tool_reason
from executor.redact import mask_url

__all__ = ["Package", "VirtualEnv", "Venv"]

_VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,2}")
# PEP 508 project names, with optional extras: "name" or "name[a,b]".
_REQUIREMENT = re.compile(
    r"(?P<name>[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])"
    r"(?P<extras>\[[A-Za-z0-9._,\s-]*\])?"
)
# Bytes a venv file may have to get its path rewritten (scripts, activate).
_REWRITE_LIMIT = 1 << 20
# What python -m venv makes: replaced when a venv is made anew in place.
_VENV_ENTRIES = ("bin", "include", "lib", "lib64", "pyvenv.cfg")
# pip options that name where packages come from: only through index= and
# find_links=, which reach pip through its environment, never argv (the
# run's log shows argv, and ps too, with any credentials in the URL).
_SOURCE_OPTIONS = ("--index-url", "--extra-index-url", "--find-links")
_SOURCE_SHORT_OPTIONS = ("-i", "-f")
# Other short options of pip install that take a value (the rest of a
# cluster like "-Ur file" is no option).
_VALUE_SHORT_OPTIONS = ("-C", "-c", "-e", "-r", "-t")

_INTERPRETER_SCRIPT = (
    "import json, sys; print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], "
    "'venv': sys.prefix != sys.base_prefix}))"
)
# The installed versions of a distribution, names compared per PEP 503.
_INSTALLED_SCRIPT = (
    "import importlib.metadata as m, json, re, sys\n"
    "def n(s): return re.sub(r'[-_.]+', '-', s).lower()\n"
    "want = n(sys.argv[1])\n"
    "print(json.dumps(sorted({d.version for d in m.distributions() "
    "if n(d.metadata['Name'] or '') == want})))\n"
)


def normalize_name(name: str) -> str:
    """A distribution name in PEP 503's normal form ("Foo_Bar" -> "foo-bar")."""
    return re.sub(r"[-_.]+", "-", name).lower()


_PEP440 = re.compile(
    r"v?(?:(?P<epoch>[0-9]+)!)?(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:[-_.]?(?P<pre_l>alpha|beta|preview|pre|rc|a|b|c)[-_.]?(?P<pre_n>[0-9]+)?)?"
    r"(?:-(?P<post_n1>[0-9]+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?)?"
    r"(?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?",
    re.IGNORECASE,
)
_PRE = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "c": "rc", "pre": "rc", "preview": "rc"}


def version_key(text: str) -> tuple[object, ...]:
    """A key under which versions PEP 440 calls equal are equal ("1.0" and
    "1.0.0", "1.0RC1" and "1.0rc1"); text that is no PEP 440 version is
    compared as it is. (Only equality is needed: no ordering.)"""
    match = _PEP440.fullmatch(text.strip())
    if match is None:
        return ("?", text.strip())
    release = [int(part) for part in match["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre = None
    if match["pre_l"]:
        pre = (_PRE.get(match["pre_l"].lower(), "rc"), int(match["pre_n"] or 0))
    post = None
    if match["post_n1"] or match["post_l"]:
        post = int(match["post_n1"] or match["post_n2"] or 0)
    dev = int(match["dev_n"] or 0) if match["dev_l"] else None
    local = re.sub(r"[-_]", ".", match["local"].lower()) if match["local"] else None
    return (int(match["epoch"] or 0), tuple(release), pre, post, dev, local)


def _check_version(version: object, what: str) -> str:
    text = str(version)
    if not _VERSION.fullmatch(text):
        raise ConfigurationError(
            f"{what} version must be like '3' or '3.11', got {text!r}",
            hint="give the Python version to create the venv with: '3', '3.11' or '3.11.7'",
        )
    return text


def _version_matches(found: str, wanted: str) -> bool:
    """'3.11.7' matches '3', '3.11' and '3.11.7'."""
    return found.split(".")[: len(wanted.split("."))] == wanted.split(".")


class VirtualEnv(Component):
    """A Python virtual environment (venv) of the given Python ``version``.

    ``version`` ("3", "3.11", or "3.11.7") picks the interpreter
    ``python3`` / ``python3.11`` on PATH (or ``executable=``). The venv is
    made at ``path``, relative to the workdir; by default the workdir
    itself, as in batou (``bin/python`` beside the component's files).
    A venv of another Python version is made anew (packages reinstall).
    Add ``Package`` components to it: they install after the venv exists.

    Example::

        self.venv = VirtualEnv("3.11", path="venv")
        self += self.venv
        self.venv += Package("requests", version="2.32.3")
    """

    namevar = "version"
    version = "3"
    path: str | None = None
    executable: str | None = None

    def __init__(self, version: Any = None, **kw: Any) -> None:
        # The namevar with a default: VirtualEnv() is a venv of any Python 3.
        if version is None and kw.get("version") is None:
            kw.pop("version", None)
            version = "3"
        super().__init__(version, **kw)

    def configure(self) -> None:
        self.version = _check_version(self.version, "VirtualEnv")
        self.path = self.map(self.path or ".")
        self += Venv(self.path, version=self.version, executable=self.executable)

    @property
    def python(self) -> str:
        """The venv's interpreter (``<path>/bin/python``)."""
        return posixpath.join(str(self.path), "bin", "python")


class Venv(Component):
    """The venv directory itself: exists and runs the wanted Python version.

    Made with ``python -m venv`` in a work directory beside ``path`` and
    moved into place, so a half-made venv never stands at ``path``. Usually
    added by ``VirtualEnv``.

    Example::

        self += Venv("/srv/app/venv", version="3.12")
    """

    namevar = "path"
    path: str
    version = "3"
    executable: str | None = None

    def configure(self) -> None:
        self.path = self.map(self.path)
        self.version = _check_version(self.version, "Venv")

    @property
    def _interpreter_name(self) -> str:
        if self.executable:
            return str(self.executable)
        return "python" + ".".join(self.version.split(".")[:2])

    def _probe(self, python: str) -> dict[str, object] | None:
        """What `python` says it is; None when it does not run. (-I here and
        below: PYTHONPATH or PYTHONHOME of the executor's environment must
        not leak into the venv.)"""
        try:
            out, _ = self.cmd([python, "-I", "-c", _INTERPRETER_SCRIPT], expand=False, silent=True)
            data = json.loads(out)
        except CommandError as exc:
            if exc.returncode is None:
                raise
            return None
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _current(self) -> str | None:
        """The Python version of the venv at path; None when there is none."""
        python = posixpath.join(self.path, "bin", "python")
        if not os.path.exists(python):  # a dangling link: its Python is gone
            return None
        info = self._probe(python)
        if info is None or not info.get("venv"):
            return None
        return str(info.get("version"))

    def _interpreter(self) -> str:
        """The base interpreter to make the venv with, checked to run and to
        be the wanted version."""
        name = self._interpreter_name
        found = shutil.which(name)
        package = "python" + ".".join(self.version.split(".")[:2])
        install = (
            f"install Python {self.version} (Debian/Ubuntu: apt-get install {package} "
            f"{package}-venv), or pass executable= with the path of one"
        )
        if found is None:
            where = "" if "/" in name else f" on PATH ({os.environ.get('PATH', '')})"
            raise DeployError(f"Python {self.version} is not installed: no {name}{where}", hint=install)
        info = self._probe(found)
        if info is None:
            reason = ""
            try:
                self.cmd([found, "-c", "pass"], expand=False, silent=True)
            except CommandError as exc:
                reason = ": " + tool_reason(exc.stderr or exc.stdout, 3)
            raise DeployError(f"{name} ({found}) does not run{reason}", hint=install)
        got = str(info.get("version"))
        if not _version_matches(got, self.version):
            raise DeployError(
                f"{name} ({found}) is Python {got}, want {self.version}",
                hint=f"pass executable= with the path of a Python {self.version}",
            )
        return found

    def verify(self) -> None:
        current = self._current()
        if current is not None and _version_matches(current, self.version):
            return
        # Say now, in a dry run too, when the venv cannot be made.
        self._interpreter()
        if current is None:
            raise UpdateNeeded(f"no venv at {self.path}")
        raise UpdateNeeded(f"the venv at {self.path} has Python {current}, want {self.version}")

    def update(self) -> None:
        python = self._interpreter()
        parent, name = posixpath.split(self.path.rstrip("/"))
        os.makedirs(parent, exist_ok=True)
        work = make_work_directory(parent, f".consign-{name[:100]}.venv.")
        try:
            try:
                self.cmd([python, "-I", "-m", "venv", work], expand=False)
            except CommandError as exc:
                if exc.returncode is None:
                    raise
                said = exc.stderr + exc.stdout
                hint = "see the message; the interpreter's venv module failed"
                if "ensurepip" in said:
                    major_minor = ".".join(self.version.split(".")[:2])
                    hint = (
                        f"the interpreter lacks ensurepip: install python{major_minor}-venv "
                        "(Debian/Ubuntu)"
                    )
                raise DeployError(
                    f"{python} -m venv failed for {self.path}: {tool_reason(said, 3)}", hint=hint
                ) from None
            _relocate(work, self.path)
            # An existing directory (the workdir, say) stays; the old venv's
            # entries go, other files stay. bin/ comes last: bin/python is
            # what verify asks, and it only answers as a venv once all else
            # is there.
            swap_tree(work, self.path, last="bin", replace=_VENV_ENTRIES)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def last_updated(self, key: str = "st_mtime") -> float | None:
        try:
            return float(getattr(os.stat(posixpath.join(self.path, "pyvenv.cfg")), key))
        except FileNotFoundError:
            return None


def _relocate(work: str, path: str) -> None:
    """Make the venv made in `work` right for `path`, where it will live.

    A venv names its own directory in the activate scripts, the scripts'
    ``#!`` lines and pyvenv.cfg; the rest (the bin/python link, site-packages)
    does not depend on where it is.
    """
    old, new = work.encode(), path.encode()
    bin_dir = posixpath.join(work, "bin")
    candidates = [posixpath.join(work, "pyvenv.cfg")]
    candidates += [posixpath.join(bin_dir, e) for e in sorted(os.listdir(bin_dir))]
    for candidate in candidates:
        if os.path.islink(candidate) or not os.path.isfile(candidate):
            continue
        if os.path.getsize(candidate) > _REWRITE_LIMIT:
            continue
        with open(candidate, "rb") as f:
            data = f.read()
        if old in data:
            with open(candidate, "wb") as f:
                f.write(data.replace(old, new))


class Package(Component):
    """A Python distribution installed with pip into a venv.

    Added to a ``VirtualEnv`` (``venv += Package(...)``) or given one with
    ``venv=`` (a VirtualEnv, or the path of a venv). ``version`` pins it
    (``package==version``; a different installed version is replaced);
    without one, any installed version will do. ``index`` (an http(s) or
    file URL, or a path) replaces pip's index URL, ``find_links`` (one, or a
    list) adds places to look; ``pip_args`` go to ``pip install`` as they
    are (``("--no-index",)``), but for the options naming an index or
    find-links: only ``index=`` and ``find_links=`` give those. batou's
    ``dependencies=False`` (``--no-deps``), ``install_options``, ``timeout``
    (pip's network timeout, seconds), ``env`` and
    ``check_package_is_module`` (the package must import by its name) work
    too.

    N.B. unlike the bundle's runtime, this installs at deploy time: the host
    must reach the index (or find_links). Credentials in ``index`` or
    ``find_links`` URLs are passed to pip through its environment, never on
    its command line, and never shown.

    Example::

        venv = VirtualEnv("3.11")
        self += venv
        venv += Package("gunicorn", version="22.0.0")
        venv += Package("app", version="1.4", find_links="/srv/wheels", pip_args=("--no-index",))
    """

    namevar = "package"
    package: str
    version: str | None = None
    venv: VirtualEnv | Venv | str | None = None
    index: str | None = None
    find_links: str | Sequence[str] | None = None
    pip_args: Sequence[str] = ()
    dependencies = True
    install_options: Sequence[str] = ()
    timeout: int | float | str | None = None
    env: Mapping[str, str] | None = None
    check_package_is_module = False

    def configure(self) -> None:
        self.package = str(self.package).strip()
        match = _REQUIREMENT.fullmatch(self.package)
        if match is None:
            raise ConfigurationError(
                f"Package needs a distribution name (like 'requests' or 'requests[socks]'), "
                f"got {self.package!r}",
                hint="give the version as version=, not in the name",
            )
        self._name = match["name"]
        if self.version is not None:
            self.version = str(self.version).strip()
            if not self.version or any(c in self.version for c in " ,;<>=!~"):
                raise ConfigurationError(
                    f"Package version must be one version (like '2.1.0'), got {self.version!r}",
                    hint="pin one version; ranges would make every deploy ask the index",
                )
        self.venv_path = self._venv_path()
        self.python = posixpath.join(self.venv_path, "bin", "python")
        self._timeout = self._configure_timeout()
        self._index = None if self.index is None else self._source("index", self.index)
        links = self.find_links
        if isinstance(links, str):
            links = [links]
        self._links = [self._source("find_links", link) for link in (links or [])]
        self._check_pip_args()

    def _configure_timeout(self) -> str | None:
        """pip's --timeout: a positive number of seconds."""
        timeout = self.timeout
        if timeout is None:
            return None
        try:
            seconds = float("nan") if isinstance(timeout, bool) else float(timeout)
        except (TypeError, ValueError):
            seconds = float("nan")
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigurationError(
                f"Package.timeout must be a positive number of seconds, got {timeout!r}",
                hint="pass timeout=60, say (pip's network timeout), or leave it out",
            )
        return f"{seconds:g}"

    def _source(self, what: str, value: object) -> str:
        """An index or find-links location: an http(s) or file URL as it is,
        a path mapped (relative to the workdir)."""
        text = str(value)
        expected = f"Package {what}= must be an http(s) or file URL or a path"
        if not text or any(c.isspace() for c in text):
            raise ConfigurationError(
                f"{expected}, got {mask_url(text)!r}",
                hint="give the URL or path without spaces (percent-encode them as %20)",
            )
        if "://" not in text:
            return self.map(text)
        scheme = text.partition("://")[0].lower()
        if scheme not in ("http", "https", "file"):
            raise ConfigurationError(
                f"{expected}, got {mask_url(text)!r}",
                hint="write https://host/simple, file:///srv/wheels or /srv/wheels",
            )
        try:
            split_credentials(text)
        except ValueError as exc:
            raise ConfigurationError(
                f"cannot parse the {what}= URL {mask_url(text)!r}: {exc}", hint=CREDENTIALS_HINT
            ) from None
        return text

    def _check_pip_args(self) -> None:
        """No option naming an index or find-links in pip_args (or
        install_options): those would put URLs, with any credentials, on
        pip's command line, which the run's log and ps show."""
        for arg in (*self.pip_args, *self.install_options):
            if _names_a_source(str(arg)):
                raise ConfigurationError(
                    f"Package pip_args must not name an index or find-links, "
                    f"got {mask_url(str(arg))!r}",
                    hint="pass index='URL' (for --index-url/-i) and find_links=[...] "
                    "(for --find-links/-f) instead; --extra-index-url has no equivalent: "
                    "serve all packages from one index, or add the other one's files "
                    "to find_links",
                )

    def _venv_path(self) -> str:
        venv = self.venv if self.venv is not None else self.parent
        if isinstance(venv, (VirtualEnv, Venv)):
            if venv.path is None or not str(venv.path).startswith("/"):
                raise ConfigurationError(
                    f"the venv of {self._breadcrumb} is not configured yet",
                    hint="add the VirtualEnv (self += venv) before the Package",
                )
            return str(venv.path)
        if isinstance(venv, str):
            return self.map(venv)
        raise ConfigurationError(
            f"Package {self.package!r} has no venv to install into",
            hint="add it to a VirtualEnv (venv += Package(...)) or pass venv=",
        )

    def _installed(self) -> list[str]:
        command = [self.python, "-I", "-c", _INSTALLED_SCRIPT, self._name]
        try:
            out, _ = self.cmd(command, expand=False, silent=True)
        except CommandError as exc:
            if exc.returncode is None:
                raise
            said = tool_reason(exc.stderr or exc.stdout, 3) or f"exit {exc.returncode}"
            raise self._cannot_ask(said, exc) from None
        try:
            versions = json.loads(out)
        except ValueError:
            raise self._cannot_ask(f"it printed {str(out).strip()[:200]!r}, not versions", None) from None
        return [str(v) for v in versions] if isinstance(versions, list) else []

    def _cannot_ask(self, said: str, failed: CommandError | None) -> CommandError:
        """The venv's python could not say which versions are installed."""
        return CommandError(
            f"cannot ask {self.python} which version of {self._name} is installed: {said}",
            command=failed.command if failed else f"{self.python} -I -c <script> {self._name}",
            returncode=failed.returncode if failed else 0,
            stdout=failed.stdout if failed else "",
            stderr=failed.stderr if failed else "",
            hint=f"the venv's Python does not work; remove {self.venv_path} so that its "
            "VirtualEnv makes it anew, or point venv= at a working venv",
        )

    def verify(self) -> None:
        if not os.path.exists(self.python):
            if _run.current().predicting:
                raise UpdateNeeded(f"no venv at {self.venv_path} yet")
            raise DeployError(
                f"cannot install {self.package}: {self.venv_path} is no venv (no bin/python)",
                hint="add the Package to a VirtualEnv (venv += Package(...)), "
                "or point venv= at an existing venv",
            )
        installed = self._installed()
        if not installed:
            raise UpdateNeeded(f"{self._name} is not installed in {self.venv_path}")
        if self.version is not None:
            wanted = version_key(self.version)
            if len(installed) != 1 or version_key(installed[0]) != wanted:
                raise UpdateNeeded(
                    f"{self._name} {', '.join(installed)} is installed in {self.venv_path}, "
                    f"want {self.version}"
                )
        if self.check_package_is_module:
            module = self._name.replace("-", "_")
            self.assert_cmd([self.python, "-I", "-c", f"import {module}"], expand=False)

    def update(self) -> None:
        spec = self.package if self.version is None else f"{self.package}=={self.version}"
        command = [
            self.python, "-I", "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
        ]
        if not self.dependencies:
            command.append("--no-deps")
        if self._timeout is not None:
            command += ["--timeout", self._timeout]
        command += [str(a) for a in (*self.pip_args, *self.install_options)]
        command.append(spec)
        # N.B. index and find-links through pip's environment, not argv:
        # argv shows in the run's log and in ps, with any credentials.
        env = dict(self.env or {})
        if self._index:
            env["PIP_INDEX_URL"] = self._index
        if self._links:
            env["PIP_FIND_LINKS"] = " ".join(self._links)
        sources = [f"index {mask_url(self._index)}"] if self._index else []
        sources += [f"find-links {mask_url(link)}" for link in self._links]
        self.log(f"pip install {spec}" + (f" ({', '.join(sources)})" if sources else ""))
        try:
            out, _ = self.cmd(command, env=env, expand=False)
        except CommandError as exc:
            if exc.returncode is None:
                raise CommandError(
                    mask_url(exc.message),
                    command=exc.command,
                    returncode=None,
                    stdout=mask_url(exc.stdout),
                    stderr=mask_url(exc.stderr),
                    hint=exc.hint,
                ) from None
            raise DeployError(
                f"pip could not install {spec} into {self.venv_path}: "
                f"{tool_reason(exc.stderr or exc.stdout, 3)}",
                hint="check the name and version, and that this host reaches the package index "
                "(index=, find_links=): unlike the bundle's runtime, Package installs at deploy time",
            ) from None
        done = [line for line in str(out).splitlines() if line.startswith("Successfully")]
        if done:
            self.log(done[-1])


def _names_a_source(arg: str) -> bool:
    """Whether `arg` is (or abbreviates, or bundles) a pip option naming
    an index or find-links location."""
    if arg.startswith("--"):
        name = arg.partition("=")[0]
        return len(name) > 2 and any(option.startswith(name) for option in _SOURCE_OPTIONS)
    if arg.startswith("-"):
        for letter in arg[1:]:
            if "-" + letter in _SOURCE_SHORT_OPTIONS:
                return True
            if "-" + letter in _VALUE_SHORT_OPTIONS:
                return False
    return False
