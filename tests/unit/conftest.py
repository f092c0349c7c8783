"""Unit tests are pure and fast: they open no network connection, bind no port and start no process.

A test that needs any of those belongs in ``tests/integration/`` (or with the e2e, DNS, runtime
suites); this guard makes the rule checkable instead of a convention that drifts. It patches the
few entry points every such use goes through and raises where the test tried.

Beside the guard: ``parts``, a leader wired to the in-memory fakes of ``leader_fakes.py``, which
every ``test_leader_*`` module steps through.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from octctl.leader import Leader
from octctl.node_settings import NodeSettings, Secrets
from octctl.state.model import command
from tests.unit.leader_fakes import FakeAgents, FakeProvider, FakeRaft, node


class ImpureUnitTest(BaseException):
    """Raised where a unit test reached for a socket or a process (a ``BaseException`` so that the
    code under test, which may catch ``OSError`` or ``Exception``, does not hide it)."""


@pytest.fixture(autouse=True)
def _no_sockets_or_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise ImpureUnitTest(f"a unit test {what}: move it to tests/integration/")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("opened a network connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("opened a network connection"))
    monkeypatch.setattr(socket.socket, "bind", refuse("bound a port"))
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("started a process"))
    monkeypatch.setattr(os, "system", refuse("started a process"))
    monkeypatch.setattr(os, "posix_spawn", refuse("started a process"))
    monkeypatch.setattr(os, "fork", refuse("started a process"))


@pytest.fixture
def parts() -> tuple[Leader, FakeRaft, FakeAgents, FakeProvider]:
    raft, agents, provider = FakeRaft(), FakeAgents(), FakeProvider()
    for n in (2, 3, 4):
        asyncio.run(raft.execute(command("node_joined", node=node(n))))
    settings = NodeSettings(node="node-2", cluster="c1", address="127.0.0.2", cpus=4000, memory=4096)
    reconciler = Leader(
        cluster=raft,
        agents=agents,
        settings=settings,
        secrets=Secrets(token="t", raft_password="p", ca_key="", ca_cert=""),
        provider=provider,
    )
    return reconciler, raft, agents, provider
