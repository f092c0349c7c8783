"""Templating of oct.toml on the client: ``{{ env.X }}`` inside string values, and nothing else.

Env values arrive byte for byte and cannot change the file's structure, only strings are
templated, a missing variable is a problem with its line and path (optional where the command
does not need it), and ``{{ services.X.attr }}`` is left for the leader, whose pass is tested in
``test_config_service_refs.py``. The attacks on this pass are in ``test_config_sandbox.py``."""

from __future__ import annotations

import pytest

from octctl.config import Config, ConfigError, load_config_text, service_refs
from octctl.config.render import ALLOWED

HEADER = """\
[project]
name = "demo"

[project.state_backend.local]
path = "./state.json"

[[project.services]]
name = "app"
image = "img"
cpus = 250
memory = 64

[project.services.envs]
"""
FIRST_VALUE_LINE = HEADER.count("\n") + 1
CLUSTER_SUFFIX = (
    " (it is needed to find the cluster: only the variables inside project.services may be unset "
    "for this command)"
)


def load(text: str, env: dict[str, str] | None = None, **options: bool) -> Config:
    return load_config_text(text, env or {}, filename="oct.toml", **options)


def envs(values: str, env: dict[str, str] | None = None, **options: bool) -> dict[str, str]:
    """The rendered envs of the one service, for ``values`` written under its envs table."""
    return load(HEADER + values, env, **options).service("app").envs


def problems(
    text: str, env: dict[str, str] | None = None, **options: bool
) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        load(text, env, **options)
    return [(p.line, p.path, p.message) for p in caught.value.problems]


def line_of(text: str, snippet: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if snippet in line)


# --- what reaches the config ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        '"\n[[project.services]]\nname = "evil"\nimage = "x"\ncpus = 1\nmemory = 1\n',
        'a\\tb \\u00e9 \\n \\\\ \\" \\x41',  # backslash sequences, as typed in a shell
        "tab\there, newline\nthere, carriage\r\nreturn, lone\rcr",
        "é ü 中文 🎉 \u00e9 \u2028 \x00 \x7f",
        "&<>\"'/ &amp; '''\"\"\"",
        "{{ env.OTHER }} {% for x in y %} {# c #} {{ services.db.ip }}",  # never rendered again
        "  leading and trailing spaces \n\n",
        "",
    ],
    ids=[
        "toml-injection",
        "backslashes",
        "newlines",
        "unicode",
        "quotes",
        "template-text",
        "spaces",
        "empty",
    ],
)
def test_env_value_arrives_byte_for_byte(value: str) -> None:
    text = 'A = "{{ env.V }}"\nB = "<{{ env.V }}|{{ env[\'V\'] }}>"\n'
    got = envs(text, {"V": value, "OTHER": "no"}, validate=False)  # {{ services.db.ip }}: no such service
    assert got["A"] == value
    assert got["B"] == f"<{value}|{value}>"
    assert got["A"].encode("utf-8", "surrogatepass") == value.encode("utf-8", "surrogatepass")


def test_env_value_cannot_add_a_service() -> None:
    evil = 'x"\n\n[[project.services]]\nname = "evil"\nimage = "evil:1"\ncpus = 1\nmemory = 1\n#'
    config = load(HEADER + 'A = "{{ env.V }}"\n', {"V": evil})
    assert [s.name for s in config.project.services] == ["app"]
    assert config.service("app").envs == {"A": evil}


def test_env_value_in_every_kind_of_string() -> None:
    text = HEADER.replace('image = "img"', "image = 'img:{{ env.TAG }}'") + (
        'BASIC = "a {{ env.V }} b"\n'
        "LITERAL = 'a {{ env.V }} b'\n"
        'MULTI = """\nline {{ env.V }}\n"""\n'
        "MULTI_LITERAL = '''\nline {{ env.V }}\n'''\n"
    )
    config = load(text, {"V": 'q"\\t', "TAG": "1.2"})
    assert config.service("app").image == "img:1.2"
    assert config.service("app").envs == {
        "BASIC": 'a q"\\t b',
        "LITERAL": 'a q"\\t b',
        "MULTI": 'line q"\\t\n',
        "MULTI_LITERAL": 'line q"\\t\n',
    }


def test_env_values_in_arrays_inline_tables_and_everywhere() -> None:
    text = (
        '[project]\nname = "{{ env.NAME }}"\n'
        'state_backend = { local = { path = "{{ env.DIR }}/state.json" } }\n'
        "[project.provider.local]\nnodes = 1\n"
        '[[project.services]]\nname = "a"\nimage = "x"\ncpus = 1\nmemory = 1\n'
        '[[project.services]]\nname = "b"\nimage = "x"\ncpus = 1\nmemory = 1\n'
        'depends_on = ["{{ env.DEP }}"]\ncommand = "run {{ env.ARG }}"\n'
    )
    config = load(text, {"NAME": "shop", "DIR": "/d", "DEP": "a", "ARG": "--fast"})
    assert config.project.name == "shop"
    assert config.project.state_backend.local is not None
    assert config.project.state_backend.local.path == "/d/state.json"
    assert config.service("b").depends_on == ["a"]
    assert config.service("b").command == "run --fast"


def test_template_text_around_values_is_kept_exactly() -> None:
    got = envs(
        'A = "x\\r\\ny\\r{{ env.V }}\\r\\n"\nB = "\\t{{ env.V }}\\u00e9\\n"\nC = "{{ env.V }}\\n\\n"\n',
        {"V": "v"},
    )
    assert got == {"A": "x\r\ny\rv\r\n", "B": "\tvé\n", "C": "v\n\n"}


def test_values_without_template_syntax_are_not_rendered() -> None:
    got = envs("A = \"{not jinja} }} %} #}\"\nB = '${HOME} $((1+2))'\n")
    assert got == {"A": "{not jinja} }} %} #}", "B": "${HOME} $((1+2))"}


def test_values_are_never_html_escaped() -> None:
    nasty = "&<>\"'/ &amp;"
    assert envs('A = "{{ env.V }}"\n', {"V": nasty}) == {"A": nasty}


def test_escaped_value_reaches_the_config_unchanged() -> None:
    text = "[project]\nname = \"p\"\nservices = []\n[project.state_backend.local]\npath = '{{ env.STATE }}'\n"
    config = load(text, {"STATE": '/a&b/<c>/"d"/e'})
    assert config.project.state_backend.local is not None
    assert config.project.state_backend.local.path == '/a&b/<c>/"d"/e'


def test_keys_and_comments_are_never_rendered() -> None:
    text = HEADER + '"{{ env.KEY }}" = "v"\n# {{ env.NOT_SET }} {% for %}\nB = "b" # {{ env.NOT_SET }}\n'
    # validate=False: a key like that is no environment variable name (validation says so).
    got = load(text, {"KEY": "k"}, validate=False).service("app").envs
    assert got == {"{{ env.KEY }}": "v", "B": "b"}


def test_env_names_that_shadow_python_attributes() -> None:
    env = {"items": "i", "keys": "k", "_": "u", "__class__": "c", "get": "g"}
    text = 'A = "{{ env.items }} {{ env.keys }} {{ env._ }} {{ env.__class__ }} {{ env.get }}"\n'
    assert envs(text, env) == {"A": "i k u c g"}
    assert envs("A = '{{ env[\"my-var\"] }}'\n", {"my-var": "m"}) == {"A": "m"}
    assert problems(HEADER + 'A = "{{ env.get }}"\n') == [
        (FIRST_VALUE_LINE, "project.services[0].envs.A", "environment variable get is not set")
    ]


def test_raw_blocks_string_literals_and_comments_are_allowed() -> None:
    got = envs(
        "A = '{% raw %}{{ .Name }}{% endraw %}'\nB = \"{{ '{{' }} x }}\"\nC = 'a{# note #}b'\n"
        "D = '{{- env.V -}}  x'\n",
        {"V": "v"},
    )
    assert got == {"A": "{{ .Name }}", "B": "{{ x }}", "C": "ab", "D": "vx"}


# --- only strings are templated --------------------------------------------------------------------


def test_template_outside_a_string_is_a_toml_error_with_a_hint() -> None:
    text = HEADER.replace("cpus = 250", "cpus = {{ env.CPUS }}")
    [(line, path, message)] = problems(text, {"CPUS": "500"})
    assert (line, path) == (line_of(text, "cpus = {{"), "")
    assert message.startswith("invalid TOML: ")
    assert "templates are only filled in inside quoted strings" in message
    assert "cpus = 500" in message


def test_toml_error_without_template_has_no_hint() -> None:
    [(_, _, message)] = problems(HEADER.replace("cpus = 250", "cpus = 250 memory"))
    assert "templates" not in message


def test_a_quoted_number_is_still_a_string() -> None:
    text = HEADER.replace("cpus = 250", 'cpus = "{{ env.CPUS }}"')
    assert problems(text, {"CPUS": "500"}) == [
        (line_of(text, "cpus = "), "project.services[0].cpus", 'expected an integer, got "500"')
    ]


# --- missing variables ---------------------------------------------------------------------------


def test_missing_env_var_names_variable_line_and_path() -> None:
    text = HEADER + 'A = "1"\nB = "{{ env.PRESENT }}"\n\nTOKEN = "{{ env.SRCDS_TOKEN }}"\n'
    with pytest.raises(ConfigError) as caught:
        load(text, {"PRESENT": "x"})
    line = line_of(text, "TOKEN")
    assert str(caught.value) == (
        f"oct.toml:{line}: project.services[0].envs.TOKEN: environment variable SRCDS_TOKEN is not set"
    )


def test_all_missing_env_vars_reported_together() -> None:
    text = (
        '[project]\nname = "{{ env.NAME }}"\n[project.state_backend.local]\npath = "{{ env.DIR }}"\n'
        '[[project.services]]\nname = "a"\nimage = "{{ env.ONE }}"\ncpus = 1\nmemory = 1\n'
        "depends_on = [\"{{ env['TWO'] }}\"]\n"
        '[project.services.envs]\nX = "{{ env.THREE }}-{{ env.FOUR }}-{{ env.THREE }}"\n'
    )
    assert problems(text) == [
        (2, "project.name", "environment variable NAME is not set"),
        (4, "project.state_backend.local.path", "environment variable DIR is not set"),
        (7, "project.services[0].image", "environment variable ONE is not set"),
        (10, "project.services[0].depends_on[0]", "environment variable TWO is not set"),
        (12, "project.services[0].envs.X", "environment variable THREE is not set"),
        (12, "project.services[0].envs.X", "environment variable FOUR is not set"),
    ]


def test_a_value_left_verbatim_is_not_also_judged_by_the_checks() -> None:
    """The name stays '{{ env.NAME }}', which is no DNS label: saying so would only repeat the cause."""
    text = HEADER.replace('name = "app"', 'name = "{{ env.NAME }}"')
    assert problems(text) == [
        (line_of(text, "env.NAME"), "project.services[0].name", "environment variable NAME is not set")
    ]


def test_missing_variables_come_with_schema_and_semantic_problems() -> None:
    text = HEADER.replace("cpus = 250", 'cpus = "many"') + (
        'A = "{{ env.SECRET }}"\n'
        '[[project.services]]\nname = "web"\nimage = "x"\ncpus = 1\nmemory = 1\ndepends_on = ["nope"]\n'
    )
    assert [(line, path) for line, path, _ in problems(text)] == [
        (line_of(text, 'cpus = "many"'), "project.services[0].cpus"),
        (line_of(text, "env.SECRET"), "project.services[0].envs.A"),
        (line_of(text, 'depends_on = ["nope"]'), "project.services[1].depends_on[0]"),
    ]


def test_service_variables_are_optional_without_require_env() -> None:
    text = HEADER.replace('image = "img"', 'image = "img:{{ env.TAG }}"') + (
        'A = "{{ env.SECRET }}"\nB = "{{ env.SET }}"\n'
    )
    config = load(text, {"SET": "s"}, require_env=False)
    assert config.service("app").image == "img:{{ env.TAG }}"
    assert config.service("app").envs == {"A": "{{ env.SECRET }}", "B": "s"}
    assert [message for _, _, message in problems(text, {"SET": "s"})] == [
        "environment variable TAG is not set",
        "environment variable SECRET is not set",
    ]


@pytest.mark.parametrize(
    ("before", "after", "path"),
    [
        ('name = "demo"', 'name = "{{ env.PROJECT }}"', "project.name"),
        ('path = "./state.json"', 'path = "{{ env.PROJECT }}.json"', "project.state_backend.local.path"),
        ('name = "demo"', 'name = "demo"\ndomain = "{{ env.PROJECT }}.example.com"', "project.domain"),
    ],
)
def test_variables_outside_services_are_needed_to_find_the_cluster(
    before: str, after: str, path: str
) -> None:
    text = HEADER.replace(before, after, 1) + 'A = "{{ env.SECRET }}"\n'
    assert problems(text, require_env=False) == [
        (line_of(text, "env.PROJECT"), path, "environment variable PROJECT is not set" + CLUSTER_SUFFIX)
    ]


def test_provider_variables_are_needed_to_find_the_cluster() -> None:
    text = HEADER + '[project.provider.aws]\nregion = "{{ env.REGION }}"\n'
    assert problems(text, require_env=False) == [
        (
            line_of(text, "env.REGION"),
            "project.provider.aws.region",
            "environment variable REGION is not set" + CLUSTER_SUFFIX,
        )
    ]


# --- what may be written ---------------------------------------------------------------------------


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
    value = envs(f"A = '''x {source} y'''\n", validate=False)["A"]
    assert value == f"x {rendered} y"
    assert service_refs(value) == service_refs(source)


def test_service_refs_inside_multiline_env() -> None:
    conf = "server {{ services.app_1.public_ip }}:80;\nserver {{ services.app_2.public_ip }}:{{ env.P }};\n"
    got = envs(f'CONF = """\n{conf}"""\n', {"P": "81"}, validate=False)
    assert got == {"CONF": conf.replace("{{ env.P }}", "81")}


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("{{ services.app_1.public_ip | upper }}", "a filter (| upper)"),
        ("{{ services.app_1 }}", "services.app_1, which is not a plain services.NAME.ATTR"),
        ("{{ services }}", "services, which is not a plain services.NAME.ATTR"),
        ("{{ services.a.ip.x }}", "services.a.ip.x, which is not a plain services.NAME.ATTR"),
        ("{{ services[env.X].ip }}", "a [...] lookup whose key is not a quoted string"),
        ("{% if services.a.ip %}x{% endif %}", "a {% if %} tag"),
        ("{{ foo.bar }}", "the name 'foo'"),
        ("{{ enV.X }}", "the name 'enV'"),
        ("{{ env }}", "env without a variable name"),
        ("{{ env.X.Y }}", "an attribute of an environment variable"),
        ("{{ env.NAME | lower }}", "a filter (| lower)"),
        ("{{ env.X | default('y') }}", "a filter (| default)"),
        ("{% if env.MODE == 'prod' %}3{% else %}1{% endif %}", "a {% if %} tag"),
        ("{% set n = 2 %}{{ n }}", "a {% set %} tag, the name 'n'"),
        ("{{ 1 }}", "a constant"),
        ("{{ env.X ~ 'y' }}", "an operator"),
        ("{{ env.X if env.X else 'y' }}", "an inline if"),
        ("{{ [env.X] }}", "a list, tuple or dict"),
        ("{{ env.X[0:2] }}", "a slice"),
        ("{{ env.X is defined }}", "a test (is defined)"),
    ],
)
def test_anything_else_is_refused(source: str, found: str) -> None:
    text = HEADER + f'A = "x {source} y"\n'
    assert problems(text, {"X": "x", "MODE": "prod", "NAME": "n"}) == [
        (FIRST_VALUE_LINE, "project.services[0].envs.A", f"{ALLOWED} (found {found})")
    ]


def test_refused_construct_in_a_multiline_value_names_its_line() -> None:
    text = HEADER + 'CONF = """\nserver a;\nserver {{ range(3) }};\n"""\n'
    assert problems(text) == [
        (FIRST_VALUE_LINE, "project.services[0].envs.CONF", f"{ALLOWED} (found a call) (line 2 of the value)")
    ]


def test_syntax_error_reports_line_and_path() -> None:
    text = HEADER + 'A = "1"\nB = "{{ env.X "\n'
    [(line, path, message)] = problems(text, {"X": "x"})
    assert (line, path) == (line_of(text, "B = "), "project.services[0].envs.B")
    assert message.startswith("template syntax error: ")


def test_every_template_problem_of_the_file_at_once() -> None:
    text = HEADER + 'A = "{{ env.X "\nB = "{{ lipsum() }}"\nC = "{{ env.UNSET }}"\nD = "{{ env.OK }}"\n'
    assert [(line, path) for line, path, _ in problems(text, {"OK": "ok"})] == [
        (line_of(text, "A = "), "project.services[0].envs.A"),
        (line_of(text, "B = "), "project.services[0].envs.B"),
        (line_of(text, "C = "), "project.services[0].envs.C"),
    ]
