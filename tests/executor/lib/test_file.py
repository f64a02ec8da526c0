"""The file library: File and the small components it is made of.

Every component test applies twice: the first run converges, the second
changes nothing (see helpers.apply_twice).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from executor.component import Component
from executor.errors import ConfigurationError, DeployError, ModeError, TemplateError
from executor.fs import write_atomic
from executor.lib.file import (
    DIFF_MAX_LINES,
    BinaryFile,
    Directory,
    File,
    Group,
    JSONContent,
    Mode,
    Owner,
    Presence,
    Purge,
    Symlink,
    SyncDirectory,
)
from executor.model import VfsMode, VfsRules

from .helpers import apply_twice, configure, deploy, target_directory, workdir

OLD = 1_000_000_000  # an mtime far in the past

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


def root_with(*makers: Callable[[], Component]) -> Callable[[], Component]:
    """A root component class that adds a fresh component from each maker."""

    class Root(Component):
        def configure(self) -> None:
            for make in makers:
                self += make()

    return Root


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".consign-*"))


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def defdir(tmp_path: Path) -> Path:
    """The component's directory: sources and implicit templates live here."""
    path = tmp_path / "components" / "app"
    path.mkdir(parents=True)
    return path


# -- content ---------------------------------------------------------------


def test_content_is_a_template_with_the_files_parent_as_component(tmp_path: Path) -> None:
    class Root(Component):
        port = "8080"

        def configure(self) -> None:
            self += File("app.conf", content="port={{component.port}} on {{host.name}}\n")

    first, _ = apply_twice(Root, tmp_path)

    assert (workdir(tmp_path) / "app.conf").read_text() == "port=8080 on host1\n"
    assert any("Content(" in c for c in first.changed)


def test_relative_paths_resolve_against_the_roots_workdir(tmp_path: Path) -> None:
    apply_twice(root_with(lambda: File("sub/x", content="x", leading=True)), tmp_path)

    assert (tmp_path / "target" / "work" / "root" / "sub" / "x").read_text() == "x"


def test_developer_vfs_maps_absolute_paths_below_the_target(tmp_path: Path) -> None:
    vfs = VfsRules(VfsMode.DEVELOPER)

    apply_twice(
        root_with(lambda: File("/etc/consign-test/x", content="mapped\n", leading=True)),
        tmp_path,
        vfs=vfs,
    )

    mapped = target_directory(tmp_path) / "work" / "_" / "etc" / "consign-test" / "x"
    assert mapped.read_text() == "mapped\n"
    assert not Path("/etc/consign-test").exists()


@pytest.mark.parametrize("prefix", ["/", "/srv"])
def test_a_map_sandbox_maps_every_path_once(tmp_path: Path, defdir: Path, prefix: str) -> None:
    sandbox = tmp_path / "sandbox"
    (defdir / "tree").mkdir()
    (defdir / "tree" / "f").write_text("f")
    vfs = VfsRules(VfsMode.MAP, ((prefix, str(sandbox)),))

    apply_twice(
        root_with(
            lambda: File("/srv/app/conf", content="x", mode=0o600, leading=True),
            lambda: File("/srv/app/static", ensure="directory", source="tree"),
        ),
        tmp_path,
        defdir=defdir,
        vfs=vfs,
    )

    mapped = sandbox / "srv" / "app" if prefix == "/" else sandbox / "app"
    files = sorted(str(p.relative_to(mapped)) for p in sandbox.rglob("*") if not p.is_dir())
    assert files == ["conf", "static/f"]
    assert (mapped / "conf").read_text() == "x"
    assert mode_of(mapped / "conf") == 0o600
    assert (mapped / "static" / "f").read_text() == "f"


def test_empty_content_makes_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("something\n")

    apply_twice(root_with(lambda: File(str(path), content="")), tmp_path)

    assert path.read_bytes() == b""


def test_source_is_a_template_next_to_the_component(tmp_path: Path, defdir: Path) -> None:
    (defdir / "app.conf.in").write_text("port={{component.port}}\nname={{name}}\n")

    class Root(Component):
        port = 80

        def configure(self) -> None:
            self += File("app.conf", source="app.conf.in", template_args={"name": "web"})

    apply_twice(Root, tmp_path, defdir=defdir)

    assert (workdir(tmp_path) / "app.conf").read_text() == "port=80\nname=web\n"


def test_without_content_or_source_the_file_named_like_the_target_is_the_template(
    tmp_path: Path, defdir: Path
) -> None:
    (defdir / "nginx.conf").write_text("@@ for p in ports\nlisten {{p}};\n@@ endfor\n")
    target = workdir(tmp_path) / "nginx.conf"

    apply_twice(
        root_with(lambda: File("nginx.conf", template_args={"ports": [80, 443]})),
        tmp_path,
        defdir=defdir,
    )

    assert target.read_text() == "listen 80;\nlisten 443;\n"


def test_without_content_source_or_template_the_file_only_has_to_exist(
    tmp_path: Path, defdir: Path
) -> None:
    present = tmp_path / "present"
    present.write_text("kept\n")
    new = tmp_path / "new"

    apply_twice(
        root_with(lambda: File(str(present)), lambda: File(str(new))), tmp_path, defdir=defdir
    )

    assert present.read_text() == "kept\n"
    assert new.read_bytes() == b""


def test_is_template_false_writes_the_text_as_is(tmp_path: Path) -> None:
    path = tmp_path / "raw"

    apply_twice(
        root_with(lambda: File(str(path), content="{{ not rendered }}\n", is_template=False)),
        tmp_path,
    )

    assert path.read_text() == "{{ not rendered }}\n"


def test_template_args_are_names_in_the_template(tmp_path: Path) -> None:
    path = tmp_path / "args"

    apply_twice(
        root_with(
            lambda: File(str(path), content="{{a}}-{{b}}\n", template_args={"a": 1, "b": "two"})
        ),
        tmp_path,
    )

    assert path.read_text() == "1-two\n"


def test_an_unknown_name_in_content_is_a_configure_error_naming_the_component(
    tmp_path: Path,
) -> None:
    with pytest.raises(TemplateError) as info:
        configure(root_with(lambda: File(str(tmp_path / "x"), content="{{nope}}")), tmp_path)

    assert "nope" in info.value.message
    assert "Content(" in (info.value.where or "")


def test_encoding_applies_to_content_and_to_source(tmp_path: Path, defdir: Path) -> None:
    (defdir / "latin.in").write_bytes("caf\xe9 {{component.n}}\n".encode("latin-1"))
    from_content = tmp_path / "content"
    from_source = tmp_path / "source"

    class Root(Component):
        n = 1

        def configure(self) -> None:
            self += File(str(from_content), content="caf\xe9\n", encoding="latin-1")
            self += File(str(from_source), source="latin.in", encoding="latin-1")

    apply_twice(Root, tmp_path, defdir=defdir)

    assert from_content.read_bytes() == b"caf\xe9\n"
    assert from_source.read_bytes() == b"caf\xe9 1\n"


def test_a_source_that_is_not_in_the_encoding_is_a_configure_error_naming_it(
    tmp_path: Path, defdir: Path
) -> None:
    (defdir / "latin.in").write_bytes(b"caf\xe9\n")

    with pytest.raises(ConfigurationError) as info:
        configure(
            root_with(lambda: File(str(tmp_path / "x"), source="latin.in")),
            tmp_path,
            defdir=defdir,
        )

    assert info.value.message.startswith(f"source file {defdir / 'latin.in'} is not utf-8 text")
    assert info.value.hint is not None and "encoding=" in info.value.hint


def test_text_the_encoding_cannot_hold_is_a_configure_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(
            root_with(lambda: File(str(tmp_path / "x"), content="caf\xe9", encoding="ascii")),
            tmp_path,
        )

    assert "ascii" in info.value.message
    assert "File(" in (info.value.where or "")


def test_equal_content_leaves_the_file_and_its_mtime_alone(tmp_path: Path) -> None:
    path = tmp_path / "same"
    path.write_text("same\n")
    os.utime(path, (OLD, OLD))
    inode = path.stat().st_ino

    first, run = apply_twice(root_with(lambda: File(str(path), content="same\n")), tmp_path)

    assert first.changed == ()
    assert run.diffs == []
    assert path.stat().st_mtime == OLD
    assert path.stat().st_ino == inode


def test_changed_content_is_reported_as_a_unified_diff(tmp_path: Path) -> None:
    path = tmp_path / "conf"
    path.write_text("a\nold\nc\n")

    _, run = apply_twice(root_with(lambda: File(str(path), content="a\nnew\nc\n")), tmp_path)

    assert path.read_text() == "a\nnew\nc\n"
    [change] = run.diffs
    assert change.path == str(path)
    assert change.component.endswith(f"Content('{path}')")
    assert change.diff is not None
    assert f"--- {path} (current)\n+++ {path} (new)\n" in change.diff
    assert "-old\n+new\n" in change.diff
    assert change.note == ""


def test_a_long_diff_is_truncated_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "long"
    path.write_text("".join(f"old {i}\n" for i in range(300)))

    _, run = apply_twice(
        root_with(lambda: File(str(path), content="".join(f"new {i}\n" for i in range(300)))),
        tmp_path,
    )

    [change] = run.diffs
    assert change.diff is not None
    lines = change.diff.splitlines()
    assert len(lines) == DIFF_MAX_LINES + 1
    assert lines[-1] == f"... {603 - DIFF_MAX_LINES} more diff lines not shown"
    assert change.note == f"diff truncated: {603 - DIFF_MAX_LINES} of 603 lines not shown"


def test_sensitive_content_is_changed_without_a_diff(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("password=old\n")

    _, run = apply_twice(
        root_with(lambda: File(str(path), content="password=new\n", sensitive_data=True)),
        tmp_path,
    )

    assert path.read_text() == "password=new\n"
    [change] = run.diffs
    assert change.diff is None
    assert "sensitive" in change.note
    assert "password" not in change.note


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_content_that_holds_a_secret_is_changed_without_a_diff(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "app.conf"
    path.write_text("password=pw-old-123456\nmode=1\n", encoding=encoding)
    secrets = frozenset({"pw-old-123456", "pw-new-654321"})

    def make() -> Component:
        return File(str(path), content="password=pw-new-654321\nmode=1\n", encoding=encoding)

    outcome, run = deploy(make, tmp_path, secrets=secrets)

    assert outcome.error is None
    assert path.read_text(encoding=encoding) == "password=pw-new-654321\nmode=1\n"
    [change] = run.diffs
    assert change.diff is None
    assert change.note == "content holds a secret value: diff withheld"
    # A file without a secret still shows its diff in the same run.
    other = tmp_path / "plain.conf"
    other.write_text("old\n")
    _, run = deploy(lambda: File(str(other), content="new\n"), tmp_path, secrets=secrets)
    assert run.diffs[0].diff is not None and "+new" in run.diffs[0].diff


def test_binary_content_is_reported_without_a_diff(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"\x00\x01old")

    _, run = apply_twice(root_with(lambda: BinaryFile(str(path), content=b"\x00\x02new")), tmp_path)

    [change] = run.diffs
    assert change.diff is None
    assert change.note == "binary content: no diff (5 bytes, now 5 bytes)"


def test_a_dry_run_reports_the_diff_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "conf"
    path.write_text("old\n")
    os.utime(path, (OLD, OLD))
    missing = tmp_path / "missing" / "new.conf"

    outcome, run = deploy(
        root_with(
            lambda: File(str(path), content="new\n", mode=0o600),
            lambda: File(str(missing), content="x\n", leading=True, mode="600", owner=0),
        ),
        tmp_path,
        predicting=True,
    )

    assert outcome.error is None
    assert f"Root > File('{path}') > Content('{path}')" in outcome.changed
    assert f"Root > File('{missing}') > Presence('{missing}')" in outcome.changed
    assert path.read_text() == "old\n"
    assert path.stat().st_mtime == OLD
    assert mode_of(path) == 0o644
    assert not missing.parent.exists()
    assert not workdir(tmp_path).exists()
    changed, created = run.diffs
    assert (changed.path, created.path) == (str(path), str(missing))
    assert changed.diff is not None and "-old\n+new\n" in changed.diff
    assert created.diff is not None and created.diff.endswith("@@ -0,0 +1 @@\n+x\n")


# -- atomic writes -----------------------------------------------------------


def test_writes_leave_no_temporary_files_behind(tmp_path: Path, defdir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (defdir / "tree").mkdir()
    (defdir / "tree" / "a").write_text("a")
    (out / "f").write_text("old")

    apply_twice(
        root_with(
            lambda: File(str(out / "f"), content="new"),
            lambda: File(str(out / "g"), content="new"),
            lambda: File(str(out / "tree"), ensure="directory", source="tree"),
            lambda: File(str(out / "link"), ensure="symlink", link_to=str(out / "f")),
        ),
        tmp_path,
        defdir=defdir,
    )

    assert leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["f", "g", "link", "tree"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()

    with pytest.raises(IsADirectoryError):
        write_atomic(str(tmp_path / "dir"), b"data")

    assert leftovers(tmp_path) == []


def test_an_existing_files_mode_owner_and_setuid_bit_survive_a_content_change(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tool"
    path.write_text("old")
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    os.chmod(path, 0o4750)

    apply_twice(root_with(lambda: File(str(path), content="new")), tmp_path)

    assert path.read_text() == "new"
    assert mode_of(path) == 0o4750
    if os.geteuid() == 0:
        assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)


def test_a_new_file_gets_0o644_under_umask_022(tmp_path: Path) -> None:
    path = tmp_path / "new"

    apply_twice(root_with(lambda: File(str(path), content="x")), tmp_path)

    assert mode_of(path) == 0o644


def test_a_new_file_follows_a_stricter_umask(tmp_path: Path) -> None:
    path = tmp_path / "new"
    os.umask(0o077)

    apply_twice(root_with(lambda: File(str(path), content="x")), tmp_path)

    assert mode_of(path) == 0o600


def test_content_is_written_through_a_symlink_which_stays(tmp_path: Path) -> None:
    real = tmp_path / "real.conf"
    real.write_text("old\n")
    link = tmp_path / "link.conf"
    link.symlink_to(real)

    apply_twice(root_with(lambda: File(str(link), content="new\n")), tmp_path)

    assert link.is_symlink()
    assert real.read_text() == "new\n"
    assert leftovers(tmp_path) == []


def test_content_is_written_only_after_the_mode_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    seen: list[tuple[bytes, int]] = []

    def spy(target: str, data: bytes, *, mode: int | None = None) -> None:
        if os.path.exists(target):
            seen.append((data, stat.S_IMODE(os.stat(target).st_mode)))
        write_atomic(target, data, mode=mode)

    monkeypatch.setattr("executor.lib.file.write_atomic", spy)

    apply_twice(root_with(lambda: File(str(path), content="s3cret", mode=0o600)), tmp_path)

    assert seen == [(b"s3cret", 0o600)]
    assert mode_of(path) == 0o600


# -- modes -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, "640", "0640", "0o640", "rw-r-----", "-rw-r-----"])
def test_mode_is_set_from_any_notation(tmp_path: Path, mode: int | str) -> None:
    path = tmp_path / "f"

    apply_twice(root_with(lambda: File(str(path), content="x", mode=mode)), tmp_path)

    assert mode_of(path) == 0o640


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("rwsr-xr-x", 0o4755), ("rwxrwsr-x", 0o2775), ("rwxrwxrwt", 0o1777), ("rw-r--r-T", 0o1644)],
)
def test_mode_in_rwx_notation_knows_setuid_setgid_and_sticky(
    tmp_path: Path, mode: str, expected: int
) -> None:
    path = tmp_path / "f"

    apply_twice(root_with(lambda: File(str(path), mode=mode)), tmp_path)

    assert mode_of(path) == expected


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("abc", "mode 'abc' is neither octal nor rwx notation"),
        ("999", "mode '999' is neither octal nor rwx notation"),
        ("rwxrwxrwz", "mode 'rwxrwxrwz' is neither octal nor rwx notation"),
        ("", "mode '' is neither octal nor rwx notation"),
        ("0o", "mode '0o' is neither octal nor rwx notation"),
        ("07777x", "mode '07777x' is neither octal nor rwx notation"),
        (0o17777, "mode 8191 (octal 0o17777) is out of range 0o0..0o7777"),
        (-1, "mode -1 (octal -0o1) is out of range 0o0..0o7777"),
        (True, "mode must be octal or rwx notation, got True"),
    ],
)
def test_a_bad_mode_is_a_configure_error_naming_value_and_component(
    tmp_path: Path, mode: Any, message: str
) -> None:
    path = tmp_path / "f"

    with pytest.raises(ModeError) as info:
        configure(root_with(lambda: File(str(path), content="x", mode=mode)), tmp_path)

    assert info.value.message == message
    assert info.value.where == f"Root > File('{path}') > Mode('{path}')"
    assert info.value.hint
    assert not path.exists()


def test_mode_alone_changes_only_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("content")
    os.chmod(path, 0o600)

    first, _ = apply_twice(root_with(lambda: Mode(str(path), mode="755")), tmp_path)

    assert mode_of(path) == 0o755
    assert path.read_text() == "content"
    assert first.changed == (f"Root > Mode('{path}')",)


def test_mode_of_a_missing_path_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing"

    outcome, _ = deploy(root_with(lambda: Mode(str(path), mode=0o644)), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == f"cannot set the mode of {path}: it does not exist"
    assert outcome.error.where == f"Root > Mode('{path}')"


def test_a_symlink_with_a_mode_is_a_configure_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(
            root_with(lambda: File(str(tmp_path / "l"), ensure="symlink", link_to="/", mode=0o644)),
            tmp_path,
        )

    assert "symlink has no mode" in info.value.message


def test_an_unknown_ensure_is_a_configure_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: File(str(tmp_path / "x"), ensure="pipe")), tmp_path)

    assert "'pipe'" in info.value.message


# -- owner and group -------------------------------------------------------------


@needs_root
@pytest.mark.parametrize(
    ("owner", "group"), [("nobody", "nogroup"), (65534, 65534), ("65534", "65534")]
)
def test_owner_and_group_by_name_or_id(tmp_path: Path, owner: Any, group: Any) -> None:
    path = tmp_path / "owned"

    apply_twice(
        root_with(lambda: File(str(path), content="x", owner=owner, group=group)), tmp_path
    )

    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)


@needs_root
def test_owner_and_group_alone(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")

    first, _ = apply_twice(
        root_with(lambda: Owner(str(path), owner="nobody"), lambda: Group(str(path), group=65534)),
        tmp_path,
    )

    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)
    assert first.changed == (f"Root > Owner('{path}')", f"Root > Group('{path}')")


@needs_root
def test_owner_of_a_symlink_changes_the_link_not_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text("x")
    link = tmp_path / "link"

    apply_twice(
        root_with(lambda: File(str(link), ensure="symlink", link_to=str(real), owner=65534)),
        tmp_path,
    )

    assert os.lstat(link).st_uid == 65534
    assert real.stat().st_uid == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: Owner(p, owner="no-such-user-x"),
            "user 'no-such-user-x' does not exist on this host",
        ),
        (
            lambda p: Group(p, group="no-such-group-x"),
            "group 'no-such-group-x' does not exist on this host",
        ),
    ],
    ids=["user", "group"],
)
def test_an_unknown_user_or_group_is_a_deploy_error_naming_it(
    tmp_path: Path, make: Callable[[str], Component], message: str
) -> None:
    path = tmp_path / "f"
    path.write_text("x")

    outcome, _ = deploy(root_with(lambda: make(str(path))), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == message
    assert outcome.error.where is not None
    assert outcome.error.where.startswith("Root > ")
    assert str(path) in outcome.error.where
    assert outcome.error.hint


def test_an_unknown_user_in_a_file_names_the_files_breadcrumb(tmp_path: Path) -> None:
    path = tmp_path / "f"

    outcome, _ = deploy(
        root_with(lambda: File(str(path), content="x", owner="no-such-user-x")), tmp_path
    )

    assert isinstance(outcome.error, DeployError)
    assert "'no-such-user-x'" in outcome.error.message
    assert outcome.error.where == f"Root > File('{path}') > Owner('{path}')"


# -- leading directories ---------------------------------------------------------


def test_content_alone_in_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "x.json"

    outcome, _ = deploy(root_with(lambda: JSONContent(str(path), data={})), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == f"directory {tmp_path / 'missing'} does not exist"
    assert outcome.error.hint == "create it first (a Directory before this component)"
    assert outcome.error.where == f"Root > JSONContent('{path}')"


def test_leading_creates_missing_parent_directories(tmp_path: Path) -> None:
    base = tmp_path / "a" / "b"

    apply_twice(
        root_with(
            lambda: File(str(base / "file"), content="x", leading=True),
            lambda: File(str(base / "c" / "d" / "dir"), ensure="directory", leading=True),
            lambda: File(str(base / "e" / "link"), ensure="symlink", link_to="/", leading=True),
        ),
        tmp_path,
    )

    assert (base / "file").read_text() == "x"
    assert (base / "c" / "d" / "dir").is_dir()
    assert os.readlink(base / "e" / "link") == "/"


@pytest.mark.parametrize(
    "make",
    [
        lambda p: File(p, content="x"),
        lambda p: File(p, ensure="directory"),
        lambda p: File(p, ensure="symlink", link_to="/"),
    ],
    ids=["file", "directory", "symlink"],
)
def test_without_leading_a_missing_parent_is_a_clear_error(
    tmp_path: Path, make: Callable[[str], Component]
) -> None:
    path = tmp_path / "missing" / "x"

    outcome, _ = deploy(root_with(lambda: make(str(path))), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == f"directory {tmp_path / 'missing'} does not exist"
    assert outcome.error.hint is not None and "leading=True" in outcome.error.hint
    assert outcome.error.where is not None
    assert outcome.error.where.startswith(f"Root > File('{path}') > ")
    assert not (tmp_path / "missing").exists()


# -- directories -----------------------------------------------------------------


def test_ensure_directory_creates_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "dir"

    apply_twice(root_with(lambda: File(str(path), ensure="directory", mode=0o750)), tmp_path)

    assert path.is_dir()
    assert mode_of(path) == 0o750


def test_directory_alone(tmp_path: Path) -> None:
    path = tmp_path / "dir"

    first, _ = apply_twice(root_with(lambda: Directory(str(path))), tmp_path)

    assert path.is_dir()
    assert first.changed == (f"Root > Directory('{path}')",)


def test_a_symlink_to_a_directory_counts_as_the_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real")

    first, _ = apply_twice(root_with(lambda: Directory(str(link))), tmp_path)

    assert first.changed == ()
    assert link.is_symlink()


@pytest.mark.parametrize("source", [None, "tree"], ids=["plain", "with-source"])
def test_a_file_where_a_directory_is_expected_is_an_error(
    tmp_path: Path, defdir: Path, source: str | None
) -> None:
    (defdir / "tree").mkdir()
    (defdir / "tree" / "a").write_text("a")
    path = tmp_path / "thing"
    path.write_text("I am a file")

    outcome, _ = deploy(
        root_with(lambda: File(str(path), ensure="directory", source=source)),
        tmp_path,
        defdir=defdir,
    )

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == f"{path} is a regular file, expected a directory"
    assert path.read_text() == "I am a file"


def test_a_directory_where_a_file_is_expected_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "thing"
    path.mkdir()

    outcome, _ = deploy(root_with(lambda: File(str(path), content="x")), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == f"{path} is a directory, expected a file"
    assert path.is_dir()


def test_presence_alone_creates_an_empty_file_and_keeps_content(tmp_path: Path) -> None:
    new = tmp_path / "new"
    kept = tmp_path / "kept"
    kept.write_text("content")

    first, _ = apply_twice(
        root_with(lambda: Presence(str(new)), lambda: Presence(str(kept))), tmp_path
    )

    assert new.read_bytes() == b""
    assert kept.read_text() == "content"
    assert first.changed == (f"Root > Presence('{new}')",)


# -- directory sync --------------------------------------------------------------


@pytest.fixture
def tree(defdir: Path) -> Path:
    """A source tree: nested directories, an executable, links, noise."""
    top = defdir / "tree"
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "a.txt").write_text("a\n")
    (top / "sub" / "b.txt").write_text("b\n")
    (top / "sub" / "deeper" / "c.txt").write_text("c\n")
    (top / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(top / "run.sh", 0o755)
    (top / "only-user-exec").write_text("#!/bin/sh\n")
    os.chmod(top / "only-user-exec", 0o744)
    (top / "link-to-a").symlink_to("a.txt")
    (top / "link-to-sub").symlink_to("sub")
    (top / "dangling").symlink_to("nowhere")
    (top / "notes.pyc").write_text("compiled")
    (top / "cache").mkdir()
    (top / "cache" / "x").write_text("x")
    return top


def listing(top: Path) -> dict[str, str]:
    """Relative path -> 'dir', 'link:<target>' or the file's text and mode."""
    result = {}
    for path in sorted(top.rglob("*")):
        relative = str(path.relative_to(top))
        if path.is_symlink():
            result[relative] = f"link:{os.readlink(path)}"
        elif path.is_dir():
            result[relative] = "dir"
        else:
            result[relative] = f"{path.read_text()!r} {mode_of(path):o}"
    return result


def test_directory_source_copies_a_tree_with_links_and_executable_bits(
    tmp_path: Path, tree: Path
) -> None:
    path = tmp_path / "out"

    first, _ = apply_twice(
        root_with(lambda: File(str(path), ensure="directory", source="tree")),
        tmp_path,
        defdir=tree.parent,
    )

    assert listing(path) == listing(tree)
    assert mode_of(path / "run.sh") == 0o755
    assert mode_of(path / "only-user-exec") == 0o744
    assert mode_of(path / "a.txt") == 0o644
    assert (path / "link-to-sub").is_symlink()
    assert f"Root > File('{path}') > Directory('{path}') > SyncDirectory('{path}')" in first.changed


def test_directory_source_updates_changed_removes_extra_and_keeps_excluded(
    tmp_path: Path, tree: Path
) -> None:
    path = tmp_path / "out"
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "a.txt").write_text("stale\n")
    (path / "run.sh").write_text("#!/bin/sh\n")  # same text, not executable
    os.chmod(path / "run.sh", 0o600)
    (path / "sub" / "deeper" / "c.txt").write_text("c\n")
    os.utime(path / "sub" / "deeper" / "c.txt", (OLD, OLD))
    (path / "extra.txt").write_text("extra")
    (path / "extra-dir" / "nested").mkdir(parents=True)
    (path / "extra-dir" / "nested" / "f").write_text("f")
    (path / "link-to-a").symlink_to("elsewhere")
    (path / "sub" / "b.txt").mkdir()  # a directory where the source has a file
    (path / "local.pyc").write_text("keep me")
    (path / "cache").mkdir()
    (path / "cache" / "mine").write_text("keep me too")

    apply_twice(
        root_with(
            lambda: File(str(path), ensure="directory", source="tree", exclude=["*.pyc", "cache"])
        ),
        tmp_path,
        defdir=tree.parent,
    )

    got = listing(path)
    assert got["a.txt"] == "'a\\n' 644"
    assert got["run.sh"] == "'#!/bin/sh\\n' 711"  # executable bits follow the source
    assert got["sub/b.txt"] == "'b\\n' 644"
    assert got["link-to-a"] == "link:a.txt"
    assert got["local.pyc"] == "'keep me' 644"
    assert got["cache"] == "dir"
    assert got["cache/mine"] == "'keep me too' 644"
    assert "notes.pyc" not in got
    assert "cache/x" not in got
    assert "extra.txt" not in got
    assert "extra-dir" not in got
    assert (path / "sub" / "deeper" / "c.txt").stat().st_mtime == OLD  # equal: untouched
    assert leftovers(path) == []


def test_syncdirectory_alone_creates_its_directory(tmp_path: Path, tree: Path) -> None:
    path = tmp_path / "out"

    apply_twice(
        root_with(lambda: SyncDirectory(str(path), source="tree")), tmp_path, defdir=tree.parent
    )

    assert listing(path) == listing(tree)


def test_a_missing_sync_source_is_a_configure_error(tmp_path: Path, defdir: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(
            root_with(lambda: Directory(str(tmp_path / "out"), source="nope")),
            tmp_path,
            defdir=defdir,
        )

    assert info.value.message == f"source directory {defdir / 'nope'} does not exist"


# -- symlinks --------------------------------------------------------------------


def test_ensure_symlink_points_the_link_and_repoints_an_existing_one(tmp_path: Path) -> None:
    link = tmp_path / "current"
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    link.symlink_to(tmp_path / "v1")

    first, _ = apply_twice(
        root_with(lambda: File(str(link), ensure="symlink", link_to=str(tmp_path / "v2"))),
        tmp_path,
    )

    assert os.readlink(link) == str(tmp_path / "v2")
    assert (tmp_path / "v1").is_dir()
    assert first.changed == (f"Root > File('{link}') > Symlink('{link}')",)


def test_symlink_alone_resolves_a_relative_target_against_the_workdir(tmp_path: Path) -> None:
    link = tmp_path / "link"

    apply_twice(root_with(lambda: Symlink(str(link), source="releases/1")), tmp_path)

    assert os.readlink(link) == str(workdir(tmp_path) / "releases" / "1")


def test_a_symlink_replaces_a_file(tmp_path: Path) -> None:
    path = tmp_path / "path"
    path.write_text("file")

    apply_twice(root_with(lambda: Symlink(str(path), source="/")), tmp_path)

    assert os.readlink(path) == "/"


def test_a_symlink_where_a_directory_exists_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dir"
    path.mkdir()
    (path / "keep").write_text("x")

    outcome, _ = deploy(
        root_with(lambda: File(str(path), ensure="symlink", link_to="/")), tmp_path
    )

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == f"{path} is a directory, expected a symlink"
    assert outcome.error.where == f"Root > File('{path}') > Symlink('{path}')"
    assert (path / "keep").exists()


def test_a_symlink_needs_a_target(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: File(str(tmp_path / "l"), ensure="symlink")), tmp_path)

    assert info.value.message == "a symlink needs a target"


# -- binary files, purge, JSON ---------------------------------------------------------


def test_binary_file_writes_bytes_without_templating(tmp_path: Path, defdir: Path) -> None:
    (defdir / "logo.bin").write_bytes(b"\x89PNG {{ component.nope }}\xff")
    from_content = tmp_path / "content.bin"
    from_source = tmp_path / "source.bin"
    from_text = tmp_path / "text.bin"

    apply_twice(
        root_with(
            lambda: BinaryFile(str(from_content), content=b"\x00{{ x }}\xff"),
            lambda: BinaryFile(str(from_source), source="logo.bin"),
            lambda: BinaryFile(str(from_text), content="{{ x }}"),
        ),
        tmp_path,
        defdir=defdir,
    )

    assert from_content.read_bytes() == b"\x00{{ x }}\xff"
    assert from_source.read_bytes() == b"\x89PNG {{ component.nope }}\xff"
    assert from_text.read_bytes() == b"{{ x }}"


def test_purge_removes_matching_files_and_directories(tmp_path: Path) -> None:
    base = tmp_path / "releases"
    (base / "old.tmp").mkdir(parents=True)
    (base / "old.tmp" / "inner").write_text("x")
    (base / "a.tmp").write_text("x")
    (base / "dangling.tmp").symlink_to("nowhere")
    (base / "keep.txt").write_text("keep")

    first, _ = apply_twice(root_with(lambda: Purge(str(base / "*.tmp"))), tmp_path)

    assert sorted(p.name for p in base.iterdir()) == ["keep.txt"]
    assert first.changed == (f"Root > Purge('{base / '*.tmp'}')",)


def test_json_content_from_data_is_sorted_and_stable(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    two = tmp_path / "two.json"

    apply_twice(
        root_with(
            lambda: JSONContent(str(one), data={"b": 1, "a": {"y": [1, 2], "x": "é"}}),
            lambda: JSONContent(str(two), data={"a": {"x": "é", "y": [1, 2]}, "b": 1}),
        ),
        tmp_path,
    )

    assert one.read_bytes() == two.read_bytes()
    assert one.read_text(encoding="utf-8") == (
        '{\n  "a": {\n    "x": "é",\n    "y": [\n      1,\n      2\n    ]\n  },\n  "b": 1\n}\n'
    )


def test_json_content_override_merges_deeply(tmp_path: Path) -> None:
    path = tmp_path / "merged.json"

    apply_twice(
        root_with(
            lambda: JSONContent(
                str(path),
                data={"db": {"host": "a", "port": 5432}, "debug": True, "list": [1, 2]},
                override={"db": {"host": "b"}, "debug": False, "list": [3], "new": None},
            )
        ),
        tmp_path,
    )

    assert json.loads(path.read_text()) == {
        "db": {"host": "b", "port": 5432},
        "debug": False,
        "list": [3],
        "new": None,
    }


def test_json_content_from_a_source_file(tmp_path: Path, defdir: Path) -> None:
    (defdir / "base.json").write_text('{"port": 80, "name": "{{ not a template }}"}')
    path = tmp_path / "config.json"

    apply_twice(
        root_with(lambda: JSONContent(str(path), source="base.json", override={"port": 81})),
        tmp_path,
        defdir=defdir,
    )

    assert json.loads(path.read_text()) == {"name": "{{ not a template }}", "port": 81}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"s": {1, 2}}, "data is not JSON serialisable: Object of type set is not JSON"),
        ({"f": float("nan")}, "data is not JSON serialisable: Out of range float values"),
    ],
    ids=["set", "nan"],
)
def test_json_data_that_is_no_json_is_a_configure_error(
    tmp_path: Path, data: Any, message: str
) -> None:
    path = tmp_path / "bad.json"

    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: JSONContent(str(path), data=data)), tmp_path)

    assert info.value.message.startswith(message)
    assert info.value.where == f"Root > JSONContent('{path}')"


def test_a_json_source_that_is_no_json_is_a_configure_error(tmp_path: Path, defdir: Path) -> None:
    (defdir / "broken.json").write_text("{nope")

    with pytest.raises(ConfigurationError) as info:
        configure(
            root_with(lambda: JSONContent(str(tmp_path / "x.json"), source="broken.json")),
            tmp_path,
            defdir=defdir,
        )

    assert info.value.message.startswith("source file broken.json is not valid JSON: ")


# -- last_updated ----------------------------------------------------------------------


def test_last_updated_is_the_newest_mtime_or_none_when_missing(
    tmp_path: Path, defdir: Path
) -> None:
    (defdir / "src").mkdir()
    (defdir / "src" / "f").write_text("f")
    out = tmp_path / "out"
    out.mkdir()
    file_path, dir_path, sync_path, link_path = (out / n for n in ("file", "dir", "sync", "link"))

    def components() -> Component:
        return configure(
            root_with(
                lambda: File(str(file_path), content="x"),
                lambda: Directory(str(dir_path)),
                lambda: Directory(str(sync_path), source="src"),
                lambda: Symlink(str(link_path), source=str(file_path)),
            ),
            tmp_path,
            defdir=defdir,
        )

    root = components()
    file_c, dir_c, sync_dir_c, link_c = root.sub_components
    [sync_c] = sync_dir_c.sub_components
    assert isinstance(sync_c, SyncDirectory)
    assert [c.last_updated() for c in (file_c, dir_c, sync_c, link_c, root)] == [None] * 5

    apply_twice(lambda: components(), tmp_path, defdir=defdir)
    os.utime(file_path, (OLD + 1, OLD + 1))
    os.utime(dir_path, (OLD + 2, OLD + 2))
    os.utime(sync_path, (OLD + 3, OLD + 3))
    os.utime(sync_path / "f", (OLD + 4, OLD + 4))
    os.utime(link_path, (OLD + 5, OLD + 5), follow_symlinks=False)

    assert file_c.last_updated() == OLD + 1
    assert dir_c.last_updated() == OLD + 2
    assert sync_c.last_updated() == OLD + 4
    assert link_c.last_updated() == OLD + 5
    assert root.last_updated() == OLD + 5
