"""Where nodes come from. The leader asks a provider for capacity and hands it back when idle.

A provider only launches and stops machines; it never talks Raft. A launched node joins the
cluster by itself (its settings carry the addresses of existing members), so a provider call can
return as soon as the machine is on its way.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from octctl.node_settings import Secrets


@dataclass(frozen=True)
class NodeRequest:
    cluster: str
    cpus: int
    memory: int
    join: tuple[str, ...]
    secrets: Secrets


class Provider(abc.ABC):
    """Contract: ``provision`` starts a node and returns its id before it has joined; calling it
    again makes another node. ``retire`` stops the node and frees what it used; retiring an unknown
    or already stopped node is not an error."""

    @abc.abstractmethod
    def provision(self, request: NodeRequest) -> str:
        """Launch one node that will join the cluster; return its node id."""

    @abc.abstractmethod
    def retire(self, node: str) -> None:
        """Stop the node and release its resources."""
