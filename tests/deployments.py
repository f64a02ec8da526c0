"""Writing small deployment repositories for tests."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path


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
