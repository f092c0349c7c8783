"""Checking a node's Raft files before PySyncObj opens them, and moving broken ones aside.

PySyncObj trusts its files. A torn or overwritten journal makes it either raise deep inside its
constructor, or load the entries before the damage and then fail on every tick: the node looks
alive but never leads, never follows, never says why. A broken dump is logged and skipped, and
the node carries on with part of its history. So oct-ctl walks the files first and refuses to
start with a message saying which file, where, and how to rejoin from the peers; the one damage
it repairs itself is an append torn by a power cut (:func:`cut_torn_tail`).

Journal layout (``pysyncobj/journal.py``, format 1): a 40-byte header (name, version, format,
offset of the end of the last record), then records framed as ``size | idx, term, command |
size``. Entry indexes must follow each other and terms must not go down.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import shutil
import struct
import time
from pathlib import Path

log = logging.getLogger(__name__)

JOURNAL = "raft.journal"
DUMP = "raft.dump"
_NAME = b"PYSYNCOBJ"
_HEADER = 24 + 8 + 4 + 4
_LAST_OFFSET_AT = 24 + 8 + 4


class CorruptRaftFiles(Exception):
    """This node's Raft files cannot be trusted; the message says how to recover."""


def raft_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.glob("raft.*") if p.is_file())


def check_raft_files(data_dir: Path) -> None:
    """Cut a torn tail off the journal (:func:`cut_torn_tail`), then raise
    :class:`CorruptRaftFiles` if the journal or the dump in ``data_dir`` is damaged."""
    cut_torn_tail(data_dir / JOURNAL)
    problem = _journal_problem(data_dir / JOURNAL) or _dump_problem(data_dir / DUMP)
    if problem is None:
        return
    raise CorruptRaftFiles(
        f"{problem}. This node's copy of the cluster state cannot be trusted, so oct-ctl will not "
        f"start on it. To rejoin from the other members: `oct-ctl reset-raft --data-dir {data_dir}` "
        "(moves the Raft files aside, keeping them for inspection), then start oct-ctl again: it "
        "fetches the state from the leader. On a single-node cluster there is no peer to copy from."
    )


def cut_torn_tail(path: Path) -> int:
    """Cut the journal back to its last whole record when it ends in an append that a power cut
    interrupted; return the bytes cut (0: nothing to cut, or damage that is not such a tail).

    The node syncs the journal before it reports any entry (docs/architecture.md#durability), so
    every record it ever acknowledged is whole on disk; only the appends of the sync that the
    power cut interrupted can be torn, and none of them was reported to anyone. Two shapes are
    unmistakably that: the header's end offset reached the disk but the records it covers did not
    (all zeros from the first bad record to the end), or the last record itself is cut short (it
    ends exactly at the end offset but its trailing size field is not its size). Anything else
    is left to :func:`check_raft_files` to refuse: cutting damage in the middle of the log could
    drop entries this node acknowledged.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if len(data) < _HEADER or not data.startswith(_NAME):
        return 0
    (end,) = struct.unpack_from("<I", data, _LAST_OFFSET_AT)
    if not _HEADER <= end <= len(data):
        return 0
    offset, problem = _walk(path, data, end)
    if problem is None:
        return 0
    zeros = not any(data[offset:end])
    size = struct.unpack_from("<I", data, offset)[0] if offset + 4 <= end else -1
    last_record_short = offset + 8 + size == end and struct.unpack_from("<I", data, end - 4)[0] != size
    if not (zeros or last_record_short):
        return 0
    with open(path, "r+b") as f:
        f.seek(_LAST_OFFSET_AT)
        f.write(struct.pack("<I", offset))
        f.flush()
        os.fdatasync(f.fileno())
    log.warning(
        "Raft journal %s ended in a torn append (a power cut while it was written): cut %d bytes "
        "from byte %d; no entry in them had been acknowledged",
        path,
        end - offset,
        offset,
    )
    return end - offset


def _journal_problem(path: Path) -> str | None:
    if not path.exists():
        return None
    data = path.read_bytes()
    if not data:
        return None  # created but never written: PySyncObj initialises it
    if len(data) < _HEADER or not data.startswith(_NAME):
        return f"Raft journal {path} has no valid header ({len(data)} bytes)"
    (end,) = struct.unpack_from("<I", data, _LAST_OFFSET_AT)
    if not _HEADER <= end <= len(data):
        return f"Raft journal {path} says it ends at byte {end}, but the file has {len(data)} bytes"
    return _walk(path, data, end)[1]


def _walk(path: Path, data: bytes, end: int) -> tuple[int, str | None]:
    """Follow the records up to ``end``: where the first bad one starts (``end`` if none) and why."""
    offset, previous = _HEADER, None
    while offset < end:
        if offset + 4 > end:
            return offset, f"Raft journal {path} is truncated inside the record at byte {offset}"
        (size,) = struct.unpack_from("<I", data, offset)
        if size < 16 or offset + 8 + size > end:
            return offset, f"Raft journal {path} has a record of impossible size {size} at byte {offset}"
        (suffix,) = struct.unpack_from("<I", data, offset + 4 + size)
        if suffix != size:
            why = f"Raft journal {path} has a damaged record at byte {offset} (its two size fields differ)"
            return offset, why
        idx, term = struct.unpack_from("<QQ", data, offset + 4)
        if previous is not None and (idx != previous[0] + 1 or term < previous[1]):
            return offset, (
                f"Raft journal {path} has entry {idx} (term {term}) after entry {previous[0]} "
                f"(term {previous[1]}) at byte {offset}"
            )
        previous = (idx, term)
        offset += size + 8
    return end, None


def _dump_problem(path: Path) -> str | None:
    """The dump is oct-ctl's own file in its 0700 folder, so unpickling it here is no new trust."""
    if not path.exists():
        return None
    try:
        with gzip.open(path, "rb") as f:
            data = pickle.load(f)
    except Exception as e:
        return f"Raft snapshot {path} cannot be read ({type(e).__name__}: {e})"
    if not (isinstance(data, tuple) and len(data) >= 4):
        return f"Raft snapshot {path} does not hold a PySyncObj snapshot"
    return None


def reset_raft_files(data_dir: Path) -> Path | None:
    """Move every Raft file into ``data_dir/raft-aside-<time>/``; the node then starts empty and
    catches up from the leader. Returns the folder, or None when there was nothing to move."""
    files = raft_files(data_dir)
    if not files:
        return None
    aside = data_dir / f"raft-aside-{time.strftime('%Y%m%dT%H%M%S')}"
    aside.mkdir(mode=0o700)
    for path in files:
        shutil.move(str(path), aside / path.name)
    return aside
