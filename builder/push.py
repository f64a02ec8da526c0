"""``bundle push``: copy each host's bundle over SSH and apply it there.

For every host of the environment that has a bundle in ``bundles/ENV/``:
``scp`` the bundle into the remote user's home, then ``ssh`` to run
``executor apply BUNDLE --host H --json`` there and remove the copy. The
host verifies the bundle as it verifies any other; SSH is only a pipe.

OpenSSH does the connecting, with the user's configuration
(``~/.ssh/config``, agent, known hosts) and, when the deployment repository
has one, its ``ssh_config`` first. consign never resolves host names for
SSH itself: the environment's ``[resolver]`` overrides are for deployment
code, and SSH resolves names the ordinary way.

Hosts go in waves (the cross-host order of service discovery): a wave
starts when the one before has finished; a host whose provider failed is
not pushed and is reported so. Within a wave up to ``--jobs`` hosts run at
once. Every host gets exactly one result; a host that did not answer is
reported as unreachable, never left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.bundle import open_unverified
from executor.errors import ConsignError, ErrorList

from .environment import ENVIRONMENTS_DIR, PushSettings, load_environment
from .errors import BuildError
from .inspect import _model, read_host_bundles
from .runtime import Target, build_executor_pex, cache_directory, executor_key, host_target
from .signing import allowed_signers_line

SSH_CONFIG_FILE = "ssh_config"
DEFAULT_EXECUTOR_PEX = "/usr/local/lib/consign/executor.pex"
DEFAULT_ALLOWED_SIGNERS = "/etc/consign/allowed_signers"
DEFAULT_PEX_ROOT = "/var/lib/consign/pex"
# What ssh exits with when it could not connect (or lost the connection).
SSH_FAILED = 255


@dataclass(frozen=True)
class PushOptions:
    environment: str
    repository: Path = Path(".")
    # Where the bundles are: OUT/ENV/HOST.bundle [default: REPOSITORY/bundles].
    out: Path | None = None
    hosts: tuple[str, ...] = ()
    jobs: int = 8
    bootstrap: bool = False
    # The allowed signers --bootstrap installs [default: the bundles' signers].
    trust: Path | None = None
    # Seconds for one host (copy and apply) before it counts as failed.
    timeout: float | None = None
    connect_timeout: int = 10


@dataclass(frozen=True)
class HostPush:
    """One host's outcome: ok, failed, refused, locked, unreachable or skipped."""

    host: str
    status: str
    wave: int
    changed: tuple[str, ...] = ()
    duration_s: float = 0.0
    message: str = ""
    bootstrapped: tuple[str, ...] = ()
    generation: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "status": self.status,
            "wave": self.wave,
            "changed": list(self.changed),
            "duration_s": round(self.duration_s, 3),
            "message": self.message,
            "bootstrapped": list(self.bootstrapped),
            "generation": self.generation,
        }


@dataclass(frozen=True)
class PushResult:
    environment: str
    hosts: tuple[HostPush, ...]
    waves: tuple[tuple[str, ...], ...]
    duration_s: float

    @property
    def failed(self) -> tuple[HostPush, ...]:
        return tuple(h for h in self.hosts if not h.ok)

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "hosts": [h.to_json() for h in self.hosts],
            "waves": [list(w) for w in self.waves],
            "failed": [h.host for h in self.failed],
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True)
class _Target:
    """What pushing to one host needs."""

    host: str
    destination: str
    bundle: Path
    digest: str
    runtime_target: Target
    push: PushSettings
    after: frozenset[str]

    @property
    def executor_pex(self) -> str:
        return self.push.executor_pex or DEFAULT_EXECUTOR_PEX

    @property
    def allowed_signers(self) -> str:
        return self.push.allowed_signers or DEFAULT_ALLOWED_SIGNERS

    @property
    def executor(self) -> str:
        if self.push.executor:
            return self.push.executor
        return f"PEX_ROOT={DEFAULT_PEX_ROOT} python3 {shlex.quote(self.executor_pex)}"


@dataclass
class _Ssh:
    """ssh and scp with the options every call shares."""

    config: Path | None
    connect_timeout: int
    # One connection per host for all its commands (OpenSSH multiplexing).
    control_directory: Path

    def options(self, destination: str) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        options += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        # Per destination: hosts that ssh_config sends to one server must not
        # share (and close) one another's connection.
        socket = hashlib.sha256(destination.encode()).hexdigest()[:16]
        options += ["-o", "ControlMaster=auto", "-o", "ControlPersist=30"]
        options += ["-o", f"ControlPath={self.control_directory}/{socket}"]
        return (["-F", str(self.config)] if self.config else []) + options

    def close(self, destination: str) -> None:
        """End the host's shared connection (it would end by itself soon)."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                ["ssh", *self.options(destination), "-O", "exit", destination],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )

    def run(self, command: list[str], deadline: float | None) -> subprocess.CompletedProcess[str]:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        return subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=left,
            check=False,
        )

    def ssh(self, destination: str, remote: str, deadline: float | None) -> subprocess.CompletedProcess[str]:
        return self.run(["ssh", *self.options(destination), "--", destination, remote], deadline)

    def scp(self, source: Path, destination: str, remote: str, deadline: float | None) -> subprocess.CompletedProcess[str]:
        host = f"[{destination}]" if ":" in destination else destination
        return self.run(
            ["scp", "-q", *self.options(destination), str(source), f"{host}:{remote}"], deadline
        )


class _Unreachable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _tail(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _checked(completed: subprocess.CompletedProcess[str], what: str) -> None:
    """Raise _Unreachable when ssh could not connect, ConsignError when the
    remote command failed."""
    if completed.returncode == SSH_FAILED:
        raise _Unreachable(f"{what}: {_tail(completed.stderr) or 'ssh exited 255'}")
    if completed.returncode != 0:
        raise ConsignError(
            f"{what} failed (exit {completed.returncode}): {_tail(completed.stderr or completed.stdout)}"
        )


def _targets(options: PushOptions) -> tuple[list[_Target], list[ConsignError]]:
    repository = options.repository.resolve()
    if not (repository / ENVIRONMENTS_DIR).is_dir():
        raise BuildError(
            f"{repository} is not a deployment repository: it has no {ENVIRONMENTS_DIR}/ directory",
            hint="run bundle push in the repository, or pass -C PATH",
        )
    config, errors = load_environment(repository, options.environment)
    if len(errors) == 1:
        raise errors[0]
    if errors or config is None:
        raise ErrorList(errors, f"{len(errors)} errors in the environment; nothing was pushed")
    directory = (options.out or repository / "bundles").resolve() / options.environment
    known = {h.name: h for h in config.hosts}
    for name in options.hosts:
        if name not in known:
            raise BuildError(
                f"--host {name!r} is not a host of environment {options.environment!r}",
                hint=f"its hosts: {', '.join(known)}",
            )
    for name in options.hosts:
        if known[name].ignored:
            raise BuildError(
                f"--host {name!r} is ignored in environment {options.environment!r} (ignore = true)",
                hint="remove 'ignore' from its section to deploy it",
            )
    chosen = [h for h in config.hosts if not h.ignored and (not options.hosts or h.name in options.hosts)]
    by_name = {host.name: host for host in chosen}
    readers, problems = read_host_bundles(
        directory, list(by_name), options.environment, check_blobs=False
    )
    targets: list[_Target] = []
    for name, bundle in readers:
        host = by_name[name]
        try:
            # Only the model here: every blob is the host's to check.
            model = _model(bundle)
        except ConsignError as exc:
            problems.append(exc)
            continue
        manifest = bundle.manifest
        after = frozenset(
            entry.split("/", 1)[0]
            for root in model["roots"]
            for entry in root["after"]
            if entry.split("/", 1)[0] != name
        )
        targets.append(
            _Target(
                host=name,
                destination=manifest.fqdn,
                bundle=Path(bundle.path),
                digest=bundle.digest,
                runtime_target=host_target(
                    repository, options.environment, name, host.python or manifest.target.python
                ),
                push=host.push,
                after=after,
            )
        )
    return targets, problems


def _waves(targets: Sequence[_Target]) -> list[list[_Target]]:
    """Hosts in waves: each after the hosts it depends on (among those pushed)."""
    names = {t.host for t in targets}
    pending = list(targets)
    done: set[str] = set()
    waves: list[list[_Target]] = []
    while pending:
        wave = [t for t in pending if (t.after & names) <= done]
        if not wave:
            # Hosts that depend on each other: no order satisfies both.
            wave = list(pending)
        waves.append(wave)
        done |= {t.host for t in wave}
        pending = [t for t in pending if t.host not in done]
    return waves


def _ssh_config(repository: Path, scratch: Path) -> Path | None:
    """The repository's ssh_config first, then the user's and the system's."""
    own = repository / SSH_CONFIG_FILE
    if not own.is_file():
        return None
    lines = [f"Include {shlex.quote(str(own.resolve()))}"]
    for other in (Path.home() / ".ssh" / "config", Path("/etc/ssh/ssh_config")):
        if other.is_file():
            lines.append(f"Include {shlex.quote(str(other))}")
    path = scratch / "ssh_config"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _signers_file(targets: Sequence[_Target], options: PushOptions, scratch: Path) -> Path:
    """The allowed signers --bootstrap installs: --trust, else a line per key
    that signed the bundles."""
    if options.trust is not None:
        if not options.trust.is_file():
            raise BuildError(f"the trust file {options.trust} does not exist")
        return options.trust
    lines: list[str] = []
    for target in targets:
        for signature in open_unverified(str(target.bundle)).envelope.signatures:
            line = allowed_signers_line(signature.key)
            if line not in lines:
                lines.append(line)
    path = scratch / "allowed_signers"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


class _Bootstrap:
    """executor.pex per host target (the host's platform file or Python),
    built once, before any host is contacted, and cached by its inputs."""

    def __init__(self, signers: Path, targets: Sequence[_Target]) -> None:
        self.signers = signers
        self.built: dict[str, Path] = {}
        cache = cache_directory(None)
        for target in targets:
            key = target.runtime_target.key
            if key not in self.built:
                out = cache / "executors" / f"{executor_key(target.runtime_target)}.pex"
                if not out.is_file():
                    build_executor_pex(out, target.runtime_target, cache)
                self.built[key] = out

    def executor_pex(self, target: Target) -> Path:
        return self.built[target.key]


def _push_host(
    target: _Target, wave: int, ssh: _Ssh, bootstrap: _Bootstrap | None, timeout: float | None
) -> HostPush:
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout

    def result(status: str, message: str = "", **kw: Any) -> HostPush:
        return HostPush(
            target.host, status, wave, duration_s=time.monotonic() - started, message=message, **kw
        )

    installed: list[str] = []
    # A name of this push's own: a re-run (after a timeout, say) never
    # overwrites or removes the copy an earlier, still running apply reads.
    remote = f".consign-push-{target.host}-{target.digest[:16]}-{secrets.token_hex(4)}.bundle"
    try:
        # Connect first: a host that does not answer is unreachable, whatever
        # scp would say about it.
        _checked(ssh.ssh(target.destination, "true", deadline), "connecting")
        if bootstrap is not None:
            installed = _bootstrap(target, ssh, bootstrap, deadline)
        _checked(ssh.scp(target.bundle, target.destination, remote, deadline), "copying the bundle")
        trust = (
            f" --trust {shlex.quote(target.push.allowed_signers)}"
            if target.push.allowed_signers
            else ""
        )
        command = (
            f"{target.executor} apply {shlex.quote(remote)} --host {shlex.quote(target.host)}"
            f" --json{trust}; status=$?; rm -f {shlex.quote(remote)}; exit $status"
        )
        completed = ssh.ssh(target.destination, command, deadline)
    except _Unreachable as exc:
        return result("unreachable", exc.message, bootstrapped=tuple(installed))
    except subprocess.TimeoutExpired:
        return result("failed", f"did not finish within {timeout:g} s", bootstrapped=tuple(installed))
    except ConsignError as exc:
        return result("failed", exc.message, bootstrapped=tuple(installed))
    finally:
        ssh.close(target.destination)
    report = _report(completed.stdout)
    if report is None:
        if completed.returncode == SSH_FAILED:
            return result("unreachable", _tail(completed.stderr) or "ssh exited 255")
        return result(
            "failed",
            f"the executor gave no report (exit {completed.returncode}): "
            f"{_tail(completed.stderr or completed.stdout) or '(no output)'}",
            bootstrapped=tuple(installed),
        )
    error = report.get("error") or {}
    message = ""
    if isinstance(error, dict) and error.get("message"):
        message = str(error["message"])
        if error.get("hint"):
            message += f" (hint: {error['hint']})"
    status = str(report.get("status") or "failed")
    if status not in ("ok", "failed", "refused", "locked"):
        status = "failed"
    if status == "ok" and completed.returncode != 0:
        status = "failed"
        message = f"the executor exited {completed.returncode}"
    return result(
        status,
        message,
        changed=tuple(str(c) for c in report.get("changed") or ()),
        bootstrapped=tuple(installed),
        generation=report.get("generation") if isinstance(report.get("generation"), int) else None,
    )


def _report(stdout: str) -> dict[str, Any] | None:
    """The executor's --json object: the last line of stdout that is one."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return None


def _bootstrap(target: _Target, ssh: _Ssh, bootstrap: _Bootstrap, deadline: float | None) -> list[str]:
    """Copy executor.pex and the allowed signers where the host lacks them."""
    pex, signers = target.executor_pex, target.allowed_signers
    check = ssh.ssh(
        target.destination,
        f"test -f {shlex.quote(pex)} && echo pex; test -f {shlex.quote(signers)} && echo signers; true",
        deadline,
    )
    _checked(check, "checking for the executor")
    present = set(check.stdout.split())
    missing: list[tuple[str, Path | None, str]] = []
    if "pex" not in present:
        missing.append((pex, None, "0755"))
    if "signers" not in present:
        missing.append((signers, bootstrap.signers, "0644"))
    if not missing:
        return []
    installed = []
    for path, source, mode in missing:
        local = source if source is not None else bootstrap.executor_pex(target.runtime_target)
        staged = f"{path}.consign-push"
        directory = os.path.dirname(path)
        _checked(
            ssh.ssh(target.destination, f"mkdir -p -m 0755 {shlex.quote(directory)}", deadline),
            f"making {directory}",
        )
        _checked(ssh.scp(local, target.destination, staged, deadline), f"copying {path}")
        _checked(
            ssh.ssh(
                target.destination,
                f"chmod {mode} {shlex.quote(staged)} && mv -f {shlex.quote(staged)} {shlex.quote(path)}",
                deadline,
            ),
            f"installing {path}",
        )
        installed.append(path)
    return installed


def push(options: PushOptions, report: Callable[[HostPush], None] | None = None) -> PushResult:
    """Push every selected host's bundle, wave by wave; see the module doc.

    Raises a ConsignError before connecting anywhere when the
    environment or a bundle is missing; host failures are results.
    """
    started = time.monotonic()
    if options.jobs < 1:
        raise BuildError(f"--jobs must be at least 1, got {options.jobs}")
    for tool in ("ssh", "scp"):
        if shutil.which(tool) is None:
            raise BuildError(
                f"{tool} is not installed here: bundle push runs OpenSSH's ssh and scp",
                hint="install the OpenSSH client (Debian: apt-get install openssh-client)",
            )
    targets, problems = _targets(options)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ErrorList(problems, f"bundle push found {len(problems)} problems; nothing was pushed")
    say = report or (lambda _result: None)
    results: dict[str, HostPush] = {}
    waves = _waves(targets)
    with tempfile.TemporaryDirectory(prefix="consign-push-") as scratch:
        ssh = _Ssh(
            _ssh_config(options.repository.resolve(), Path(scratch)),
            options.connect_timeout,
            Path(scratch),
        )
        bootstrap = (
            _Bootstrap(_signers_file(targets, options, Path(scratch)), targets)
            if options.bootstrap
            else None
        )
        failed: set[str] = set()
        with ThreadPoolExecutor(max_workers=options.jobs) as pool:
            for number, wave in enumerate(waves, 1):
                futures: dict[Future[HostPush], _Target] = {}
                for target in wave:
                    blocked = sorted(target.after & failed)
                    if blocked:
                        skipped = HostPush(
                            target.host,
                            "skipped",
                            number,
                            message=f"not pushed: it applies after {', '.join(blocked)}, which did not succeed",
                        )
                        results[target.host] = skipped
                        failed.add(target.host)
                        say(skipped)
                        continue
                    futures[pool.submit(_push_host, target, number, ssh, bootstrap, options.timeout)] = target
                for future in as_completed(futures):
                    outcome = _outcome(future, futures[future], number)
                    results[outcome.host] = outcome
                    if not outcome.ok:
                        failed.add(outcome.host)
                    say(outcome)
    ordered = tuple(results[t.host] for t in targets)
    return PushResult(
        options.environment,
        ordered,
        tuple(tuple(t.host for t in wave) for wave in waves),
        time.monotonic() - started,
    )


def _outcome(future: Future[HostPush], target: _Target, wave: int) -> HostPush:
    """The host's result; a failure nobody foresaw is that host's failure,
    never the end of the push (every host gets its line)."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - reported as the host's result
        return HostPush(
            target.host, "failed", wave, message=f"consign failed: {type(exc).__name__}: {exc}"
        )
