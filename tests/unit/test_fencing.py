"""The term fence: newer terms are remembered (across restarts), older ones refused, and only terms
the node's own Raft replica has seen are accepted at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from octctl.fencing import MAX_TERM_DIGITS, StaleTerm, TermFence, UnknownTerm, parse_term


def test_a_node_follows_the_newest_term_it_has_seen(tmp_path: Path) -> None:
    fence = TermFence(tmp_path)
    fence.admit(3, known=3)
    fence.admit(3, known=3)  # the same leader again
    fence.admit(5, known=7)
    with pytest.raises(StaleTerm, match="term 4"):
        fence.admit(4, known=7)
    assert fence.seen == 5
    # A restarted node still refuses the deposed leader.
    again = TermFence(tmp_path)
    assert again.seen == 5
    with pytest.raises(StaleTerm):
        again.admit(1, known=7)


def test_an_unreadable_term_file_starts_from_zero(tmp_path: Path) -> None:
    (tmp_path / "term.json").write_text("{not json")
    fence = TermFence(tmp_path)
    assert fence.seen == 0
    fence.admit(2, known=2)
    assert TermFence(tmp_path).seen == 2


def test_a_term_the_replica_has_not_seen_is_refused_and_never_written(tmp_path: Path) -> None:
    fence = TermFence(tmp_path)
    fence.admit(2, known=2)
    for forged in (3, 10**18, 2**63 - 1, 10**100):
        with pytest.raises(UnknownTerm, match=f"unknown term {forged}: .* at term 2"):
            fence.admit(forged, known=2)
    assert fence.seen == 2
    assert TermFence(tmp_path).seen == 2  # nothing of that reached the disk
    # Once the replica has heard from the new leader, its term is obeyed and remembered.
    fence.admit(3, known=3)
    assert TermFence(tmp_path).seen == 3
    # A stale term is refused as stale even when the replica knows it.
    with pytest.raises(StaleTerm):
        fence.admit(2, known=3)


def test_a_fresh_node_accepts_nothing_before_its_replica_knows_a_term(tmp_path: Path) -> None:
    fence = TermFence(tmp_path)
    with pytest.raises(UnknownTerm):
        fence.admit(1, known=0)
    assert not (tmp_path / "term.json").exists()
    fence.admit(0, known=0)  # term 0 is nothing to remember
    assert not (tmp_path / "term.json").exists()


@pytest.mark.parametrize("raw", ["0", "7", "0012", "1" * MAX_TERM_DIGITS, str(10**18), str(2**63 - 1)])
def test_a_term_header_is_ascii_digits(raw: str) -> None:
    assert parse_term(raw) == int(raw)


JUNK = [None, "", " 7", "7 ", "+7", "-7", "1_000", "0x10", "1e18", "7.0", "\u0663", "1\u0663", "seven", "7\n"]


@pytest.mark.parametrize("raw", [*JUNK, "1" * (MAX_TERM_DIGITS + 1), "9" * 5000])
def test_anything_else_in_a_term_header_is_refused(raw: str | None) -> None:
    with pytest.raises(ValueError, match="digits"):
        parse_term(raw)
