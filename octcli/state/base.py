"""The contract every state backend keeps: where the record lives, and how commands exclude each other."""

from __future__ import annotations

import abc
import contextlib

from octcli.state.record import ClusterRecord

__all__ = ["StateStore"]


class StateStore(abc.ABC):
    """One project's :class:`ClusterRecord` and its lock, in some backend.

    Every failure is an :class:`~octcli.errors.OctError` (never a backend exception, never a
    traceback) and no message, log line or ``repr`` contains the record's API token.

    The lock is what makes ``oct deploy`` safe to run from two terminals or two CI jobs: a command
    that changes the cluster (``deploy``, ``destroy``) holds it from before it reads the record until
    after its last write. Reading (``status``, ``logs``) does not take it.
    """

    #: Where the record is, for messages: a path or ``s3://bucket/key``; never holds credentials.
    where: str

    @abc.abstractmethod
    def load(self) -> ClusterRecord | None:
        """The record, or None when the project has no cluster yet; never creates anything.

        A record that exists but cannot be parsed is an error, not None: treating it as absent
        would start a second cluster and strand the first one's token.
        """

    @abc.abstractmethod
    def save(self, record: ClusterRecord) -> None:
        """Replace the record in one step: a reader sees the old or the new one, never a mix.

        May create what holds the record (a folder, a bucket) the first time. A backend that can
        detect a write made by someone else since this store's last ``load``/``save`` refuses to
        overwrite it.
        """

    @abc.abstractmethod
    def remove(self) -> None:
        """Delete the record; removing an absent record is not an error (destroy must be repeatable)."""

    @abc.abstractmethod
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the project's lock for the ``with`` block; released on exit, exceptions included.

        Non-blocking on purpose: a second ``oct deploy`` that silently waited behind a ten-minute
        first one looks hung, so a held lock raises :class:`~octcli.errors.OctError` at once,
        naming the holder when the backend knows it. Not reentrant.
        """

    @abc.abstractmethod
    def break_lock(self) -> str | None:
        """Remove a lock left behind by a command that died; returns what was removed, None if none.

        Only for locks that outlive their holder. Raises when the lock cannot be broken safely
        (for example it is held by a process that is still running).
        """
