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
from typing import Any

import dns.message
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.rcode
import dns.resolver
import dns.rrset

HOSTS_FILE = "/etc/hosts"
V4, V6 = "v4", "v6"
_FAMILIES = {dns.rdatatype.A: V4, dns.rdatatype.AAAA: V6}


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


class StubNameserver(dns.nameserver.Nameserver):
    """A name server answering A and AAAA queries from a table, with no network."""

    def __init__(self, table: Table, label: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.table = dict(table)
        self.label = label

    def __str__(self) -> str:
        return self.label

    def kind(self) -> str:
        return "consign-stub"

    def is_always_max_size(self) -> bool:
        return False

    def answer_nameserver(self) -> str:
        return self.label

    def answer_port(self) -> int:
        return 53

    def query(
        self,
        request: dns.message.QueryMessage,
        timeout: float,
        source: str | None,
        source_port: int,
        max_size: bool,
        one_rr_per_rrset: bool = False,
        ignore_trailing: bool = False,
    ) -> dns.message.Message:
        response = dns.message.make_response(request)
        question = request.question[0]
        answer = self.table.get(normalise(question.name.to_text()))
        family = _FAMILIES.get(question.rdtype)
        addresses = answer.family(family) if answer is not None and family else None
        if answer is None or (family is not None and addresses is None):
            # Not ours: the resolver asks its next name server.
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if addresses:
            rrset = response.find_rrset(
                response.answer, question.name, dns.rdataclass.IN, question.rdtype, create=True
            )
            for address in addresses:
                rrset.add(dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, address), 300)
        return response

    async def async_query(self, *args: Any, **kwargs: Any) -> dns.message.Message:
        return self.query(*args, **kwargs)


def make_resolver(table: Table, *, hosts: bool = True, system: bool = True) -> dns.resolver.Resolver:
    """Table first, then /etc/hosts, then the system's name servers."""
    resolver = dns.resolver.Resolver(configure=False)
    nameservers: list[dns.nameserver.Nameserver | str] = [StubNameserver(table, "consign-table")]
    if hosts:
        nameservers.append(StubNameserver(hosts_table(), "hosts-file"))
    if system:
        with contextlib.suppress(dns.resolver.NoResolverConfiguration, OSError):
            configured = dns.resolver.Resolver(configure=True)
            nameservers.extend(configured.nameservers)
            resolver.timeout, resolver.lifetime = configured.timeout, configured.lifetime
    resolver.nameservers = nameservers
    # A refusing stub is no reason to give up: ask the next one.
    resolver.retry_servfail = False
    return resolver


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


@contextlib.contextmanager
def resolving(
    table: Table, recorder: Recorder | None = None, *, system: bool | None = None
) -> Iterator[dns.resolver.Resolver]:
    """Route ``socket.getaddrinfo`` through the table for the block (and note
    every answer in `recorder`)."""
    if system is None:
        system = os.environ.get("CONSIGN_DNS", "") != "offline"
    resolver = make_resolver(table, system=system)
    with _lock:
        dns.resolver.override_system_resolver(resolver)
        overridden: Callable[..., Any] = socket.getaddrinfo

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

        socket.getaddrinfo = getaddrinfo
    try:
        with recording(recorder):
            yield resolver
    finally:
        with _lock:
            dns.resolver.restore_system_resolver()
