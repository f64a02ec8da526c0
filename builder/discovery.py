"""Service discovery across the environment: the configure fixpoint.

Every host's roots configure against one live registry. A root that
requires a key sees every value provided under it so far (frozen, as hosts
will see them); a strict require that finds nothing stops that root for
now. Whenever a root's provisions change, the roots that required those
keys configure again, until nothing changes. Then the build knows, for
each root, what it required and got, what it provides, and which roots
must deploy before it; and it reports what went wrong, all of it:

- a key required (strictly) that nobody provides;
- a key provided that nobody requires;
- a cycle of roots requiring each other's keys;
- roots whose provisions never settle;
- everything configure itself raised.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from executor.component import Component, locate
from executor.errors import ConfigurationError, ConsignError
from executor.frozen import FreezeError, freeze, thaw
from executor.resources import UnsatisfiedRequirement

RootId = tuple[str, str]  # host, root name
# How often one root's provisions may change, beyond one change per root of
# the environment (a root may legitimately change what it provides each time
# another root's value arrives), before they count as not settling.
MAX_CONFIGURES = 12


def label(root: RootId) -> str:
    return f"{root[1]} on {root[0]}"


@dataclass
class Requirement:
    key: str
    provider_host: str | None
    strict: bool
    reverse: bool
    dirty: bool
    # The frozen values this require() returned, in provider order.
    values: list[Any]

    def matches(self, provider: RootId, key: str) -> bool:
        return key == self.key and self.provider_host in (None, provider[0])


class LiveResources:
    """The builder's registry of provided values (see executor.resources)."""

    def __init__(self, order: Sequence[RootId]) -> None:
        self.position = {root: index for index, root in enumerate(order)}
        self.published: dict[RootId, dict[str, list[Any]]] = {}
        self.pending: dict[RootId, list[tuple[str, Any]]] = {}
        self.requirements: dict[RootId, list[Requirement]] = {}
        self.unsatisfied: dict[RootId, UnsatisfiedRequirement] = {}

    def begin(self, root: RootId) -> None:
        self.pending[root] = []
        self.requirements[root] = []
        self.unsatisfied.pop(root, None)

    def provide(self, host: str, root: str, key: str, value: Any) -> None:
        self.pending.setdefault((host, root), []).append((key, value))

    def require(
        self,
        host: str,
        root: str,
        key: str,
        provider_host: str | None,
        strict: bool,
        reverse: bool,
        dirty: bool,
    ) -> list[Any]:
        values = [
            value
            for provider in sorted(self.published, key=self.position.__getitem__)
            if provider_host in (None, provider[0])
            for value in self.published[provider].get(key, ())
        ]
        me = (host, root)
        self.requirements.setdefault(me, []).append(
            Requirement(key, provider_host, strict, reverse, dirty, values)
        )
        if strict and not values:
            error = UnsatisfiedRequirement(key, provider_host)
            # Remembered here too: deployment code may catch what it raises.
            self.unsatisfied[me] = error
            raise error
        return [thaw(value) for value in values]

    def publish(self, root: RootId, component: Component) -> set[str]:
        """Make a configured root's provisions visible; the keys that changed."""
        new: dict[str, list[Any]] = {}
        for key, value in self.pending.pop(root, []):
            try:
                new.setdefault(key, []).append(freeze(value, f"the value of {key!r}"))
            except FreezeError as exc:
                raise locate(
                    ConfigurationError(
                        f"provides {key!r} as a value that cannot travel to other hosts: {exc}",
                        hint="provide strings, numbers, lists, dicts, Addresses, NetLocs or "
                        "components whose public attributes are such values",
                    ),
                    component,
                    None,
                ) from None
        return self._replace(root, new)

    def publish_partial(self, root: RootId) -> set[str]:
        """Publish what a root provided before its configure stopped at an
        unsatisfied require; a value that cannot travel retracts it all."""
        new: dict[str, list[Any]] = {}
        for key, value in self.pending.pop(root, []):
            try:
                new.setdefault(key, []).append(freeze(value, f"the value of {key!r}"))
            except FreezeError:
                return self._replace(root, {})
        return self._replace(root, new)

    def retract(self, root: RootId) -> set[str]:
        """A root whose configure failed provides nothing."""
        self.pending.pop(root, None)
        return self._replace(root, {})

    def _replace(self, root: RootId, new: dict[str, list[Any]]) -> set[str]:
        old = self.published.get(root, {})
        if new:
            self.published[root] = new
        else:
            self.published.pop(root, None)
        return {key for key in set(old) | set(new) if old.get(key) != new.get(key)}

    def providers(self, requirement: Requirement) -> list[RootId]:
        return [
            provider
            for provider in sorted(self.published, key=self.position.__getitem__)
            if requirement.key in self.published[provider]
            and requirement.provider_host in (None, provider[0])
        ]


@dataclass
class Outcome:
    """What the fixpoint decided for each root, and everything that went wrong."""

    components: dict[RootId, Component] = field(default_factory=dict)
    order: list[RootId] = field(default_factory=list)
    after: dict[RootId, list[RootId]] = field(default_factory=dict)
    waves: list[list[str]] = field(default_factory=list)
    errors: list[tuple[RootId | None, ConsignError]] = field(default_factory=list)


def configure_all(
    roots: Sequence[RootId],
    configure: Callable[[RootId], Component],
    resources: LiveResources,
    breadcrumb: Callable[[RootId], str],
) -> Outcome:
    """Configure `roots` (in environment order) until their provisions settle."""
    outcome = Outcome()
    position = resources.position
    queue = [(position[root], root) for root in roots]
    heapq.heapify(queue)
    queued = set(roots)
    # Configuring a root again is cheap and bounded by its providers'
    # changes; what must stay bounded is how often its own provisions change.
    changes: dict[RootId, int] = {}
    limit = MAX_CONFIGURES + len(roots)
    failures: dict[RootId, ConsignError] = {}
    restless: set[RootId] = set()
    while queue:
        _index, root = heapq.heappop(queue)
        queued.discard(root)
        if changes.get(root, 0) >= limit:
            restless.add(root)
            continue
        resources.begin(root)
        try:
            component = configure(root)
            if root in resources.unsatisfied:
                raise resources.unsatisfied[root]
            changed = resources.publish(root, component)
            outcome.components[root] = component
            failures.pop(root, None)
        except UnsatisfiedRequirement as exc:
            # What it provided before its require failed counts (as in
            # batou): two roots that each provide, then require the other's
            # key, settle instead of starving each other.
            outcome.components.pop(root, None)
            failures[root] = exc
            try:
                changed = resources.publish_partial(root)
            except ConsignError:
                changed = resources.retract(root)
        except ConsignError as exc:
            outcome.components.pop(root, None)
            failures[root] = exc
            changed = resources.retract(root)
        if not changed:
            continue
        changes[root] = changes.get(root, 0) + 1
        for other, requirements in resources.requirements.items():
            if other in queued:
                continue
            if any(r.matches(root, key) for r in requirements for key in changed):
                heapq.heappush(queue, (position[other], other))
                queued.add(other)
    for root, error in failures.items():
        if isinstance(error, UnsatisfiedRequirement) and error.where is None:
            error.where = breadcrumb(root)
        outcome.errors.append((root, error))
    for root in sorted(restless, key=position.__getitem__):
        outcome.errors.append(
            (
                root,
                ConfigurationError(
                    f"configure did not settle: after {limit} rounds the values "
                    "this root provides still change every time the roots it requires "
                    "configure again",
                    where=breadcrumb(root),
                    hint="provide values that do not depend on what other roots provide "
                    "in return, or break the loop with dirty=True",
                ),
            )
        )
    _unused(resources, outcome, breadcrumb)
    _order(roots, resources, outcome, breadcrumb)
    return outcome


def _unused(
    resources: LiveResources, outcome: Outcome, breadcrumb: Callable[[RootId], str]
) -> None:
    required = {r.key for rs in resources.requirements.values() for r in rs}
    for provider, provisions in sorted(
        resources.published.items(), key=lambda item: resources.position[item[0]]
    ):
        for key in sorted(provisions):
            if key not in required:
                outcome.errors.append(
                    (
                        provider,
                        ConfigurationError(
                            f"provides {key!r}, which no component requires",
                            where=breadcrumb(provider),
                            hint="remove the provide(), or require the key where it is needed "
                            "(a misspelt key shows here too)",
                        ),
                    )
                )


def _edges(resources: LiveResources, roots: Sequence[RootId]) -> dict[RootId, set[RootId]]:
    """before -> after: providers deploy before the roots that require them."""
    graph: dict[RootId, set[RootId]] = {root: set() for root in roots}
    for root, requirements in resources.requirements.items():
        for requirement in requirements:
            if requirement.dirty:
                continue
            for provider in resources.providers(requirement):
                if provider == root or provider not in graph or root not in graph:
                    continue
                if requirement.reverse:
                    graph[root].add(provider)
                else:
                    graph[provider].add(root)
    return graph


def _components(graph: dict[RootId, set[RootId]], position: dict[RootId, int]) -> list[list[RootId]]:
    """Strongly connected components (Tarjan), iteratively."""
    index: dict[RootId, int] = {}
    low: dict[RootId, int] = {}
    stack: list[RootId] = []
    on_stack: set[RootId] = set()
    result: list[list[RootId]] = []
    counter = 0
    for start in sorted(graph, key=position.__getitem__):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start], key=position.__getitem__)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor], key=position.__getitem__))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(sorted(component, key=position.__getitem__))
    return result


def _order(
    roots: Sequence[RootId],
    resources: LiveResources,
    outcome: Outcome,
    breadcrumb: Callable[[RootId], str],
) -> None:
    """Deploy order (providers first, ties in environment order), cycles, waves."""
    position = resources.position
    graph = _edges(resources, roots)
    for cycle in _components(graph, position):
        if len(cycle) > 1:
            names = " -> ".join(label(r) for r in [*cycle, cycle[0]])
            outcome.errors.append(
                (
                    cycle[0],
                    ConfigurationError(
                        f"these roots require each other's keys in a cycle: {names}",
                        where=breadcrumb(cycle[0]),
                        hint="break the cycle: one of the requires can take dirty=True "
                        "(no ordering), or reverse=True",
                    ),
                )
            )
    outcome.order = []
    hosts = list(dict.fromkeys(root[0] for root in sorted(graph, key=position.__getitem__)))
    for host in hosts:
        outcome.order.extend(_host_order(graph, host, position))
    before: dict[RootId, list[RootId]] = {root: [] for root in graph}
    for root, successors in graph.items():
        for successor in successors:
            before[successor].append(root)
    outcome.after = {
        root: sorted(predecessors, key=position.__getitem__) for root, predecessors in before.items()
    }
    outcome.waves = _waves(graph, position)


def _reachable(graph: dict[RootId, set[RootId]], start: RootId) -> set[RootId]:
    seen: set[RootId] = set()
    stack = list(graph[start])
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(graph[node])
    return seen


def _host_order(
    graph: dict[RootId, set[RootId]], host: str, position: dict[RootId, int]
) -> list[RootId]:
    """One host's roots in deploy order: a root after every root of the same
    host it depends on (directly, or through other hosts' roots), ties in
    environment order. Other hosts' roots never reorder this host's."""
    mine = [root for root in graph if root[0] == host]
    later = {root: {r for r in _reachable(graph, root) if r[0] == host and r != root} for root in mine}
    incoming = {root: 0 for root in mine}
    for successors in later.values():
        for successor in successors:
            incoming[successor] += 1
    ready = [(position[root], root) for root, count in incoming.items() if count == 0]
    heapq.heapify(ready)
    order: list[RootId] = []
    while ready:
        _index, root = heapq.heappop(ready)
        order.append(root)
        for successor in later[root]:
            incoming[successor] -= 1
            if incoming[successor] == 0:
                heapq.heappush(ready, (position[successor], successor))
    # Roots in cycles (reported above) keep their environment order.
    order.extend(sorted((r for r in mine if r not in order), key=position.__getitem__))
    return order


def _waves(graph: dict[RootId, set[RootId]], position: dict[RootId, int]) -> list[list[str]]:
    """Hosts in the order they must apply: each wave after the ones before it.

    Hosts that depend on each other both ways share a wave: no order
    between them can satisfy both.
    """
    hosts: list[str] = []
    for root in sorted(graph, key=position.__getitem__):
        if root[0] not in hosts:
            hosts.append(root[0])
    host_position = {host: index for index, host in enumerate(hosts)}
    host_graph: dict[str, set[str]] = {host: set() for host in hosts}
    for root, later in graph.items():
        for other in later:
            if other[0] != root[0]:
                host_graph[root[0]].add(other[0])
    groups = _components(
        {(h, ""): {(s, "") for s in succ} for h, succ in host_graph.items()},
        {(h, ""): i for h, i in host_position.items()},
    )
    group_of = {member[0]: i for i, group in enumerate(groups) for member in group}
    level: dict[int, int] = {}
    # Kahn over the condensed graph, longest path gives the wave.
    condensed: dict[int, set[int]] = {i: set() for i in range(len(groups))}
    for host, next_hosts in host_graph.items():
        for next_host in next_hosts:
            if group_of[host] != group_of[next_host]:
                condensed[group_of[host]].add(group_of[next_host])
    waiting = {i: 0 for i in condensed}
    for next_groups in condensed.values():
        for group in next_groups:
            waiting[group] += 1
    frontier = [i for i, count in waiting.items() if count == 0]
    for i in frontier:
        level[i] = 0
    while frontier:
        current = frontier.pop()
        for group in condensed[current]:
            level[group] = max(level.get(group, 0), level[current] + 1)
            waiting[group] -= 1
            if waiting[group] == 0:
                frontier.append(group)
    waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for i, members in enumerate(groups):
        waves[level.get(i, 0)].extend(member[0] for member in members)
    return [sorted(wave, key=host_position.__getitem__) for wave in waves if wave]

