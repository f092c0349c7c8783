"""Project and service names: one rule for ``oct.toml`` and for what a node receives, and every
place a name meets a path refuses the ones that could be a path (the attack itself is in
tests/security/test_agent_paths.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from octctl.agent import Agent
from octctl.config import NAME_PATTERN as CONFIG_NAME_PATTERN
from octctl.config import parse_config_data
from octctl.config.errors import ConfigError
from octctl.names import NAME_PATTERN, InvalidName, check_name, is_name
from octctl.runtime.base import InstanceSpec
from octctl.runtime.docker import DockerRuntime, container_name
from octctl.runtime.process import ProcessRuntime

GOOD = ["a", "web", "app_1", "my-api", "0", "a" * 63, "x9"]
BAD = [
    "",
    "..",
    ".",
    "../x",
    "../../etc/passwd",
    "/etc",
    "a/b",
    "a\x00b",
    "web\n",
    "a" * 64,
    "a" * 100_000,
    "Web",
    "-web",
    "web-",
    "_web",
    "we b",
    "wéb",
    "a.b",
    "a%2Fb",
]


def test_the_config_and_the_node_share_one_rule() -> None:
    assert CONFIG_NAME_PATTERN is NAME_PATTERN


@pytest.mark.parametrize("name", GOOD)
def test_good_names(name: str) -> None:
    assert is_name(name) and check_name("service", name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_with_a_short_message(name: str) -> None:
    assert not is_name(name)
    with pytest.raises(InvalidName, match="invalid project name") as raised:
        check_name("project", name)
    assert isinstance(raised.value, ValueError)
    assert len(str(raised.value)) < 300  # a huge name is not echoed whole
    assert "\x00" not in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("name", ["../x", "Web", "a" * 64])
def test_oct_toml_refuses_them_too(name: str) -> None:
    data = {"project": {"name": name, "services": [{"name": "web", "image": "x", "cpus": 1, "memory": 1}]}}
    with pytest.raises(ConfigError, match="not a valid DNS label"):
        parse_config_data(data)


def spec(**names: str) -> dict:
    return {
        "project": "demo",
        "service": "web",
        "deployment": "d1",
        "spec_hash": "h1",
        "runtime": "process",
        "command": ["true"],
        "cpus": 1,
        "memory": 1,
        **names,
    }


@pytest.mark.parametrize("field", ["project", "service"])
def test_a_spec_never_carries_a_path(field: str) -> None:
    with pytest.raises(ValidationError, match=f"invalid {field} name"):
        InstanceSpec.model_validate(spec(**{field: "../../outside"}))
    assert InstanceSpec.model_validate(spec()).project == "demo"


def test_the_process_runtime_refuses_paths(tmp_path: Path) -> None:
    outside = tmp_path / "outside-x.log"
    outside.write_text("secret\n")
    runtime = ProcessRuntime(tmp_path / "state", node="n")
    try:
        for project in ["../outside", str(tmp_path / "outside"), "..", "a\x00b"]:
            with pytest.raises(ValueError, match="invalid project name"):
                runtime.logs(project, "x")
            with pytest.raises(ValueError, match="invalid project name"):
                runtime.remove(project, "x")
            with pytest.raises(ValueError, match="invalid project name"):
                runtime.list(project)
            with pytest.raises(ValueError, match="invalid project name"):
                runtime.log_path(project, "x")
            with pytest.raises(ValueError, match="invalid project name"):
                runtime.apply(InstanceSpec.model_construct(**{**spec(), "project": project}))
        with pytest.raises(ValueError, match="invalid service name"):
            runtime.logs("demo", "../../outside")
        assert outside.read_text() == "secret\n"
        assert list((tmp_path / "state").iterdir()) == []
    finally:
        runtime.close()


def test_the_docker_runtime_refuses_paths_before_calling_the_engine() -> None:
    runtime = DockerRuntime(client=object(), node="n")  # type: ignore[arg-type]  # never called
    with pytest.raises(ValueError, match="invalid project name"):
        container_name("../x", "web")
    with pytest.raises(ValueError, match="invalid service name"):
        container_name("demo", "../../containers/create")
    for call in (lambda: runtime.logs("../x", "web"), lambda: runtime.remove("demo", "a/b")):
        with pytest.raises(ValueError, match="invalid"):
            call()
    with pytest.raises(ValueError, match="invalid project name"):
        runtime.list("oct.managed=true")


def test_the_agent_refuses_paths(tmp_path: Path) -> None:
    agent = Agent("n", tmp_path)

    async def attempts() -> None:
        with pytest.raises(InvalidName):
            await agent.logs("../x", "web", 10)
        with pytest.raises(InvalidName):
            await agent.remove("demo", "..")
        with pytest.raises(InvalidName):
            await agent.list("/etc")
        with pytest.raises(InvalidName):
            await agent.apply(InstanceSpec.model_construct(**{**spec(), "service": "../x"}))

    try:
        asyncio.run(attempts())
    finally:
        agent.close()
