"""What components see of their host and environment while configuring.

These are built from the model's records (see :mod:`executor.model`) both in
the builder, for every host, and on the host itself, for its own roots.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from types import MappingProxyType

from .model import EnvironmentRecord, FamilyRequirement, HostRecord, VfsMode, VfsRules
from .resources import NoResources, Resources
from .secrets import SecretFiles


class Host:
    """The host a component is configured for.

    ``host.name`` is the name the environment lists, ``host.fqdn`` adds the
    environment's ``host_domain``, ``host.data`` holds the ``data-*`` keys.
    """

    def __init__(self, record: HostRecord, service_user: str | None) -> None:
        self.name = record.name
        self.fqdn = record.fqdn
        self.platform = record.platform
        self.data: Mapping[str, str] = MappingProxyType(dict(record.data))
        self.service_user = service_user

    def __repr__(self) -> str:
        return f"<Host {self.name}>"


class Environment:
    """The environment a component is configured in."""

    def __init__(
        self,
        record: EnvironmentRecord,
        *,
        target_directory: str | None = None,
        base_dir: str | None = None,
    ) -> None:
        self.name = record.name
        # The deployment repository (its snapshot, on a host).
        self.base_dir = base_dir
        self.service_user = record.service_user
        self.host_domain = record.host_domain
        self.platform = record.platform
        self.timeout = record.timeout
        self.jobs = record.jobs
        self.require_v4: FamilyRequirement = record.require_v4
        self.require_v6: FamilyRequirement = record.require_v6
        self.vfs = record.vfs
        # `~` is the home of the user who runs the build or the apply.
        self.configured_target = posixpath.normpath(os.path.expanduser(record.target_directory))
        target = target_directory if target_directory is not None else record.target_directory
        self.target_directory = posixpath.normpath(os.path.expanduser(target))
        self.workdir_base = posixpath.join(self.target_directory, "work")
        # provide / require: the builder's registry, or the model's record.
        self.resources: Resources = NoResources()
        # The environment's secret-*.age files (see executor.secrets).
        self.secret_files: SecretFiles = SecretFiles({})

    def map(self, path: str) -> str:
        """Rewrite an absolute path: relocate it with the target, then by VFS.

        A path below the environment's target_directory moves along when the
        executor deploys elsewhere (``--target-dir``).
        """
        if self.configured_target != self.target_directory and _under(path, self.configured_target):
            rest = path[len(self.configured_target) :].lstrip("/")
            path = posixpath.join(self.target_directory, rest) if rest else self.target_directory
        return map_path(path, self.vfs, self.target_directory)

    def __repr__(self) -> str:
        return f"<Environment {self.name}>"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def map_path(path: str, vfs: VfsRules, target_directory: str) -> str:
    """Apply VFS rules to an absolute path; relative paths pass unchanged.

    Developer: everything outside the target directory lands below
    ``<target>/work/_``. Map: the longest matching prefix is replaced.
    Both leave an already mapped path alone, so mapping twice is harmless.
    """
    if not path.startswith("/"):
        return path
    path = posixpath.normpath(path)
    if vfs.mode is VfsMode.DEVELOPER:
        if _under(path, target_directory):
            return path
        return posixpath.join(target_directory, "work", "_", path.lstrip("/"))
    if vfs.mode is VfsMode.MAP:
        # Mapping is idempotent: a path already below a replacement (a
        # workdir, or another component's mapped path) stays where it is.
        if any(_under(path, replacement) for _prefix, replacement in vfs.rules):
            return path
        best: tuple[str, str] | None = None
        for prefix, replacement in vfs.rules:
            if _under(path, prefix) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, replacement)
        if best is not None:
            rest = path[len(best[0]) :].lstrip("/")
            return posixpath.join(best[1], rest) if rest else best[1]
    return path
