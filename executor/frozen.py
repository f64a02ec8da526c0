"""Values that cross from one host's roots to another's, as plain data.

When a root on one host requires what a root on another provides, the
builder freezes the value into the requiring host's model, and the host
thaws it: the executor configures only its own roots, so it cannot ask the
provider. Freezing keeps strings, numbers, booleans, None, bytes, lists,
dicts with string keys, :class:`Address`, :class:`NetLoc`, hosts, and
components, which become read-only snapshots of their public data
attributes. Anything else is refused, naming what it is.

The builder hands out thawed values too, so that configure sees the same
objects in the builder as on the host.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .component import _RUNTIME_NAMES, Attribute, Component
from .environment import Host
from .errors import ConsignError
from .utils import Address, NetLoc

TAG = "$"
MAX_DEPTH = 8


class FreezeError(ValueError):
    """A value that cannot travel between hosts; names where it sits."""

    def __init__(self, path: str, value: object) -> None:
        super().__init__(
            f"{path} is a {type(value).__module__}.{type(value).__qualname__}, which cannot "
            "travel to another host"
        )
        self.path = path


def freeze(value: Any, path: str = "value", depth: int = 0) -> Any:
    """`value` as canonical plain data (maps tagged with "$")."""
    if depth > MAX_DEPTH:
        raise FreezeError(path, value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise FreezeError(path, value)
        return {TAG: "float", "value": repr(value)}
    if isinstance(value, (bytes, bytearray)):
        return {TAG: "bytes", "value": bytes(value)}
    if isinstance(value, (list, tuple)):
        return [freeze(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        items = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise FreezeError(f"{path} key {key!r}", key)
            items[key] = freeze(item, f"{path}[{key!r}]", depth + 1)
        return {TAG: "dict", "items": items}
    if isinstance(value, NetLoc):
        return {TAG: "netloc", "host": value.host, "port": value.port}
    if isinstance(value, Address):
        return {
            TAG: "address",
            "host": value.connect.host,
            "port": value.connect.port,
            "listen": None if value._listen is None else str(value._listen.host),
            "listen_v6": None if value._listen_v6 is None else str(value._listen_v6.host),
            "require_v4": value.require_v4,
            "require_v6": value.require_v6,
        }
    if isinstance(value, (Host, FrozenHost)):
        # A host's data stays in its own bundle: only its names travel.
        return {TAG: "host", "name": value.name, "fqdn": value.fqdn}
    if isinstance(value, (Component, FrozenComponent)):
        return _freeze_component(value, path, depth)
    raise FreezeError(path, value)


def _public_attributes(component: Component) -> dict[str, Any]:
    names = {k for k in component.__dict__ if not k.startswith("_")}
    for klass in type(component).__mro__:
        names.update(k for k, v in vars(klass).items() if isinstance(v, Attribute))
    names -= _RUNTIME_NAMES | {"workdir", "features", "converges"}
    values = {}
    for name in sorted(names):
        try:
            values[name] = getattr(component, name)
        except ConsignError:
            # An Attribute without value: there is nothing to snapshot.
            continue
    return values


def _freeze_component(value: Component | FrozenComponent, path: str, depth: int) -> Any:
    if isinstance(value, FrozenComponent):
        return value._frozen
    attributes = {
        name: freeze(item, f"{path}.{name}", depth + 1)
        for name, item in _public_attributes(value).items()
    }
    host = getattr(value, "host", None)
    return {
        TAG: "component",
        "class": type(value).__name__,
        "breadcrumb": value._breadcrumbs,
        "host": None if host is None else freeze(host, f"{path}.host", depth + 1),
        "attributes": attributes,
    }


class FrozenHost:
    """The host of a component on another host: its name and fqdn.

    Its ``data-*`` values never leave its own bundle; a provider that wants
    to share one provides it as an attribute.
    """

    def __init__(self, name: str, fqdn: str) -> None:
        self.name = name
        self.fqdn = fqdn

    @property
    def data(self) -> Mapping[str, str]:
        raise AttributeError(
            f"the data of host {self.name!r} does not travel to other hosts' bundles; "
            "provide the values you need as attributes of the provided component"
        )

    def __repr__(self) -> str:
        return f"<Host {self.name} (frozen)>"


class FrozenComponent:
    """A read-only snapshot of a provided component's public data attributes."""

    def __init__(self, frozen: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_frozen", dict(frozen))
        object.__setattr__(self, "_breadcrumb", frozen["breadcrumb"])
        object.__setattr__(self, "_values", {k: thaw(v) for k, v in frozen["attributes"].items()})
        host = frozen.get("host")
        object.__setattr__(self, "host", None if host is None else thaw(host))

    def __getattr__(self, name: str) -> Any:
        values: dict[str, Any] = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(
            f"{self._breadcrumb} (provided on another host) has no data attribute {name!r}; "
            "only its public data attributes travel"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self._breadcrumb} is a read-only snapshot of a provided component")

    def __repr__(self) -> str:
        return f"<{self._breadcrumb} (frozen)>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrozenComponent) and self._frozen == other._frozen

    def __hash__(self) -> int:
        return hash(self._breadcrumb)


def thaw(value: Any) -> Any:
    """The value a frozen one stands for."""
    if isinstance(value, list):
        return [thaw(item) for item in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(TAG)
    if tag == "dict":
        return {key: thaw(item) for key, item in value["items"].items()}
    if tag == "float":
        return float(value["value"])
    if tag == "bytes":
        return bytes(value["value"])
    if tag == "netloc":
        return NetLoc(value["host"], value["port"])
    if tag == "address":
        return Address.frozen(
            value["host"],
            value["port"],
            value["listen"],
            value["listen_v6"],
            value["require_v4"],
            value["require_v6"],
        )
    if tag == "host":
        return FrozenHost(value["name"], value["fqdn"])
    if tag == "component":
        return FrozenComponent(value)
    raise ValueError(f"unknown frozen value {tag!r}")
