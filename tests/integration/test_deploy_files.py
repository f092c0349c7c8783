"""The files in deploy/: a unit systemd accepts, user data that pins the deployer's own oct wheel by
hash and carries no secret, an installer that refuses a wheel with another hash, and an installed
package that finds them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import octctl
from octctl.node_settings import Secrets
from octctl.providers.aws.bootstrap import BootstrapConfig
from octctl.providers.aws.resources import AwsResources, NodeArtifact
from octctl.providers.aws.settings import AwsNodeSettings
from octctl.providers.aws.user_data import (
    BOOTSTRAP_PATH,
    USER_DATA_LIMIT,
    artifact_link,
    deploy_file,
    parse_user_data,
    render_user_data,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXEC = "/opt/oct/bin/oct-ctl"
VERSION = octctl.__version__
SHA = "ab" * 32
WHEEL = f"oct_cloud-{VERSION}-py3-none-any.whl"
ARTIFACT = NodeArtifact(
    bucket="oct-c-1a2b3c4d-123456789012", key=f"artifacts/{SHA}/{WHEEL}", sha256=SHA, version=VERSION
)
#: The shape of a presigned SigV4 link with a session token (the longest kind).
URL = (
    f"https://oct-c-1a2b3c4d-123456789012.s3.eu-central-1.amazonaws.com/artifacts/{SHA}/{WHEEL}"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAEXAMPLE%2F20261204%2Feu-central-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261204T000000Z&X-Amz-Expires=7200&X-Amz-SignedHeaders=host"
    f"&X-Amz-Security-Token={'T' * 1100}&X-Amz-Signature={'f' * 64}"
)


def aws_settings(artifact: NodeArtifact | None) -> AwsNodeSettings:
    return AwsNodeSettings(
        resources=AwsResources(region="eu-central-1", project="shop", cluster="c-1a2b3c4d"),
        instance_type="t4g.small",
        artifact=artifact,
    )


def config(**changes: object) -> BootstrapConfig:
    base: dict[str, object] = {
        "cluster": "c-1a2b3c4d",
        "join": ["10.0.1.5:31888", "10.0.1.6:31888"],
        "cpus": 1900,
        "memory": 3600,
        "provider": aws_settings(ARTIFACT),
    }
    return BootstrapConfig.model_validate({**base, **changes})


def systemd_verify(unit: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing: install the systemd package (apt-get install systemd)")
    return subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)


def unit_with_stub(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointed at a stub: verify insists the program exists."""
    stub = tmp_path / "oct-ctl"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    assert EXEC in text, "the unit no longer starts /opt/oct/bin/oct-ctl; update this test"
    unit = tmp_path / "oct-ctl.service"
    unit.write_text(text.replace(EXEC, str(stub)))
    return unit


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    checked = systemd_verify(unit_with_stub(tmp_path, (DEPLOY / "oct-ctl.service").read_text()))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout + checked.stderr == "", "systemd-analyze has remarks on the unit"


def test_verify_does_flag_a_broken_unit(tmp_path: Path) -> None:
    """The lint above can fail: a misspelt key is reported."""
    broken = (DEPLOY / "oct-ctl.service").read_text().replace("Restart=always", "Restat=always")
    checked = systemd_verify(unit_with_stub(tmp_path, broken))
    assert "Unknown key 'Restat'" in checked.stderr


def test_the_unit_restarts_the_daemon_and_keeps_docker_reachable() -> None:
    lines = set((DEPLOY / "oct-ctl.service").read_text().splitlines())
    assert f"ExecStart={EXEC} --data-dir /var/lib/oct" in lines
    assert {"Restart=always", "NoNewPrivileges=yes", "ProtectSystem=full", "PrivateTmp=yes"} <= lines
    assert any(line.startswith("LimitNOFILE=") for line in lines)
    # Docker's socket is under /run and the daemon runs as root: nothing may take those away.
    assert not any(
        line.startswith(("User=", "DynamicUser=", "ProtectSystem=strict", "PrivateDevices="))
        for line in lines
    )


def test_user_data_is_cloud_config_that_installs_the_deployers_wheel_by_hash() -> None:
    text = render_user_data(config(), VERSION, URL)
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    assert document["runcmd"] == [["bash", "/usr/local/lib/oct/genesis.sh", URL, SHA]]
    assert artifact_link(text) == (URL, SHA)
    files = {entry["path"]: entry for entry in document["write_files"]}
    assert files["/etc/systemd/system/oct-ctl.service"]["content"] == deploy_file("oct-ctl.service")
    for script in ("genesis.sh", "install-oct.sh"):
        assert files[f"/usr/local/lib/oct/{script}"]["content"] == deploy_file(script)
        assert files[f"/usr/local/lib/oct/{script}"]["permissions"] == "0755"
    assert BootstrapConfig.model_validate_json(files[BOOTSTRAP_PATH]["content"]) == config()
    assert "opencloudtool==" not in text and "oct-cloud==" not in text  # never by name from an index


def test_user_data_refuses_a_wheel_it_cannot_pin() -> None:
    with pytest.raises(ValueError, match="no oct wheel"):
        render_user_data(config(provider=aws_settings(None)), VERSION, URL)
    with pytest.raises(ValueError, match=f"oct wheel is version {VERSION}, this oct is 9.9.9"):
        render_user_data(config(), "9.9.9", URL)
    for bad in (URL + " ; curl evil | sh", URL + '"', "file:///tmp/" + WHEEL, "oct-cloud==" + VERSION):
        with pytest.raises(ValueError, match="artifact_url"):
            render_user_data(config(), VERSION, bad)
    with pytest.raises(ValueError):
        NodeArtifact(bucket=ARTIFACT.bucket, key=ARTIFACT.key, sha256="not-a-hash", version=VERSION)


def test_user_data_holds_no_secret_and_cannot_be_made_to() -> None:
    secrets = Secrets.mint()
    text = render_user_data(config(), VERSION, URL)
    assert secrets.token not in text and secrets.raft_password not in text
    for field in Secrets.model_fields:
        assert f'"{field}"' not in text, f"user data has a {field!r} key"
    assert "/oct/c-1a2b3c4d/secrets" in text  # where the node fetches them instead
    with pytest.raises(ValueError, match="token"):
        config(token=secrets.token)  # the config refuses unknown keys, so a secret cannot ride along


@pytest.mark.parametrize(
    "changes",
    [{}, {"join": []}, {"dns_upstreams": ["10.0.0.2:53"], "dns_port": 5353, "api_port": 8443, "dns_ttl": 0}],
)
def test_parse_user_data_gives_back_the_rendered_config(changes: dict[str, object]) -> None:
    assert parse_user_data(render_user_data(config(**changes), VERSION, URL)) == config(**changes)


def test_user_data_fits_ec2s_limit_and_refuses_to_outgrow_it() -> None:
    big_cluster = [f"10.0.{i // 250}.{i % 250 + 2}:31888" for i in range(50)]
    assert len(render_user_data(config(join=big_cluster), VERSION, URL).encode()) < USER_DATA_LIMIT
    with pytest.raises(ValueError, match="EC2 accepts at most 16384"):
        render_user_data(config(join=[f"host-{i}.example.internal:31888" for i in range(1000)]), VERSION, URL)


def test_parse_user_data_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="not YAML"):
        parse_user_data("write_files: [unclosed")
    with pytest.raises(ValueError, match=re.escape("writes no /etc/oct/bootstrap.json")):
        parse_user_data("#cloud-config\nruncmd: [[true]]\n")
    broken = render_user_data(config(), VERSION, URL).replace('"cpus": 1900', '"cpus": -1')
    with pytest.raises(ValueError, match=re.escape("bootstrap.json in the user data is invalid: cpus")):
        parse_user_data(broken)


def test_the_installed_package_ships_the_deploy_files(tmp_path: Path) -> None:
    """Read through the installed distribution from a foreign folder, not through the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = (
        "import sys\nfrom importlib.resources import files\n"
        "for name in sys.argv[1:]:\n"
        "    sys.stdout.write(files('octctl').joinpath('_deploy', name).read_text() + '\\0')\n"
    )
    names = ["oct-ctl.service", "cloud-init.yaml.j2", "genesis.sh", "install-oct.sh", "requirements.lock"]
    out = subprocess.run(
        [sys.executable, "-c", script, *names],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\0")[:-1] == [(DEPLOY / name).read_text() for name in names]


def run_genesis(*args: str, config_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY / "genesis.sh"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "OCT_BOOTSTRAP_CONFIG": str(config_path)},
    )


def test_genesis_script_refuses_an_unpinned_wheel_or_a_missing_config(tmp_path: Path) -> None:
    """Only its guard rails can run here: each stops it before it installs anything."""
    assert subprocess.run(["bash", "-n", str(DEPLOY / "genesis.sh")], timeout=30).returncode == 0
    missing = tmp_path / "bootstrap.json"
    usage = run_genesis(config_path=missing)
    assert usage.returncode == 2 and "usage: genesis.sh WHEEL_URL_OR_PATH SHA256" in usage.stderr
    for unpinned in (["oct-cloud==0.1.0"], [URL, "latest"], [URL, "AB" * 32]):
        refused = run_genesis(*unpinned, config_path=missing)
        assert refused.returncode == 2, refused.stderr
        assert "usage" in refused.stderr or "is not a sha256" in refused.stderr
    if os.geteuid() == 0:
        no_config = run_genesis(URL, SHA, config_path=missing)
        assert no_config.returncode == 2 and f"no bootstrap config at {missing}" in no_config.stderr
    else:
        not_root = run_genesis(URL, SHA, config_path=missing)
        assert not_root.returncode == 2 and "run as root" in not_root.stderr


def run_installer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY / "install-oct.sh"), *args], capture_output=True, text=True, timeout=60
    )


def test_the_installer_refuses_a_wheel_whose_hash_differs_and_installs_nothing(tmp_path: Path) -> None:
    """A tampered or corrupted wheel stops the node with one clear line (what a VM's log shows)."""
    wheel = tmp_path / WHEEL
    wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: not what the CLI shipped
    venv = tmp_path / "venv"
    refused = run_installer(str(wheel), SHA, str(venv))
    assert refused.returncode == 3, refused.stderr
    expected = rf"REFUSED {re.escape(WHEEL)}: its sha256 is [0-9a-f]{{64}}, the deploying CLI shipped {SHA}"
    assert re.search(expected, refused.stderr)
    assert "oct is not installed" in refused.stderr
    assert not venv.exists()


def test_the_installer_takes_only_an_oct_wheel_pinned_by_a_full_hash(tmp_path: Path) -> None:
    venv = str(tmp_path / "venv")
    for args, reason in (
        ((str(tmp_path / WHEEL), SHA), "usage"),
        ((str(tmp_path / WHEEL), SHA[:40], venv), "is not a sha256"),
        ((str(tmp_path / "evil-1.0-py3-none-any.whl"), SHA, venv), "is not an oct wheel"),
        (("https://example.invalid/opencloudtool-0.8.0.tar.gz", SHA, venv), "is not an oct wheel"),
    ):
        result = run_installer(*args)
        assert result.returncode == 2 and reason in result.stderr, (args, result.stderr)
    assert not Path(venv).exists()
