"""Address claims of the local provider: one 127.0.0.N per node, machine-wide, freed with the node."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from octctl.node_settings import Secrets
from octctl.providers.base import NodeRequest
from octctl.providers.local.provider import (
    FALLBACK_DNS_PORT,
    LocalProvider,
    free_address,
    local_dns_port,
    node_address,
    node_name,
    nodes_dir,
)


@pytest.fixture(autouse=True)
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "claims"
    monkeypatch.setenv("OCT_LOCAL_CLAIMS", str(folder))
    return folder


def test_two_projects_never_get_the_same_address(tmp_path: Path, claims: Path) -> None:
    first = free_address(tmp_path / "a" / ".oct")
    second = free_address(tmp_path / "b" / ".oct")
    assert first != second
    assert (claims / first).read_text() == str(
        (nodes_dir(tmp_path / "a" / ".oct") / node_name(first)).resolve()
    )
    node_dir = nodes_dir(tmp_path / "a" / ".oct") / node_name(first)
    assert node_dir.is_dir() and oct(node_dir.stat().st_mode & 0o777) == "0o700"


def test_a_claim_is_freed_when_its_node_folder_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "a" / ".oct"
    first = free_address(root)
    shutil.rmtree(root)  # what `oct destroy` does
    assert free_address(tmp_path / "b" / ".oct") == first


def test_a_project_s_nodes_take_ascending_addresses(tmp_path: Path) -> None:
    """A lower address freed by another project is passed over while a higher one is free, so
    genesis keeps the lowest id of its cluster (the scheduler's ties go to the lowest id)."""
    other = tmp_path / "other" / ".oct"
    low = free_address(other)
    root = tmp_path / "a" / ".oct"
    genesis = free_address(root)
    shutil.rmtree(other)  # the other project is destroyed: ``low`` is free again
    follower = LocalProvider(root).reserve(NodeRequest("c", 1000, 1024, (), Secrets.mint()))
    assert host(node_address(follower)) > host(genesis) > host(low)


def host(address: str) -> int:
    return int(address.rsplit(".", 1)[-1])


def test_dns_prefers_53_and_falls_back_when_it_is_taken() -> None:
    address = "127.0.0.251"
    if os.geteuid() != 0:
        assert local_dns_port(address) == FALLBACK_DNS_PORT  # 53 needs privileges
        return
    assert local_dns_port(address) == 53
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind((address, 53))
        assert local_dns_port(address) == FALLBACK_DNS_PORT
