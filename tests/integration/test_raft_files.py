"""Damaged Raft files are refused with a reason and a way out, never half-loaded; an append torn
by a power cut is cut off, and the node starts on every entry before it."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from octctl.state.kv import kv_command
from octctl.state.machine import RaftNode
from octctl.state.raft_files import (
    DUMP,
    JOURNAL,
    CorruptRaftFiles,
    check_raft_files,
    cut_torn_tail,
    reset_raft_files,
)
from tests.wait import wait_until_async


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def write_values(data_dir: Path, count: int) -> dict[str, object] | None:
    """Run a one-node replica, commit ``count`` writes, stop it; returns what it holds."""
    node = RaftNode(f"127.0.0.1:{free_port()}", [], data_dir, "pw", asyncio.get_running_loop())
    try:
        await wait_until_async(node.is_leader, message="the one-node replica to lead")
        for i in range(count):
            await node.execute(kv_command("kv_put", key="k", value=str(i)))
        return dict(node.machine.kv_get("k") or {})
    finally:
        node.close()


@pytest.fixture(scope="module")
def good_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("raft")
    assert asyncio.run(write_values(data_dir, 30)) == {"value": "29", "revision": 30}
    return data_dir / JOURNAL


def copy_journal(good: Path, tmp_path: Path) -> Path:
    target = tmp_path / JOURNAL
    target.write_bytes(good.read_bytes())
    return target


def test_an_intact_journal_passes_and_replays(good_journal: Path, tmp_path: Path) -> None:
    copy_journal(good_journal, tmp_path)
    check_raft_files(tmp_path)
    assert asyncio.run(write_values(tmp_path, 0)) == {"value": "29", "revision": 30}


def test_a_truncated_journal_is_refused_with_the_way_out(good_journal: Path, tmp_path: Path) -> None:
    journal = copy_journal(good_journal, tmp_path)
    journal.write_bytes(journal.read_bytes()[:1000])
    with pytest.raises(CorruptRaftFiles) as caught:
        check_raft_files(tmp_path)
    message = str(caught.value)
    assert str(journal) in message and "1000 bytes" in message
    assert f"oct-ctl reset-raft --data-dir {tmp_path}" in message
    with pytest.raises(CorruptRaftFiles):  # the replica itself refuses to open it
        asyncio.run(write_values(tmp_path, 0))


def test_an_overwritten_record_is_refused(good_journal: Path, tmp_path: Path) -> None:
    journal = copy_journal(good_journal, tmp_path)
    data = bytearray(journal.read_bytes())
    data[600:700] = b"\xff" * 100
    journal.write_bytes(bytes(data))
    with pytest.raises(CorruptRaftFiles, match=r"damaged record|impossible size"):
        check_raft_files(tmp_path)


def test_entries_out_of_order_are_refused(good_journal: Path, tmp_path: Path) -> None:
    journal = copy_journal(good_journal, tmp_path)
    data = bytearray(journal.read_bytes())
    (size,) = struct.unpack_from("<I", data, 40)
    second = 40 + size + 8
    struct.pack_into("<Q", data, second + 4, 999)  # the second entry claims index 999
    journal.write_bytes(bytes(data))
    with pytest.raises(CorruptRaftFiles, match="entry 999"):
        check_raft_files(tmp_path)


def record_starts(data: bytes) -> list[int]:
    (end,) = struct.unpack_from("<I", data, 36)
    starts, offset = [], 40
    while offset < end:
        starts.append(offset)
        offset += struct.unpack_from("<I", data, offset)[0] + 8
    return starts


def zero_the_last_record(data: bytearray) -> None:
    """The header's new end offset reached the disk, the page holding the record did not."""
    (end,) = struct.unpack_from("<I", data, 36)
    start = record_starts(bytes(data))[-1]
    data[start:end] = bytes(end - start)


def cut_the_last_record_short(data: bytearray) -> None:
    """The last record's first sector made it, its last bytes (the trailing size) did not."""
    (end,) = struct.unpack_from("<I", data, 36)
    data[end - 6 : end] = bytes(6)


@pytest.mark.parametrize("tear", [zero_the_last_record, cut_the_last_record_short])
def test_an_append_torn_by_a_power_cut_is_cut_off(
    good_journal: Path, tmp_path: Path, tear: Callable[[bytearray], None], caplog: pytest.LogCaptureFixture
) -> None:
    journal = copy_journal(good_journal, tmp_path)
    data = bytearray(journal.read_bytes())
    last = record_starts(bytes(data))[-1]
    tear(data)
    journal.write_bytes(bytes(data))

    check_raft_files(tmp_path)  # (cuts, then finds nothing wrong)
    assert struct.unpack_from("<I", journal.read_bytes(), 36)[0] == last
    assert "torn append" in caplog.text and str(journal) in caplog.text
    # the last write's entry was the torn one: the node starts on every entry before it, and goes on
    assert asyncio.run(write_values(tmp_path, 0)) == {"value": "28", "revision": 29}
    assert asyncio.run(write_values(tmp_path, 1)) == {"value": "0", "revision": 30}
    assert cut_torn_tail(journal) == 0


def test_zeros_before_whole_records_are_not_a_torn_tail(good_journal: Path, tmp_path: Path) -> None:
    """Damage with whole records after it is not an interrupted append: cutting there could drop
    entries this node acknowledged, so it is refused as before."""
    journal = copy_journal(good_journal, tmp_path)
    data = bytearray(journal.read_bytes())
    starts = record_starts(bytes(data))
    data[starts[-3] : starts[-2]] = bytes(starts[-2] - starts[-3])
    journal.write_bytes(bytes(data))
    assert cut_torn_tail(journal) == 0
    with pytest.raises(CorruptRaftFiles, match="impossible size 0"):
        check_raft_files(tmp_path)


def test_a_damaged_snapshot_is_refused(tmp_path: Path) -> None:
    (tmp_path / DUMP).write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(CorruptRaftFiles, match="snapshot"):
        check_raft_files(tmp_path)


def test_reset_moves_every_raft_file_aside(good_journal: Path, tmp_path: Path) -> None:
    copy_journal(good_journal, tmp_path)
    (tmp_path / (JOURNAL + ".meta")).write_bytes(b"meta")
    (tmp_path / "node.json").write_text("{}")
    aside = reset_raft_files(tmp_path)
    assert aside is not None and sorted(p.name for p in aside.iterdir()) == [JOURNAL, JOURNAL + ".meta"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([aside.name, "node.json"])
    assert reset_raft_files(tmp_path) is None
    check_raft_files(tmp_path)
