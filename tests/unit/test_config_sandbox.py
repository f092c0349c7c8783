"""Attacks on the first templating pass: an oct.toml must never run code, eat memory or CPU, or
change its own structure through a variable. Each attack is a validation problem with a line and a
key path, found before anything is compiled, and ``oct validate`` answers quickly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest

from octctl.config import ConfigError, load_config_text
from octctl.config import render as render_module
from octctl.config.render import ALLOWED, MAX_TOTAL_BYTES, MAX_VALUE_BYTES
from tests.unit.test_config_template import FIRST_VALUE_LINE, HEADER

VALUE_LINE = FIRST_VALUE_LINE


def payloads(marker: Path) -> list[str]:
    """Template-injection payloads; the ones that reach ``os`` would create ``marker``."""
    touch = f"touch {marker}"
    return [
        f"{{{{ cycler.__init__.__globals__.os.system('{touch}') }}}}",
        f"{{{{ joiner.__init__.__globals__.os.popen('{touch}').read() }}}}",
        f"{{{{ namespace.__init__.__globals__.os.system('{touch}') }}}}",
        f"{{{{ lipsum.__globals__['os'].system('{touch}') }}}}",
        f"{{{{ self.__init__.__globals__.__builtins__.__import__('os').system('{touch}') }}}}",
        f"{{{{ env.__init__.__globals__.os.system('{touch}') }}}}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{{ ''.__class__ }}",
        "{{ env.__class__.__mro__ }}",
        "{{ env.X.__class__.__mro__[1] }}",
        "{{ env['X']['__class__'] }}",
        "{{ env|attr('__class__') }}",
        "{{ services.a.ip.__class__ }}",
        "{{ config }}{{ self }}{{ request }}",
        "{{ 'x' * 10**10 }}",
        "{{ [1] * 10**10 }}",
        "{{ 10**10**10 }}",
        "{{ range(10**12) }}",
        "{{ range(10**12) | list }}",
        "{{ range(10**12) | join(',') }}",
        "{% for i in range(10**12) %}x{% endfor %}",
        "{% for i in range(10) %}{% for j in range(10) %}{{ env.X }}{% endfor %}{% endfor %}",
        "{{ lipsum(n=10**9) }}",
        "{{ lipsum }}",
        "{% set x = 'a' %}{{ x }}",
        "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
        "{% include '/etc/passwd' %}",
        "{% import 'os' as os %}",
        "{% extends 'base.html' %}",
        "{{ '%s' % env.X }}",
        "{{ env.X.format(env) }}",
        "{{ env.X | replace('a', env.X * 1000) }}",
        "{{ env.X | default('fallback') }}",
        "{% filter upper %}x{% endfilter %}",
        "{% with a = 1 %}{{ a }}{% endwith %}",
        "{{ dict(a=1) }}",
        "{{ ((((((((((env.X)))))))))) ~ 'y' }}",
    ]


def problems_of(
    text: str, env: dict[str, str] | None = None, **options: bool
) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env or {}, filename="oct.toml", **options)
    return [(p.line, p.path, p.message) for p in caught.value.problems]


@pytest.fixture
def nothing_compiled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refused values must be stopped before jinja compiles anything of them."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a refused template reached the compiler")

    monkeypatch.setattr(render_module._Sandbox, "compile", refuse)
    yield


def test_the_compiler_guard_is_live(nothing_compiled: None) -> None:
    """An allowed value is compiled, so with the guard in place it fails: the guard does watch."""
    assert problems_of(HEADER + 'A = "{{ env.X }}"\n', {"X": "x"}) == [
        (VALUE_LINE, "project.services[0].envs.A", "template error: a refused template reached the compiler")
    ]


@pytest.mark.parametrize("index", range(len(payloads(Path("m")))))
def test_payload_is_a_problem_and_runs_nothing(index: int, tmp_path: Path, nothing_compiled: None) -> None:
    marker = tmp_path / "pwned"
    payload = payloads(marker)[index]
    text = HEADER + f"A = '''{payload}'''\n"
    started = time.monotonic()
    found = problems_of(text, {"X": "x"})
    assert time.monotonic() - started < 2
    assert not marker.exists()
    assert len(found) == 1, found
    line, path, message = found[0]
    assert (line, path) == (VALUE_LINE, "project.services[0].envs.A")
    assert message.startswith(ALLOWED + " (found "), message


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ('name = "demo"', "project.name"),
        ('path = "./state.json"', "project.state_backend.local.path"),
        ('image = "img"', "project.services[0].image"),
    ],
)
def test_payload_is_refused_in_any_string(
    where: str, path: str, tmp_path: Path, nothing_compiled: None
) -> None:
    marker = tmp_path / "pwned"
    payload = payloads(marker)[0]
    key = where.split(" =")[0]
    text = HEADER.replace(where, f"{key} = '''{payload}'''", 1)
    found = problems_of(text)
    assert [(p, m.split(" (found")[0]) for _, p, m in found] == [(path, ALLOWED)]
    assert not marker.exists()


def test_payloads_in_arrays_and_commands(tmp_path: Path, nothing_compiled: None) -> None:
    marker = tmp_path / "pwned"
    payload = payloads(marker)[0]
    text = HEADER.replace(
        "cpus = 250", f"cpus = 250\ncommand = '''{payload}'''\ndepends_on = ['''{payload}''']"
    )
    assert [path for _, path, _ in problems_of(text, validate=False)] == [
        "project.services[0].command",
        "project.services[0].depends_on[0]",
    ]
    assert not marker.exists()


def test_payload_is_refused_even_where_variables_are_optional(tmp_path: Path, nothing_compiled: None) -> None:
    marker = tmp_path / "pwned"
    text = HEADER + f"A = '''{payloads(marker)[0]}'''\n"
    assert [path for _, path, _ in problems_of(text, require_env=False)] == ["project.services[0].envs.A"]
    assert not marker.exists()


def test_every_payload_in_one_file_is_listed_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    attacks = payloads(marker)
    text = HEADER + "".join(f"A{i} = '''{payload}'''\n" for i, payload in enumerate(attacks))
    started = time.monotonic()
    found = problems_of(text, {"X": "x"})
    assert time.monotonic() - started < 5
    assert len(found) == len(attacks)
    assert all(message.startswith(ALLOWED) for _, _, message in found)
    assert not marker.exists()


def test_a_huge_variable_is_refused_before_it_is_copied(nothing_compiled: None) -> None:
    big = "x" * (MAX_VALUE_BYTES + 1)
    text = HEADER + 'A = "{{ env.BIG }}"\n'
    assert problems_of(text, {"BIG": big}) == [
        (
            VALUE_LINE,
            "project.services[0].envs.A",
            f"renders to {MAX_VALUE_BYTES + 1} bytes, more than the {MAX_VALUE_BYTES} a value may have",
        ),
    ]


def test_size_counts_utf8_bytes_and_repeats() -> None:
    euro = "€" * (MAX_VALUE_BYTES // 6 + 1)  # 3 bytes each, written twice
    text = HEADER + 'A = "{{ env.E }}{{ env.E }}"\n'
    [(_, _, message)] = problems_of(text, {"E": euro})
    assert message.startswith(f"renders to {len(euro) * 6} bytes")
    half = "x" * (MAX_VALUE_BYTES // 2 - 10)
    assert len(load_config_text(text, {"E": half}).service("app").envs["A"]) == len(half) * 2


def test_a_variable_repeated_in_many_values_is_bounded() -> None:
    value = "x" * (MAX_VALUE_BYTES - 1)
    count = MAX_TOTAL_BYTES // len(value) + 5
    text = HEADER + "".join(f'A{i} = "{{{{ env.V }}}}"\n' for i in range(count))
    started = time.monotonic()
    found = problems_of(text, {"V": value})
    assert time.monotonic() - started < 5
    assert [message for _, _, message in found] == [
        f"templated values render to more than {MAX_TOTAL_BYTES} bytes in total"
    ]


def test_a_deeply_nested_template_is_a_problem() -> None:
    text = HEADER + "A = '{{ " + "(" * 5000 + "env.X" + ")" * 5000 + " }}'\n"
    [(line, path, message)] = problems_of(text, {"X": "x"})
    assert (line, path) == (VALUE_LINE, "project.services[0].envs.A")
    assert message.startswith(("template syntax error", ALLOWED))


def test_the_sandbox_has_no_globals_and_blocks_attributes(tmp_path: Path) -> None:
    """The second line of defence, on its own: rendering a payload that skipped the whitelist."""
    sandbox = render_module._Sandbox()
    assert sandbox.globals == {} and sandbox.filters == {} and sandbox.tests == {}
    assert sandbox.autoescape is False
    marker = tmp_path / "pwned"
    env = render_module._EnvContext({"X": "x"})
    for source in (
        f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
        "{{ env.X.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    ):
        with pytest.raises(jinja2.TemplateError):
            sandbox.from_string(source).render(env=env)
    assert not marker.exists()
    # env's names are variables, never Python attributes.
    with pytest.raises(jinja2.UndefinedError):
        sandbox.from_string("{{ env.__class__ }}").render(env=render_module._EnvContext({}))
    assert (
        sandbox.from_string("{{ env.__class__ }}").render(env=render_module._EnvContext({"__class__": "c"}))
        == "c"
    )
