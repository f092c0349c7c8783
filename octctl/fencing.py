"""Fencing: an agent obeys only the newest leader it has heard from.

Every command a leader sends to an agent carries the leader's Raft term. The agent remembers the
highest term it has seen (on disk, so a restart does not forget it) and refuses anything older: a
leader that was deposed, but does not know it yet, can no longer start or stop containers.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

TERM_FILE = "term.json"


class StaleTerm(Exception):
    """A command from a leader whose term is older than one this node has already obeyed."""


class TermFence:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / TERM_FILE
        self._lock = threading.Lock()
        try:
            self._seen = int(json.loads(self._path.read_text())["term"])
        except (OSError, ValueError, KeyError, TypeError):
            self._seen = 0

    @property
    def seen(self) -> int:
        return self._seen

    def admit(self, term: int) -> None:
        """Accept ``term`` (and remember it if newer) or raise :class:`StaleTerm`."""
        with self._lock:
            if term < self._seen:
                raise StaleTerm(
                    f"command from a deposed leader (term {term}, this node follows term {self._seen})"
                )
            if term > self._seen:
                tmp = self._path.with_name(self._path.name + ".tmp")
                tmp.write_text(json.dumps({"term": term}))
                os.replace(tmp, self._path)
                self._seen = term
