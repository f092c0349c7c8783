"""The original tool's reference examples load, and what they declare survives loading.

Every vendored example parses; all but the one with clashing external ports also validate, and
that one fails with exactly the two problems it deserves. Multi-line envs, service references,
S3 backends, commands and env injection come through as written, and a missing env variable is
reported only where the command needs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from octctl.config import Config, ConfigError, load_config
from tests.unit.config_texts import CLASHING_EXAMPLE, EXAMPLE_ENV, EXAMPLES, line_of, load_example


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
