"""Reading oct.toml and checking its shape: every problem names its file, line and key path.

A missing file, invalid TOML, unknown keys (with a "did you mean"), wrong types and ranges,
missing required keys and the one-of tables (state backend, provider) each give one problem that
points at the line to fix, including when multi-line strings and odd keys sit in between.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from octctl.config import ConfigError, load_config, load_config_text
from tests.unit.config_texts import EMPTY, HEADER, line_of, only_problem, problems_of, service_block, toml

# --- reading and TOML -----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "oct.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == f"cannot read {path}: No such file or directory"


def test_env_defaults_to_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_TEST_TAG", "v9")
    path = tmp_path / "oct.toml"
    path.write_text(
        toml('[[project.services]]\nname = "a"\nimage = "x:{{ env.OCT_TEST_TAG }}"\ncpus = 1\nmemory = 1\n')
    )
    assert load_config(path).service("a").image == "x:v9"


def test_invalid_toml_reports_line_and_column() -> None:
    text = toml(
        """
        [[project.services]]
        name = "a"
        cpus = 250 memory = 64
        """
    )
    problem = only_problem(text)
    assert problem.line == line_of(text, "cpus = 250 memory")
    assert problem.message.startswith("invalid TOML: Expected newline or end of document")
    assert "column 12" in problem.message
    assert str(problem).startswith(f"oct.toml:{problem.line}: invalid TOML")


def test_duplicate_toml_key_reports_line() -> None:
    text = toml('[[project.services]]\nname = "a"\nname = "b"\ncpus = 1\nmemory = 1\n')
    problem = only_problem(text)
    assert problem.line == line_of(text, 'name = "b"')
    assert "invalid TOML" in problem.message


# --- schema errors --------------------------------------------------------------------------------


def test_unknown_key_did_you_mean() -> None:
    text = toml('[[project.services]]\nname = "a"\nimage = "x"\ncpu = 250\nmemory = 64\n')
    problems = problems_of(text)
    assert [(p.line, p.path, p.message) for p in problems] == [
        (line_of(text, "[[project.services]]"), "project.services[0].cpus", "field required"),
        (line_of(text, "cpu = 250"), "project.services[0].cpu", "unknown key 'cpu'; did you mean 'cpus'?"),
    ]


def test_unknown_key_without_close_match_lists_keys() -> None:
    text = (
        '[project]\nname = "demo"\nflavour = "x"\nservices = []\n[project.state_backend.local]\npath = "s"\n'
    )
    problem = only_problem(text)
    assert (problem.line, problem.path) == (3, "project.flavour")
    assert problem.message == (
        "unknown key 'flavour'; expected one of 'name', 'domain', 'state_backend', "
        "'user_state_backend', 'provider', 'cluster', 'acme', 'services'"
    )


def test_unknown_key_in_nested_table() -> None:
    text = EMPTY + 'paht = "x"\n'
    problem = only_problem(text)
    assert (problem.line, problem.path) == (7, "project.state_backend.local.paht")
    assert problem.message == "unknown key 'paht'; did you mean 'path'?"


@pytest.mark.parametrize(
    ("assignment", "path", "message"),
    [
        ('cpus = "250"', "cpus", 'expected an integer, got "250"'),
        ("cpus = 2.5", "cpus", "expected an integer, got 2.5"),
        ("cpus = true", "cpus", "expected an integer, got true"),
        ("cpus = -5", "cpus", "expected an integer greater than 0, got -5"),
        ("memory = 0", "memory", "expected an integer greater than 0, got 0"),
        ("image = 5", "image", "expected a string, got 5"),
        ('depends_on = "b"', "depends_on", 'expected an array, got "b"'),
        ("depends_on = [1]", "depends_on[0]", "expected a string, got 1"),
        ("envs = 3", "envs", "expected a table, got 3"),
        ('runtime = "podman"', "runtime", "expected 'docker' or 'process', got \"podman\""),
        ("internal_port = 0", "internal_port", "expected a port number between 1 and 65535, got 0"),
        ("external_port = 70000", "external_port", "expected a port number between 1 and 65535, got 70000"),
    ],
)
def test_wrong_types_and_ranges(assignment: str, path: str, message: str) -> None:
    key = assignment.split(" =")[0]
    fields = {"name": '"a"', "image": '"x"', "cpus": "250", "memory": "64", key: assignment.split("= ", 1)[1]}
    body = "".join(f"{k} = {v}\n" for k, v in fields.items())
    text = toml(f"[[project.services]]\n{body}")
    problem = only_problem(text)
    assert (problem.path, problem.message) == (f"project.services[0].{path}", message)
    assert problem.line == line_of(text, assignment)


def test_env_value_must_be_string() -> None:
    text = HEADER + service_block("a", envs="PORT = 80\n")
    problem = only_problem(text)
    assert (problem.line, problem.path, problem.message) == (
        line_of(text, "PORT = 80"),
        "project.services[0].envs.PORT",
        "expected a string, got 80",
    )


def test_missing_required_key_points_at_table_header() -> None:
    text = toml(
        """
        [[project.services]]
        name = "a"
        image = "x"
        cpus = 1
        memory = 1

        [[project.services]]
        name = "b"
        image = "x"
        cpus = 1
        """
    )
    problem = only_problem(text)
    assert (problem.line, problem.path, problem.message) == (
        line_of(text, "[[project.services]]", 2),
        "project.services[1].memory",
        "field required",
    )
    assert str(problem) == f"oct.toml:{problem.line}: project.services[1].memory: field required"


def test_services_key_is_required() -> None:
    problem = only_problem(HEADER)
    assert (problem.line, problem.path, problem.message) == (1, "project.services", "field required")


def test_state_backend_needs_exactly_one_kind() -> None:
    both = EMPTY + '\n[project.state_backend.s3]\nregion = "r"\nbucket = "b"\nkey = "k"\n'
    problem = only_problem(both)
    assert (problem.line, problem.path) == (5, "project.state_backend")
    assert problem.message == "expected exactly one of [.local] or [.s3]"

    missing = '[project]\nname = "demo"\nservices = []\n'
    problem = only_problem(missing)
    assert (problem.line, problem.path, problem.message) == (1, "project.state_backend", "field required")


def test_unknown_state_backend_kind() -> None:
    text = '[project]\nname = "demo"\nservices = []\n\n[project.state_backend.gcs]\nbucket = "b"\n'
    problems = problems_of(text)
    assert [(p.line, p.path, p.message) for p in problems] == [
        (5, "project.state_backend.gcs", "unknown key 'gcs'; expected one of 'local', 's3'"),
    ]


def test_provider_at_most_one() -> None:
    text = EMPTY + "\n[project.provider.local]\nnodes = 2\n\n[project.provider.aws]\n"
    problem = only_problem(text)
    assert (problem.line, problem.path) == (line_of(text, "[project.provider.local]"), "project.provider")
    assert problem.message == "expected at most one of [.local] or [.aws]"


def test_local_provider_defaults_and_bounds() -> None:
    config = load_config_text(EMPTY + "[project.provider.local]\n", {})
    assert config.project.provider_kind == "local"
    local = config.project.provider.local if config.project.provider else None
    assert local is not None and (local.nodes, local.cpus, local.memory) == (3, 4000, 4096)

    text = EMPTY + "[project.provider.local]\nnodes = 0\n"
    problem = only_problem(text)
    assert (problem.line, problem.path, problem.message) == (
        line_of(text, "nodes = 0"),
        "project.provider.local.nodes",
        "expected an integer of at least 1, got 0",
    )
    aws = load_config_text(EMPTY + "[project.provider.aws]\n", {})
    assert aws.project.provider_kind == "aws"
    assert (
        aws.project.provider and aws.project.provider.aws and aws.project.provider.aws.region == "us-west-2"
    )


def test_misspelled_top_level_table() -> None:
    text = EMPTY.replace("[project]", "[projekt]").replace("[project.state", "[projekt.state")
    problems = problems_of(text)
    assert [(p.line, p.path, p.message) for p in problems] == [
        (1, "projekt", "unknown key 'projekt'; did you mean 'project'?"),
        (None, "project", "field required"),
    ]


# --- locator --------------------------------------------------------------------------------------


def test_lines_survive_multiline_strings_and_odd_keys() -> None:
    text = toml(
        '''
        [[project.services]]
        name = "a"
        image = "x"
        cpus = 1
        memory = 1

        [project.services.envs]
        CONF = """
        [[project.services]]
        cpus = 0
        """
        "QUOTED.KEY" = 'v'
        LIT = \'\'\'
        memory = 5
        \'\'\'
        BAD = 1

        [[project.services]]
        name = "b"
        image = "x"
        cpus = 1
        memory = 1
        inline = { x = [1,
          2] }
        cpu = 2
        '''
    )
    problems = problems_of(text)
    assert [(p.line, p.path) for p in problems] == [
        (line_of(text, "BAD = 1"), "project.services[0].envs.BAD"),
        (line_of(text, "inline = {"), "project.services[1].inline"),
        (line_of(text, "cpu = 2"), "project.services[1].cpu"),
    ]
