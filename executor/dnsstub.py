"""The dnspython half of name resolution (see :mod:`executor.dns`): a name
server that answers from a table, and the resolver that asks the table,
/etc/hosts and the system's name servers in that order. Imported on the
first lookup only.
"""

from __future__ import annotations

import contextlib
from typing import Any

import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rcode
import dns.resolver
import dns.rrset

from . import dns as tables
from .dns import V4, V6, Table, normalise

_FAMILIES = {dns.rdatatype.A: V4, dns.rdatatype.AAAA: V6}


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
        nameservers.append(StubNameserver(tables.hosts_table(), "hosts-file"))
    if system:
        with contextlib.suppress(dns.resolver.NoResolverConfiguration, OSError):
            configured = dns.resolver.Resolver(configure=True)
            nameservers.extend(configured.nameservers)
            resolver.timeout, resolver.lifetime = configured.timeout, configured.lifetime
    resolver.nameservers = nameservers
    # A refusing stub is no reason to give up: ask the next one.
    resolver.retry_servfail = False
    return resolver
