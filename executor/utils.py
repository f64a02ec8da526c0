"""Helpers deployments import from ``batou.utils``: Address, NetLoc, hash.

Example::

    from batou.utils import Address

    class Web(Component):
        address = Attribute(Address, default=ConfigString("{{host.fqdn}}:8080"))

        def configure(self):
            self += File("web.conf", content="listen {{component.address.listen}}\\n")
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import functools
import hashlib
import ipaddress
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import ConfigurationError
from .model import FamilyRequirement

__all__ = ["Address", "NetLoc", "dict_merge", "hash"]


# The environment's defaults for require_v4 / require_v6 while configuring.
_family_defaults: contextvars.ContextVar[tuple[FamilyRequirement, FamilyRequirement]] = (
    contextvars.ContextVar("consign_family_defaults", default=(True, False))
)


@contextlib.contextmanager
def family_defaults(require_v4: FamilyRequirement, require_v6: FamilyRequirement) -> Iterator[None]:
    """Make the environment's require_v4 / require_v6 the Address defaults."""
    token = _family_defaults.set((require_v4, require_v6))
    try:
        yield
    finally:
        _family_defaults.reset(token)


@functools.total_ordering
class NetLoc:
    """A host and port: ``host:port``, or ``[v6]:port`` for IPv6 addresses.

    NetLocs compare and hash as their string.
    """

    def __init__(self, host: str, port: int | str | None = None) -> None:
        self.host = host
        self.port = None if port is None else str(port)

    def __str__(self) -> str:
        host = self.host
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        return host if self.port is None else f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"<NetLoc {self}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetLoc) and str(self) == str(other)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, NetLoc):
            return NotImplemented
        return str(self) < str(other)

    def __hash__(self) -> int:
        return builtins.hash(str(self))


def _check_requirement(name: str, value: object) -> FamilyRequirement:
    if value is True or value is False:
        return value
    if value == "optional":
        return "optional"
    raise ConfigurationError(
        f"{name} must be True, False or 'optional', got {value!r}",
    )


def resolve(host: str, family: socket.AddressFamily) -> list[str]:
    """Addresses of `host` in `family`, in resolver order, duplicates removed."""
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    found: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in found:
            found.append(address)
    return found


class Address:
    """A service address: the name as written, and what it resolves to.

    ``Address("db.example.com:5432")`` or ``Address("db.example.com", 5432)``;
    the port is required. ``connect`` is the NetLoc as written; ``listen``
    the first IPv4 address, ``listen_v6`` the first IPv6 address that is not
    link-local. ``require_v4`` / ``require_v6`` are True (must resolve),
    False (the family is not used; asking for it is an error) or
    ``"optional"`` (None when nothing resolves); their defaults come from
    the environment.
    """

    def __init__(
        self,
        connect_address: str,
        port: int | str | None = None,
        require_v4: FamilyRequirement | str | None = None,
        require_v6: FamilyRequirement | str | None = None,
    ) -> None:
        default_v4, default_v6 = _family_defaults.get()
        self.require_v4 = _check_requirement(
            "require_v4", default_v4 if require_v4 is None else require_v4
        )
        self.require_v6 = _check_requirement(
            "require_v6", default_v6 if require_v6 is None else require_v6
        )
        host, port = self._split(str(connect_address), port)
        self.connect = NetLoc(host, port)
        self._listen = self._lookup(host, port, socket.AF_INET, self.require_v4, "IPv4")
        self._listen_v6 = self._lookup(host, port, socket.AF_INET6, self.require_v6, "IPv6")

    @classmethod
    def frozen(
        cls,
        host: str,
        port: str,
        listen: str | None,
        listen_v6: str | None,
        require_v4: FamilyRequirement,
        require_v6: FamilyRequirement,
    ) -> Address:
        """An Address as another host's build resolved it (no lookup here)."""
        address = cls.__new__(cls)
        address.require_v4 = require_v4
        address.require_v6 = require_v6
        address.connect = NetLoc(host, port)
        address._listen = None if listen is None else NetLoc(listen, port)
        address._listen_v6 = None if listen_v6 is None else NetLoc(listen_v6, port)
        return address

    @staticmethod
    def _split(text: str, port: int | str | None) -> tuple[str, str]:
        host = text
        if port is None:
            if text.startswith("["):
                end = text.find("]")
                if end != -1 and text[end + 1 : end + 2] == ":":
                    host, port = text[1:end], text[end + 2 :]
            elif text.count(":") == 1:
                host, port = text.split(":")
        if port is None or str(port) == "":
            raise ConfigurationError(
                f"address {text!r} has no port",
                hint="write host:port, or pass the port: Address('host', 8080)",
            )
        try:
            number = int(str(port))
        except ValueError:
            number = -1
        if not 0 < number < 65536:
            raise ConfigurationError(f"address {text!r}: port {port!r} is not a number from 1 to 65535")
        return host, str(number)

    def _lookup(
        self,
        host: str,
        port: str,
        family: socket.AddressFamily,
        requirement: FamilyRequirement,
        label: str,
    ) -> NetLoc | None:
        if requirement is False:
            return None
        for address in resolve(host, family):
            if family == socket.AF_INET6 and ipaddress.ip_address(address).is_link_local:
                continue
            return NetLoc(address, port)
        if requirement == "optional":
            return None
        raise ConfigurationError(
            f"{host!r} has no {label} address",
            hint=f"fix the name or DNS, or declare require_{'v4' if label == 'IPv4' else 'v6'}"
            " = optional",
        )

    def _family(self, value: NetLoc | None, requirement: FamilyRequirement, label: str) -> NetLoc | None:
        if requirement is False:
            raise ConfigurationError(
                f"{self.connect}: {label} is disabled for this address (require_{label[-2:].lower()} = False)",
                hint="enable the family in [environment] or on the Address",
            )
        return value

    @property
    def listen(self) -> NetLoc | None:
        return self._family(self._listen, self.require_v4, "IPv4")

    @property
    def listen_v6(self) -> NetLoc | None:
        return self._family(self._listen_v6, self.require_v6, "IPv6")

    def __str__(self) -> str:
        return str(self.connect)

    def __repr__(self) -> str:
        return f"<Address {self.connect}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Address) and str(self) == str(other)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return str(self) < str(other)

    def __hash__(self) -> int:
        return builtins.hash(str(self))


def hash(path: str, function: str = "sha512") -> str:  # noqa: A001 - batou's name
    """The hex digest of a file's content (``function``: any hashlib name)."""
    digest = hashlib.new(function)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dict_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: `base` with `override` merged in, nested dicts merged too."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = dict_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
