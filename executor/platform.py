"""This host's Python as a complete platform, for building its runtime exactly.

``executor inspect-platform > FILE`` on a host gives the file the builder
takes from ``environments/ENV/platforms/HOST.json``: the marker environment
and the wheel tags the host's interpreter accepts, in the format pex reads
with ``--complete-platform``.
"""

from __future__ import annotations

import sys
from typing import Any

from packaging import markers, tags


def _generality(tag: tags.Tag) -> int:
    return 1 if tag.platform.startswith("linux_") else 0


def _ordered(found: list[tags.Tag]) -> list[str]:
    """Most preferred first: packaging's order, except that within one
    interpreter and ABI the manylinux tags come before the generic linux_*
    tag, as pex lists them (packaging versions differ here). The set of
    tags is what decides compatibility; the order only ranks wheels."""
    groups: dict[tuple[str, str], list[tags.Tag]] = {}
    for tag in found:
        groups.setdefault((tag.interpreter, tag.abi), []).append(tag)
    ordered = []
    for group in groups.values():
        ordered.extend(sorted(group, key=_generality))
    return [str(tag) for tag in ordered]


def complete_platform() -> dict[str, Any]:
    return {
        "path": sys.executable,
        "compatible_tags": _ordered(list(tags.sys_tags())),
        "marker_environment": dict(markers.default_environment()),
    }
