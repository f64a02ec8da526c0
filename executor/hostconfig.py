"""The host's own settings: ``/etc/consign/executor.toml``.

``executor init`` writes it; every executor command reads it for the
values its options do not give (an option or its environment variable
wins). Example::

    # Written by 'executor init'.
    host = "web1"
    trust = "/etc/consign/allowed_signers"
    state_dir = "/var/lib/consign"
    metrics = "/var/lib/prometheus/node-exporter/consign.prom"
    identity = "/etc/ssh/ssh_host_ed25519_key"   # decrypts the bundles' secrets

``CONSIGN_CONFIG`` or ``--config`` name another file. The default file may
be missing (every setting then has its default); a file named explicitly
must exist.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields

from .errors import HostConfigError, suggest
from .fs import write_atomic

DEFAULT_CONFIG_FILE = "/etc/consign/executor.toml"
MAX_CONFIG_BYTES = 1 << 16


@dataclass(frozen=True)
class HostConfig:
    """Settings of this host; None: not set, the command's default applies."""

    host: str | None = None
    environment: str | None = None
    trust: str | None = None
    revoked: str | None = None
    state_dir: str | None = None
    target_dir: str | None = None
    runtime_dir: str | None = None
    metrics: str | None = None
    # Where each run's status JSON is PUT (REPORT/<host>.json); off when unset.
    report: str | None = None
    # The key(s) that decrypt bundles' secrets, comma-separated [default: the SSH host key].
    identity: str | None = None
    path: str | None = None

    def to_toml(self) -> str:
        lines = ["# consign executor settings; written by 'executor init'."]
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name != "path" and value is not None:
                lines.append(f"{item.name} = {_quoted(value)}")
        return "\n".join(lines) + "\n"


_KEYS = tuple(f.name for f in fields(HostConfig) if f.name != "path")
# Settings that name files or directories: absolute paths only.
_PATHS = ("trust", "revoked", "state_dir", "target_dir", "runtime_dir", "metrics")


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def config_path(explicit: str | None) -> tuple[str, bool]:
    """The config file to read and whether it must exist."""
    if explicit:
        return explicit, True
    from_environment = os.environ.get("CONSIGN_CONFIG")
    if from_environment:
        return from_environment, True
    return DEFAULT_CONFIG_FILE, False


def load_host_config(explicit: str | None = None) -> HostConfig:
    path, required = config_path(explicit)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if required:
            raise HostConfigError(
                f"the executor config {path} does not exist",
                hint="write it with 'executor init', or name another with --config",
            ) from None
        return HostConfig()
    except OSError as exc:
        raise HostConfigError(f"cannot read the executor config {path}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise HostConfigError(f"the executor config {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise HostConfigError(
            f"the executor config {path} is not valid TOML: {exc}",
            hint="write it again with 'executor init --force', or fix the line named",
        ) from None
    values: dict[str, str] = {}
    for key, value in document.items():
        if key not in _KEYS:
            raise HostConfigError(
                f"the executor config {path} has an unknown setting {key!r}",
                hint=suggest(key, _KEYS),
            )
        if not isinstance(value, str):
            raise HostConfigError(
                f"the executor config {path}: {key} must be a string, got {type(value).__name__}",
                hint=f'write it as {key} = "..."',
            )
        if not value:
            raise HostConfigError(
                f"the executor config {path}: {key} is empty",
                hint=f"give {key} a value, or remove the line for the default",
            )
        if key == "report" and not value.startswith(("http://", "https://")):
            raise HostConfigError(
                f"the executor config {path}: report must be an http(s) URL, got {value!r}",
                hint='write e.g. report = "https://deploy.example.com/status/prod"',
            )
        if key == "identity" and not all(os.path.isabs(p.strip()) for p in value.split(",")):
            raise HostConfigError(
                f"the executor config {path}: identity must be absolute paths, got {value!r}",
                hint='write e.g. identity = "/etc/ssh/ssh_host_ed25519_key"',
            )
        if key in _PATHS and not os.path.isabs(value):
            raise HostConfigError(
                f"the executor config {path}: {key} must be an absolute path, got {value!r}",
                hint="the executor runs from any directory; give the full path",
            )
        values[key] = value
    return HostConfig(**values, path=path)


def write_host_config(config: HostConfig, path: str, *, force: bool = False) -> None:
    """Write `config` to `path` (0644), refusing to replace one unless `force`."""
    if os.path.lexists(path) and not force:
        raise HostConfigError(
            f"the executor config {path} exists",
            hint=f"pass --force to replace it (read it first: cat {path})",
        )
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        write_atomic(path, config.to_toml().encode(), mode=0o644, follow_symlinks=False)
    except OSError as exc:
        raise HostConfigError(f"cannot write the executor config {path}: {exc.strerror}") from None
