"""Fencing: an agent obeys only the newest leader it has heard from.

Every command a leader sends to an agent carries the leader's Raft term. The agent remembers the
highest term it has seen (on disk, so a restart does not forget it) and refuses anything older: a
leader that was deposed, but does not know it yet, can no longer start or stop containers.

Only a term this node's own Raft replica has already seen is remembered: a leader's term reaches
its followers with its first heartbeat, before it can send them commands, so a higher one is not
(or not yet) any leader's. Remembering whatever a request claimed let one request with a huge term
make the node refuse its real leader forever; such a term is refused (:class:`UnknownTerm`, the
real leader retries a moment later) and never written down.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

TERM_FILE = "term.json"
#: A term in the ``X-Oct-Term`` header: ASCII digits only (``int()`` would also take "+5", "1_0",
#: " 7" and other scripts' digits), and a bounded number of them (a 64-bit term has up to 19).
MAX_TERM_DIGITS = 19
_TERM = re.compile(rf"[0-9]{{1,{MAX_TERM_DIGITS}}}")


def parse_term(raw: str | None) -> int:
    """The term a header carries, or ``ValueError`` for anything but 1-19 ASCII digits."""
    if raw is None or not _TERM.fullmatch(raw):
        raise ValueError(f"a term is 1-{MAX_TERM_DIGITS} digits 0-9")
    return int(raw)


class StaleTerm(Exception):
    """A command from a leader whose term is older than one this node has already obeyed."""


class UnknownTerm(Exception):
    """A term newer than any this node's Raft replica has seen: not (yet) the term of a leader."""


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

    def admit(self, term: int, known: int) -> None:
        """Accept ``term`` (and remember it if newer), given ``known``, the current term of this
        node's Raft replica; raise :class:`StaleTerm` for a term older than one already obeyed,
        :class:`UnknownTerm` for one newer than ``known``. Nothing is written unless accepted."""
        with self._lock:
            if term < self._seen:
                raise StaleTerm(
                    f"command from a deposed leader (term {term}, this node follows term {self._seen})"
                )
            if term > known:
                raise UnknownTerm(
                    f"unknown term {term}: this node's Raft replica is at term {known}; "
                    "a leader's term reaches its followers with its first heartbeat, retry"
                )
            if term > self._seen:
                tmp = self._path.with_name(self._path.name + ".tmp")
                tmp.write_text(json.dumps({"term": term}))
                os.replace(tmp, self._path)
                self._seen = term
