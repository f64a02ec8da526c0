"""VFS mapping and relocation of the target directory."""

from __future__ import annotations

import pytest

from executor.environment import Environment, map_path
from executor.model import EnvironmentRecord, VfsMode, VfsRules

MAP = VfsRules(VfsMode.MAP, (("/", "/sandbox"), ("/srv", "/home/me/srv")))


@pytest.mark.parametrize(
    ("path", "vfs", "expected"),
    [
        ("/etc/x", VfsRules(), "/etc/x"),
        ("relative/x", VfsRules(VfsMode.DEVELOPER), "relative/x"),
        ("/etc/x", VfsRules(VfsMode.DEVELOPER), "/t/work/_/etc/x"),
        ("/t/work/app/x", VfsRules(VfsMode.DEVELOPER), "/t/work/app/x"),
        ("/t", VfsRules(VfsMode.DEVELOPER), "/t"),
        ("/tx/y", VfsRules(VfsMode.DEVELOPER), "/t/work/_/tx/y"),
        ("/etc/x", MAP, "/sandbox/etc/x"),
        ("/srv/a", MAP, "/home/me/srv/a"),
        ("/srv", MAP, "/home/me/srv"),
        ("/srvx/a", MAP, "/sandbox/srvx/a"),
        # Mapping twice changes nothing.
        ("/sandbox/etc/x", MAP, "/sandbox/etc/x"),
        ("/home/me/srv/a", MAP, "/home/me/srv/a"),
    ],
)
def test_map_path(path: str, vfs: VfsRules, expected: str) -> None:
    assert map_path(path, vfs, "/t") == expected


def test_a_target_override_relocates_paths_below_the_configured_target() -> None:
    record = EnvironmentRecord(name="e", target_directory="/srv/app")
    moved = Environment(record, target_directory="/tmp/t")

    assert moved.target_directory == "/tmp/t"
    assert moved.workdir_base == "/tmp/t/work"
    assert moved.map("/srv/app/shared") == "/tmp/t/shared"
    assert moved.map("/srv/app") == "/tmp/t"
    assert moved.map("/srv/app-logs") == "/srv/app-logs"
    assert Environment(record).map("/srv/app/shared") == "/srv/app/shared"
