"""Checking a node's Raft files before PySyncObj opens them, and moving broken ones aside.

PySyncObj trusts its files. A torn or overwritten journal makes it either raise deep inside its
constructor, or load the entries before the damage and then fail on every tick: the node looks
alive but never leads, never follows, never says why. A broken dump is logged and skipped, and
the node carries on with part of its history. So oct-ctl walks the files first and refuses to
start with a message saying which file, where, and how to rejoin from the peers.

Journal layout (``pysyncobj/journal.py``, format 1): a 40-byte header (name, version, format,
offset of the end of the last record), then records framed as ``size | idx, term, command |
size``. Entry indexes must follow each other and terms must not go down.
"""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct
import time
from pathlib import Path

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
    """Raise :class:`CorruptRaftFiles` if the journal or the dump in ``data_dir`` is damaged."""
    problem = _journal_problem(data_dir / JOURNAL) or _dump_problem(data_dir / DUMP)
    if problem is None:
        return
    raise CorruptRaftFiles(
        f"{problem}. This node's copy of the cluster state cannot be trusted, so oct-ctl will not "
        f"start on it. To rejoin from the other members: `oct-ctl reset-raft --data-dir {data_dir}` "
        "(moves the Raft files aside, keeping them for inspection), then start oct-ctl again: it "
        "fetches the state from the leader. On a single-node cluster there is no peer to copy from."
    )


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
    offset, previous = _HEADER, None
    while offset < end:
        if offset + 4 > end:
            return f"Raft journal {path} is truncated inside the record at byte {offset}"
        (size,) = struct.unpack_from("<I", data, offset)
        if size < 16 or offset + 8 + size > end:
            return f"Raft journal {path} has a record of impossible size {size} at byte {offset}"
        (suffix,) = struct.unpack_from("<I", data, offset + 4 + size)
        if suffix != size:
            return f"Raft journal {path} has a damaged record at byte {offset} (its two size fields differ)"
        idx, term = struct.unpack_from("<QQ", data, offset + 4)
        if previous is not None and (idx != previous[0] + 1 or term < previous[1]):
            return (
                f"Raft journal {path} has entry {idx} (term {term}) after entry {previous[0]} "
                f"(term {previous[1]}) at byte {offset}"
            )
        previous = (idx, term)
        offset += size + 8
    return None


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
