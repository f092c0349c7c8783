"""The durable journal and file replacement: what is synced, when, and what a failed sync leaves.
(``os.fdatasync``/``os.fsync`` are counted, not faked away: the files are really written.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal

from octctl.state import stable_storage
from octctl.state.pysyncobj_adapter import DurableJournal


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every fdatasync and fsync, as (kind, descriptor), in order; the calls still reach the disk."""
    calls: list[tuple[str, int]] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def fdatasync(fd: int) -> None:
        calls.append(("fdatasync", fd))
        real_fdatasync(fd)

    def fsync(fd: int) -> None:
        calls.append(("fsync", fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_one_sync_covers_every_entry_added_since_the_last(
    tmp_path: Path, syncs: list[tuple[str, int]]
) -> None:
    journal = DurableJournal(str(tmp_path / "raft.journal"))
    assert not journal.dirty
    journal.sync()
    assert syncs == []  # nothing to write: no sync
    for i in range(1, 65):
        journal.add(b"cmd%d" % i, i, 1)
    assert journal.dirty
    journal.sync()
    journal.sync()
    assert [kind for kind, _ in syncs] == ["fdatasync"]
    assert not journal.dirty
    journal.deleteEntriesFrom(10)
    assert journal.dirty
    journal.sync()
    assert len(syncs) == 2
    journal._destroy()
    reread = FileJournal(str(tmp_path / "raft.journal"))  # PySyncObj's own reader, unchanged format
    assert [e[1] for e in reread] == list(range(1, 11))


def test_a_failed_sync_leaves_the_journal_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = DurableJournal(str(tmp_path / "raft.journal"))
    journal.add(b"x", 1, 1)

    def refuse(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", refuse)
    with pytest.raises(OSError):
        journal.sync()
    assert journal.dirty  # nothing it holds may be reported as stored
    monkeypatch.undo()
    journal.sync()
    assert not journal.dirty


def test_the_unsafe_opt_out_never_syncs(tmp_path: Path, syncs: list[tuple[str, int]]) -> None:
    journal = DurableJournal(str(tmp_path / "raft.journal"))
    journal.durable = False
    journal.add(b"x", 1, 1)
    journal.sync()
    journal.setCurrentTerm(3, "n2")
    assert syncs == []
    assert not journal.dirty


def test_a_vote_is_on_disk_before_it_is_granted(tmp_path: Path, syncs: list[tuple[str, int]]) -> None:
    journal = DurableJournal(str(tmp_path / "raft.journal"))
    journal.setCurrentTerm(7, "n3")  # PySyncObj grants the vote right after this returns
    assert [kind for kind, _ in syncs] == ["fdatasync", "fsync"]  # the file, then its folder
    assert not (tmp_path / "raft.journal.meta.tmp").exists()
    again = DurableJournal(str(tmp_path / "raft.journal"))
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (7, "n3")


def test_a_replaced_file_is_synced_before_and_its_folder_after(
    tmp_path: Path, syncs: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def replace(source: str, target: str) -> None:
        syncs.append(("rename", 0))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    stable_storage.write_durably(tmp_path / "dump", b"snapshot")
    assert [kind for kind, _ in syncs] == ["fdatasync", "rename", "fsync"]
    assert (tmp_path / "dump").read_bytes() == b"snapshot"
    assert not (tmp_path / "dump.tmp").exists()
