"""Where the CLI keeps a cluster's record: a private state file, its lock, and recovery from files.

The record round-trips through a 0600 file (never printing its token, even when corrupt), sits
next to the config, is guarded by a lock that excludes a second oct command and goes with the
record, and can be rebuilt from the nodes' own files when the state file is lost.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from octcli import api, state
from octcli.errors import OctError
from octcli.providers.local import adopt
from octcli.state import state_lock
from octctl.node_settings import NodeSettings, Secrets, write_node_files
from tests.cli_inputs import project, record

__all__ = ["project"]  # the shared fixture, for these tests


def test_state_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    saved = record(["127.0.0.2:31888", "127.0.0.3:31888"])
    state.save(path, saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert state.load(path) == saved
    assert json.loads(path.read_text())["nodes"][0] == "127.0.0.2:31888"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary left behind
    assert "s3cr3t-token" not in repr(saved)

    state.save(path, saved.model_copy(update={"nodes": ["127.0.0.4:31888"]}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = state.load(path)
    assert loaded is not None and loaded.nodes == ["127.0.0.4:31888"]

    state.remove(path)
    state.remove(path)
    assert state.load(path) is None


def test_corrupt_state_file_is_reported_without_its_content(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"token": "s3cr3t-token", "nodes": 5}')
    with pytest.raises(OctError) as caught:
        state.load(path)
    assert "corrupt" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with state_lock(path), pytest.raises(OctError, match="another oct command is running"), state_lock(path):
        pass
    with state_lock(path):  # released on exit
        pass


def test_state_path_is_relative_to_the_config(project: Path) -> None:
    config = api.validate(project)
    assert (
        state.state_path(project, config.project.state_backend)
        == project.parent.resolve() / ".oct/state.json"
    )


def test_the_lock_file_goes_with_the_record(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    lock_file = tmp_path / "state.json.lock"
    with state_lock(path):
        state.save(path, record(["127.0.0.2:31888"]))
    assert lock_file.exists(), "kept while there is a record"
    with state_lock(path):
        state.remove(path)
        assert lock_file.exists()
    assert not lock_file.exists(), "removed on release once the record is gone"
    with state_lock(path), pytest.raises(OctError, match="another oct command"), state_lock(path):
        pass


def test_adopt_rebuilds_the_record_from_node_files(tmp_path: Path) -> None:
    root = tmp_path / ".oct"
    secrets = Secrets.mint()
    for address, join in (("127.0.0.3", ["127.0.0.2:31888"]), ("127.0.0.2", [])):
        settings = NodeSettings(
            node="node-" + address.rsplit(".", 1)[1],
            cluster="c-abc",
            address=address,
            cpus=1000,
            memory=512,
            join=join,
        )
        write_node_files(root / "nodes" / settings.node, settings, secrets)
    adopted = adopt(root, "demo")
    assert adopted is not None
    assert adopted.cluster == "c-abc" and adopted.token == secrets.token
    assert adopted.nodes == ["127.0.0.2:31888", "127.0.0.3:31888"]  # genesis first
    assert adopt(tmp_path / "empty", "demo") is None
