"""The original tool's reference examples load, and what they declare survives loading.

Every vendored example parses and validates, the load balancer one too: its three services share
``external_port = 80``, which makes each of them host-bound (see docs/oct-toml.md, Ports), and
they get a node each. Multi-line envs, service references,
S3 backends, commands and env injection come through as written, and a missing env variable is
reported only where the command needs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from octctl.config import Config, ConfigError, load_config
from octctl.scheduler import NodeCapacity, nodes_needed, place
from octctl.specs import demands
from tests.unit.config_texts import EXAMPLE_ENV, EXAMPLES, LB_EXAMPLE, load_example


def example_files() -> list[Path]:
    assert EXAMPLES.is_dir(), f"reference examples missing at {EXAMPLES}"
    files = sorted(EXAMPLES.glob("*.toml"))
    assert files
    return files


def test_examples_dir_exists() -> None:
    assert len(example_files()) >= 11


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_every_reference_example_loads(path: Path) -> None:
    config = load_config(path, EXAMPLE_ENV)
    assert isinstance(config, Config)
    assert config.project.services
    assert config.project.state_backend.local is not None or config.project.state_backend.s3 is not None


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

    lb = load_example(LB_EXAMPLE)
    conf = lb.service("nginx").envs["NGINX_CONF"]
    assert "server {{ services.app_1.public_ip }}:80;" in conf
    assert "server {{ services.app_2.public_ip }}:80;" in conf


def test_the_lb_example_s_services_are_host_bound_on_distinct_nodes() -> None:
    config = load_example(LB_EXAMPLE)
    assert config.project.host_bound_ports == {80}
    needs = demands(config)
    assert [(x.service, x.host_ports) for x in needs] == [
        ("app_1", frozenset({80})),
        ("app_2", frozenset({80})),
        ("nginx", frozenset({80})),
    ]
    plan = place(needs, [NodeCapacity(f"node-{i}", 4000, 4096) for i in (1, 2, 3)], {})
    assert plan.unplaced == () and len(set(plan.placements.values())) == 3
    # The example names no provider (AWS, max_nodes 10): an empty fleet grows by three nodes.
    assert nodes_needed(needs, NodeCapacity("new", 4000, 4096)) == 3


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
