"""The host model: everything the builder decided for one host, as frozen data.

The builder writes one :class:`HostModel` per host into its bundle; the
executor reads it back and configures that host's roots from it. The codec
is canonical msgpack (see :mod:`executor.canonical`); decoding validates
every field and names the path of the first bad one.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

from . import canonical
from .decode import DecodeError, Fields, shown, str_item

MODEL_VERSION = 1

FamilyRequirement = bool | Literal["optional"]


class VfsMode(enum.Enum):
    NONE = "none"
    DEVELOPER = "developer"
    MAP = "map"


@dataclass(frozen=True, slots=True)
class VfsRules:
    """How absolute paths are rewritten while developing.

    DEVELOPER puts every absolute path outside the target directory under
    ``<target>/work/_``; MAP rewrites by the longest matching prefix.
    """

    mode: VfsMode = VfsMode.NONE
    rules: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class EnvironmentRecord:
    name: str
    target_directory: str
    service_user: str | None = None
    host_domain: str | None = None
    platform: str | None = None
    timeout: int | None = None
    jobs: int = 1
    require_v4: FamilyRequirement = True
    require_v6: FamilyRequirement = False
    vfs: VfsRules = field(default_factory=VfsRules)


@dataclass(frozen=True, slots=True)
class HostRecord:
    name: str
    fqdn: str
    platform: str | None = None
    data: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RequirementRecord:
    """What one require() of a root got in the build, frozen (see executor.frozen)."""

    key: str
    host: str | None
    values: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class RootRecord:
    """One root component of the host, as the builder configured it."""

    name: str
    features: tuple[str, ...] = ()
    overrides: tuple[tuple[str, str], ...] = ()
    # Breadcrumbs of the configured tree, depth first, to notice when
    # configure on the host builds something else than the builder did.
    tree: tuple[str, ...] = ()
    requires: tuple[RequirementRecord, ...] = ()
    # Keys this root provides, and the roots ("host/root") that deploy
    # before it because it requires what they provide: for inspection.
    provides: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """A name's addresses per family; None: the build never asked."""

    name: str
    v4: tuple[str, ...] | None = None
    v6: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class SkippedRoot:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class HostModel:
    environment: EnvironmentRecord
    host: HostRecord
    roots: tuple[RootRecord, ...] = ()
    skipped: tuple[SkippedRoot, ...] = ()
    # The environment's [resolver] overrides, and the answers configure got.
    resolver: tuple[tuple[str, tuple[str, ...]], ...] = ()
    dns: tuple[DnsRecord, ...] = ()


def _pairs(pairs: tuple[tuple[str, str], ...], what: str) -> dict[str, str]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # dict() would keep the last value silently: a bug in the caller.
        keys = [key for key, _value in pairs]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"{what} has the key {twice[0]!r} twice")
    return result


def _family_from(fields: Fields, key: str) -> FamilyRequirement:
    value = fields.raw(key)
    if value is True or value is False or value == "optional":
        return value  # type: ignore[no-any-return]
    raise DecodeError(fields.path(key), f"expected true, false or 'optional', got {shown(value)}")


def model_to_data(model: HostModel) -> dict[str, Any]:
    env = model.environment
    return {
        "version": MODEL_VERSION,
        "environment": {
            "name": env.name,
            "target_directory": env.target_directory,
            "service_user": env.service_user,
            "host_domain": env.host_domain,
            "platform": env.platform,
            "timeout": env.timeout,
            "jobs": env.jobs,
            "require_v4": env.require_v4,
            "require_v6": env.require_v6,
            "vfs": {
                "mode": env.vfs.mode.value,
                "rules": [[prefix, target] for prefix, target in env.vfs.rules],
            },
        },
        "host": {
            "name": model.host.name,
            "fqdn": model.host.fqdn,
            "platform": model.host.platform,
            "data": _pairs(model.host.data, f"host {model.host.name!r} data"),
        },
        "roots": [
            {
                "name": root.name,
                "features": list(root.features),
                "overrides": _pairs(root.overrides, f"root {root.name!r} overrides"),
                "tree": list(root.tree),
                "requires": [
                    {"key": r.key, "host": r.host, "values": list(r.values)}
                    for r in root.requires
                ],
                "provides": list(root.provides),
                "after": list(root.after),
            }
            for root in model.roots
        ],
        "skipped": [{"name": s.name, "reason": s.reason} for s in model.skipped],
        "resolver": {name: list(addresses) for name, addresses in model.resolver},
        "dns": {
            d.name: {
                "v4": None if d.v4 is None else list(d.v4),
                "v6": None if d.v6 is None else list(d.v6),
            }
            for d in model.dns
        },
    }


def _rule(value: object, path: str) -> tuple[str, str]:
    if not isinstance(value, list):
        raise DecodeError(path, f"expected a [prefix, target] pair, got {shown(value)}")
    if len(value) != 2:
        raise DecodeError(path, f"expected a [prefix, target] pair, got {len(value)} items")
    return (str_item(value[0], f"{path}[0]"), str_item(value[1], f"{path}[1]"))


def _root(value: object, path: str) -> RootRecord:
    f = Fields(value, path)
    root = RootRecord(
        name=f.string("name"),
        features=f.array("features", str_item),
        overrides=f.string_map("overrides"),
        tree=f.array("tree", str_item),
        requires=f.array("requires", _requirement),
        provides=f.array("provides", str_item),
        after=f.array("after", str_item),
    )
    f.done()
    return root


def requirement_fields(f: Fields) -> RequirementRecord:
    """A requirement's key, host and frozen values from `f` (which may hold
    more fields: the caller checks it is done)."""
    values = f.raw("values")
    if not isinstance(values, list):
        raise DecodeError(f.path("values"), f"expected an array, got {shown(values)}")
    for index, item in enumerate(values):
        check_frozen(item, f"{f.path('values')}[{index}]")
    return RequirementRecord(key=f.string("key"), host=f.optional_string("host"), values=tuple(values))


def _requirement(value: object, path: str) -> RequirementRecord:
    f = Fields(value, path)
    requirement = requirement_fields(f)
    f.done()
    return requirement


def _ip(value: object, path: str, version: int | None = None) -> str:
    text = str_item(value, path)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise DecodeError(path, f"expected an IP address, got {shown(text)}") from None
    if version is not None and address.version != version:
        raise DecodeError(path, f"expected an IPv{version} address, got {shown(text)}")
    return text


def _addresses(value: object, path: str, version: int | None = None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise DecodeError(path, f"expected an array or nil, got {shown(value)}")
    return tuple(_ip(item, f"{path}[{i}]", version) for i, item in enumerate(value))


def _resolver(value: object, path: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise DecodeError(path, f"expected a map, got {shown(value)}")
    entries = []
    for name, addresses in sorted(value.items()):
        where = f"{path}[{name!r}]"
        if not isinstance(addresses, list):
            raise DecodeError(where, f"expected an array, got {shown(addresses)}")
        entries.append((name, _addresses(addresses, where) or ()))
    return tuple(entries)


def _dns(value: object, path: str) -> tuple[DnsRecord, ...]:
    if not isinstance(value, dict):
        raise DecodeError(path, f"expected a map, got {shown(value)}")
    records = []
    for name, families in sorted(value.items()):
        f = Fields(families, f"{path}[{name!r}]")
        records.append(
            DnsRecord(
                name,
                _addresses(f.raw("v4"), f.path("v4"), 4),
                _addresses(f.raw("v6"), f.path("v6"), 6),
            )
        )
        f.done()
    return tuple(records)


# Frozen values (executor.frozen): plain data, and maps tagged with "$".
# Deeper than executor.frozen makes one value: provided components nest.
_FROZEN_DEPTH = 64
_FAMILIES = (True, False, "optional")


def _port(f: Fields, value: dict[str, Any], *, optional: bool) -> None:
    port = f.raw("port")
    if port is None and optional:
        return
    if isinstance(port, bool) or not isinstance(port, (int, str)):
        raise DecodeError(f.path("port"), f"expected a port, got {shown(port)}")


def check_frozen(value: object, path: str, depth: int = 0) -> None:
    """Refuse a frozen value the host could not thaw (executor.frozen)."""
    if depth > _FROZEN_DEPTH:
        raise DecodeError(path, "nested too deeply")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_frozen(item, f"{path}[{index}]", depth + 1)
        return
    if not isinstance(value, dict) or "$" not in value:
        raise DecodeError(path, f"expected a frozen value, got {shown(value)}")
    f = Fields(value, path)
    tag = f.string("$")
    if tag == "float":
        text = f.string("value")
        try:
            number = float(text)
        except ValueError:
            raise DecodeError(f.path("value"), f"expected a number, got {shown(text)}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise DecodeError(f.path("value"), f"expected a finite number, got {shown(text)}")
    elif tag == "bytes":
        if not isinstance(f.raw("value"), bytes):
            raise DecodeError(f.path("value"), f"expected bytes, got {shown(value['value'])}")
    elif tag == "dict":
        items = f.mapping("items")
        for key in list(value["items"]):
            check_frozen(items.raw(key), items.path(key), depth + 1)
        items.done()
    elif tag == "netloc":
        f.string("host")
        _port(f, value, optional=True)
    elif tag == "address":
        f.string("host")
        _port(f, value, optional=False)
        for key, version in (("listen", 4), ("listen_v6", 6)):
            if f.raw(key) is not None:
                _ip(value[key], f.path(key), version)
        for key in ("require_v4", "require_v6"):
            if f.raw(key) not in _FAMILIES:
                raise DecodeError(
                    f.path(key), f"expected true, false or 'optional', got {shown(value[key])}"
                )
    elif tag == "host":
        f.string("name")
        f.string("fqdn")
    elif tag == "component":
        f.string("class")
        f.string("breadcrumb")
        host = f.raw("host")
        if host is not None:
            check_frozen(host, f.path("host"), depth + 1)
            if not isinstance(host, dict) or host.get("$") != "host":
                raise DecodeError(f.path("host"), "expected a frozen host")
        attributes = f.mapping("attributes")
        for key in list(value["attributes"]):
            check_frozen(attributes.raw(key), attributes.path(key), depth + 1)
        attributes.done()
    else:
        raise DecodeError(path, f"unknown kind of frozen value {shown(tag)}")
    f.done()


def _skipped(value: object, path: str) -> SkippedRoot:
    f = Fields(value, path)
    skipped = SkippedRoot(name=f.string("name"), reason=f.string("reason"))
    f.done()
    return skipped


def model_from_data(data: object, path: str = "model") -> HostModel:
    top = Fields(data, path)
    version = top.integer("version")
    if version != MODEL_VERSION:
        raise DecodeError(top.path("version"), f"expected {MODEL_VERSION}, got {version}")
    e = top.mapping("environment")
    vfs_fields = e.mapping("vfs")
    mode_text = vfs_fields.string("mode")
    try:
        mode = VfsMode(mode_text)
    except ValueError:
        known = ", ".join(repr(m.value) for m in VfsMode)
        raise DecodeError(
            vfs_fields.path("mode"), f"expected one of {known}, got {shown(mode_text)}"
        ) from None
    vfs = VfsRules(mode=mode, rules=vfs_fields.array("rules", _rule))
    vfs_fields.done()
    env = EnvironmentRecord(
        name=e.string("name"),
        target_directory=e.string("target_directory"),
        service_user=e.optional_string("service_user"),
        host_domain=e.optional_string("host_domain"),
        platform=e.optional_string("platform"),
        timeout=e.optional_integer("timeout", minimum=1),
        jobs=e.integer("jobs", minimum=1),
        require_v4=_family_from(e, "require_v4"),
        require_v6=_family_from(e, "require_v6"),
        vfs=vfs,
    )
    e.done()
    h = top.mapping("host")
    host = HostRecord(
        name=h.string("name"),
        fqdn=h.string("fqdn"),
        platform=h.optional_string("platform"),
        data=h.string_map("data"),
    )
    h.done()
    model = HostModel(
        environment=env,
        host=host,
        roots=top.array("roots", _root),
        skipped=top.array("skipped", _skipped),
        resolver=_resolver(top.raw("resolver"), top.path("resolver")),
        dns=_dns(top.raw("dns"), top.path("dns")),
    )
    top.done()
    return model


def encode_model(model: HostModel) -> bytes:
    return canonical.pack(model_to_data(model))


def decode_model(data: bytes) -> HostModel:
    """Decode and validate a model; raises DecodeError or CanonicalError."""
    return model_from_data(canonical.unpack(data))
