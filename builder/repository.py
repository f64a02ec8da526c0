"""The deployment repository the builder reads.

The repository root holds ``components/``, ``environments/`` and
``requirements.txt``. Its snapshot is what git tracks (plus, for a --dirty
build of a changed tree, untracked files git does not ignore); outside git,
every file except build output and caches.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from executor.manifest import MAX_SERIAL
from executor.snapshot import SnapshotFile

from .errors import RepositoryError

# Outside git, these never belong to a snapshot.
_SKIP_DIRS = frozenset(
    {".git", ".hg", "__pycache__", "bundles", ".consign", ".mypy_cache", ".pytest_cache", ".venv"}
)
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Status:
    commit: str | None
    commit_time: int | None
    # Paths that differ from the commit (or why there is no commit).
    changes: tuple[str, ...]

    @property
    def dirty(self) -> bool:
        return bool(self.changes)


@dataclass(frozen=True)
class Repository:
    root: Path

    @classmethod
    def open(cls, path: Path) -> Repository:
        root = path.resolve()
        if not root.is_dir():
            raise RepositoryError(
                f"{path} is not a directory",
                hint="pass the deployment repository with -C PATH",
            )
        if not (root / "environments").is_dir():
            raise RepositoryError(
                f"{root} is not a deployment repository: it has no environments/ directory",
                hint="run bundle inside your deployment repository or pass -C PATH",
            )
        return cls(root)

    def _git(self, *args: str) -> str | None:
        try:
            completed = subprocess.run(
                ["git", "-C", str(self.root), *args],
                capture_output=True,
                check=False,
            )
        except FileNotFoundError:
            return None
        if completed.returncode != 0:
            return None
        return completed.stdout.decode("utf-8", errors="surrogateescape")

    def is_git(self) -> bool:
        return self._git("rev-parse", "--is-inside-work-tree") == "true\n"

    def files(self, exclude: Path | None = None) -> list[SnapshotFile]:
        """The files of the snapshot, sorted by their path in the tree."""
        names = self._git_files() if self.is_git() else self._walk()
        excluded = None
        if exclude is not None:
            try:
                excluded = exclude.resolve().relative_to(self.root).as_posix()
            except ValueError:
                excluded = None
        result = []
        escaping = []
        for name in sorted(set(names)):
            if excluded and (name == excluded or name.startswith(excluded + "/")):
                continue
            source = self.root / name
            # Files deleted from the working tree but still in git's index.
            if not os.path.lexists(source):
                continue
            if source.is_symlink() and not self._inside(source):
                escaping.append(f"{name} -> {os.readlink(source)}")
            result.append(SnapshotFile(name, str(source)))
        if escaping:
            raise RepositoryError(
                "symlinks point outside the repository, and hosts refuse such snapshots: "
                + ", ".join(escaping),
                hint="replace them by relative links inside the repository, or by the files",
            )
        return result

    def _inside(self, link: Path) -> bool:
        target = os.readlink(link)
        if target.startswith("/"):
            return False
        resolved = os.path.normpath(os.path.join(os.path.dirname(link), target))
        return resolved == str(self.root) or resolved.startswith(str(self.root) + os.sep)

    def _git_files(self) -> list[str]:
        output = self._git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
        if output is None:
            raise RepositoryError(f"git ls-files failed in {self.root}")
        return [name for name in output.split("\0") if name]

    def _walk(self) -> list[str]:
        names = []
        for current, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            relative = Path(current).relative_to(self.root)
            # os.walk lists links to directories with the directories and
            # does not follow them: the snapshot keeps them as links.
            linked = [d for d in dirs if os.path.islink(os.path.join(current, d))]
            dirs[:] = [d for d in dirs if d not in linked]
            for name in [*files, *linked]:
                if name.endswith(_SKIP_SUFFIXES):
                    continue
                names.append((relative / name).as_posix())
        return names

    def status(self, exclude: Path | None = None) -> Status:
        """The commit the working tree is at, and whether it differs from it."""
        if not self.is_git():
            return Status(commit=None, commit_time=None, changes=("(not a git repository)",))
        head = self._git("rev-parse", "--verify", "-q", "HEAD")
        if head is None:
            return Status(commit=None, commit_time=None, changes=("(no commit yet)",))
        pathspec = ["."]
        if exclude is not None:
            try:
                pathspec.append(f":(exclude){exclude.resolve().relative_to(self.root).as_posix()}")
            except ValueError:
                pass
        output = self._git("status", "--porcelain", "-z", "--untracked-files=normal", "--", *pathspec)
        if output is None:
            raise RepositoryError(f"git status failed in {self.root}")
        # Entries are "XY path", NUL-terminated; a rename adds the old path.
        changes = []
        entries = iter(output.split("\0"))
        for entry in entries:
            if not entry:
                continue
            changes.append(entry[3:])
            if entry[0] in "RC":
                next(entries, None)
        when = self._git("log", "-1", "--format=%ct")
        return Status(
            commit=head.strip(),
            commit_time=int(when.strip()) if when and when.strip().isdigit() else None,
            changes=tuple(sorted(changes)),
        )



def last_change(repository: Repository, excluded: tuple[str, ...]) -> int | None:
    """The commit time of the last commit that changed anything outside
    `excluded` (paths relative to the root), or None outside git."""
    if not repository.is_git():
        return None
    pathspec = [".", *(f":(exclude){path}" for path in excluded)]
    when = repository._git("log", "-1", "--format=%ct", "--", *pathspec)
    return int(when.strip()) if when and when.strip().isdigit() else None


def source_date_epoch() -> int | None:
    """SOURCE_DATE_EPOCH, the reproducible-builds convention, when set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return None
    if not epoch.isdigit() or int(epoch) > MAX_SERIAL:
        raise RepositoryError(
            f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds since 1970",
            hint="unset it, or set it to e.g. $(git log -1 --format=%ct)",
        )
    return int(epoch)
