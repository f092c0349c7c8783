"""Bad input against a real node: every answer is a clear 4xx, never a 500, and the node stays up."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from octctl.config import ConfigError, load_config_text
from tests.e2e.test_api import Cluster, cluster

__all__ = ["cluster"]  # the real single-node cluster fixture of the API tests

pytestmark = [pytest.mark.security, pytest.mark.e2e]


def assert_node_is_fine(c: Cluster) -> None:
    assert c.client.get("/v1/health").json()["ok"] is True
    assert "Traceback" not in c.log()


def test_json_nested_beyond_the_parsers_stack_is_a_400(cluster: Cluster) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    for path in ("/v1/deploy", "/v1/kv/deep", "/v1/cluster/join"):
        method = cluster.client.put if path.startswith("/v1/kv") else cluster.client.post
        answer = method(path, content=deep, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, (path, answer.status_code, answer.text)
        assert "nested too deeply" in answer.json()["error"]
    assert_node_is_fine(cluster)


def test_a_join_proof_with_non_ascii_characters_is_a_400(cluster: Cluster) -> None:
    body = {
        "node": "node-evil",
        "address": "127.0.0.250",
        "api_port": 31888,
        "raft_port": 31889,
        "proof": "é" * 64,
        "cpus": 1000,
        "memory": 1000,
    }
    answer = cluster.client.post("/v1/cluster/join", json=body)
    assert answer.status_code == 400, answer.text
    assert any("proof" in d for d in answer.json()["details"])
    assert_node_is_fine(cluster)


def test_the_kv_limit_counts_bytes_not_characters(cluster: Cluster) -> None:
    emoji = "\U0001f600" * (64 * 1024 // 4 + 1)  # 16,385 characters, 65,540 bytes
    assert len(emoji) < 64 * 1024 < len(emoji.encode())
    answer = cluster.client.put("/v1/kv/big", json={"value": emoji})
    assert answer.status_code == 400, answer.text
    assert cluster.client.get("/v1/kv/big").status_code == 404
    fits = "\U0001f600" * (64 * 1024 // 4)
    assert cluster.client.put("/v1/kv/big", json={"value": fits}).status_code == 200
    assert_node_is_fine(cluster)


@pytest.mark.parametrize(
    ("envs", "found"),
    [
        ({"A=B": "x"}, "environment variable name 'A=B'"),
        ({"A\x00B": "x"}, "environment variable name"),
        ({"TOKEN": "a\x00b"}, "NUL byte"),
    ],
)
def test_env_names_and_values_no_environment_can_hold_are_refused(
    cluster: Cluster, envs: dict[str, str], found: str
) -> None:
    config = {
        "project": {
            "name": "bad",
            "state_backend": {"local": {"path": "state.json"}},
            "provider": {"local": {"nodes": 1}},
            "services": [
                {
                    "name": "s",
                    "runtime": "process",
                    "command": "sleep 60",
                    "cpus": 10,
                    "memory": 8,
                    "envs": envs,
                }
            ],
        }
    }
    answer = cluster.client.post("/v1/deploy", json={"config": config})
    assert answer.status_code == 422, answer.text
    assert any(found in d for d in answer.json()["details"]), answer.json()
    assert_node_is_fine(cluster)


def test_nul_in_a_command_and_an_unbounded_node_count_are_config_errors(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """
        [project]
        name = "bad"
        [project.state_backend.local]
        path = "state.json"
        [project.provider.local]
        nodes = 1000000000
        [[project.services]]
        name = "s"
        runtime = "process"
        command = "sleep\\u0000 60"
        cpus = 10
        memory = 8
        """
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    problems = [str(p) for p in caught.value.problems]
    assert any("project.provider.local.nodes" in p for p in problems), problems
    assert any("NUL byte" in p and "command" in p for p in problems), problems


def test_toml_nested_beyond_the_parsers_stack_is_one_problem() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config_text("a = " + "[" * 100_000 + "]" * 100_000)
