"""Templating of oct.toml: ``{{ env.X }}`` on the client, ``{{ services.X.attr }}`` on the leader."""

from __future__ import annotations

import pytest

from octctl.config import (
    SERVICE_ATTRS,
    ConfigError,
    load_config_text,
    render_service_refs,
    service_refs,
)
from octctl.config.render import render_file


def problems(text: str, env: dict[str, str] | None = None) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        render_file(text, env or {}, "oct.toml")
    return [(p.line, p.path, p.message) for p in caught.value.problems]


def test_values_are_never_html_escaped() -> None:
    nasty = "&<>\"'/ &amp; {{ not.a.template }}"
    assert render_file("x = {{ env.V }}", {"V": nasty}, "oct.toml") == f"x = {nasty}"


def test_escaped_value_reaches_the_config_unchanged() -> None:
    text = "[project]\nname = \"p\"\nservices = []\n[project.state_backend.local]\npath = '{{ env.STATE }}'\n"
    config = load_config_text(text, {"STATE": '/a&b/<c>/"d"/e'})
    assert config.project.state_backend.local is not None
    assert config.project.state_backend.local.path == '/a&b/<c>/"d"/e'


def test_trailing_newline_and_plain_text_kept() -> None:
    text = "# comment {not jinja}\nkey = 'value'\n\n"
    assert render_file(text, {}, "oct.toml") == text


def test_missing_env_var_names_variable_and_line() -> None:
    text = 'a = "1"\nb = "{{ env.PRESENT }}"\n\ntoken = "{{ env.SRCDS_TOKEN }}"\n'
    assert problems(text, {"PRESENT": "x"}) == [
        (4, "env.SRCDS_TOKEN", "environment variable SRCDS_TOKEN is not set"),
    ]
    with pytest.raises(ConfigError) as caught:
        render_file(text, {"PRESENT": "x"}, "oct.toml")
    assert str(caught.value) == "oct.toml:4: env.SRCDS_TOKEN: environment variable SRCDS_TOKEN is not set"


def test_all_missing_env_vars_reported_together() -> None:
    text = (
        'a = "{{ env.ONE }}"\nb = "{{ env.TWO }}-{{ env[\'THREE\'] }}"\n{% if env.FOUR %}x = 1{% endif %}\n'
    )
    assert problems(text) == [
        (1, "env.ONE", "environment variable ONE is not set"),
        (2, "env.THREE", "environment variable THREE is not set"),
        (2, "env.TWO", "environment variable TWO is not set"),
        (3, "env.FOUR", "environment variable FOUR is not set"),
    ]


def test_env_names_that_shadow_dict_methods() -> None:
    env = {"items": "i", "keys": "k"}
    assert render_file("{{ env.items }} {{ env.keys }}", env, "oct.toml") == "i k"
    assert problems("{{ env.get }}") == [(1, "env.get", "environment variable get is not set")]


def test_full_jinja_syntax_works_with_env() -> None:
    text = "{% if env.MODE == 'prod' %}replicas = 3{% else %}replicas = 1{% endif %}\n"
    text += "name = '{{ env.NAME | lower }}'"
    assert render_file(text, {"MODE": "prod", "NAME": "WEB"}, "oct.toml") == "replicas = 3\nname = 'web'"


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("{{ services.app_1.public_ip }}", "{{ services.app_1.public_ip }}"),
        ("{{services.db.port}}", "{{ services.db.port }}"),
        ('{{ services["my-app"].host }}', "{{ services['my-app'].host }}"),
        ("{{ services['api'].ip }}", "{{ services.api.ip }}"),
    ],
)
def test_service_refs_survive_the_first_render(source: str, rendered: str) -> None:
    text = f'A = "x {source} y"\n'
    out = render_file(text, {}, "oct.toml")
    assert out == f'A = "x {rendered} y"\n'
    assert service_refs(out) == service_refs(source)


def test_service_refs_inside_multiline_env() -> None:
    text = 'CONF = """\nserver {{ services.app_1.public_ip }}:80;\n'
    text += 'server {{ services.app_2.public_ip }}:80;\n"""\n'
    assert render_file(text, {}, "oct.toml") == text


def test_service_refs_must_be_plain() -> None:
    message = (
        "a service reference is filled in on the leader after placement, so it must be a plain "
        "{{ services.NAME.ATTR }} (no filters, operators or tags)"
    )
    assert problems("a\n{{ services.app_1.public_ip | upper }}") == [(2, "services", message)]
    assert problems("{{ services.app_1 }}") == [(1, "services", message)]
    assert problems("{% if services.a.ip %}x{% endif %}") == [(1, "services", message)]


def test_unknown_top_level_name() -> None:
    assert problems('x = 1\ny = "{{ foo.bar }}"\nz = "{{ enV.X }}"') == [
        (2, "foo", "unknown template variable 'foo': use env.NAME or services.NAME.ATTR"),
        (3, "enV", "unknown template variable 'enV': use env.NAME or services.NAME.ATTR"),
    ]


def test_template_locals_and_globals_are_not_unknown() -> None:
    text = "{% set n = 2 %}{% for i in range(n) %}{{ i }}{{ loop.index }}{% endfor %}"
    assert render_file(text, {}, "oct.toml") == "0112"


def test_syntax_error_reports_line() -> None:
    [(line, path, message)] = problems('a = 1\nb = 2\nc = "{{ env.X "\n')
    assert (line, path) == (3, "")
    assert message.startswith("template syntax error: ")


def test_render_time_error_reports_line() -> None:
    [(line, path, message)] = problems("a = 1\nb = {{ env.X + 1 }}\n", {"X": "s"})
    assert (line, path) == (2, "")
    assert message.startswith("template error: ")


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
