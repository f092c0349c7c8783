"""The node's own log (``oct logs --node N``): the file ``--log-file`` names, or systemd's journal.

A local node logs to ``.oct/nodes/<node>/oct-ctl.log`` (rotated: following goes on into the new
file); on a machine ``oct-ctl`` runs under systemd and its log is the journal, read with
``journalctl -u oct-ctl``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from octctl.runtime.base import LinesSoFar, LogStream
from octctl.runtime.process.logs import FileLines

__all__ = ["JournalLines", "node_log_stream"]

UNIT = "oct-ctl"


class JournalLines(LogStream):
    """``journalctl -u oct-ctl``: the last lines, and with ``follow`` the new ones (``-f``)."""

    def __init__(self, tail: int, follow: bool) -> None:
        argv = ["journalctl", "-u", UNIT, "-n", str(tail), "-o", "short-iso", "--no-pager"]
        self._process = subprocess.Popen(
            [*argv, *(["-f"] if follow else [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def __iter__(self) -> Iterator[str]:
        assert self._process.stdout is not None
        try:
            for line in self._process.stdout:
                yield line.decode("utf-8", "replace").rstrip("\n")
        finally:
            self.close()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()


def node_log_stream(log_file: Path | None, tail: int, follow: bool) -> LogStream:
    if log_file is not None:
        return FileLines(log_file, tail, follow)
    if shutil.which("journalctl") is None:
        return LinesSoFar(["this node logs to its standard error only (no --log-file, no systemd journal)"])
    return JournalLines(tail, follow)
