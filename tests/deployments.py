"""Writing small deployment repositories for tests."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builder.build import BuildOptions, BuildResult, build
from executor.apply import ApplyOptions
from executor.bundle import VerifiedBundle, read_envelope, verify_envelope
from executor.model import HostModel, decode_model
from executor.verify import load_trust
from tests.keys import signing_key


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"))


def deployment(
    root: Path,
    *,
    components: Mapping[str, str] = {},
    environments: Mapping[str, str] = {},
    files: Mapping[str, str | bytes] = {},
) -> Path:
    """A deployment repository: components/<dir>/component.py, environments/<env>/environment.cfg."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "environments").mkdir(exist_ok=True)
    write_files(root, {f"components/{name}/component.py": code for name, code in components.items()})
    write_files(
        root, {f"environments/{name}/environment.cfg": text for name, text in environments.items()}
    )
    write_files(root, files)
    return root


def git_commit(root: Path, message: str = "deployment", when: int = 1_700_000_000) -> None:
    """Commit everything in `root` (a new git repository if needed) at a fixed time."""
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_AUTHOR_DATE": f"@{when} +0000",
        "GIT_COMMITTER_DATE": f"@{when} +0000",
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
    }
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(root), "commit", "-q", "--allow-empty", "-m", message], check=True, env=env
    )


def build_options(environment: str, repository: Path, **kw: Any) -> BuildOptions:
    """Options for a test build: signed with the test key; a tree outside git
    or with changes builds as --dirty unless the test says otherwise."""
    kw.setdefault("dirty", True)
    kw.setdefault("sign_keys", (signing_key().private,))
    return BuildOptions(environment, repository=repository, **kw)


def build_bundles(environment: str, repository: Path, **kw: Any) -> BuildResult:
    return build(build_options(environment, repository, **kw))


def apply_options(bundle: Path, tmp_path: Path, host: str | None = "web1", **kw: Any) -> ApplyOptions:
    """Options for a test apply: target and state in tmp_path, the test key trusted."""
    kw.setdefault("target_directory", str(tmp_path / "target"))
    kw.setdefault("state_directory", str(tmp_path / "state"))
    kw.setdefault("trust_file", str(signing_key().trust))
    # The session's shared runtime environments (see conftest.py).
    kw.setdefault("runtime_directory", os.environ["CONSIGN_RUNTIME_DIR"])
    return ApplyOptions(bundle=str(bundle), host=host, **kw)


def verified(path: Path) -> VerifiedBundle:
    """A bundle checked with the test key, as a host would."""
    trust, _notes = load_trust(str(signing_key().trust))
    bundle = verify_envelope(read_envelope(str(path)), trust, int(time.time()))
    bundle.check_blobs()
    return bundle


def model_of(path: Path) -> HostModel:
    return decode_model(verified(path).read("model", 1 << 26))


# Two hosts: web1 requires the database address db1 provides; names pinned
# through [resolver] overrides (inspect, diff and discovery tests).
DISCOVERY_DATABASE = """
    from batou.component import Component
    from batou.utils import Address

    class Database(Component):
        def configure(self):
            self.address = Address(self.host.fqdn, 5432)
            self.provide("database", self.address)
    """

DISCOVERY_WEB = """
    from batou.component import Component
    from batou.lib.file import File
    from batou.utils import Address

    class Web(Component):
        def configure(self):
            self.database = self.require_one("database")
            self.queue = Address("queue.example.com", 5672)
            self.cache = Address("cache.example.com", 11211)
            self += File("web.conf", content="{{component.database.connect}}\\n")
    """

DISCOVERY_ENVIRONMENT = """
    [environment]
    host_domain = example.com
    require_v6 = optional

    [hosts]
    db1 = database
    web1 = web

    [resolver]
    db1.example.com = 192.0.2.1
    cache.example.com = 192.0.2.2
    queue.example.com = 192.0.2.3
    """
