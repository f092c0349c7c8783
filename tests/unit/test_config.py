"""oct.toml loading and validation: the reference examples, every check, and where problems point."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from octctl.config import (
    Config,
    ConfigError,
    Problem,
    Service,
    load_config,
    load_config_text,
    parse_config_data,
    validate_config,
)
from tests.fixtures import REFERENCE_EXAMPLES

EXAMPLES = REFERENCE_EXAMPLES
EXAMPLE_ENV = {"IMAGE_TAG": "1.2.3", "SRCDS_TOKEN": "secret-token"}
CLASHING_EXAMPLE = "multi-host-rest-service-with-lb.toml"

HEADER = """\
[project]
name = "demo"

[project.state_backend.local]
path = "./state.json"
"""

#: A valid project without services; ``services = []`` has to come before the first sub-table.
EMPTY = """\
[project]
name = "demo"
services = []

[project.state_backend.local]
path = "./state.json"
"""


def toml(body: str) -> str:
    return HEADER + textwrap.dedent(body)


def problems_of(text: str, env: dict[str, str] | None = None, *, validate: bool = True) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env or {}, filename="oct.toml", validate=validate)
    return caught.value.problems


def only_problem(text: str, env: dict[str, str] | None = None) -> Problem:
    problems = problems_of(text, env)
    assert len(problems) == 1, problems
    return problems[0]


def line_of(text: str, snippet: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing ``snippet`` (keeps expected lines readable)."""
    hits = [number for number, line in enumerate(text.splitlines(), start=1) if snippet in line]
    return hits[occurrence - 1]


# --- reference examples ---------------------------------------------------------------------------


def example_files() -> list[Path]:
    assert EXAMPLES.is_dir(), f"reference examples missing at {EXAMPLES}"
    files = sorted(EXAMPLES.glob("*.toml"))
    assert files
    return files


def test_examples_dir_exists() -> None:
    assert len(example_files()) >= 11


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_every_reference_example_loads(path: Path) -> None:
    if path.name == CLASHING_EXAMPLE:
        with pytest.raises(ConfigError) as caught:
            load_config(path, EXAMPLE_ENV)
        problems = caught.value.problems
        assert [(p.path, p.line) for p in problems] == [
            ("project.services[1].external_port", line_of(path.read_text(), "external_port = 80", 2)),
            ("project.services[2].external_port", line_of(path.read_text(), "external_port = 80", 3)),
        ]
        assert all("external_port 80" in p.message and "'app_1'" in p.message for p in problems)
        assert "'app_2'" in problems[0].message and "'nginx'" in problems[1].message
        assert all(p.file == str(path) for p in problems)
        config = load_config(path, EXAMPLE_ENV, validate=False)
    else:
        config = load_config(path, EXAMPLE_ENV)
    assert isinstance(config, Config)
    assert config.project.services
    assert config.project.state_backend.local is not None or config.project.state_backend.s3 is not None


def load_example(name: str, *, validate: bool = True) -> Config:
    return load_config(EXAMPLES / name, EXAMPLE_ENV, validate=validate)


def test_example_multiline_env_survives() -> None:
    config = load_example("http-server-with-multiple-dockerfiles.toml")
    conf = config.service("nginx").envs["NGINX_CONF"]
    assert conf.startswith("events {\n    worker_connections 1024;\n}\n")
    assert "server app_1:8000;" in conf and conf.endswith("}\n")
    assert config.service("nginx").depends_on == ["app_1", "app_2"]
    assert config.service("app_1").dockerfile_path == "Dockerfile.app_1"
    assert config.service("app_1").image == ""
    assert config.topological_order() == ["app_1", "app_2", "nginx"]


def test_example_service_refs_survive_verbatim() -> None:
    config = load_example("inject-system-env-var.toml")
    assert config.service("app_2").envs == {"APP_NAME": "app_1 public ip is {{ services.app_1.public_ip }}"}
    assert config.service("app_1").image == "ghcr.io/opencloudtool/example-python-fastapi:1.2.3"

    lb = load_example(CLASHING_EXAMPLE, validate=False)
    conf = lb.service("nginx").envs["NGINX_CONF"]
    assert "server {{ services.app_1.public_ip }}:80;" in conf
    assert "server {{ services.app_2.public_ip }}:80;" in conf


def test_example_s3_backends() -> None:
    project = load_example("s3-remote-state-storage.toml").project
    assert project.state_backend.s3 is not None and project.state_backend.local is None
    assert (
        project.state_backend.s3.region,
        project.state_backend.s3.bucket,
        project.state_backend.s3.key,
    ) == (
        "us-west-2",
        "oct-state",
        "state.json",
    )
    assert project.user_state_backend is not None and project.user_state_backend.s3 is not None
    assert project.user_state_backend.s3.bucket == "oct-user-state"


def test_example_ray_command_argv() -> None:
    config = load_example("ray-single-worker.toml")
    assert config.service("head").command_argv() == [
        "ray",
        "start",
        "--head",
        "--port",
        "6379",
        "--dashboard-host",
        "0.0.0.0",
        "--dashboard-port",
        "8265",
        "--block",
    ]
    assert config.service("worker_1").command_argv() == ["ray", "start", "--address", "head:6379", "--block"]
    assert config.topological_order() == ["head", "worker_1"]


def test_example_env_injection_and_defaults() -> None:
    config = load_example("cs2-server.toml")
    cs2 = config.service("cs2")
    assert cs2.envs["SRCDS_TOKEN"] == "secret-token"
    assert cs2.envs["CS2_ADDITIONAL_ARGS"] == ""
    assert (cs2.cpus, cs2.memory, cs2.internal_port, cs2.external_port) == (2000, 2048, 27015, 80)
    assert cs2.runtime == "docker" and cs2.depends_on == [] and cs2.command is None
    assert config.project.provider is None and config.project.provider_kind == "aws"
    assert config.project.domain is None
    assert load_example("rest-service-with-domain.toml").project.domain == "test.opencloudtool.com"


def test_example_needs_its_env_vars() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLES / "cs2-server.toml", {})
    (problem,) = caught.value.problems
    assert problem.line == 19 and problem.path == "project.services[0].envs.SRCDS_TOKEN"
    assert problem.message == "environment variable SRCDS_TOKEN is not set"
    # Commands that only look at the cluster (status, logs, destroy, unlock) do not need it.
    config = load_config(EXAMPLES / "cs2-server.toml", {}, validate=False, require_env=False)
    assert config.service("cs2").envs["SRCDS_TOKEN"] == "{{ env.SRCDS_TOKEN }}"


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
        "'user_state_backend', 'provider', 'cluster', 'services'"
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


# --- semantic checks ------------------------------------------------------------------------------


def service_block(name: str, extra: str = "", *, envs: str = "") -> str:
    block = f'\n[[project.services]]\nname = "{name}"\nimage = "img"\ncpus = 250\nmemory = 64\n{extra}'
    if envs:
        block += f"\n[project.services.envs]\n{envs}"
    return block


def test_duplicate_service_name() -> None:
    text = HEADER + service_block("a") + service_block("a")
    problem = only_problem(text)
    assert (problem.line, problem.path, problem.message) == (
        line_of(text, 'name = "a"', 2),
        "project.services[1].name",
        "Duplicate service name: 'a'",
    )


def test_unknown_dependency_with_did_you_mean() -> None:
    text = HEADER + service_block("app_1") + service_block("nginx", 'depends_on = ["app_2", "app_1"]\n')
    problem = only_problem(text)
    assert (problem.line, problem.path) == (line_of(text, "depends_on"), "project.services[1].depends_on[0]")
    assert problem.message == (
        "unknown service 'app_2' in depends_on; did you mean 'app_1'? (known services: 'app_1', 'nginx')"
    )


def test_multiline_depends_on_points_at_key() -> None:
    text = HEADER + service_block("a", 'depends_on = [\n  "zzz",\n]\ncommand = "run"\n')
    problem = only_problem(text)
    assert (problem.line, problem.path) == (
        line_of(text, "depends_on = ["),
        "project.services[0].depends_on[0]",
    )
    assert problem.message == "unknown service 'zzz' in depends_on (known services: 'a')"


def test_self_dependency() -> None:
    text = HEADER + service_block("a", 'depends_on = ["a"]\n')
    problem = only_problem(text)
    assert (problem.line, problem.path, problem.message) == (
        line_of(text, "depends_on"),
        "project.services[0].depends_on[0]",
        "service 'a' depends on itself",
    )


def test_dependency_cycle_is_printed() -> None:
    text = (
        HEADER
        + service_block("root")
        + service_block("a", 'depends_on = ["b"]\n')
        + service_block("b", 'depends_on = ["root", "c"]\n')
        + service_block("c", 'depends_on = ["a"]\n')
    )
    problem = only_problem(text)
    assert (problem.line, problem.path, problem.message) == (
        line_of(text, 'depends_on = ["b"]'),
        "project.services[1].depends_on",
        "dependency cycle: a -> b -> c -> a",
    )


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ("internal_port = 0\n", "internal_port", "expected a port number between 1 and 65535, got 0"),
        ("external_port = 65536\n", "external_port", "expected a port number between 1 and 65535, got 65536"),
        ("cpus = 0\n", "cpus", "expected an integer greater than 0, got 0"),
        ("memory = -1\n", "memory", "expected an integer greater than 0, got -1"),
    ],
)
def test_range_checks(extra: str, key: str, message: str) -> None:
    block = service_block("a").replace("cpus = 250\n", "" if key == "cpus" else "cpus = 250\n")
    block = block.replace("memory = 64\n", "" if key == "memory" else "memory = 64\n")
    text = HEADER + block + extra
    problem = only_problem(text)
    assert (problem.line, problem.path, problem.message) == (
        line_of(text, extra.strip()),
        f"project.services[0].{key}",
        message,
    )


def test_range_checks_on_constructed_config() -> None:
    config = parse_config_data(
        {"project": {"name": "p", "state_backend": {"local": {"path": "s"}}, "services": []}}
    )
    bad = Service.model_construct(
        name="a", image="x", cpus=0, memory=-1, internal_port=0, external_port=70000
    )
    config.project.services.append(bad)
    assert [(p.path, p.message) for p in validate_config(config)] == [
        ("project.services[0].cpus", "expected an integer greater than 0, got 0"),
        ("project.services[0].external_port", "expected a port number between 1 and 65535, got 70000"),
        ("project.services[0].internal_port", "expected a port number between 1 and 65535, got 0"),
        ("project.services[0].memory", "expected an integer greater than 0, got -1"),
    ]


@pytest.mark.parametrize("name", ["App", "-a", "a-", "a_", "my.app", "a" * 64, "ü"])
def test_service_name_must_be_dns_label(name: str) -> None:
    text = HEADER + service_block(name)
    problem = only_problem(text)
    assert (problem.line, problem.path) == (line_of(text, f'name = "{name}"'), "project.services[0].name")
    assert problem.message == (
        f"service name '{name}' is not a valid DNS label: use 1-63 lowercase letters, digits, '-' or '_', "
        "starting and ending with a letter or digit"
    )


@pytest.mark.parametrize("name", ["a", "app_1", "worker-1", "0", "a" * 63, "a_b-c9"])
def test_valid_service_names(name: str) -> None:
    load_config_text(HEADER + service_block(name), {})


def test_name_with_trailing_newline_is_rejected() -> None:
    data = {"project": {"name": "p\n", "state_backend": {"local": {"path": "s"}}, "services": []}}
    with pytest.raises(ConfigError) as caught:
        parse_config_data(data)
    assert [p.path for p in caught.value.problems] == ["project.name"]


def test_config_error_pickles() -> None:
    error = ConfigError([Problem("oct.toml", 3, "project.name", "bad")])
    again = pickle.loads(pickle.dumps(error))
    assert again.problems == error.problems and str(again) == str(error)


def test_misspelled_top_level_table() -> None:
    text = EMPTY.replace("[project]", "[projekt]").replace("[project.state", "[projekt.state")
    problems = problems_of(text)
    assert [(p.line, p.path, p.message) for p in problems] == [
        (1, "projekt", "unknown key 'projekt'; did you mean 'project'?"),
        (None, "project", "field required"),
    ]


def test_project_name_must_be_dns_label() -> None:
    text = EMPTY.replace('name = "demo"', 'name = "My Project"')
    problem = only_problem(text)
    assert (problem.line, problem.path) == (2, "project.name")
    assert problem.message.startswith("project name 'My Project' is not a valid DNS label")


def test_external_port_clash_names_both_services() -> None:
    text = (
        HEADER
        + service_block("web", "external_port = 8080\n")
        + service_block("api", "external_port = 8080\n")
    )
    problem = only_problem(text)
    assert (problem.line, problem.path) == (
        line_of(text, "external_port", 2),
        "project.services[1].external_port",
    )
    assert problem.message == (
        "services 'web' and 'api' both claim external_port 8080: "
        "an external port is the project's public address, so only one service can have it"
    )


def test_a_port_published_on_a_node_may_not_be_another_services_external_port() -> None:
    text = (
        HEADER
        + service_block("web", "internal_port = 80\nexternal_port = 8080\n")
        + service_block("cache", "internal_port = 8080\n")
    )
    problem = only_problem(text)
    assert (problem.line, problem.path) == (
        line_of(text, "internal_port = 8080"),
        "project.services[1].internal_port",
    )
    assert problem.message == (
        "service 'cache' publishes port 8080 on its node, but 8080 is 'web''s external_port, "
        "which the ingress serves on every node: pick another"
    )


@pytest.mark.parametrize(
    ("ports", "key", "port", "owner"),
    [
        ("internal_port = 8080\nexternal_port = 31888\n", "external_port", 31888, "the API"),
        ("internal_port = 31889\n", "internal_port", 31889, "Raft"),
        ("internal_port = 53\n", "internal_port", 53, "the cluster's DNS"),
    ],
)
def test_oct_s_own_ports_are_not_for_services(ports: str, key: str, port: int, owner: str) -> None:
    text = HEADER + service_block("web", ports)
    problem = only_problem(text)
    assert (problem.line, problem.path) == (line_of(text, key), f"project.services[0].{key}")
    assert problem.message.startswith(f"port {port} is oct's own on every node ({owner})")


def test_external_port_without_internal_port_is_allowed() -> None:
    config = load_config_text(HEADER + service_block("a", "external_port = 80\n"), {})
    assert config.service("a").internal_port is None


def test_process_service_needs_command() -> None:
    text = HEADER + '\n[[project.services]]\nname = "job"\nruntime = "process"\ncpus = 100\nmemory = 32\n'
    problem = only_problem(text)
    assert (problem.line, problem.path) == (
        line_of(text, "[[project.services]]"),
        "project.services[0].command",
    )
    assert (
        problem.message
        == "service 'job' has runtime = \"process\" and needs a command (there is no image to run)"
    )


def test_process_service_with_command_needs_no_image() -> None:
    text = HEADER + '\n[[project.services]]\nname = "job"\nruntime = "process"\ncommand = "sleep 1"\n'
    text += "cpus = 1\nmemory = 1\n"
    service = load_config_text(text, {}).service("job")
    assert service.image == "" and service.command_argv() == ["sleep", "1"]


def test_docker_service_needs_image_or_dockerfile() -> None:
    text = HEADER + service_block("a").replace('image = "img"', 'image = ""')
    problem = only_problem(text)
    assert (problem.line, problem.path, problem.message) == (
        line_of(text, 'image = ""'),
        "project.services[0].image",
        "image or dockerfile_path is required",
    )
    missing = HEADER + service_block("a").replace('image = "img"\n', "")
    problem = only_problem(missing)
    assert (problem.line, problem.path) == (
        line_of(missing, "[[project.services]]"),
        "project.services[0].image",
    )


def test_empty_and_unbalanced_commands() -> None:
    text = HEADER + service_block("a", 'command = "  "\n') + service_block("b", 'command = "sh -c \'echo"\n')
    problems = problems_of(text)
    assert [(p.line, p.path, p.message) for p in problems] == [
        (
            line_of(text, 'command = "  "'),
            "project.services[0].command",
            "command is empty; remove the key to keep the image's default command",
        ),
        (
            line_of(text, 'command = "sh -c'),
            "project.services[1].command",
            "cannot split command into arguments: No closing quotation",
        ),
    ]


def test_command_argv_accepts_shell_quoting() -> None:
    service = Service(name="a", image="x", cpus=1, memory=1, command="sh -c 'echo \"hi there\"'")
    assert service.command_argv() == ["sh", "-c", 'echo "hi there"']
    assert Service(name="a", image="x", cpus=1, memory=1).command_argv() is None


def test_service_ref_to_unknown_service() -> None:
    text = (
        HEADER + service_block("app_1") + service_block("b", envs='UP = "{{ services.app_2.public_ip }}"\n')
    )
    problem = only_problem(text)
    assert (problem.line, problem.path) == (line_of(text, "UP = "), "project.services[1].envs.UP")
    assert problem.message == (
        "unknown service 'app_2' in {{ services.app_2.public_ip }}; did you mean 'app_1'? "
        "(known services: 'app_1', 'b')"
    )


def test_service_ref_to_unknown_attribute_in_command() -> None:
    text = (
        HEADER + service_block("db") + service_block("b", 'command = "run --db {{ services.db.adress }}"\n')
    )
    problem = only_problem(text)
    assert (problem.line, problem.path) == (line_of(text, "command = "), "project.services[1].command")
    assert problem.message == (
        "unknown service attribute 'adress': expected one of host, ip, port, public_ip "
        "(in {{ services.db.adress }})"
    )


def test_service_ref_outside_envs_and_command() -> None:
    text = HEADER + service_block("db") + service_block("b").replace('"img"', '"img:{{ services.db.port }}"')
    problem = only_problem(text)
    assert (problem.line, problem.path) == (line_of(text, "img:{{"), "project.services[1].image")
    assert problem.message == "{{ services.NAME.ATTR }} is only filled in inside envs and command"


def test_local_provider_capacity() -> None:
    text = (
        HEADER
        + "\n[project.provider.local]\ncpus = 2000\nmemory = 1024\n"
        + service_block("big").replace("cpus = 250", "cpus = 3000").replace("memory = 64", "memory = 2048")
    )
    problems = problems_of(text)
    assert [(p.line, p.path, p.message) for p in problems] == [
        (
            line_of(text, "cpus = 3000"),
            "project.services[0].cpus",
            "service 'big' needs 3000 millicores of CPU, but a local node has only 2000 "
            "(project.provider.local.cpus)",
        ),
        (
            line_of(text, "memory = 2048"),
            "project.services[0].memory",
            "service 'big' needs 2048 MB of memory, but a local node has only 1024 MB "
            "(project.provider.local.memory)",
        ),
    ]


def test_capacity_is_not_checked_for_aws() -> None:
    load_config_text(HEADER + service_block("big").replace("cpus = 250", "cpus = 64000"), {})


def test_schema_and_semantic_problems_reported_together_in_line_order() -> None:
    text = (
        HEADER
        + service_block("a", 'depends_on = ["b"]\nexternal_port = 80\n')
        + service_block("b", 'cpus = "x"\n').replace("cpus = 250\n", "")
        + service_block("c", 'depends_on = ["nope"]\nexternal_port = 80\n')
        + service_block("a")
    )
    problems = problems_of(text)
    assert [(p.line, p.path) for p in problems] == [
        (line_of(text, 'cpus = "x"'), "project.services[1].cpus"),
        (line_of(text, 'depends_on = ["nope"]'), "project.services[2].depends_on[0]"),
        (line_of(text, "external_port = 80", 2), "project.services[2].external_port"),
        (line_of(text, 'name = "a"', 2), "project.services[3].name"),
    ]
    # 'b' failed the schema but still counts as a known service, so 'a' depending on it is fine.
    assert str(ConfigError(problems)).splitlines()[0].startswith(f"oct.toml:{problems[0].line}: ")


def test_validate_false_skips_semantic_checks_only() -> None:
    text = HEADER + service_block("a") + service_block("a")
    assert [s.name for s in load_config_text(text, {}, validate=False).project.services] == ["a", "a"]
    with pytest.raises(ConfigError):
        load_config_text(HEADER, {}, validate=False)


# --- JSON path, helpers ---------------------------------------------------------------------------


def test_validate_config_on_json_config_has_no_lines() -> None:
    data = {
        "project": {
            "name": "p",
            "state_backend": {"local": {"path": "s"}},
            "services": [
                {"name": "a", "image": "x", "cpus": 1, "memory": 1, "depends_on": ["b"]},
                {"name": "b", "image": "x", "cpus": 1, "memory": 1, "depends_on": ["a"]},
            ],
        }
    }
    config = Config.model_validate(data)
    assert validate_config(config) == [
        Problem(None, None, "project.services[0].depends_on", "dependency cycle: a -> b -> a")
    ]
    with pytest.raises(ConfigError) as caught:
        parse_config_data(data)
    assert str(caught.value) == "project.services[0].depends_on: dependency cycle: a -> b -> a"


def test_parse_config_data_reports_schema_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_data({"project": {"name": "p", "services": [{"name": "a", "cpus": -1, "memory": 1}]}})
    assert [str(p) for p in caught.value.problems] == [
        "project.services[0].cpus: expected an integer greater than 0, got -1",
        "project.state_backend: field required",
    ]


def test_config_round_trips_through_json() -> None:
    config = load_example("inject-system-env-var.toml")
    again = parse_config_data(config.model_dump(mode="json"))
    assert again == config


def test_topological_order_ties_in_declaration_order() -> None:
    def config(*services: tuple[str, list[str]]) -> Config:
        return parse_config_data(
            {
                "project": {
                    "name": "p",
                    "state_backend": {"local": {"path": "s"}},
                    "services": [
                        {"name": n, "image": "x", "cpus": 1, "memory": 1, "depends_on": d}
                        for n, d in services
                    ],
                }
            },
            validate=False,
        )

    assert config().topological_order() == []
    assert config(("z", []), ("y", []), ("x", [])).topological_order() == ["z", "y", "x"]
    assert config(
        ("app", ["db", "cache"]), ("cache", []), ("db", ["cache"]), ("lone", [])
    ).topological_order() == [
        "cache",
        "db",
        "app",
        "lone",
    ]
    assert config(("c", ["b"]), ("b", ["a"]), ("a", []), ("d", ["a"])).topological_order() == [
        "a",
        "b",
        "c",
        "d",
    ]
    with pytest.raises(ConfigError, match=r"dependency cycle: a -> b -> a"):
        config(("a", ["b"]), ("b", ["a"])).topological_order()
    with pytest.raises(ConfigError, match="unknown service 'q'"):
        config(("a", ["q"])).topological_order()


def test_service_lookup() -> None:
    config = load_example("ray-single-worker.toml")
    assert config.service("head").internal_port == 8265
    with pytest.raises(KeyError):
        config.service("tail")


def test_problem_str_omits_missing_parts() -> None:
    assert str(
        Problem("oct.toml", 12, "project.services[1].cpus", "expected an integer greater than 0, got -5")
    ) == ("oct.toml:12: project.services[1].cpus: expected an integer greater than 0, got -5")
    assert str(Problem(None, None, "project.name", "bad")) == "project.name: bad"
    assert str(Problem("oct.toml", None, "", "bad")) == "oct.toml: bad"
    assert str(Problem(None, 3, "x", "bad")) == "line 3: x: bad"


def test_config_error_sorts_by_line_then_path() -> None:
    error = ConfigError(
        [
            Problem("f", None, "a", "m"),
            Problem("f", 9, "project.services[10].cpus", "m"),
            Problem("f", 9, "project.services[2].cpus", "m"),
            Problem("f", 1, "z", "m"),
        ]
    )
    assert [(p.line, p.path) for p in error.problems] == [
        (1, "z"),
        (9, "project.services[2].cpus"),
        (9, "project.services[10].cpus"),
        (None, "a"),
    ]
    assert str(error).count("\n") == 3


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
