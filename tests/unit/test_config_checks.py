"""The semantic checks of a well-formed oct.toml: what the schema alone cannot see.

Duplicate names, unknown or cyclic dependencies, ranges, DNS-label names, clashing or reserved
ports, runtime needs (a command for a process, an image for a container), service references,
local node capacity: each is one problem at the line to fix, reported together with the schema's
problems in line order, and skipped (alone) with ``validate=False``.
"""

from __future__ import annotations

import pytest

from octctl.config import ConfigError, Service, load_config_text, parse_config_data, validate_config
from tests.unit.config_texts import EMPTY, HEADER, line_of, only_problem, problems_of, service_block


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


def test_project_name_must_be_dns_label() -> None:
    text = EMPTY.replace('name = "demo"', 'name = "My Project"')
    problem = only_problem(text)
    assert (problem.line, problem.path) == (2, "project.name")
    assert problem.message.startswith("project name 'My Project' is not a valid DNS label")


def test_services_sharing_an_external_port_are_host_bound() -> None:
    text = (
        HEADER
        + service_block("web", "internal_port = 80\nexternal_port = 8080\n")
        + service_block("api", "internal_port = 80\nexternal_port = 8080\n")
        + service_block("admin", "internal_port = 80\nexternal_port = 9000\n")
    )
    config = load_config_text(text, {})
    assert config.project.host_bound_ports == {8080}


def test_more_sharers_of_an_external_port_than_aws_nodes_is_an_error() -> None:
    text = (
        HEADER
        + "\n[project.provider.aws]\nmax_nodes = 2\n"
        + "".join(service_block(name, "internal_port = 80\nexternal_port = 8080\n") for name in "abc")
    )
    problem = only_problem(text)
    assert (problem.line, problem.path) == (
        line_of(text, "external_port", 3),
        "project.services[2].external_port",
    )
    assert problem.message == (
        "3 services share external_port 8080 ('a', 'b', 'c'), so each needs a node of its own, "
        "but project.provider.aws.max_nodes is 2: raise max_nodes or give them different external ports"
    )
    load_config_text(text.replace("max_nodes = 2", "max_nodes = 3"), {})
    # A local cluster has no upper bound: it grows a node for each.
    load_config_text(
        text.replace("[project.provider.aws]\nmax_nodes = 2", "[project.provider.local]\nnodes = 1"), {}
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


def test_a_port_published_on_a_node_may_not_be_a_host_bound_external_port() -> None:
    text = (
        HEADER
        + service_block("web", "internal_port = 80\nexternal_port = 8080\n")
        + service_block("api", "internal_port = 80\nexternal_port = 8080\n")
        + service_block("cache", "internal_port = 8080\n")
    )
    problem = only_problem(text)
    assert problem.path == "project.services[2].internal_port"
    assert problem.message == (
        "service 'cache' publishes port 8080 on its node, but 8080 is the external_port of 'web', 'api', "
        "which the ingress serves on their nodes: pick another"
    )


@pytest.mark.parametrize(
    ("ports", "key", "port", "owner"),
    [
        ("internal_port = 8080\nexternal_port = 31888\n", "external_port", 31888, "the API"),
        ("internal_port = 31889\n", "internal_port", 31889, "Raft"),
        ("internal_port = 53\n", "internal_port", 53, "the cluster's DNS"),
        ("internal_port = 31890\n", "internal_port", 31890, "the service mesh"),
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
        + service_block("c", 'depends_on = ["nope"]\ninternal_port = 80\n')
        + service_block("a")
    )
    problems = problems_of(text)
    assert [(p.line, p.path) for p in problems] == [
        (line_of(text, 'cpus = "x"'), "project.services[1].cpus"),
        (line_of(text, 'depends_on = ["nope"]'), "project.services[2].depends_on[0]"),
        (line_of(text, "internal_port = 80"), "project.services[2].internal_port"),
        (line_of(text, 'name = "a"', 2), "project.services[3].name"),
    ]
    # 'b' failed the schema but still counts as a known service, so 'a' depending on it is fine.
    assert str(ConfigError(problems)).splitlines()[0].startswith(f"oct.toml:{problems[0].line}: ")


def test_validate_false_skips_semantic_checks_only() -> None:
    text = HEADER + service_block("a") + service_block("a")
    assert [s.name for s in load_config_text(text, {}, validate=False).project.services] == ["a", "a"]
    with pytest.raises(ConfigError):
        load_config_text(HEADER, {}, validate=False)
