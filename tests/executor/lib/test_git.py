"""git.Clone against local repositories made in tmp_path.

Every component test applies twice: the first run converges, the second
changes nothing (see helpers.apply_twice).
"""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from executor.component import Component, UpdateNeeded
from executor.errors import ConfigurationError, DeployError
from executor.lib.git import Clone

from .helpers import apply_twice, configure, deploy, workdir

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd), "LC_ALL": "C"}
    done = subprocess.run(
        ["git", *IDENTITY, "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def commit(repo: Path, name: str, content: str, message: str | None = None) -> str:
    (repo / name).write_text(content)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message or f"{name}: {content}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A repository: main (a.txt v1, v2), tag v1 (annotated, at v1),
    branch feature (b.txt), tag light (lightweight, at feature)."""
    repo = tmp_path / "source"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", ".gitignore")
    commit(repo, "a.txt", "v1")
    git(repo, "tag", "-a", "v1", "-m", "release 1")
    commit(repo, "a.txt", "v2")
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, "b.txt", "feature")
    git(repo, "tag", "light")
    git(repo, "checkout", "-q", "main")
    return repo


def root_with(*makers: Callable[[], Component]) -> Callable[[], Component]:
    class Root(Component):
        def configure(self) -> None:
            for make in makers:
                self += make()

    return Root


def clone(url: str | Path, **kw: Any) -> Callable[[], Component]:
    kw.setdefault("target", "code")
    return root_with(lambda: Clone(str(url), **kw))


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".consign-"))


class DumbHTTPGit:
    """Serves the bare repositories below `root` over git's dumb HTTP
    protocol on loopback, asking for HTTP basic auth with `credentials`
    ("user:password"); records the Authorization header of every request."""

    def __init__(self, root: Path, credentials: str) -> None:
        self.authorizations: list[str | None] = []
        expected = "Basic " + base64.b64encode(credentials.encode()).decode()
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, directory=str(root), **kw)

            def do_GET(self) -> None:  # noqa: N802
                authorization = self.headers.get("Authorization")
                outer.authorizations.append(authorization)
                if authorization != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.address = f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> DumbHTTPGit:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


# A password with every character that breaks a URL unless percent-encoded.
PASSWORD = "s3/cr#t?p@ss"
ENCODED = "s3%2Fcr%23t%3Fp%40ss"


@pytest.fixture
def served(tmp_path: Path, source: Path) -> Iterator[DumbHTTPGit]:
    """`source` as http://<address>/repo.git, for user deploy and PASSWORD."""
    bare = tmp_path / "served" / "repo.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(bare))
    git(bare, "update-server-info")
    with DumbHTTPGit(bare.parent, f"deploy:{PASSWORD}") as server:
        yield server


def secret_shows(text: str) -> bool:
    return any(part in text for part in (PASSWORD, ENCODED, "cr#t", "s3/cr", "s3%2F"))


# -- cloning and following ---------------------------------------------------


def test_first_clone_checks_out_the_branch_and_a_second_run_changes_nothing(
    tmp_path: Path, source: Path
) -> None:
    first, _ = apply_twice(clone(source, branch="main"), tmp_path)

    code = workdir(tmp_path) / "code"
    assert first.changed == (f"Root > Clone('{source}')",)
    assert (code / "a.txt").read_text() == "v2"
    assert head(code) == head(source)
    assert git(code, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(code, "config", "branch.main.remote") == "origin"
    assert leftovers(workdir(tmp_path)) == []


def test_the_default_target_is_the_workdir(tmp_path: Path, source: Path) -> None:
    apply_twice(root_with(lambda: Clone(f"file://{source}", branch="main")), tmp_path)

    assert (workdir(tmp_path) / ".git").is_dir()
    assert (workdir(tmp_path) / "a.txt").read_text() == "v2"


def test_a_new_commit_on_the_branch_is_checked_out(tmp_path: Path, source: Path) -> None:
    apply_twice(clone(source, branch="main"), tmp_path)
    new = commit(source, "a.txt", "v3")

    outcome, _ = deploy(clone(source, branch="main"), tmp_path)

    code = workdir(tmp_path) / "code"
    assert outcome.error is None
    assert outcome.changed == (f"Root > Clone('{source}')",)
    assert head(code) == new
    assert (code / "a.txt").read_text() == "v3"


def test_switches_between_branch_tag_and_revision(tmp_path: Path, source: Path) -> None:
    code = workdir(tmp_path) / "code"
    feature = git(source, "rev-parse", "feature")
    v1 = git(source, "rev-parse", "v1^{commit}")

    apply_twice(clone(source, branch="main"), tmp_path)
    apply_twice(clone(source, tag="v1"), tmp_path)
    assert head(code) == v1
    assert (code / "a.txt").read_text() == "v1"

    apply_twice(clone(source, revision=feature[:10]), tmp_path)
    assert head(code) == feature
    assert (code / "b.txt").exists()

    apply_twice(clone(source, tag="light"), tmp_path)
    assert head(code) == feature

    apply_twice(clone(source, branch="feature"), tmp_path)
    assert git(code, "symbolic-ref", "HEAD") == "refs/heads/feature"

    apply_twice(clone(source, branch="main"), tmp_path)
    assert head(code) == head(source)
    assert not (code / "b.txt").exists()


def test_a_revision_on_no_branch_is_fetched_by_its_full_id(tmp_path: Path, source: Path) -> None:
    git(source, "checkout", "-q", "--detach")
    loose = commit(source, "c.txt", "on no branch")
    git(source, "checkout", "-q", "main")

    apply_twice(clone(source, revision=loose), tmp_path)

    assert head(workdir(tmp_path) / "code") == loose


def test_a_changed_url_moves_origin(tmp_path: Path, source: Path) -> None:
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(mirror))
    apply_twice(clone(source, branch="main"), tmp_path)

    outcome, _ = apply_twice(clone(mirror, branch="main"), tmp_path)

    code = workdir(tmp_path) / "code"
    assert outcome.changed == (f"Root > Clone('{mirror}')",)
    assert git(code, "config", "--get-all", "remote.origin.url") == str(mirror)


def test_a_dry_run_clones_nothing(tmp_path: Path, source: Path) -> None:
    outcome, _ = deploy(clone(source, branch="main"), tmp_path, predicting=True)

    assert outcome.error is None
    assert outcome.changed == (f"Root > Clone('{source}')",)
    assert not (workdir(tmp_path) / "code").exists()


def test_last_updated_is_the_commit_time(tmp_path: Path, source: Path) -> None:
    apply_twice(clone(source, branch="main"), tmp_path)
    component = configure(clone(source, branch="main"), tmp_path).sub_components[0]

    assert component.last_updated() == float(git(source, "log", "-1", "--format=%ct"))


def test_last_updated_is_none_without_a_clone(tmp_path: Path, source: Path) -> None:
    component = configure(clone(source, branch="main"), tmp_path).sub_components[0]

    assert component.last_updated() is None


# -- local changes -----------------------------------------------------------


def test_local_changes_are_refused_naming_the_files(tmp_path: Path, source: Path) -> None:
    apply_twice(clone(source, branch="main"), tmp_path)
    code = workdir(tmp_path) / "code"
    (code / "a.txt").write_text("edited on the host")
    commit(source, "a.txt", "v3")

    outcome, _ = deploy(clone(source, branch="main"), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == (
        f"{code} has local changes that moving to branch 'main' would overwrite: M a.txt"
    )
    assert error.hint == "commit/stash them or set clobber=True"
    assert error.where is not None and error.where.startswith(f"Root > Clone('{source}')")
    assert (code / "a.txt").read_text() == "edited on the host"


def test_untracked_files_in_the_way_are_refused_and_others_kept(
    tmp_path: Path, source: Path
) -> None:
    apply_twice(clone(source, tag="v1"), tmp_path)
    code = workdir(tmp_path) / "code"
    (code / "b.txt").write_text("mine")
    (code / "notes.txt").write_text("mine too")

    outcome, _ = deploy(clone(source, branch="feature"), tmp_path)
    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message.endswith("would overwrite: ?? b.txt")

    (code / "b.txt").unlink()
    apply_twice(clone(source, branch="feature"), tmp_path)
    assert (code / "notes.txt").read_text() == "mine too"


def test_the_refusal_lists_at_most_ten_paths(tmp_path: Path, source: Path) -> None:
    for i in range(12):
        commit(source, f"f{i:02}.txt", "x")
    apply_twice(clone(source, branch="main"), tmp_path)
    code = workdir(tmp_path) / "code"
    for i in range(12):
        (code / f"f{i:02}.txt").write_text("edited")
    commit(source, "a.txt", "v3")

    outcome, _ = deploy(clone(source, branch="main"), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert "M f09.txt (and 2 more)" in outcome.error.message
    assert "f10.txt" not in outcome.error.message


def test_local_changes_at_the_wanted_commit_are_left_alone(tmp_path: Path, source: Path) -> None:
    apply_twice(clone(source, branch="main"), tmp_path)
    code = workdir(tmp_path) / "code"
    (code / "a.txt").write_text("edited on the host")

    outcome, run = deploy(clone(source, branch="main"), tmp_path)

    assert outcome.error is None
    assert outcome.changed == ()
    assert (code / "a.txt").read_text() == "edited on the host"
    assert any("local changes, left alone: M a.txt" in e.message for e in run.log)


def test_clobber_discards_changes_and_removes_untracked_files(
    tmp_path: Path, source: Path
) -> None:
    apply_twice(clone(source, branch="main", clobber=True), tmp_path)
    code = workdir(tmp_path) / "code"
    (code / "a.txt").write_text("edited on the host")
    (code / "new.txt").write_text("untracked")
    (code / "debug.log").write_text("ignored")
    (code / "sub").mkdir()
    (code / "sub" / "x").write_text("untracked too")
    new = commit(source, "a.txt", "v3")

    outcome, _ = apply_twice(clone(source, branch="main", clobber=True), tmp_path)

    assert outcome.changed == (f"Root > Clone('{source}')",)
    assert head(code) == new
    assert (code / "a.txt").read_text() == "v3"
    assert sorted(p.name for p in code.iterdir()) == [".git", ".gitignore", "a.txt"]


def test_clobber_restores_a_dirty_clone_at_the_wanted_commit(
    tmp_path: Path, source: Path
) -> None:
    apply_twice(clone(source, branch="main", clobber=True), tmp_path)
    code = workdir(tmp_path) / "code"
    (code / "a.txt").write_text("edited on the host")

    outcome, _ = apply_twice(clone(source, branch="main", clobber=True), tmp_path)

    assert outcome.changed == (f"Root > Clone('{source}')",)
    assert (code / "a.txt").read_text() == "v2"


def test_a_directory_with_other_files_is_not_cloned_into(tmp_path: Path, source: Path) -> None:
    code = workdir(tmp_path) / "code"
    code.mkdir(parents=True)
    (code / "precious").write_text("x")

    outcome, _ = deploy(clone(source, branch="main"), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == f"{code} exists and is not a git clone; it holds precious"
    assert "clobber=True" in (outcome.error.hint or "")

    apply_twice(clone(source, branch="main", clobber=True), tmp_path)
    assert not (code / "precious").exists()
    assert (code / "a.txt").read_text() == "v2"


def test_an_empty_target_directory_is_cloned_into_in_place(tmp_path: Path, source: Path) -> None:
    code = workdir(tmp_path) / "code"
    code.mkdir(parents=True)
    inode = code.stat().st_ino

    apply_twice(clone(source, branch="main"), tmp_path)

    assert code.stat().st_ino == inode
    assert (code / "a.txt").read_text() == "v2"
    assert leftovers(workdir(tmp_path)) == []


# -- bad input ---------------------------------------------------------------


def test_an_unknown_revision_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, source: Path
) -> None:
    missing = "0123456789" * 4

    outcome, _ = deploy(clone(source, revision=missing), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message.startswith(f"revision {missing} does not exist in {source}")
    assert error.hint == "push it, or fix revision="
    assert error.where is not None and error.where.startswith("Root > Clone(")
    assert sorted(p.name for p in workdir(tmp_path).iterdir()) == []


def test_an_unknown_short_revision_names_the_full_id(tmp_path: Path, source: Path) -> None:
    outcome, _ = deploy(clone(source, revision="abcdef12"), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == f"revision abcdef12 does not exist in {source}"
    assert "full 40-digit id" in (outcome.error.hint or "")


@pytest.mark.parametrize("kind", ["branch", "tag"])
def test_an_unknown_branch_or_tag_is_a_clear_error(
    tmp_path: Path, source: Path, kind: str
) -> None:
    outcome, _ = deploy(clone(source, **{kind: "nope"}), tmp_path)
    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message.startswith(f"{kind} 'nope' does not exist in {source}")

    # An existing clone learns it in verify, from the remote.
    apply_twice(clone(source, branch="main"), tmp_path)
    outcome, _ = deploy(clone(source, **{kind: "nope"}), tmp_path)
    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == f"{kind} 'nope' does not exist in {source}"


def test_an_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repository"

    outcome, _ = deploy(clone(missing, branch="main"), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message.startswith(f"cannot reach the repository {missing}: ")
    assert "does not appear to be a git repository" in error.message
    assert "check the URL" in (error.hint or "")
    assert error.where is not None and error.where.startswith(f"Root > Clone('{missing}')")
    assert leftovers(workdir(tmp_path)) == []


def test_credentials_never_show(tmp_path: Path) -> None:
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    url = "http://deploy:s3cret@127.0.0.1:9/repo.git"

    outcome, run = deploy(clone(url, branch="main"), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert "s3cret" not in str(error)
    assert "http://deploy:***@127.0.0.1:9/repo.git" in str(error)
    assert "Root > Clone('http://deploy:***@127.0.0.1:9/repo.git')" in str(error)
    assert all("s3cret" not in entry.message for entry in run.log)


def test_credentials_go_through_the_environment_never_into_the_clone(
    tmp_path: Path, served: DumbHTTPGit, source: Path
) -> None:
    url = f"http://deploy:{ENCODED}@{served.address}/repo.git"
    shown = f"http://deploy:***@{served.address}/repo.git"

    first, run = apply_twice(clone(url, branch="main"), tmp_path)

    code = workdir(tmp_path) / "code"
    assert head(code) == head(source)
    # Every request of both runs carried them, decoded.
    expected = "Basic " + base64.b64encode(f"deploy:{PASSWORD}".encode()).decode()
    assert served.authorizations and set(served.authorizations) == {expected}
    # The clone's origin has none: .git/config is world-readable.
    assert git(code, "config", "--get-all", "remote.origin.url") == (
        f"http://{served.address}/repo.git"
    )
    for path in (code / ".git").rglob("*"):
        if path.is_file():
            assert not secret_shows(path.read_bytes().decode("latin-1")), path
    # Nor do they show in the breadcrumb, the log (command lines too) or a repr.
    assert first.changed == (f"Root > Clone('{shown}')",)
    assert run.log and not any(secret_shows(f"{e.component} {e.message}") for e in run.log)
    component = configure(clone(url, branch="main"), tmp_path).sub_components[0]
    assert repr(component) == f"<Clone('{shown}')>"


def test_a_password_with_an_unencoded_at_sign_works(
    tmp_path: Path, served: DumbHTTPGit, source: Path
) -> None:
    # The host follows the last "@"; "/", "#" and "?" are percent-encoded.
    url = f"http://deploy:s3%2Fcr%23t%3Fp@ss@{served.address}/repo.git"

    first, run = apply_twice(clone(url, branch="main"), tmp_path)

    assert head(workdir(tmp_path) / "code") == head(source)
    assert first.changed == (f"Root > Clone('http://deploy:***@{served.address}/repo.git')",)
    assert not any(secret_shows(e.message) or "p@ss" in e.message for e in run.log)


def test_wrong_credentials_are_a_clear_error_that_shows_none(
    tmp_path: Path, served: DumbHTTPGit
) -> None:
    url = f"http://deploy:wrong-{ENCODED}@{served.address}/repo.git"

    outcome, run = deploy(clone(url, branch="main"), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message.startswith(
        f"cannot reach the repository http://deploy:***@{served.address}/repo.git: "
    )
    assert not secret_shows(str(error)) and "wrong" not in str(error)
    assert not any(secret_shows(e.message) for e in run.log)
    assert leftovers(workdir(tmp_path)) == []


@pytest.mark.parametrize("password", ["ab/cd", "ab#cd", "ab?cd", "12/cd", "12?cd"])
def test_a_password_that_breaks_the_url_is_a_configure_error(
    tmp_path: Path, password: str
) -> None:
    url = f"https://deploy:{password}@git.example.com/repo.git"

    with pytest.raises(ConfigurationError) as info:
        configure(clone(url, branch="main"), tmp_path)

    error = info.value
    assert error.message == (
        "cannot parse the repository URL 'https://deploy:***@git.example.com/repo.git': "
        "cannot tell its user name and password from its host"
    )
    assert error.hint == "percent-encode / # ? @ in the password (%2F, %23, %3F, %40)"
    assert error.where == "Root > Clone('https://deploy:***@git.example.com/repo.git')"
    assert "cd" not in str(error)


def test_a_password_in_an_ssh_url_is_a_configure_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(clone("ssh://git:s3cret@git.example.com/repo.git", branch="main"), tmp_path)

    assert info.value.message == (
        "Clone sends credentials over http(s) only, got 'ssh://git:***@git.example.com/repo.git'"
    )
    assert "ssh authenticates with keys" in (info.value.hint or "")
    assert "s3cret" not in str(info.value)
    # A user name alone is no secret over ssh: it stays in the URL.
    configure(clone("ssh://git@git.example.com/repo.git", branch="main"), tmp_path)


def test_credentials_an_older_clone_keeps_in_its_config_are_removed(
    tmp_path: Path, served: DumbHTTPGit
) -> None:
    url = f"http://deploy:{ENCODED}@{served.address}/repo.git"
    apply_twice(clone(url, branch="main"), tmp_path)
    code = workdir(tmp_path) / "code"
    git(code, "config", "remote.origin.url", url)
    component = configure(clone(url, branch="main"), tmp_path).sub_components[0]

    with pytest.raises(UpdateNeeded) as info:
        component.verify()

    # Not two URLs that look the same once masked.
    assert str(info.value) == f"origin of {code} is http://{served.address}/repo.git (credentials differ)"
    outcome, _ = apply_twice(clone(url, branch="main"), tmp_path)
    assert outcome.changed == (f"Root > Clone('http://deploy:***@{served.address}/repo.git')",)
    assert not secret_shows((code / ".git" / "config").read_text())


def test_verify_and_a_dry_run_leave_the_index_alone(tmp_path: Path, source: Path) -> None:
    apply_twice(clone(source, branch="main"), tmp_path)
    code = workdir(tmp_path) / "code"
    # Same content, another mtime: 'git status' would refresh the index.
    os.utime(code / "a.txt", (1_000_000_000, 1_000_000_000))
    index = code / ".git" / "index"
    before = (index.stat().st_mtime_ns, index.read_bytes())

    for predicting in (True, False):
        outcome, _ = deploy(clone(source, branch="main"), tmp_path, predicting=predicting)
        assert outcome.error is None
        assert outcome.changed == ()
        assert (index.stat().st_mtime_ns, index.read_bytes()) == before


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o027, 0o750)], ids=["022", "027"])
def test_a_new_clone_gets_the_mode_the_umask_allows(
    tmp_path: Path, source: Path, umask: int, mode: int
) -> None:
    previous = os.umask(umask)
    try:
        apply_twice(clone(source, branch="main"), tmp_path)
    finally:
        os.umask(previous)

    # Not the 0700 of a temporary directory: the clone was made in one.
    assert stat.S_IMODE((workdir(tmp_path) / "code").stat().st_mode) == mode


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "Clone needs exactly one of revision=, branch= or tag=, got none"),
        (
            {"branch": "main", "tag": "v1"},
            "Clone needs exactly one of revision=, branch= or tag=, got branch= and tag=",
        ),
        (
            {"revision": "main"},
            "Clone revision= must be a commit id (4 to 64 hex digits), got 'main'",
        ),
        ({"branch": "--upload-pack=x"}, "Clone branch= must be a git branch name, got '--upload-pack=x'"),
        ({"tag": "v 1"}, "Clone tag= must be a git tag name, got 'v 1'"),
    ],
)
def test_bad_arguments_are_configure_errors(
    tmp_path: Path, kw: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(clone("/srv/repo", **kw), tmp_path)

    assert info.value.message == message
    assert info.value.hint
    assert info.value.where is not None and info.value.where.startswith("Root > Clone('/srv/repo')")
