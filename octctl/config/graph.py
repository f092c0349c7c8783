"""The ``depends_on`` graph: start order and cycle reporting.

Kept apart from the models so the same code orders a validated config and explains an invalid one.
Edges point from a service to the services it depends on; unknown names are the caller's to report.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence


def topological_sort(names: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Dependencies before dependents, ties broken by declaration order; ``None`` if there is a cycle.

    The reference starts independent services in *reverse* declaration order (a petgraph artefact);
    we use declaration order because that is what people reading oct.toml expect.
    """
    index = {name: i for i, name in enumerate(names)}
    dependents: dict[str, list[str]] = {name: [] for name in names}
    waiting_on: dict[str, int] = {}
    for name in names:
        known = {dep for dep in deps.get(name, ()) if dep in index}
        waiting_on[name] = len(known)
        for dep in known:
            dependents[dep].append(name)
    ready = [index[name] for name in names if waiting_on[name] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for dependent in dependents[name]:
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                heapq.heappush(ready, index[dependent])
    return order if len(order) == len(names) else None


def find_cycles(names: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle per strongly connected component, each starting and ending at its first-declared member.

    Self-dependencies are left out: they are reported on their own with a clearer message.
    A cycle ``[a, b, a]`` reads "a depends on b, b depends on a".
    """
    index = {name: i for i, name in enumerate(names)}
    edges = {
        name: [dep for dep in dict.fromkeys(deps.get(name, ())) if dep in index and dep != name]
        for name in names
    }
    cycles: list[list[str]] = []
    for component in _strongly_connected(names, edges):
        if len(component) < 2:
            continue
        members = set(component)
        start = min(component, key=index.__getitem__)
        cycles.append(_cycle_through(start, members, edges))
    cycles.sort(key=lambda cycle: index[cycle[0]])
    return cycles


def _strongly_connected(names: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so a long dependency chain cannot hit the recursion limit."""
    counter = 0
    low: dict[str, int] = {}
    number: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in names:
        if root in number:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, next_edge = work.pop()
            if next_edge == 0:
                number[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            successors = edges[node]
            if next_edge < len(successors):
                work.append((node, next_edge + 1))
                succ = successors[next_edge]
                if succ not in number:
                    work.append((succ, 0))
                elif succ in on_stack:
                    low[node] = min(low[node], number[succ])
                continue
            if low[node] == number[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _cycle_through(start: str, members: set[str], edges: Mapping[str, Sequence[str]]) -> list[str]:
    """Shortest path back to ``start`` inside one component (BFS), so the printed cycle is minimal."""
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following: list[str] = []
        for node in frontier:
            for succ in edges[node]:
                if succ not in members:
                    continue
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if succ not in seen:
                    seen.add(succ)
                    previous[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError("a strongly connected component always has a cycle through each member")
