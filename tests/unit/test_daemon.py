"""oct-ctl refuses broken node files with a clear message that never echoes a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from octctl.daemon import main
from octctl.node_settings import Secrets

NODE = {"node": "node-250", "cluster": "c1", "address": "127.0.0.250", "cpus": 100, "memory": 100}


def test_a_broken_secrets_file_is_named_without_its_values(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text(json.dumps(NODE))
    (tmp_path / "secrets.json").write_text(json.dumps({"token": "do-not-print-me"}))
    with pytest.raises(SystemExit) as stopped:
        main(["--data-dir", str(tmp_path)])
    message = str(stopped.value.code)
    assert message == (
        f"oct-ctl: invalid Secrets file in {tmp_path}: raft_password: Field required; "
        "ca_key: Field required; ca_cert: Field required"
    )
    assert "do-not-print-me" not in message


def test_missing_or_garbled_node_files_exit_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--data-dir", str(tmp_path)])
    assert "node.json" in str(stopped.value.code)
    (tmp_path / "node.json").write_text("{not json")
    with pytest.raises(SystemExit) as stopped:
        main(["--data-dir", str(tmp_path)])
    assert str(stopped.value.code).startswith(f"oct-ctl: cannot read the node files in {tmp_path}")


def test_a_provider_section_that_fits_no_provider_is_named(tmp_path: Path) -> None:
    (tmp_path / "secrets.json").write_text(Secrets.mint("c1").model_dump_json())
    (tmp_path / "node.json").write_text(json.dumps(NODE | {"provider": {"kind": "aws", "instance_type": 7}}))
    with pytest.raises(SystemExit) as stopped:
        main(["--data-dir", str(tmp_path)])
    assert str(stopped.value.code) == (
        f"oct-ctl: cannot read the node files in {tmp_path}: node.json: provider.resources: Field required; "
        "provider.instance_type: Input should be a valid string"
    )
