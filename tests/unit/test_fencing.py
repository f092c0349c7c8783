"""The term fence: newer terms are remembered (across restarts), older ones refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from octctl.fencing import StaleTerm, TermFence


def test_a_node_follows_the_newest_term_it_has_seen(tmp_path: Path) -> None:
    fence = TermFence(tmp_path)
    fence.admit(3)
    fence.admit(3)  # the same leader again
    fence.admit(5)
    with pytest.raises(StaleTerm, match="term 4"):
        fence.admit(4)
    assert fence.seen == 5
    # A restarted node still refuses the deposed leader.
    again = TermFence(tmp_path)
    assert again.seen == 5
    with pytest.raises(StaleTerm):
        again.admit(1)


def test_an_unreadable_term_file_starts_from_zero(tmp_path: Path) -> None:
    (tmp_path / "term.json").write_text("{not json")
    fence = TermFence(tmp_path)
    assert fence.seen == 0
    fence.admit(2)
    assert TermFence(tmp_path).seen == 2
