from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from executor.errors import BundleError
from executor.snapshot import SnapshotFile, extract_tar, tar_bytes

MTIME = 1_700_000_000


def make_tree(root: Path) -> list[SnapshotFile]:
    """A small repository: nested files, an executable, symlinks."""
    files = {
        "README.md": (b"hello\n", 0o600),
        "components/app/component.py": (b"class App: pass\n", 0o644),
        "components/app/run.sh": (b"#!/bin/sh\n", 0o700),
        "components/app/templates/app.conf": (b"x = 1\n", 0o664),
        "environments/prod.cfg": (b"[environment]\n", 0o640),
        "bin/tool": (b"\x7fELF", 0o744),
    }
    for name, (content, mode) in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    (root / "components/app/latest").symlink_to("templates/app.conf")
    (root / "docs").symlink_to("components")
    names = sorted([*files, "components/app/latest", "docs"])
    return [SnapshotFile(name, str(root / name)) for name in names]


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()


# --- writing ----------------------------------------------------------------


def test_the_same_files_in_another_order_give_the_same_bytes(tmp_path: Path) -> None:
    files = make_tree(tmp_path)

    assert tar_bytes(files, MTIME) == tar_bytes(list(reversed(files)), MTIME)


def test_mtimes_on_disk_do_not_matter(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    before = tar_bytes(files, MTIME)

    for entry in files:
        os.utime(entry.source, (12345, 67890), follow_symlinks=False)

    assert tar_bytes(files, MTIME) == before


def test_the_directory_and_cwd_do_not_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = tar_bytes(make_tree(tmp_path / "one"), MTIME)
    elsewhere = tmp_path / "some" / "other" / "place"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)

    second = tar_bytes(make_tree(tmp_path / "two"), MTIME)

    assert first == second


def test_the_mtime_is_the_one_given(tmp_path: Path) -> None:
    files = make_tree(tmp_path)

    infos = members(tar_bytes(files, MTIME))

    assert {info.mtime for info in infos} == {MTIME}
    assert tar_bytes(files, MTIME) != tar_bytes(files, MTIME + 1)


def test_owners_are_root_without_names(tmp_path: Path) -> None:
    for info in members(tar_bytes(make_tree(tmp_path), MTIME)):
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", ""), info.name


def test_modes_are_normalised_by_the_exec_bit(tmp_path: Path) -> None:
    infos = {info.name: info for info in members(tar_bytes(make_tree(tmp_path), MTIME))}

    modes = {name: info.mode for name, info in infos.items() if info.isreg()}
    assert modes == {
        "README.md": 0o644,
        "bin/tool": 0o755,
        "components/app/component.py": 0o644,
        "components/app/run.sh": 0o755,
        "components/app/templates/app.conf": 0o644,
        "environments/prod.cfg": 0o644,
    }
    assert {info.mode for info in infos.values() if info.isdir()} == {0o755}


def test_parent_directories_are_added_in_sorted_order(tmp_path: Path) -> None:
    infos = members(tar_bytes(make_tree(tmp_path), MTIME))

    assert [(info.name, info.isdir()) for info in infos] == [
        ("README.md", False),
        ("bin", True),
        ("bin/tool", False),
        ("components", True),
        ("components/app", True),
        ("components/app/component.py", False),
        ("components/app/latest", False),
        ("components/app/run.sh", False),
        ("components/app/templates", True),
        ("components/app/templates/app.conf", False),
        ("docs", False),
        ("environments", True),
        ("environments/prod.cfg", False),
    ]


def test_symlinks_are_kept_as_links(tmp_path: Path) -> None:
    infos = {info.name: info for info in members(tar_bytes(make_tree(tmp_path), MTIME))}

    assert infos["components/app/latest"].issym()
    assert infos["components/app/latest"].linkname == "templates/app.conf"
    assert infos["docs"].issym()
    assert infos["docs"].linkname == "components"
    assert infos["docs"].size == 0


def test_no_pax_headers_carry_timestamps(tmp_path: Path) -> None:
    data = tar_bytes(make_tree(tmp_path), MTIME)

    for info in members(data):
        assert info.pax_headers == {}, info.name
    assert b"mtime=" not in data
    assert b"atime=" not in data
    assert b"ctime=" not in data


def test_a_long_name_gets_only_a_path_pax_header(tmp_path: Path) -> None:
    name = "d/" + "x" * 150
    (tmp_path / "d").mkdir()
    (tmp_path / name).write_bytes(b"long")

    infos = members(tar_bytes([SnapshotFile(name, str(tmp_path / name))], MTIME))

    assert infos[1].name == name
    assert set(infos[1].pax_headers) == {"path"}


def test_a_listed_directory_is_kept_even_when_empty(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir(mode=0o700)
    (tmp_path / "full").mkdir()
    (tmp_path / "full/f").write_bytes(b"")
    files = [
        SnapshotFile("empty", str(tmp_path / "empty")),
        SnapshotFile("full", str(tmp_path / "full")),
        SnapshotFile("full/f", str(tmp_path / "full/f")),
    ]

    infos = members(tar_bytes(files, MTIME))

    assert [(i.name, i.isdir(), i.mode) for i in infos] == [
        ("empty", True, 0o755),
        ("full", True, 0o755),
        ("full/f", False, 0o644),
    ]


def test_special_files_are_left_out(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_bytes(b"x")
    files = [
        SnapshotFile("fifo", str(tmp_path / "fifo")),
        SnapshotFile("file", str(tmp_path / "file")),
    ]

    assert [info.name for info in members(tar_bytes(files, MTIME))] == ["file"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a", "a"], "snapshot path 'a' is listed twice"),
        (["/etc/passwd"], "snapshot path '/etc/passwd' is not a normalised relative path"),
        (["../x"], "snapshot path '../x' is not a normalised relative path"),
        (["a/../b"], "snapshot path 'a/../b' is not a normalised relative path"),
        (["./a"], "snapshot path './a' is not a normalised relative path"),
        (["a//b"], "snapshot path 'a//b' is not a normalised relative path"),
        (["a/"], "snapshot path 'a/' is not a normalised relative path"),
        (["."], "snapshot path '.' is not a normalised relative path"),
        ([""], "snapshot path '' is not a normalised relative path"),
    ],
)
def test_write_tar_refuses_paths_extraction_would_refuse(
    tmp_path: Path, names: list[str], message: str
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"")

    with pytest.raises(ValueError) as caught:
        tar_bytes([SnapshotFile(name, str(source)) for name in names], MTIME)

    assert str(caught.value) == message


# --- extracting -------------------------------------------------------------


@pytest.fixture
def strict_umask() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("strict_umask")
def test_extract_restores_contents_modes_and_links(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    destination = tmp_path / "out"

    extract_tar(tar_bytes(files, MTIME), str(destination))

    found = {}
    for current, dirs, names in os.walk(destination):
        for name in [*dirs, *names]:
            path = Path(current, name)
            found[path.relative_to(destination).as_posix()] = path
    assert sorted(found) == [
        "README.md",
        "bin",
        "bin/tool",
        "components",
        "components/app",
        "components/app/component.py",
        "components/app/latest",
        "components/app/run.sh",
        "components/app/templates",
        "components/app/templates/app.conf",
        "docs",
        "environments",
        "environments/prod.cfg",
    ]
    for entry in files:
        path = found[entry.name]
        if os.path.islink(entry.source):
            assert path.is_symlink()
            assert os.readlink(path) == os.readlink(entry.source)
            continue
        assert path.read_bytes() == Path(entry.source).read_bytes()
        executable = os.stat(entry.source).st_mode & 0o100
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if executable else 0o644)
    for name in ["bin", "components", "components/app", "environments"]:
        assert stat.S_IMODE(found[name].stat().st_mode) == 0o755
    assert stat.S_IMODE(destination.stat().st_mode) == 0o755
    assert (destination / "components/app/latest").read_bytes() == b"x = 1\n"
    assert (destination / "docs/app/component.py").read_bytes() == b"class App: pass\n"


def test_extract_then_write_gives_the_same_bytes(tmp_path: Path) -> None:
    data = tar_bytes(make_tree(tmp_path / "src"), MTIME)
    destination = tmp_path / "out"
    extract_tar(data, str(destination))

    files = []
    for current, dirs, names in os.walk(destination):
        for name in names + [d for d in dirs if Path(current, d).is_symlink()]:
            path = Path(current, name)
            files.append(SnapshotFile(path.relative_to(destination).as_posix(), str(path)))

    assert tar_bytes(files, MTIME) == data


def test_extract_wants_a_new_destination(tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        extract_tar(tar_bytes([], MTIME), str(tmp_path))


@dataclass(frozen=True)
class Member:
    name: str
    kind: bytes = tarfile.REGTYPE
    linkname: str = ""
    data: bytes = b""


def hostile_tar(*entries: Member) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.kind
            info.linkname = entry.linkname
            info.mode = 0o755 if entry.kind == tarfile.DIRTYPE else 0o644
            info.size = len(entry.data) if entry.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(entry.data) if info.size else None)
    return buffer.getvalue()


def link(name: str, target: str) -> Member:
    return Member(name, tarfile.SYMTYPE, target)


def directory(name: str) -> Member:
    return Member(name, tarfile.DIRTYPE)


# A harmless file first: extraction must refuse before writing even that.
FIRST = Member("a-first-file", data=b"written?")

HOSTILE: list[tuple[str, tuple[Member, ...], str]] = [
    (
        "absolute-path",
        (FIRST, Member("/etc/cron.d/evil", data=b"x")),
        "snapshot member '/etc/cron.d/evil' has an absolute or invalid path",
    ),
    ("dotdot", (FIRST, Member("../x", data=b"x")), "snapshot member '../x' leaves the tree"),
    (
        "dotdot-inside",
        (FIRST, Member("a/../../x", data=b"x")),
        "snapshot member 'a/../../x' leaves the tree",
    ),
    (
        "backslash",
        (FIRST, Member("a\\..\\x", data=b"x")),
        "snapshot member 'a\\\\..\\\\x' has an absolute or invalid path",
    ),
    (
        "file-named-dot",
        (FIRST, Member("./", data=b"x")),
        "snapshot member './' names the tree itself but is no directory",
    ),
    (
        "symlink-to-root",
        (FIRST, link("root", "/")),
        "snapshot member 'root' links to an absolute path '/'",
    ),
    (
        "symlink-to-dotdot-dotdot",
        (FIRST, link("up", "../..")),
        "snapshot member 'up' links outside the tree ('../..')",
    ),
    (
        "symlink-from-subdir",
        (FIRST, directory("d"), link("d/up", "../../etc")),
        "snapshot member 'd/up' links outside the tree ('../../etc')",
    ),
    (
        "symlink-through-symlink",
        (FIRST, directory("x"), link("x/s", ".."), link("x/l", "s/../..")),
        "snapshot member 'x/l' links outside the tree ('s/../..' through the symlink 'x/s')",
    ),
    (
        "symlink-loop",
        (FIRST, link("p", "q"), link("q", "p")),
        "snapshot member 'p' is part of a symlink loop",
    ),
    (
        "symlink-empty-target",
        (FIRST, link("empty", "")),
        "snapshot member 'empty' is a symlink with an empty target",
    ),
    (
        "member-below-symlink",
        (FIRST, directory("d"), link("l", "d"), Member("l/x", data=b"x")),
        "snapshot member 'l/x' lies below the symlink 'l'",
    ),
    (
        "member-below-symlinked-parent",
        (FIRST, link("l", "."), Member("l/a/b/c", data=b"x")),
        "snapshot member 'l/a/b/c' lies below the symlink 'l'",
    ),
    (
        "hard-link",
        (FIRST, Member("h", tarfile.LNKTYPE, "a-first-file")),
        "snapshot member 'h' is a hard link",
    ),
    (
        "character-device",
        (FIRST, Member("dev/null", tarfile.CHRTYPE)),
        "snapshot member 'dev/null' is a device, fifo or other special file",
    ),
    (
        "block-device",
        (FIRST, Member("sda", tarfile.BLKTYPE)),
        "snapshot member 'sda' is a device, fifo or other special file",
    ),
    (
        "fifo",
        (FIRST, Member("pipe", tarfile.FIFOTYPE)),
        "snapshot member 'pipe' is a device, fifo or other special file",
    ),
    (
        "duplicate-name",
        (FIRST, Member("a", data=b"1"), Member("a", data=b"2")),
        "snapshot member 'a' appears twice",
    ),
    (
        "duplicate-after-normalising",
        (FIRST, Member("a/b", data=b"1"), Member("a//./b", data=b"2")),
        "snapshot member 'a/b' appears twice",
    ),
    (
        "file-and-directory",
        (FIRST, directory("a"), Member("a", data=b"2")),
        "snapshot member 'a' appears twice",
    ),
]


@pytest.mark.parametrize(
    ("entries", "message"),
    [(entries, message) for _id, entries, message in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_a_hostile_tar_is_refused_before_anything_is_written(
    tmp_path: Path, entries: tuple[Member, ...], message: str
) -> None:
    destination = tmp_path / "out"

    with pytest.raises(BundleError) as caught:
        extract_tar(hostile_tar(*entries), str(destination))

    assert caught.value.message == message
    assert not destination.exists()
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize(
    "entries",
    [
        (link("l", "d/x"), directory("d"), Member("d/x", data=b"x")),
        (directory("a"), directory("a/b"), link("a/b/up", "../../c")),
        (directory("x"), link("x/s", ".."), link("x/l", "s/x/s/x")),
        (link("self", "."),),
        (link("dangling", "nowhere/at/all"),),
        (Member("./a", data=b"x"), directory("./")),
    ],
    ids=["to-file", "up-but-inside", "through-symlink-inside", "dot", "dangling", "dot-slash"],
)
def test_links_and_names_that_stay_inside_are_accepted(
    tmp_path: Path, entries: tuple[Member, ...]
) -> None:
    destination = tmp_path / "out"

    extract_tar(hostile_tar(*entries), str(destination))

    for entry in entries:
        path = destination / entry.name
        if entry.kind == tarfile.SYMTYPE:
            assert os.readlink(path) == entry.linkname
            assert os.path.realpath(path).startswith(str(destination))
        else:
            assert os.path.lexists(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the repository snapshot is not a valid tar: empty file"),
        (b"this is no tar" * 100, "the repository snapshot is not a valid tar: invalid header"),
        (
            b"\x28\xb5\x2f\xfd" + b"\x00" * 600,
            "the repository snapshot is not a valid tar: bad checksum",
        ),
    ],
    ids=["empty", "text", "zstd-frame"],
)
def test_a_blob_that_is_no_tar_is_refused(tmp_path: Path, data: bytes, message: str) -> None:
    destination = tmp_path / "out"

    with pytest.raises(BundleError) as caught:
        extract_tar(data, str(destination))

    assert caught.value.message == message
    assert not destination.exists()


def test_an_empty_tar_extracts_to_an_empty_directory(tmp_path: Path) -> None:
    extract_tar(b"\x00" * 1024, str(tmp_path / "out"))

    assert os.listdir(tmp_path / "out") == []


# Two members of 600 bytes: headers at 0 and 1536, data up to 2648, then
# the end-of-archive marker.
TWO_MEMBERS = hostile_tar(Member("a", data=b"a" * 600), Member("b", data=b"b" * 600))
NO_END_MARKER = (
    "the repository snapshot is not a valid tar: no end-of-archive marker at byte {} "
    "(the tar is truncated or damaged)"
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (TWO_MEMBERS[:100], "the repository snapshot is not a valid tar: truncated header"),
        (TWO_MEMBERS[:512], "the repository snapshot is not a valid tar: unexpected end of data"),
        (TWO_MEMBERS[:700], "the repository snapshot is not a valid tar: unexpected end of data"),
        (TWO_MEMBERS[:1024], "the repository snapshot is not a valid tar: unexpected end of data"),
        (TWO_MEMBERS[:1300], "the repository snapshot is not a valid tar: unexpected end of data"),
        # tarfile itself sees a complete archive in these.
        (TWO_MEMBERS[:1536], NO_END_MARKER.format(1536)),
        (TWO_MEMBERS[:2000], NO_END_MARKER.format(1536)),
        (TWO_MEMBERS[:1536] + b"garbage!" * 64, NO_END_MARKER.format(1536)),
        (TWO_MEMBERS[:3072 + 512], NO_END_MARKER.format(3072)),
        (TWO_MEMBERS[:3072 + 1024] + b"\x01", NO_END_MARKER.format(3072)),
        (TWO_MEMBERS[:2600], "the repository snapshot is not a valid tar: unexpected end of data"),
    ],
    ids=[
        "in-first-header",
        "after-first-header",
        "in-first-data",
        "late-in-first-data",
        "in-first-padding",
        "at-second-header",
        "in-second-header",
        "garbage-second-header",
        "one-end-block",
        "data-after-end",
        "in-second-data",
    ],
)
def test_a_truncated_or_damaged_tar_is_refused_before_anything_is_written(
    tmp_path: Path, data: bytes, message: str
) -> None:
    destination = tmp_path / "out"

    with pytest.raises(BundleError) as caught:
        extract_tar(data, str(destination))

    assert caught.value.message == message
    assert not destination.exists()
