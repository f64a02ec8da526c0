"""Git checkouts (``batou.lib.git``).

``Clone`` keeps a checkout of one revision, branch or tag of a repository,
using the ``git`` command. It never overwrites local changes unless told to
(``clobber=True``), and credentials in URLs never appear in a message, a log
line, a command line or the clone's ``.git/config``: the clone's origin is
the URL without them, and git gets them through its environment each time
it runs.

Example::

    from batou.component import Component
    from batou.lib.git import Clone

    class App(Component):
        def configure(self):
            self += Clone("https://git.example.com/app.git", target="code", branch="main")
            self += Clone("https://git.example.com/lib.git", target="lib", tag="v1.4.0")
"""

from __future__ import annotations

import base64
import os
import posixpath
import re
import shutil

from executor.component import Component, UpdateNeeded
from executor.errors import CommandError, ConfigurationError, DeployError
from executor.fs import make_work_directory, write_atomic
from executor.lib._shared import (
    CREDENTIALS_HINT,
    UNSEPARABLE,
    split_credentials,
    swap_tree,
    tool_reason,
)
from executor.redact import mask_url

__all__ = ["Clone"]

# No prompts (stdin is /dev/null anyway; a credential helper asking on a
# terminal would hang the run), messages in one language, as we show them,
# and no optional locks: without them 'git status' (verify) refreshes and
# rewrites .git/index, and verify must change nothing.
GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
# Local changes listed in a refusal.
MAX_LISTED = 10

_REVISION = re.compile(r"[0-9a-fA-F]{4,64}")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_MISSING_REF = ("couldn't find remote ref", "not our ref", "no such remote ref")


def _quote_config(value: str) -> str:
    """`value` as a double-quoted git config value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_ref_name(kind: str, value: str) -> None:
    if (
        not value
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or _BAD_REF.search(value)
    ):
        raise ConfigurationError(
            f"Clone {kind}= must be a git {kind} name, got {value!r}",
            hint=f"write the {kind} as git shows it (e.g. {'main' if kind == 'branch' else 'v1.0'}); "
            "no spaces, no leading '-', none of ~^:?*[\\",
        )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    if len(items) > MAX_LISTED:
        shown += f" (and {len(items) - MAX_LISTED} more)"
    return shown


def _without_credentials(url: str) -> str:
    """`url` without user name and password (as it is if unparseable)."""
    try:
        return split_credentials(url)[0]
    except ValueError:
        return url


class Clone(Component):
    """A git checkout of ``url`` at one ``revision``, ``branch`` or ``tag``.

    Exactly one of them is given: ``revision`` pins a commit id (hex, full
    or abbreviated), ``branch`` follows the remote branch (each deploy moves
    to its newest commit), ``tag`` takes the tagged commit. ``target`` (the
    component's workdir by default, as in batou) is relative to the
    workdir. Switching between revisions, branches and tags works in place.

    Local changes (modified tracked files, untracked files the new commit
    would overwrite) are never overwritten: the deploy fails and lists
    them. With ``clobber=True`` the checkout is kept exactly at the commit:
    local changes are discarded and untracked files (ignored ones too)
    removed. Without it, local changes at the wanted commit are left alone
    (and noted in the run's log). ``vcs_update=False`` only clones once and
    never updates.

    Credentials go in http(s) URLs (``https://user:password@host/...``, or
    ``https://TOKEN@host/...``) and are sent as HTTP basic auth. They are
    kept out of the clone: its origin is the URL without them, and git gets
    them through its environment (an ``http.extraHeader``) each time it
    runs, so they show in no command line and no ``.git/config``. ssh URLs
    authenticate with keys: a user name is fine there, a password is not.

    Example::

        self += Clone("https://git.example.com/app.git", target="code", branch="main")
        self += Clone("/srv/mirror/lib.git", target="lib", revision="3f2c9a1e", clobber=True)
    """

    namevar = "url"
    url: str
    target = "."
    revision: str | None = None
    branch: str | None = None
    tag: str | None = None
    clobber = False
    vcs_update = True

    def configure(self) -> None:
        self.url = str(self.url)
        if not self.url or any(c in self.url for c in "\r\n\0"):
            raise ConfigurationError(
                f"Clone needs a repository URL or path, got {mask_url(self.url)!r}",
                hint="give the URL as git clone takes it, on one line",
            )
        self._configure_credentials()
        given = [k for k in ("revision", "branch", "tag") if getattr(self, k) not in (None, "")]
        if len(given) != 1:
            got = " and ".join(f"{k}=" for k in given) if given else "none"
            raise ConfigurationError(
                f"Clone needs exactly one of revision=, branch= or tag=, got {got}",
                hint="pin a commit with revision=, follow a branch with branch=, "
                "or take a release with tag=",
            )
        if self.revision:
            self.revision = str(self.revision)
            if not _REVISION.fullmatch(self.revision):
                raise ConfigurationError(
                    f"Clone revision= must be a commit id (4 to 64 hex digits), "
                    f"got {self.revision!r}",
                    hint="use branch= or tag= for names",
                )
            self.revision = self.revision.lower()
        if self.branch:
            self.branch = str(self.branch)
            _check_ref_name("branch", self.branch)
        if self.tag:
            self.tag = str(self.tag)
            _check_ref_name("tag", self.tag)
        self.target = self.map(self.target)

    def _configure_credentials(self) -> None:
        """The origin to keep in the clone (no credentials) and the
        environment that gives git the credentials."""
        self._origin_url = self.url
        self._env = dict(GIT_ENV)
        if "://" not in self.url:
            return  # a path, or scp-like user@host:path (ssh)
        scheme = self.url.partition("://")[0].lower()
        try:
            bare, user, password = split_credentials(self.url)
            if user is None and mask_url(self.url) != self.url:
                # "https://user:12/cd@host/...": urllib reads host "user",
                # port 12; in a repository URL, an "@" after the host means
                # a password that needs percent-encoding.
                raise ValueError(UNSEPARABLE)
        except ValueError as exc:
            raise ConfigurationError(
                f"cannot parse the repository URL {mask_url(self.url)!r}: {exc}",
                hint=CREDENTIALS_HINT,
            ) from None
        if user is None:
            return
        if scheme in ("http", "https"):
            self._origin_url = bare
            # A lone user name is a token: sent with an empty password.
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
            self._env.update(
                GIT_CONFIG_COUNT="1",
                GIT_CONFIG_KEY_0="http.extraHeader",
                GIT_CONFIG_VALUE_0=f"Authorization: Basic {token}",
            )
        elif password is not None or mask_url(self.url) != self.url:
            raise ConfigurationError(
                f"Clone sends credentials over http(s) only, got {mask_url(self.url)!r}",
                hint="ssh authenticates with keys: drop the password (ssh://user@host/path), "
                "or clone over https://",
            )

    @property
    def _wanted(self) -> str:
        """What the checkout follows, for messages."""
        if self.revision:
            return f"revision {self.revision}"
        if self.branch:
            return f"branch {self.branch!r}"
        return f"tag {self.tag!r}"

    # -- running git ---------------------------------------------------------

    def _git(self, args: list[str], cwd: str | None = None) -> str:
        """Run git (in `cwd`, default the target); its stdout. Failures are
        CommandErrors with credentials masked."""
        command = ["git", "-C", cwd or self.target, *args]
        try:
            stdout, _ = self.cmd(command, env=self._env, expand=False, silent=True)
        except CommandError as exc:
            raise CommandError(
                mask_url(exc.message),
                command=mask_url(exc.command),
                returncode=exc.returncode,
                stdout=mask_url(exc.stdout),
                stderr=mask_url(exc.stderr),
                hint=exc.hint,
            ) from None
        return str(stdout)

    def _git_try(self, args: list[str], cwd: str | None = None) -> str | None:
        """Like _git; None when git exits non-zero (a timeout still raises)."""
        try:
            return self._git(args, cwd)
        except CommandError as exc:
            if exc.returncode is None:
                raise
            return None

    def _unreachable(self, exc: CommandError) -> DeployError:
        return DeployError(
            f"cannot reach the repository {mask_url(self.url)}: {tool_reason(exc.stderr, 2)}",
            hint="check the URL, the host's network and its credentials "
            "(git runs without prompting: use a key or a credential helper)",
        )

    def _missing(self, detail: str) -> DeployError:
        what = self._wanted
        hint = f"push it, or fix {what.split()[0]}="
        if self.revision and len(self.revision) < 40:
            hint += "; a commit on no branch needs its full 40-digit id"
        return DeployError(
            f"{what} does not exist in {mask_url(self.url)}" + (f": {detail}" if detail else ""),
            hint=hint,
        )

    # -- facts ---------------------------------------------------------------

    def _is_clone(self) -> bool:
        return os.path.lexists(posixpath.join(self.target, ".git"))

    def _origin(self) -> str | None:
        # N.B. the configured value, not 'git remote get-url': that applies
        # url.*.insteadOf rewrites and would never equal the URL given.
        value = self._git_try(["config", "--get", "remote.origin.url"])
        return None if value is None else value.rstrip("\n")

    def _head(self) -> str | None:
        value = self._git_try(["rev-parse", "-q", "--verify", "HEAD^{commit}"])
        return None if value is None else value.strip()

    def _local_commit(self, rev: str, cwd: str | None = None) -> str | None:
        value = self._git_try(["rev-parse", "-q", "--verify", f"{rev}^{{commit}}"], cwd)
        return None if value is None else value.strip()

    def _current_branch(self) -> str | None:
        value = self._git_try(["symbolic-ref", "-q", "HEAD"])
        if value is None:
            return None
        ref = value.strip()
        return ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else ref

    def _remote_commit(self) -> str | None:
        """The commit wanted, as the remote has it now (None: a revision not
        known locally, which only a fetch can resolve). Changes nothing."""
        if self.revision:
            if len(self.revision) in (40, 64):
                return self.revision
            return self._local_commit(self.revision)
        if self.branch:
            refs = [f"refs/heads/{self.branch}"]
        else:
            refs = [f"refs/tags/{self.tag}", f"refs/tags/{self.tag}^{{}}"]
        try:
            out = self._git(["ls-remote", "origin", *refs])
        except CommandError as exc:
            if exc.returncode is None:
                raise
            raise self._unreachable(exc) from None
        found = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            found[ref.strip()] = sha.strip()
        # An annotated tag's own object is not a commit: take the peeled one.
        for ref in reversed(refs):
            if ref in found:
                return found[ref]
        raise self._missing("")

    def _status(self, untracked: bool) -> list[str]:
        """Local changes as 'XY path' (git status' short codes)."""
        out = self._git(
            ["status", "--porcelain=v1", "-z", f"--untracked-files={'all' if untracked else 'no'}"]
        )
        entries = out.split("\0")
        changes: list[str] = []
        i = 0
        while i < len(entries):
            entry = entries[i]
            i += 1
            if len(entry) < 4:
                continue
            code, path = entry[:2], entry[3:]
            changes.append(f"{code.strip()} {path}")
            if code[0] in "RC":
                i += 1  # a rename's or copy's source follows
        return sorted(changes)

    def _untracked_in(self, commit: str) -> list[str]:
        """Untracked files that checking out `commit` would overwrite."""
        untracked = self._git(["ls-files", "--others", "--exclude-standard", "-z"])
        names = {name for name in untracked.split("\0") if name}
        if not names:
            return []
        tracked = self._git(["ls-tree", "-r", "--name-only", "-z", commit]).split("\0")
        return sorted(f"?? {name}" for name in names.intersection(tracked))

    def _refuse_local_changes(self, commit: str | None) -> None:
        """Fail when moving to `commit` would overwrite local changes."""
        changes = self._status(untracked=False)
        if commit is not None and self._local_commit(commit) is not None:
            changes += self._untracked_in(commit)
        if changes:
            raise DeployError(
                f"{self.target} has local changes that moving to {self._wanted} would "
                f"overwrite: {_listing(sorted(changes))}",
                hint="commit/stash them or set clobber=True",
            )

    def _check_target(self) -> None:
        """The target can take a new clone: absent, or an empty directory
        (anything in it is only replaced with clobber=True)."""
        if not os.path.lexists(self.target):
            return
        if not os.path.isdir(self.target):
            raise DeployError(
                f"{self.target} exists and is not a directory, cannot clone into it",
                hint="remove it, or choose another target=",
            )
        entries = sorted(os.listdir(self.target))
        if entries and not self.clobber:
            raise DeployError(
                f"{self.target} exists and is not a git clone; it holds {_listing(entries)}",
                hint="remove them, set clobber=True to replace them with the clone, "
                "or clone into a directory of its own (target=)",
            )

    # -- verify / update -----------------------------------------------------

    def verify(self) -> None:
        if not self._is_clone():
            self._check_target()
            raise UpdateNeeded(f"no clone at {self.target}")
        if not self.vcs_update:
            return
        origin = self._origin()
        if origin != self._origin_url:
            if origin is not None and _without_credentials(origin) == self._origin_url:
                # Credentials an older clone keeps in .git/config: they go.
                raise UpdateNeeded(
                    f"origin of {self.target} is {mask_url(self._origin_url)} (credentials differ)"
                )
            raise UpdateNeeded(
                f"origin of {self.target} is {mask_url(origin or '(none)')}, "
                f"want {mask_url(self.url)}"
            )
        wanted = self._remote_commit()
        head = self._head()
        if wanted is None or head != wanted:
            if not self.clobber:
                self._refuse_local_changes(wanted)
            raise UpdateNeeded(f"{self.target} is at {(head or 'no commit')[:12]}, want {self._wanted}")
        if self.branch and self._current_branch() != self.branch:
            raise UpdateNeeded(f"{self.target} is not on branch {self.branch!r}")
        changes = self._status(untracked=True)
        if changes:
            if self.clobber:
                raise UpdateNeeded(f"{self.target} has local changes; clobber=True discards them")
            self.log(f"{self.target} has local changes, left alone: {_listing(changes)}")

    def update(self) -> None:
        if self._is_clone():
            self._move()
        else:
            self._clone()

    def _clone(self) -> None:
        self._check_target()
        parent, name = posixpath.split(self.target.rstrip("/"))
        os.makedirs(parent, exist_ok=True)
        work = make_work_directory(parent, f".consign-{name[:100]}.clone.")
        try:
            self._git(["init", "-q", work], cwd=parent)
            self._set_origin(work, fresh=True)
            self._checkout(work, self._fetch(work))
            # An existing target loses its entries only with clobber=True
            # (_check_target); .git comes last, so an interrupted swap leaves
            # no half clone that looks complete.
            swap_tree(work, self.target, last=".git")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _move(self) -> None:
        """Bring an existing clone to the wanted commit."""
        head = self._head()
        if self._origin() != self._origin_url:
            self._set_origin(self.target, fresh=False)
        commit = self._fetch(self.target)
        if self.clobber:
            self._git(["reset", "-q", "--hard"])
            self._git(["clean", "-q", "-ffdx"])
        elif head != commit:
            self._refuse_local_changes(commit)
        self._checkout(self.target, commit)

    def _set_origin(self, repo: str, fresh: bool) -> None:
        """Make the origin of `repo` the URL without credentials (git gets
        them from its environment), written into the config file as it is."""
        if not fresh:
            self._git_try(["config", "--unset-all", "remote.origin.url"], repo)
        path = self._git(["rev-parse", "--git-path", "config"], repo).strip()
        if not path.startswith("/"):
            path = posixpath.join(repo, path)
        with open(path, encoding="utf-8") as f:
            config = f.read()
        if config and not config.endswith("\n"):
            config += "\n"
        config += f'[remote "origin"]\n\turl = {_quote_config(self._origin_url)}\n'
        if fresh:
            config += "\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
        write_atomic(path, config.encode("utf-8"))

    def _fetch(self, repo: str) -> str:
        """Fetch what is wanted into `repo`; return its commit id."""
        if self.revision:
            known = self._local_commit(self.revision, repo)
            if known is not None:
                return known
            self._fetch_refs(repo, "+refs/heads/*:refs/remotes/origin/*")
            known = self._local_commit(self.revision, repo)
            if known is None and len(self.revision) in (40, 64):
                # A commit on no branch: servers hand out reachable ones by id.
                self._fetch_refs(repo, self.revision)
                known = self._local_commit(self.revision, repo)
            if known is None:
                raise self._missing("")
            return known
        if self.branch:
            local = f"refs/remotes/origin/{self.branch}"
            self._fetch_refs(repo, f"+refs/heads/{self.branch}:{local}")
        else:
            local = f"refs/tags/{self.tag}"
            self._fetch_refs(repo, f"+refs/tags/{self.tag}:{local}")
        commit = self._local_commit(local, repo)
        if commit is None:
            raise self._missing(f"{local} is not a commit")
        return commit

    def _fetch_refs(self, repo: str, refspec: str) -> None:
        try:
            self._git(["fetch", "-q", "--no-tags", "origin", refspec], repo)
        except CommandError as exc:
            if exc.returncode is None:
                raise
            if any(text in exc.stderr for text in _MISSING_REF):
                raise self._missing(tool_reason(exc.stderr, 1)) from None
            raise self._unreachable(exc) from None

    def _checkout(self, repo: str, commit: str) -> None:
        if self.branch:
            self._git(["checkout", "-q", "-B", self.branch, commit], repo)
            self._git(["config", f"branch.{self.branch}.remote", "origin"], repo)
            self._git(["config", f"branch.{self.branch}.merge", f"refs/heads/{self.branch}"], repo)
        else:
            self._git(["checkout", "-q", "--detach", commit], repo)

    def last_updated(self, key: str = "st_mtime") -> float | None:
        """The commit time of the checked-out commit; None without a clone."""
        if not self._is_clone():
            return None
        value = self._git_try(["log", "-1", "--format=%ct"])
        return float(value.strip()) if value and value.strip() else None
