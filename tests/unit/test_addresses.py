from __future__ import annotations

from octctl.addresses import api_address, host_port, raft_address


def test_a_node_record_spells_its_api_and_raft_addresses() -> None:
    node = {"address": "10.0.0.7", "api_port": 31888, "raft_port": 31889}
    assert api_address(node) == "10.0.0.7:31888"
    assert raft_address(node) == "10.0.0.7:31889"


def test_host_port_takes_the_default_for_a_bare_host_or_an_ipv6_address() -> None:
    assert host_port("1.1.1.1:5353", 53) == ("1.1.1.1", 5353)
    assert host_port("1.1.1.1", 53) == ("1.1.1.1", 53)
    assert host_port("2001:db8::1", 53) == ("2001:db8::1", 53)
