"""node.json across versions: files written before providers had a section of their own still load,
and a node's provider section names its kind, so the node builds its provider from the file alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from octctl.node_settings import NodeSettings, Secrets, read_node_files, write_node_files
from octctl.providers.aws.provider import AwsProvider
from octctl.providers.aws.settings import AwsNodeSettings
from octctl.providers.local import provider as local_provider
from octctl.providers.local.provider import LocalProvider, local_node_settings
from octctl.providers.local.settings import LocalSettings
from octctl.providers.registry import BadProviderSection, build_provider, provider_settings

SHA = "a" * 64

#: Exactly as oct wrote them before this format (``NodeSettings.model_dump_json(indent=2)``).
OLD_LOCAL = """{
  "node": "node-7", "cluster": "c-1a2b3c4d", "address": "127.0.0.7", "public_address": null,
  "api_port": 31888, "raft_port": 31889, "cpus": 4000, "memory": 4096, "join": ["127.0.0.2:31888"],
  "dns_port": 53, "dns_domain": "oct", "dns_ttl": 5, "dns_upstreams": null,
  "provider": "local", "provider_root": "/home/me/shop/.oct", "aws": null, "guard_containers": false
}"""
OLD_AWS = """{
  "node": "n-0123456789ab", "cluster": "c-1a2b3c4d", "address": "10.0.1.6", "public_address": "3.120.0.7",
  "api_port": 31888, "raft_port": 31889, "cpus": 1900, "memory": 3600, "join": ["10.0.1.5:31888"],
  "dns_port": 53, "dns_domain": "oct", "dns_ttl": 5, "dns_upstreams": null,
  "provider": "aws", "provider_root": null,
  "aws": {
    "resources": {
      "region": "eu-central-1", "project": "shop", "cluster": "c-1a2b3c4d", "vpc_id": "vpc-1",
      "internet_gateway_id": null, "subnet_ids": ["subnet-1"], "route_table_id": null,
      "route_table_association_ids": [], "security_group_id": null, "role_name": null, "role_arn": null,
      "role_policy_name": null, "instance_profile_name": null, "instance_profile_arn": null,
      "leader_instance_id": null, "follower_instance_ids": [], "hosted_zone_id": null,
      "artifact_bucket": null, "instance_types": [], "ami": null
    },
    "instance_type": "t4g.small", "ami": null,
    "artifact": {
      "bucket": "oct-c-1a2b3c4d-123456789012",
      "key": "artifacts/<sha>/oct-0.1.0-py3-none-any.whl", "sha256": "<sha>", "version": "0.1.0"
    }
  },
  "guard_containers": true
}""".replace("<sha>", SHA)
#: A harness's node before the provider section: it never provisions.
OLD_NO_ROOT = """{"node": "node-3", "cluster": "c1", "address": "127.0.0.3", "cpus": 1000, "memory": 512,
  "provider": "local", "provider_root": null, "aws": null}"""


def test_an_old_local_node_json_loads_into_the_local_section(monkeypatch: pytest.MonkeyPatch) -> None:
    # The DNS port a new local node gets depends on what this machine has free: not the point here.
    monkeypatch.setattr(local_provider, "local_dns_port", lambda address: 53)
    settings = NodeSettings.model_validate_json(OLD_LOCAL)
    assert provider_settings(settings.provider) == LocalSettings(root="/home/me/shop/.oct")
    assert (settings.node, settings.join, settings.dns_port) == ("node-7", ["127.0.0.2:31888"], 53)
    # (volumes_dir came later: such a node keeps process volumes beside its own data folder)
    assert settings == local_node_settings(
        Path("/home/me/shop/.oct"), "127.0.0.7", "c-1a2b3c4d", 4000, 4096, ["127.0.0.2:31888"]
    ).model_copy(update={"volumes_dir": None})
    provider = build_provider(settings)
    assert isinstance(provider, LocalProvider) and provider.root == Path("/home/me/shop/.oct")


def test_an_old_aws_node_json_loads_into_the_aws_section() -> None:
    settings = NodeSettings.model_validate_json(OLD_AWS)
    aws = provider_settings(settings.provider)
    assert isinstance(aws, AwsNodeSettings)
    assert (aws.resources.vpc_id, aws.resources.subnet_ids, aws.instance_type) == (
        "vpc-1",
        ["subnet-1"],
        "t4g.small",
    )
    assert aws.artifact is not None and aws.artifact.sha256 == SHA
    assert (settings.public_address, settings.guard_containers) == ("3.120.0.7", True)
    assert isinstance(build_provider(settings), AwsProvider)  # builds without calling AWS


def test_an_old_node_json_without_a_root_never_provisions() -> None:
    settings = NodeSettings.model_validate_json(OLD_NO_ROOT)
    assert provider_settings(settings.provider) == LocalSettings() and build_provider(settings) is None
    fresh = NodeSettings(node="n", cluster="c", address="127.0.0.4", cpus=1, memory=1)
    assert provider_settings(fresh.provider) == LocalSettings() and build_provider(fresh) is None


def test_the_new_file_names_the_kind_and_reads_back(tmp_path: Path) -> None:
    old = NodeSettings.model_validate_json(OLD_AWS)
    secrets = Secrets(token="t", raft_password="p", ca_key="k", ca_cert="c")
    write_node_files(tmp_path, old, secrets)
    written = json.loads((tmp_path / "node.json").read_text())
    assert written["provider"]["kind"] == "aws" and "aws" not in written and "provider_root" not in written
    assert read_node_files(tmp_path) == (old, secrets)


def test_settings_built_in_code_equal_the_same_settings_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AWS bootstrap keeps node files that are up to date by comparing them so."""
    monkeypatch.setattr(local_provider, "local_dns_port", lambda address: 53)
    settings = local_node_settings(tmp_path, "127.0.0.9", "c1", 1000, 512, [])
    written = json.loads(settings.model_dump_json())
    assert written["provider"] == {"kind": "local", "root": str(tmp_path)}
    assert NodeSettings.model_validate(written) == settings
    assert provider_settings(settings.provider) == LocalSettings(root=str(tmp_path))


def test_a_bad_section_stops_the_node_naming_the_field() -> None:
    new = {"node": "node-3", "cluster": "c1", "address": "127.0.0.3", "cpus": 1000, "memory": 512}
    unknown = new | {"provider": {"kind": "gcp"}}
    with pytest.raises(BadProviderSection, match=r"provider\.kind 'gcp' is not one of aws, local"):
        build_provider(NodeSettings.model_validate(unknown))
    typo = new | {"provider": {"kind": "local", "rot": "/x"}}
    with pytest.raises(BadProviderSection, match=r"provider\.rot: Extra inputs are not permitted"):
        build_provider(NodeSettings.model_validate(typo))
