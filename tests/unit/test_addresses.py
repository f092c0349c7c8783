from __future__ import annotations

from octctl.addresses import host_port


def test_host_port_takes_the_default_for_a_bare_host_or_an_ipv6_address() -> None:
    assert host_port("1.1.1.1:5353", 53) == ("1.1.1.1", 5353)
    assert host_port("1.1.1.1", 53) == ("1.1.1.1", 53)
    assert host_port("2001:db8::1", 53) == ("2001:db8::1", 53)
