"""The chaos suite's linearizability checker, on histories whose answer is known by hand.

Half of these must come out *not* linearizable: a checker that always said yes fails them.
"""

from __future__ import annotations

import random

import pytest

from tests.chaos.linearizability import Op, Outcome, check, check_register


def w(value: str, start: float, end: float | None, key: str = "k") -> Op:
    return Op(key=key, kind="write", value=value, start=start, end=end)


def r(output: str | None, start: float, end: float, key: str = "k") -> Op:
    return Op(key=key, kind="read", value=None, start=start, end=end, output=output)


LINEARIZABLE = {
    "empty register reads nothing": [r(None, 0, 1)],
    "sequential write then read": [w("a", 0, 1), r("a", 2, 3)],
    "read concurrent with a write sees the old value": [w("a", 0, 1), w("b", 2, 5), r("a", 3, 4)],
    "read concurrent with a write sees the new value": [w("a", 0, 1), w("b", 2, 5), r("b", 3, 4)],
    "concurrent writes, reads agree on one order": [w("a", 0, 5), w("b", 0, 5), r("b", 6, 7), r("b", 8, 9)],
    "touching intervals count as concurrent": [w("a", 0, 2), r("a", 2, 3)],
    "indeterminate write that took effect": [w("a", 0, None), r("a", 5, 6)],
    "indeterminate write that never took effect": [w("a", 0, None), r(None, 5, 6), r(None, 7, 8)],
    "indeterminate write that took effect late": [w("a", 0, 1), w("b", 2, None), r("a", 3, 4), r("b", 9, 10)],
    "indeterminate write overwritten before anyone looked": [w("a", 0, None), w("b", 5, 6), r("b", 7, 8)],
    # Repeated values switch the reductions off: the plain search must handle indeterminate ops.
    "repeated values, indeterminate write explains a late read": [
        w("a", 0, 1),
        w("b", 2, 3),
        w("a", 4, None),
        r("b", 5, 6),
        r("a", 7, 8),
    ],
}

NOT_LINEARIZABLE = {
    "read of a value never written": [w("a", 0, 1), r("z", 2, 3)],
    "stale read after a newer write completed": [w("a", 0, 1), w("b", 2, 3), r("a", 4, 5)],
    "acknowledged write lost": [w("a", 0, 1), r(None, 2, 3)],
    "read before the write was invoked": [r("a", 0, 1), w("a", 2, 3)],
    "new value then old value (reads going back in time)": [
        w("a", 0, 1),
        w("b", 2, 10),
        r("b", 3, 4),
        r("a", 5, 6),
    ],
    "indeterminate write seen, then unseen": [w("a", 0, None), r("a", 2, 3), r(None, 4, 5)],
    "indeterminate write seen before it was invoked": [r("a", 0, 1), w("a", 2, None)],
    "repeated values, indeterminate write cannot undo a later write": [
        w("a", 0, 1),
        w("b", 2, 3),
        w("a", 4, None),
        r("a", 5, 6),
        w("b", 7, 8),
        r("a", 9, 10),
    ],
    "two readers disagree on the order of two completed writes": [
        w("a", 0, 1),
        w("b", 0, 1),
        r("a", 2, 3),
        r("b", 4, 5),
        r("a", 6, 7),
    ],
}


@pytest.mark.parametrize("ops", LINEARIZABLE.values(), ids=LINEARIZABLE.keys())
def test_linearizable_histories_pass(ops: list[Op]) -> None:
    result = check_register("k", ops)
    assert result.outcome is Outcome.OK, result


@pytest.mark.parametrize("ops", NOT_LINEARIZABLE.values(), ids=NOT_LINEARIZABLE.keys())
def test_violations_are_found(ops: list[Op]) -> None:
    result = check_register("k", ops)
    assert result.outcome is Outcome.VIOLATION, result
    # A shuffled input (the checker sorts events itself) gives the same verdict.
    shuffled = list(ops)
    random.Random(7).shuffle(shuffled)
    assert check_register("k", shuffled).outcome is Outcome.VIOLATION


def test_keys_are_checked_separately_and_the_bad_one_is_named() -> None:
    ops = [
        w("a", 0, 1, key="good"),
        r("a", 2, 3, key="good"),
        w("x", 0, 1, key="bad"),
        r(None, 2, 3, key="bad"),
    ]
    result = check(ops)
    assert result.outcome is Outcome.VIOLATION
    assert [k.key for k in result.failures()] == ["bad"]
    # On its own key, "a" written then read is fine: the verdict really is per key.
    assert check(ops[:2]).ok


def test_initial_state_is_honoured() -> None:
    assert check_register("k", [r("seed", 0, 1)], initial="seed").outcome is Outcome.OK
    assert check_register("k", [r("seed", 0, 1)]).outcome is Outcome.VIOLATION


def test_budget_exhausted_is_reported_as_unknown_not_as_success() -> None:
    ops = [w(str(i), 0, 100) for i in range(12)] + [r("0", 101, 102)]
    assert check_register("k", ops, budget=5).outcome is Outcome.UNKNOWN
    assert check_register("k", ops).outcome is Outcome.OK


def test_an_operation_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="returns before it is invoked"):
        check_register("k", [w("a", 5, 1)])


def _random_history(seed: int, clients: int = 5, per_client: int = 40) -> list[Op]:
    """A history linearizable by construction: each op takes effect at a point inside its interval,
    applied in point order to a real register; some writes lose their answer (indeterminate)."""
    rng = random.Random(seed)
    planned = []
    for c in range(clients):
        t = rng.uniform(0, 1)
        for i in range(per_client):
            start = t
            point = start + rng.uniform(0, 2)
            end = point + rng.uniform(0, 2)
            kind = "write" if rng.random() < 0.5 else "read"
            planned.append((point, c, i, kind, start, end))
            t = end + rng.uniform(0, 0.5)
    register: str | None = None
    ops = []
    for _point, c, i, kind, start, end in sorted(planned):
        if kind == "write":
            register = f"c{c}-{i}"
            lost = rng.random() < 0.1
            ops.append(Op("k", "write", register, start, None if lost else end, client=c))
        else:
            ops.append(Op("k", "read", None, start, end, output=register, client=c))
    return ops


@pytest.mark.parametrize("seed", range(5))
def test_random_linearizable_histories_pass_and_a_stale_read_fails(seed: int) -> None:
    ops = _random_history(seed)
    assert check_register("k", ops).outcome is Outcome.OK
    # A read after everything else that returns the value of the first acknowledged write, which
    # later acknowledged writes replaced: a stale read, found only by the search.
    acked = sorted((op for op in ops if op.kind == "write" and op.end is not None), key=lambda op: op.start)
    first, last_end = acked[0], max(op.end or op.start for op in ops)
    assert any(op.start > (first.end or 0) for op in acked), "the history needs a later completed write"
    stale = Op("k", "read", None, last_end + 1, last_end + 2, output=first.value)
    result = check_register("k", [*ops, stale])
    assert result.outcome is Outcome.VIOLATION
    assert result.steps > 0, "found by the search, not by the pre-check"


def test_read_of_a_value_nobody_wrote_fails_without_a_search() -> None:
    result = check_register("k", [*_random_history(0), r("never-written", 1000, 1001)])
    assert result.outcome is Outcome.VIOLATION
    assert result.best_prefix[-1].output == "never-written"
