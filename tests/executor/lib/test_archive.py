"""Extract, Untar and Unzip: pure-Python extraction, refused escapes, repair by content.

Archives are built in tmp_path with tarfile and zipfile; every successful
case applies twice and the second run changes nothing.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from executor.component import Component
from executor.errors import ConfigurationError, DeployError
from executor.lib.archive import Extract, Untar, Unzip
from executor.lib.download import Download

from .helpers import apply_twice, configure, deploy, workdir

MTIME = 1_600_000_000
DATA_TXT = b"data\n" * 100


@dataclass(frozen=True)
class M:
    """A member to put into a test archive."""

    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, fifo, chr
    data: bytes = b""
    mode: int = 0o644
    link: str = ""


STANDARD = [
    M("pkg/", "dir", mode=0o755),
    M("pkg/bin/", "dir", mode=0o755),
    M("pkg/bin/run", data=b"#!/bin/sh\necho run\n", mode=0o755),
    M("pkg/README", data=b"read me\n"),
    M("pkg/lib/data.txt", data=DATA_TXT),
    M("pkg/secret", data=b"s3cret\n", mode=0o600),
    M("pkg/current", "symlink", link="lib"),
    M("pkg/copy", "hardlink", link="pkg/README"),
]

TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chr": tarfile.CHRTYPE,
}
ZIP_TYPES = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO}
COMPRESSION = {".tar": "", ".tar.gz": "gz", ".tgz": "gz", ".tar.bz2": "bz2", ".tar.xz": "xz"}
SUFFIXES = [*COMPRESSION, ".zip"]


def write_tar(path: Path, members: list[M]) -> Path:
    suffix = next(s for s in sorted(COMPRESSION, key=len, reverse=True) if path.name.endswith(s))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, f"w:{COMPRESSION[suffix]}") as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = TAR_TYPES[member.kind]
            info.mode = member.mode
            info.mtime = MTIME
            info.linkname = member.link
            info.size = len(member.data)
            tar.addfile(info, io.BytesIO(member.data) if member.kind == "file" else None)
    return path


def write_zip(path: Path, members: list[M]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in members:
            if member.kind == "hardlink":
                continue  # zip has none
            info = zipfile.ZipInfo(member.name, date_time=(2020, 9, 13, 12, 26, 40))
            info.create_system = 3
            info.external_attr = (ZIP_TYPES[member.kind] | member.mode) << 16
            data = member.link.encode() if member.kind == "symlink" else member.data
            archive.writestr(info, data)
    return path


def write_archive(path: Path, members: list[M]) -> Path:
    return write_zip(path, members) if path.name.endswith(".zip") else write_tar(path, members)


def root_with(make: Callable[[], Component]) -> Callable[[], Component]:
    class Root(Component):
        def configure(self) -> None:
            self += make()

    return Root


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".consign-*"))


def tree(top: Path) -> dict[str, str]:
    """Relative path -> what is there, for comparing whole trees."""
    found: dict[str, str] = {}
    for path in sorted(top.rglob("*")):
        relative = str(path.relative_to(top))
        if path.is_symlink():
            found[relative] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[relative] = "dir"
        else:
            found[relative] = f"{stat.S_IMODE(path.stat().st_mode):o} {path.read_bytes()!r}"
    return found


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return write_tar(workdir(tmp_path) / "app.tar.gz", STANDARD)


def crumbs(archive: Path, extractor: str = "Untar") -> str:
    return f"Root > Extract('{archive}') > {extractor}('{archive}')"


# -- normal use --------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_each_format_extracts_and_a_second_run_changes_nothing(
    tmp_path: Path, suffix: str
) -> None:
    archive = write_archive(workdir(tmp_path) / f"app{suffix}", STANDARD)

    first, _ = apply_twice(root_with(lambda: Extract(f"app{suffix}")), tmp_path)

    extractor = "Unzip" if suffix == ".zip" else "Untar"
    assert first.changed == (crumbs(archive, extractor),)
    target = workdir(tmp_path) / "app"
    expected = {
        "pkg": "dir",
        "pkg/README": "644 b'read me\\n'",
        "pkg/bin": "dir",
        "pkg/bin/run": "755 b'#!/bin/sh\\necho run\\n'",
        "pkg/current": "-> lib",
        "pkg/lib": "dir",
        "pkg/lib/data.txt": f"644 {DATA_TXT!r}",
        "pkg/secret": "600 b's3cret\\n'",
    }
    if suffix != ".zip":
        expected["pkg/copy"] = "644 b'read me\\n'"
    assert tree(target) == expected
    if suffix != ".zip":
        assert (target / "pkg" / "README").stat().st_mtime == MTIME
    assert leftovers(tmp_path) == []


@pytest.fixture
def zone_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The local time zone five hours west of UTC (a POSIX TZ: no tzdata needed)."""
    monkeypatch.setenv("TZ", "XST5")
    time.tzset()
    try:
        assert time.timezone == 5 * 3600
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("zone_not_utc")
@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_modification_times_do_not_depend_on_the_time_zone(tmp_path: Path, suffix: str) -> None:
    # The zip's (2020, 9, 13, 12, 26, 40) is MTIME in UTC, like the tar's.
    write_archive(workdir(tmp_path) / f"app{suffix}", STANDARD)

    apply_twice(root_with(lambda: Extract(f"app{suffix}")), tmp_path)

    target = workdir(tmp_path) / "app" / "pkg"
    assert [(target / name).stat().st_mtime for name in ("README", "lib/data.txt")] == [
        MTIME,
        MTIME,
    ]


def test_strip_drops_leading_components_and_skips_shorter_members(tmp_path: Path) -> None:
    archive = write_tar(
        workdir(tmp_path) / "app.tar.xz", [*STANDARD, M("toplevel.txt", data=b"top\n")]
    )

    apply_twice(root_with(lambda: Extract("app.tar.xz", target="release", strip=1)), tmp_path)

    target = workdir(tmp_path) / "release"
    assert sorted(tree(target)) == [
        "README", "bin", "bin/run", "copy", "current", "lib", "lib/data.txt", "secret"
    ]
    assert (target / "copy").read_bytes() == b"read me\n"
    assert not (target / "toplevel.txt").exists()
    assert archive.exists()


def test_strip_two_with_zip(tmp_path: Path) -> None:
    write_zip(workdir(tmp_path) / "site.zip", STANDARD)

    apply_twice(root_with(lambda: Extract("site.zip", strip=2)), tmp_path)

    assert tree(workdir(tmp_path) / "site") == {
        "data.txt": f"644 {DATA_TXT!r}",
        "run": "755 b'#!/bin/sh\\necho run\\n'",
    }


def test_the_default_target_is_in_the_workdir_named_after_the_archive(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "downloads" / "app-1.4.tgz", STANDARD)

    root = configure(root_with(lambda: Extract(str(archive))), tmp_path)

    (extract,) = root.sub_components
    assert isinstance(extract, Extract)
    assert extract.target == str(workdir(tmp_path) / "app-1.4")
    assert isinstance(extract.sub_components[0], Untar)


def test_untar_and_unzip_are_usable_directly(tmp_path: Path) -> None:
    write_tar(workdir(tmp_path) / "a.tar.bz2", STANDARD)
    write_zip(workdir(tmp_path) / "b.zip", STANDARD)

    class Root(Component):
        def configure(self) -> None:
            self += Untar("a.tar.bz2", target="a", strip=1)
            self += Unzip("b.zip", target="b", strip=1)

    apply_twice(Root, tmp_path)

    assert (workdir(tmp_path) / "a" / "bin" / "run").read_bytes() == b"#!/bin/sh\necho run\n"
    assert (workdir(tmp_path) / "b" / "bin" / "run").read_bytes() == b"#!/bin/sh\necho run\n"


def test_an_existing_target_with_create_target_dir_false(tmp_path: Path, archive: Path) -> None:
    target = tmp_path / "htdocs"
    target.mkdir()
    (target / "local.txt").write_text("mine\n")

    apply_twice(
        root_with(
            lambda: Extract("app.tar.gz", target=str(target), create_target_dir=False, strip=1)
        ),
        tmp_path,
    )

    assert (target / "README").read_bytes() == b"read me\n"
    assert (target / "local.txt").read_text() == "mine\n"


def test_a_downloaded_archive_is_extracted(tmp_path: Path) -> None:
    mirror = write_tar(tmp_path / "mirror" / "app-1.4.tar.gz", STANDARD)
    digest = hashlib.sha256(mirror.read_bytes()).hexdigest()

    class Root(Component):
        def configure(self) -> None:
            self += Download(f"file://{mirror}", checksum=f"sha256:{digest}")
            self += Extract("app-1.4.tar.gz", strip=1)

    first, _ = apply_twice(Root, tmp_path)

    assert len(first.changed) == 2
    assert (workdir(tmp_path) / "app-1.4" / "README").read_bytes() == b"read me\n"


def test_batou_import_paths() -> None:
    from batou.lib import archive as batou_archive

    assert batou_archive.Extract is Extract
    assert batou_archive.Untar is Untar
    assert batou_archive.Unzip is Unzip


# -- drift, new versions, dry run ----------------------------------------------


def test_drift_is_repaired_and_unchanged_files_are_left_alone(
    tmp_path: Path, archive: Path
) -> None:
    factory = root_with(lambda: Extract("app.tar.gz"))
    apply_twice(factory, tmp_path)
    pkg = workdir(tmp_path) / "app" / "pkg"
    expected = tree(pkg)
    (pkg / "lib" / "data.txt").write_text("changed by hand\n")
    (pkg / "bin" / "run").chmod(0o644)
    (pkg / "README").unlink()
    (pkg / "current").unlink()
    (pkg / "current").symlink_to("elsewhere")
    (pkg / "extra.log").write_text("not in the archive\n")
    secret_mtime = (pkg / "secret").stat().st_mtime_ns
    os.utime(pkg / "secret", ns=(secret_mtime, secret_mtime))

    first, _ = apply_twice(factory, tmp_path)

    assert first.changed == (crumbs(archive),)
    assert tree(pkg) == {**expected, "extra.log": "644 b'not in the archive\\n'"}
    assert (pkg / "secret").stat().st_mtime_ns == secret_mtime
    assert leftovers(tmp_path) == []


def test_a_new_archive_version_updates_only_what_changed(tmp_path: Path, archive: Path) -> None:
    factory = root_with(lambda: Extract("app.tar.gz"))
    apply_twice(factory, tmp_path)
    pkg = workdir(tmp_path) / "app" / "pkg"
    readme = (pkg / "README").stat()
    newer = [m for m in STANDARD if m.name != "pkg/lib/data.txt"]
    write_tar(archive, [*newer, M("pkg/lib/data.txt", data=b"v2\n"), M("pkg/new", data=b"n\n")])

    apply_twice(factory, tmp_path)

    assert (pkg / "lib" / "data.txt").read_bytes() == b"v2\n"
    assert (pkg / "new").read_bytes() == b"n\n"
    assert (pkg / "README").stat().st_ino == readme.st_ino


def test_a_dry_run_changes_nothing(tmp_path: Path, archive: Path) -> None:
    factory = root_with(lambda: Extract("app.tar.gz"))

    outcome, _ = deploy(factory, tmp_path, predicting=True)

    assert outcome.error is None
    assert outcome.changed == (crumbs(archive),)
    assert not (workdir(tmp_path) / "app").exists()

    apply_twice(factory, tmp_path)
    data = workdir(tmp_path) / "app" / "pkg" / "lib" / "data.txt"
    data.write_text("drift\n")

    outcome, _ = deploy(factory, tmp_path, predicting=True)

    assert outcome.changed == (crumbs(archive),)
    assert data.read_text() == "drift\n"
    assert leftovers(tmp_path) == []


def test_a_missing_archive_is_an_error_but_fine_in_a_dry_run(tmp_path: Path) -> None:
    archive = workdir(tmp_path) / "app.tar.gz"
    factory = root_with(lambda: Extract("app.tar.gz"))

    predicted, _ = deploy(factory, tmp_path, predicting=True)
    outcome, _ = deploy(factory, tmp_path)

    assert predicted.error is None
    assert predicted.changed == (crumbs(archive),)
    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"archive {archive} does not exist"
    assert error.hint is not None and "Download" in error.hint
    assert error.where == crumbs(archive)


# -- refused archives ------------------------------------------------------------


MALICIOUS = {
    "absolute": (
        [M("/tmp/consign-evil", data=b"x")],
        0,
        "member '/tmp/consign-evil' is an absolute path",
    ),
    "dotdot": (
        [M("pkg/../../evil", data=b"x")],
        0,
        "member 'pkg/../../evil' has a '..' component",
    ),
    "dotdot after strip": (
        [M("pkg/../evil", data=b"x")],
        1,
        "member 'pkg/../evil' has a '..' component (after strip=1)",
    ),
    "absolute symlink": (
        [M("pkg/passwd", "symlink", link="/etc/passwd")],
        0,
        "symlink 'pkg/passwd' points outside the target ('/etc/passwd')",
    ),
    "escaping symlink": (
        [M("pkg/up", "symlink", link="../../outside")],
        0,
        "symlink 'pkg/up' points outside the target ('../../outside')",
    ),
    "symlink chain": (
        [M("pkg/here", "symlink", link="."), M("pkg/x", "symlink", link="here/../../y")],
        0,
        "symlink 'pkg/x' points outside the target ('here/../../y')",
    ),
    "symlink loop": (
        [M("a", "symlink", link="b"), M("b", "symlink", link="a/x")],
        0,
        "symlink 'a' is part of a symlink loop ('b')",
    ),
    "hard link escape": (
        [M("pkg/h", "hardlink", link="../../etc/passwd")],
        0,
        "hard link 'pkg/h' points outside the target ('../../etc/passwd')",
    ),
    "absolute hard link": (
        [M("pkg/h", "hardlink", link="/etc/passwd")],
        0,
        "hard link 'pkg/h' points outside the target ('/etc/passwd')",
    ),
    "hard link to nothing": (
        [M("pkg/h", "hardlink", link="pkg/missing")],
        0,
        "hard link 'pkg/h' points at 'pkg/missing', which is no file extracted before it",
    ),
    "below a symlink": (
        [M("pkg/sub/", "dir"), M("pkg/l", "symlink", link="sub"), M("pkg/l/x", data=b"x")],
        0,
        "member 'pkg/l/x' lies below the symlink 'pkg/l'",
    ),
    "fifo": ([M("pkg/fifo", "fifo")], 0, "member 'pkg/fifo' is a FIFO"),
    "device": ([M("pkg/dev", "chr")], 0, "member 'pkg/dev' is a character device"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_members_landing_outside_the_target_refuse_the_whole_archive(
    tmp_path: Path, case: str
) -> None:
    bad, strip, message = MALICIOUS[case]
    # Good members first: none of them may be written either.
    archive = write_tar(workdir(tmp_path) / "app.tar", [*STANDARD, *bad])

    for predicting in (True, False):
        outcome, _ = deploy(
            root_with(lambda: Extract("app.tar", strip=strip)), tmp_path, predicting=predicting
        )

        error = outcome.error
        assert isinstance(error, DeployError)
        assert error.message == f"refusing to extract {archive}: {message}"
        assert error.hint is not None and error.hint.startswith("nothing was extracted")
        assert error.where == crumbs(archive)
        assert f"{crumbs(archive)}: refusing" in str(error)
    assert not (workdir(tmp_path) / "app").exists()
    assert not Path("/tmp/consign-evil").exists()
    assert not (tmp_path / "target" / "evil").exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (M("/tmp/consign-evil", data=b"x"), "member '/tmp/consign-evil' is an absolute path"),
        (M("../evil", data=b"x"), "member '../evil' has a '..' component"),
        (
            M("pkg/up", "symlink", link="../../x"),
            "symlink 'pkg/up' points outside the target ('../../x')",
        ),
        (M("pkg/fifo", "fifo"), "member 'pkg/fifo' is a FIFO"),
    ],
)
def test_zip_members_landing_outside_the_target_are_refused(
    tmp_path: Path, bad: M, message: str
) -> None:
    archive = write_zip(workdir(tmp_path) / "app.zip", [*STANDARD, bad])

    outcome, _ = deploy(root_with(lambda: Extract("app.zip")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"refusing to extract {archive}: {message}"
    assert error.where == crumbs(archive, "Unzip")
    assert not (workdir(tmp_path) / "app").exists()


def test_a_symlink_on_disk_is_not_written_through(tmp_path: Path, archive: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = workdir(tmp_path) / "app"
    target.mkdir(parents=True)
    (target / "pkg").symlink_to(outside)

    outcome, _ = deploy(root_with(lambda: Extract("app.tar.gz")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"{target / 'pkg'} is a symlink, but {archive} has a directory there"
    assert error.where == crumbs(archive)
    assert list(outside.iterdir()) == []


def test_a_directory_where_the_archive_has_a_file_is_an_error(
    tmp_path: Path, archive: Path
) -> None:
    readme = workdir(tmp_path) / "app" / "pkg" / "README"
    readme.mkdir(parents=True)

    outcome, _ = deploy(root_with(lambda: Extract("app.tar.gz")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"{readme} is a directory, but {archive} has a file there"
    assert error.where == crumbs(archive)


# -- bad input ---------------------------------------------------------------------


def test_an_unknown_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    archive = workdir(tmp_path) / "app.rar"

    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: Extract("app.rar")), tmp_path)

    assert info.value.message == (
        f"cannot tell the format of {archive} from its name; "
        "Extract knows .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .zip"
    )
    assert info.value.hint is not None and "Untar or Unzip" in info.value.hint
    assert info.value.where == f"Root > Extract('{archive}')"


@pytest.mark.parametrize("strip", [-1, "1", True])
def test_a_bad_strip_is_a_configuration_error(tmp_path: Path, strip: object) -> None:
    archive = workdir(tmp_path) / "app.tgz"

    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: Extract("app.tgz", strip=strip)), tmp_path)

    assert info.value.message == (
        f"strip must be a whole number of path components (0 or more), got {strip!r}"
    )
    assert info.value.where == crumbs(archive)


def test_untar_without_a_known_suffix_needs_a_target(tmp_path: Path) -> None:
    archive = workdir(tmp_path) / "app.bin"

    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: Untar("app.bin")), tmp_path)

    assert info.value.message == (
        f"cannot name the target after {archive}: "
        "Untar knows the suffixes .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz"
    )
    assert info.value.where == f"Root > Untar('{archive}')"


def test_a_missing_target_with_create_target_dir_false_is_an_error(
    tmp_path: Path, archive: Path
) -> None:
    target = tmp_path / "htdocs"

    outcome, _ = deploy(
        root_with(lambda: Extract("app.tar.gz", target=str(target), create_target_dir=False)),
        tmp_path,
    )

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"target directory {target} does not exist (create_target_dir=False)"
    assert error.hint is not None and "Directory" in error.hint
    assert error.where == crumbs(archive)
    assert not target.exists()


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_a_damaged_archive_is_an_error(tmp_path: Path, suffix: str) -> None:
    archive = workdir(tmp_path) / f"app{suffix}"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"this is no archive\n" * 10)

    outcome, _ = deploy(root_with(lambda: Extract(f"app{suffix}")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    kind = "zip" if suffix == ".zip" else "tar"
    assert error.message.startswith(f"cannot read {kind} archive {archive}: ")
    assert error.where == crumbs(archive, "Unzip" if suffix == ".zip" else "Untar")
    assert not (workdir(tmp_path) / "app").exists()


def test_a_truncated_archive_writes_no_file(tmp_path: Path) -> None:
    archive = write_tar(workdir(tmp_path) / "app.tar.gz", STANDARD)
    archive.write_bytes(archive.read_bytes()[:-40])

    outcome, _ = deploy(root_with(lambda: Extract("app.tar.gz")), tmp_path)

    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message.startswith(f"cannot read tar archive {archive}: ")
    assert leftovers(tmp_path) == []
    target = workdir(tmp_path) / "app"
    assert not target.exists() or [p for p in target.rglob("*") if p.is_file()] == []


# -- atomicity ---------------------------------------------------------------------


def test_an_interrupted_update_leaves_whole_files_and_is_repaired(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = root_with(lambda: Extract("app.tar.gz"))
    apply_twice(factory, tmp_path)
    pkg = workdir(tmp_path) / "app" / "pkg"
    (pkg / "README").write_text("old readme\n")
    (pkg / "lib" / "data.txt").write_text("old data\n")
    real_rename = os.rename
    moves: list[str] = []

    def failing_rename(source: str, destination: str) -> None:
        if ".consign-extract-" in str(source):
            moves.append(str(destination))
            if len(moves) == 2:
                raise OSError(errno.EIO, "simulated failure", destination)
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", failing_rename)
    outcome, _ = deploy(factory, tmp_path)
    monkeypatch.undo()

    assert isinstance(outcome.error, DeployError)
    assert "simulated failure" in outcome.error.message
    # Sorted by path: README moved whole, data.txt kept its old content whole.
    assert (pkg / "README").read_bytes() == b"read me\n"
    assert (pkg / "lib" / "data.txt").read_text() == "old data\n"
    assert leftovers(tmp_path) == []

    apply_twice(factory, tmp_path)
    assert (pkg / "lib" / "data.txt").read_bytes() == b"data\n" * 100


def test_a_target_on_another_file_system_is_filled_by_copies(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename

    def cross_device(source: str, destination: str) -> None:
        if ".consign-extract-" in str(source):
            raise OSError(errno.EXDEV, "Invalid cross-device link", destination)
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", cross_device)
    apply_twice(root_with(lambda: Extract("app.tar.gz")), tmp_path)

    run = workdir(tmp_path) / "app" / "pkg" / "bin" / "run"
    assert run.read_bytes() == b"#!/bin/sh\necho run\n"
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    assert run.stat().st_mtime == MTIME
    assert leftovers(tmp_path) == []
