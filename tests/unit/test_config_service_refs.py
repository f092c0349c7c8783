"""The leader's templating pass: ``{{ services.X.attr }}`` filled in with what the cluster knows.

The client leaves service references in place (``test_config_template.py``); the leader finds
them, fills in each service's host, ip, port or public_ip at deploy time, and reports every
unknown service or attribute at once rather than the first.
"""

from __future__ import annotations

import pytest

from octctl.config import SERVICE_ATTRS, ConfigError, render_service_refs, service_refs


def test_service_refs_extraction() -> None:
    text = "{{ services.a.ip }}:{{ services.a.port }} {{services.b.host}}"
    text += " {{ services['c-d'].public_ip }} {{ x.y.z }}"
    assert service_refs(text) == {("a", "ip"), ("a", "port"), ("b", "host"), ("c-d", "public_ip")}
    assert service_refs("no refs {{ env.X }}") == set()


def test_render_service_refs() -> None:
    endpoints: dict[str, dict[str, str | int]] = {
        "app_1": {"public_ip": "203.0.113.7", "port": 8000},
        "my-db": {"host": "db.internal"},
    }
    text = "server {{ services.app_1.public_ip }}:{{services.app_1.port}};"
    text += ' db={{ services["my-db"].host }} {{ keep }}'
    assert render_service_refs(text, endpoints) == "server 203.0.113.7:8000; db=db.internal {{ keep }}"


def test_render_service_refs_reports_all_unknowns() -> None:
    endpoints = {"a": {"ip": "10.0.0.1"}}
    with pytest.raises(ConfigError) as caught:
        render_service_refs("{{ services.zz.ip }} {{ services.a.nope }} {{ services.a.port }}", endpoints)
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("services.a.nope", "unknown service attribute 'nope': expected one of host, ip, port, public_ip"),
        ("services.a.port", "no port known for service 'a'"),
        ("services.zz.ip", "unknown service 'zz'"),
    ]


def test_service_attrs() -> None:
    assert SERVICE_ATTRS == ("host", "ip", "port", "public_ip")
