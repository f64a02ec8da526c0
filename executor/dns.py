"""Name resolution as the builder decided it: overrides and pinned answers first.

While consign configures (in the builder) or applies (on a host), it routes
``socket.getaddrinfo`` through a dnspython resolver
(``dns.resolver.override_system_resolver``), so :class:`batou.utils.Address`
and libraries such as sqlalchemy or urllib all see the same answers. The
resolver asks, in order:

1. a stub that answers from a table: the environment's ``[resolver]``
   overrides, and on a host the answers the build pinned;
2. a stub that answers from ``/etc/hosts``;
3. the system's name servers (``/etc/resolv.conf``); not with
   ``CONSIGN_DNS=offline`` (an air-gapped builder, tests).

A stub answers only the names (and address families) it knows and refuses
all others, so the resolver moves on to the next one. A name in the table
gets exactly the table's answer, none included: an override short-circuits
resolution completely, as the seed says.

In the builder a :class:`Recorder` notes every answer configure received;
those answers are pinned into the host's model, so the bundle is a function
of its recorded inputs, and on the host the build's answers win over what
the host's own resolver says today.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dns.resolver

HOSTS_FILE = "/etc/hosts"
V4, V6 = "v4", "v6"


@dataclass(frozen=True, slots=True)
class Answer:
    """What a name resolves to, per family; None: that family is not known."""

    v4: tuple[str, ...] | None = None
    v6: tuple[str, ...] | None = None

    def family(self, which: str) -> tuple[str, ...] | None:
        return self.v4 if which == V4 else self.v6

    def merged(self, other: Answer) -> Answer:
        """This answer, with the families it lacks taken from `other`."""
        return Answer(
            self.v4 if self.v4 is not None else other.v4,
            self.v6 if self.v6 is not None else other.v6,
        )


Table = Mapping[str, Answer]


def normalise(name: str) -> str:
    return name.rstrip(".").lower()


def overrides_table(entries: Mapping[str, tuple[str, ...]] | tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, Answer]:
    """A table from ``[resolver]`` entries: both families are answered, so an
    override with only an IPv4 address has no IPv6 address at all."""
    items = entries.items() if isinstance(entries, Mapping) else entries
    table = {}
    for name, addresses in items:
        v4 = tuple(a for a in addresses if ipaddress.ip_address(a).version == 4)
        v6 = tuple(a for a in addresses if ipaddress.ip_address(a).version == 6)
        table[normalise(name)] = Answer(v4, v6)
    return table


def hosts_table(path: str = HOSTS_FILE) -> dict[str, Answer]:
    """The names of an /etc/hosts file (the first entries of a name win)."""
    v4: dict[str, list[str]] = {}
    v6: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return {}
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            version = ipaddress.ip_address(fields[0].split("%", 1)[0]).version
        except ValueError:
            continue
        for name in fields[1:]:
            target = v4 if version == 4 else v6
            target.setdefault(normalise(name), []).append(fields[0])
    names = set(v4) | set(v6)
    return {name: Answer(tuple(v4.get(name, ())), tuple(v6.get(name, ()))) for name in names}


@dataclass
class Recorder:
    """Every answer ``getaddrinfo`` gave while configuring, by name and family."""

    answers: dict[str, Answer] = field(default_factory=dict)

    def note(self, name: str, family: int, results: list[Any] | None) -> None:
        key = normalise(name)
        found: dict[str, list[str]] = {V4: [], V6: []}
        for entry in results or ():
            address = str(entry[4][0]).split("%", 1)[0]
            which = V4 if entry[0] == socket.AF_INET else V6
            if address not in found[which]:
                found[which].append(address)
        families: tuple[str, ...] = (V4, V6)
        if family == socket.AF_INET:
            families = (V4,)
        elif family == socket.AF_INET6:
            families = (V6,)
        new = Answer(
            tuple(found[V4]) if V4 in families else None,
            tuple(found[V6]) if V6 in families else None,
        )
        self.answers[key] = self.answers.get(key, Answer()).merged(new)


_lock = threading.Lock()
# Whose answers getaddrinfo notes now: the builder switches it per host.
_recorder: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "consign_dns_recorder", default=None
)


@contextlib.contextmanager
def recording(recorder: Recorder | None) -> Iterator[None]:
    """Note the answers of the block in `recorder` (inside `resolving`)."""
    token = _recorder.set(recorder)
    try:
        yield
    finally:
        _recorder.reset(token)


def _is_literal(host: object) -> bool:
    if not isinstance(host, str):
        return True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


# The functions dnspython's override_system_resolver replaces.
_SOCKET_FUNCTIONS = (
    "getaddrinfo",
    "getnameinfo",
    "getfqdn",
    "gethostbyname",
    "gethostbyname_ex",
    "gethostbyaddr",
)


class Resolution:
    """The resolver of a ``resolving`` block: made, and dnspython imported
    (50 ms), only when the block first looks a name up; a run that
    resolves nothing never pays for it."""

    def __init__(self) -> None:
        self.resolver: dns.resolver.Resolver | None = None


@contextlib.contextmanager
def resolving(
    table: Table, recorder: Recorder | None = None, *, system: bool | None = None
) -> Iterator[Resolution]:
    """Route ``socket.getaddrinfo`` (and its relatives) through the table for
    the block, and note every answer in `recorder`."""
    if system is None:
        system = os.environ.get("CONSIGN_DNS", "") != "offline"
    resolution = Resolution()
    with _lock:
        saved = {name: getattr(socket, name) for name in _SOCKET_FUNCTIONS}

    def install() -> None:
        with _lock:
            if resolution.resolver is not None:
                return
            # dnspython keeps the socket functions it finds at import as the
            # ones to restore: let it find the real ones, not ours.
            for name, function in saved.items():
                setattr(socket, name, function)
            import dns.resolver

            from .dnsstub import make_resolver

            resolver = make_resolver(table, system=system)
            dns.resolver.override_system_resolver(resolver)
            socket.getaddrinfo = _noting(socket.getaddrinfo)
            resolution.resolver = resolver

    def on_first_use(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            install()
            return getattr(socket, name)(*args, **kwargs)

        return call

    with _lock:
        for name in _SOCKET_FUNCTIONS:
            setattr(socket, name, on_first_use(name))
    try:
        with recording(recorder):
            yield resolution
    finally:
        with _lock:
            if resolution.resolver is not None:
                import dns.resolver

                dns.resolver.restore_system_resolver()
            for name, function in saved.items():
                setattr(socket, name, function)


def _noting(overridden: Callable[..., Any]) -> Callable[..., Any]:
    """`overridden` (getaddrinfo), noting its answers in the block's recorder."""

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        family = args[1] if len(args) > 1 else kwargs.get("family", 0)
        notes = _recorder.get()
        try:
            results = overridden(host, *args, **kwargs)
        except socket.gaierror:
            if notes is not None and not _is_literal(host):
                notes.note(host, family, [])
            raise
        if notes is not None and not _is_literal(host):
            notes.note(host, family, results)
        return results

    return getaddrinfo


def __getattr__(name: str) -> Any:
    # The dnspython parts, for who asks for them by this module's name.
    if name in ("StubNameserver", "make_resolver"):
        from . import dnsstub

        return getattr(dnsstub, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
