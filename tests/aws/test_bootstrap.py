"""``oct-ctl bootstrap`` against a real moto_server: the node files come from the public config plus
the secrets in SSM, errors are one clear line without a secret, and the result starts a node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from octctl.node_settings import NodeSettings, Secrets
from octctl.providers.aws.bootstrap import BootstrapConfig
from octctl.providers.aws.resources import AwsResources
from octctl.providers.aws.secrets_store import delete_secrets, get_secrets, put_secrets
from octctl.providers.aws.settings import AwsNodeSettings
from octctl.providers.local.provider import FALLBACK_DNS_PORT, free_address, local_dns_port
from octctl.tls import client_context
from tests.wait import wait_until

pytestmark = pytest.mark.aws

REGION = "us-east-1"
INSTANCE = "i-0123456789abcdef0"


@pytest.fixture
def session(aws_env: str) -> boto3.Session:
    return boto3.Session(region_name=REGION)


@pytest.fixture
def cluster() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def secrets(session: boto3.Session, cluster: str) -> Iterator[Secrets]:
    minted = Secrets.mint()
    put_secrets(session, cluster, minted)
    yield minted
    delete_secrets(session, cluster)


def write_config(path: Path, cluster: str, **changes: object) -> BootstrapConfig:
    aws = AwsNodeSettings(
        resources=AwsResources(region=REGION, project="shop", cluster=cluster), instance_type="t4g.small"
    )
    config = BootstrapConfig.model_validate(
        {"cluster": cluster, "cpus": 1000, "memory": 1024, "provider": aws, **changes}
    )
    path.write_text(config.model_dump_json())
    return config


def bootstrap(config: Path, data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "octctl",
            "bootstrap",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def assert_failed(run: subprocess.CompletedProcess[str], expected: str, *secret_values: str) -> None:
    assert run.returncode != 0
    assert run.stdout == ""
    assert run.stderr.startswith("oct-ctl bootstrap: ") and run.stderr.count("\n") == 1, run.stderr
    assert expected in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    for value in secret_values:
        assert value not in run.stderr


def test_secrets_store_round_trip_and_idempotent_delete(session: boto3.Session, cluster: str) -> None:
    first, second = Secrets.mint(), Secrets.mint()
    put_secrets(session, cluster, first)
    put_secrets(session, cluster, second)  # replaces: a re-run of genesis must not fail on the old value
    assert get_secrets(session, cluster) == second
    answer = session.client("ssm").get_parameter(Name=f"/oct/{cluster}/secrets")["Parameter"]
    assert answer["Type"] == "SecureString"
    delete_secrets(session, cluster)
    delete_secrets(session, cluster)
    with pytest.raises(Exception, match=f"/oct/{cluster}/secrets in {REGION} does not exist"):
        get_secrets(session, cluster)


def test_bootstrap_writes_the_node_files_once_and_they_start_a_node(
    tmp_path: Path, cluster: str, secrets: Secrets
) -> None:
    root = tmp_path / ".oct"
    address = free_address(root)  # also creates (and claims) the node's folder under root
    data_dir = next((root / "nodes").iterdir())
    config_path = tmp_path / "bootstrap.json"
    dns_port = local_dns_port(address) or FALLBACK_DNS_PORT
    config = write_config(config_path, cluster, dns_port=dns_port)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        run = bootstrap(config_path, data_dir, "--address", address, "--node", INSTANCE)
        assert run.returncode == 0, run.stderr
        assert "wrote node.json and secrets.json" in run.stdout
        assert secrets.token not in run.stdout + run.stderr
        assert secrets.raft_password not in run.stdout + run.stderr

        settings = NodeSettings.model_validate_json((data_dir / "node.json").read_text())
        assert settings == config.node_settings(INSTANCE, address)
        assert (settings.node, settings.address, settings.provider.kind, settings.join) == (
            INSTANCE,
            address,
            "aws",
            [],
        )
        assert Secrets.model_validate_json((data_dir / "secrets.json").read_text()) == secrets
        assert stat.S_IMODE((data_dir / "secrets.json").stat().st_mode) == 0o600
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700

        # Again with the same config: nothing is rewritten, not even from a changed SSM value.
        before = (data_dir / "secrets.json").stat()
        again = bootstrap(config_path, data_dir, "--address", address, "--node", INSTANCE)
        assert again.returncode == 0 and "up to date, kept" in again.stdout, again.stderr
        after = (data_dir / "secrets.json").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

        # A changed config is written.
        write_config(config_path, cluster, dns_port=dns_port, cpus=1500)
        changed = bootstrap(config_path, data_dir, "--address", address, "--node", INSTANCE)
        assert changed.returncode == 0, changed.stderr
        assert NodeSettings.model_validate_json((data_dir / "node.json").read_text()).cpus == 1500

        log = (data_dir / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "octctl", "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        health = wait_for_leader(
            f"https://{address}:{settings.api_port}/v1/health", daemon, data_dir, secrets.ca_cert
        )
        assert (health["node"], health["cluster"], health["leader"]) == (INSTANCE, cluster, INSTANCE)
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)  # releases the address claim


def wait_for_leader(url: str, daemon: subprocess.Popen[bytes], data_dir: Path, ca_cert: str) -> dict:
    def health() -> dict:
        assert daemon.poll() is None, f"oct-ctl exited:\n{(data_dir / 'daemon.log').read_text()}"
        return dict(httpx.get(url, timeout=1, verify=client_context(ca_cert)).json())

    return wait_until(
        health,
        until=lambda answer: answer.get("leader"),
        timeout=30,
        interval=0.1,
        ignore=(httpx.HTTPError,),
        message=lambda: f"a leader:\n{(data_dir / 'daemon.log').read_text()}",
    )


def test_identity_comes_from_imdsv2_when_not_given(
    tmp_path: Path, cluster: str, secrets: Secrets, moto_endpoint: str
) -> None:
    """moto_server also answers the instance metadata paths (IMDSv2 token first)."""
    config_path = tmp_path / "bootstrap.json"
    write_config(config_path, cluster)
    run = bootstrap(config_path, tmp_path / "data", AWS_EC2_METADATA_SERVICE_ENDPOINT=moto_endpoint)
    assert run.returncode == 0, run.stderr
    settings = NodeSettings.model_validate_json((tmp_path / "data" / "node.json").read_text())
    assert (settings.node, settings.address) == ("i-fake", "127.0.0.1")
    # The public address (moto's fake 198.51.100.1) is kept for the node's TLS certificate.
    assert settings.public_address == "198.51.100.1"


def test_no_instance_metadata_is_a_clear_error(tmp_path: Path, cluster: str, secrets: Secrets) -> None:
    config_path = tmp_path / "bootstrap.json"
    write_config(config_path, cluster)
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    run = bootstrap(config_path, tmp_path / "data", AWS_EC2_METADATA_SERVICE_ENDPOINT=closed)
    assert_failed(run, f"instance metadata service at {closed}", secrets.token)
    assert "pass --node and --address" in run.stderr
    assert not (tmp_path / "data").exists()


def test_missing_secrets_parameter_fails_at_once_and_writes_nothing(tmp_path: Path, aws_env: str) -> None:
    config_path = tmp_path / "bootstrap.json"
    write_config(config_path, "c-nosecrets")
    run = bootstrap(config_path, tmp_path / "data", "--address", "127.0.0.9", "--node", INSTANCE)
    assert_failed(run, f"SSM parameter /oct/c-nosecrets/secrets in {REGION} does not exist")
    assert not (tmp_path / "data").exists()


def test_a_malformed_parameter_is_named_without_its_value(
    tmp_path: Path, session: boto3.Session, cluster: str
) -> None:
    leaked = "leak-me-not-" + uuid.uuid4().hex
    ssm = session.client("ssm")
    ssm.put_parameter(
        Name=f"/oct/{cluster}/secrets", Value=json.dumps({"token": leaked}), Type="SecureString"
    )
    try:
        config_path = tmp_path / "bootstrap.json"
        write_config(config_path, cluster)
        run = bootstrap(config_path, tmp_path / "data", "--address", "127.0.0.9", "--node", INSTANCE)
        assert_failed(run, "does not hold oct secrets: raft_password: Field required", leaked)
    finally:
        delete_secrets(session, cluster)


def test_bad_config_or_arguments_are_one_line_errors(tmp_path: Path, cluster: str, secrets: Secrets) -> None:
    config_path = tmp_path / "bootstrap.json"
    missing = bootstrap(config_path, tmp_path / "data", "--address", "127.0.0.9", "--node", INSTANCE)
    assert_failed(missing, f"cannot read the bootstrap config {config_path}: No such file or directory")

    config_path.write_text(json.dumps({"cluster": cluster, "cpus": 0}))
    invalid = bootstrap(config_path, tmp_path / "data", "--address", "127.0.0.9", "--node", INSTANCE)
    assert_failed(invalid, f"invalid bootstrap config {config_path}: cpus: Input should be greater than 0")
    assert "memory: Field required" in invalid.stderr

    write_config(config_path, cluster)
    bad_address = bootstrap(config_path, tmp_path / "data", "--address", "not-an-ip", "--node", INSTANCE)
    assert_failed(bad_address, "the node address 'not-an-ip' is not an IPv4 address")
    assert not (tmp_path / "data").exists()


def test_unreachable_ssm_gives_up_after_the_wait(tmp_path: Path, cluster: str, secrets: Secrets) -> None:
    config_path = tmp_path / "bootstrap.json"
    write_config(config_path, cluster)
    run = bootstrap(
        config_path,
        tmp_path / "data",
        "--address",
        "127.0.0.9",
        "--node",
        INSTANCE,
        "--wait",
        "0",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
    )
    assert_failed(run, f"cannot read SSM parameter /oct/{cluster}/secrets in {REGION}: Could not connect")
