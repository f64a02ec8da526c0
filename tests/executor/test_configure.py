"""Configuring a host's roots, and the trees both sides compare."""

from __future__ import annotations

from pathlib import Path

from executor.component import Component
from executor.configure import first_tree_difference, tree_of
from executor.environment import Environment, Host
from executor.lib.file import File
from executor.model import EnvironmentRecord, HostRecord, VfsMode, VfsRules


class App(Component):
    def configure(self) -> None:
        self += File("conf", content="x")
        self += File("/srv/app/shared.conf", content="y")
        self += File("/srv/app-logs/z", content="z")


def configured(target: str | None, tmp_path: Path, vfs: VfsRules | None = None) -> App:
    record = EnvironmentRecord(name="prod", target_directory="/srv/app", vfs=vfs or VfsRules())
    app = App()
    app.prepare_root(
        name="app",
        host=Host(HostRecord("web1", "web1"), None),
        environment=Environment(record, target_directory=target, base_dir=str(tmp_path)),
        defdir=str(tmp_path),
    )
    return app


def test_trees_abstract_the_target_as_a_whole_path(tmp_path: Path) -> None:
    tree = tree_of(configured(None, tmp_path))

    assert tree == (
        "App",
        "App > File('{target}/work/app/conf')",
        "App > File('{target}/work/app/conf') > Presence('{target}/work/app/conf')",
        "App > File('{target}/work/app/conf') > Content('{target}/work/app/conf')",
        "App > File('{target}/shared.conf')",
        "App > File('{target}/shared.conf') > Presence('{target}/shared.conf')",
        "App > File('{target}/shared.conf') > Content('{target}/shared.conf')",
        "App > File('/srv/app-logs/z')",
        "App > File('/srv/app-logs/z') > Presence('/srv/app-logs/z')",
        "App > File('/srv/app-logs/z') > Content('/srv/app-logs/z')",
    )


def test_another_target_directory_builds_the_same_tree(tmp_path: Path) -> None:
    for vfs in (VfsRules(), VfsRules(VfsMode.DEVELOPER)):
        built = tree_of(configured(None, tmp_path, vfs))
        moved = configured(str(tmp_path / "elsewhere"), tmp_path, vfs)

        assert first_tree_difference(built, tree_of(moved)) is None
        # Paths below the configured target move along with it.
        shared = moved.sub_components[1]
        assert isinstance(shared, File)
        assert shared.path == str(tmp_path / "elsewhere/shared.conf")


class Fetcher(Component):
    namevar = "url"
    url = ""


class Mirror(Component):
    def configure(self) -> None:
        self += Fetcher("https://deploy:s3cret/token@mirror.example.com/app.tgz")


def test_trees_mask_credentials_in_names(tmp_path: Path) -> None:
    app = Mirror()
    record = EnvironmentRecord(name="prod", target_directory="/srv/app", vfs=VfsRules())
    app.prepare_root(
        name="mirror",
        host=Host(HostRecord("web1", "web1"), None),
        environment=Environment(record, base_dir=str(tmp_path)),
        defdir=str(tmp_path),
    )

    tree = tree_of(app)

    assert tree == ("Mirror", "Mirror > Fetcher('https://deploy:***@mirror.example.com/app.tgz')")
    assert not any("s3cret" in line for line in tree)


def test_first_tree_difference_describes_the_first_change() -> None:
    assert first_tree_difference(("A", "A > B"), ("A", "A > C")) == (
        "component 2: the build had 'A > B', this host has 'A > C'"
    )
    assert first_tree_difference(("A", "A > B"), ("A",)) == (
        "the build had 'A > B', which this host does not configure"
    )
    assert first_tree_difference(("A",), ("A", "A > C")) == (
        "this host configures 'A > C', which the build did not"
    )
    assert first_tree_difference(("A",), ("A",)) is None
