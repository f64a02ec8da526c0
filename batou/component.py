"""batou.component: the component API (see executor.component)."""

from executor.component import (
    NO_DEFAULT,
    Attribute,
    Component,
    ConfigString,
    UpdateNeeded,
    handle_event,
    platform,
)

__all__ = [
    "NO_DEFAULT",
    "Attribute",
    "Component",
    "ConfigString",
    "UpdateNeeded",
    "handle_event",
    "platform",
]
