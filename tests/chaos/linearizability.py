"""A linearizability checker for register histories: Wing & Gong's search with porcupine's cache.

No maintained Python library does this (porcupine is Go, Knossos is Clojure), so this is the
algorithm of Lowe's "Testing for linearizability" as porcupine implements it:

- The history becomes a doubly linked list of call and return events in time order. The search
  walks it, and at a call tries to linearize that operation *now*: if the model accepts it, the
  call and its return are lifted out of the list and the search starts again from the head. A
  return event at the head of the walk means an operation that had to take effect already could
  not: undo the last choice (backtrack).
- A cache of (set of linearized operations, model state) prunes the search: reaching the same
  pair again by another order cannot lead anywhere new. Sets are ints used as bitsets.
- Registers are independent, so the history is checked one key at a time (P-compositionality),
  which keeps every search small.

Indeterminate operations (a timeout, a 503: the write may or may not have happened) get a return
time of +infinity: they may take effect at any point after their invocation, and because the search
succeeds once every *completed* operation is linearized, they may also never take effect. Failed
reads have no effect and no result, so they are left out of the history by the caller.

Indeterminate writes are what makes the search explode (each overlaps everything after it), so when
every write of a key has its own value, as the chaos workload ensures, two sound reductions run first
(Knossos does the same): a write whose value no read returned is dropped (taking effect unseen is
the same as never), and one whose value was read must have taken effect before the first such read
returned, so that becomes its return time. A read of a value that nothing wrote fails at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal

Kind = Literal["write", "read"]


@dataclass(frozen=True)
class Op:
    """One client operation on one register.

    ``output`` is the value a read returned (None = the key did not exist); ignored for writes.
    ``end`` is None for an indeterminate operation.
    """

    key: str
    kind: Kind
    value: str | None
    start: float
    end: float | None
    output: str | None = None
    client: int = 0

    @property
    def indeterminate(self) -> bool:
        return self.end is None


class Outcome(Enum):
    OK = "linearizable"
    VIOLATION = "not linearizable"
    UNKNOWN = "search budget exhausted"


@dataclass(frozen=True)
class KeyResult:
    key: str
    outcome: Outcome
    ops: int
    steps: int
    #: the longest prefix of operations the search managed to linearize (to explain a violation)
    best_prefix: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    keys: tuple[KeyResult, ...]

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def failures(self) -> list[KeyResult]:
        return [k for k in self.keys if k.outcome is not Outcome.OK]


def step(state: str | None, op: Op) -> tuple[bool, str | None]:
    """The register model: a write always succeeds; a read must see the current value."""
    if op.kind == "write":
        return True, op.value
    return op.output == state, state


class _Entry:
    __slots__ = ("id", "is_call", "match", "next", "op", "prev", "time")

    def __init__(self, op_id: int, op: Op, is_call: bool, time: float) -> None:
        self.id = op_id
        self.op = op
        self.is_call = is_call
        self.time = time
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _build_list(ops: Sequence[Op]) -> _Entry:
    """Events sorted by time; at equal times calls come first, so touching operations overlap
    (the permissive reading: a client cannot tell which of two simultaneous events came first)."""
    events: list[_Entry] = []
    for i, op in enumerate(ops):
        call = _Entry(i, op, True, op.start)
        ret = _Entry(i, op, False, math.inf if op.end is None else op.end)
        call.match = ret
        events += [call, ret]
    events.sort(key=lambda e: (e.time, 0 if e.is_call else 1, e.id))
    head = _Entry(-1, ops[0], True, -math.inf)  # sentinel
    prev = head
    for e in events:
        prev.next = e
        e.prev = prev
        prev = e
    return head


def _lift(call: _Entry) -> None:
    assert call.prev is not None and call.match is not None and call.match.prev is not None
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret = call.match
    ret.prev.next = ret.next  # type: ignore[union-attr]
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Entry) -> None:
    ret = call.match
    assert ret is not None and ret.prev is not None and call.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


def _reduce(ops: Sequence[Op], initial: str | None) -> tuple[list[Op], Op | None]:
    """The reductions of the module docstring; returns the ops to search, or a read that no write
    can explain."""
    written = [op.value for op in ops if op.kind == "write"]
    possible = {*written, initial}
    for op in ops:
        if op.kind == "read" and op.output not in possible:
            return list(ops), op
    if len(set(written)) != len(written) or initial in written:
        return list(ops), None  # values repeat: a read does not name its write; search everything
    first_seen: dict[str | None, float] = {}
    for op in ops:
        if op.kind == "read" and op.end is not None:
            first_seen[op.output] = min(first_seen.get(op.output, math.inf), op.end)
    reduced = []
    for op in ops:
        if op.kind == "write" and op.indeterminate:
            if op.value not in first_seen:
                continue
            op = replace(op, end=max(op.start, first_seen[op.value]))
        reduced.append(op)
    return reduced, None


def check_register(
    key: str, ops: Sequence[Op], initial: str | None = None, budget: int = 2_000_000
) -> KeyResult:
    """Is this one register's history linearizable, starting from ``initial``?"""
    for op in ops:
        if op.end is not None and op.end < op.start:
            raise ValueError(f"operation on {key!r} returns before it is invoked: {op}")
    ops, unexplained = _reduce(ops, initial)
    if unexplained is not None:
        return KeyResult(key, Outcome.VIOLATION, len(ops), 0, (unexplained,))
    if not ops:
        return KeyResult(key, Outcome.OK, 0, 0)
    head = _build_list(ops)
    must_finish = sum(1 for op in ops if not op.indeterminate)
    linearized = 0
    done_finished = 0
    state = initial
    cache: set[tuple[int, str | None]] = {(0, initial)}
    stack: list[tuple[_Entry, str | None]] = []
    best: list[_Entry] = []
    steps = 0
    entry = head.next
    while done_finished < must_finish:
        steps += 1
        if steps > budget:
            return KeyResult(key, Outcome.UNKNOWN, len(ops), steps, tuple(e.op for e in best))
        assert entry is not None, "the walk ran off the list before every completed op was placed"
        if entry.is_call:
            legal, new_state = step(state, entry.op)
            if legal:
                new_linearized = linearized | (1 << entry.id)
                if (new_linearized, new_state) not in cache:
                    cache.add((new_linearized, new_state))
                    stack.append((entry, state))
                    if len(stack) > len(best):
                        best = [e for e, _ in stack]
                    state = new_state
                    linearized = new_linearized
                    if not entry.op.indeterminate:
                        done_finished += 1
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A completed operation's return: it must have taken effect by now, and could not.
            if not stack:
                return KeyResult(key, Outcome.VIOLATION, len(ops), steps, tuple(e.op for e in best))
            entry, state = stack.pop()
            linearized &= ~(1 << entry.id)
            if not entry.op.indeterminate:
                done_finished -= 1
            _unlift(entry)
            entry = entry.next
    return KeyResult(key, Outcome.OK, len(ops), steps)


def check(ops: Iterable[Op], initial: dict[str, str | None] | None = None, budget: int = 2_000_000) -> Result:
    """Check a multi-register history, key by key; the worst outcome wins."""
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    results = tuple(
        check_register(key, key_ops, (initial or {}).get(key), budget)
        for key, key_ops in sorted(by_key.items())
    )
    outcomes = {r.outcome for r in results}
    if Outcome.VIOLATION in outcomes:
        outcome = Outcome.VIOLATION
    elif Outcome.UNKNOWN in outcomes:
        outcome = Outcome.UNKNOWN
    else:
        outcome = Outcome.OK
    return Result(outcome, results)
