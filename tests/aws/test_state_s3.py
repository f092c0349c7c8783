"""The S3 state backend against a real moto_server: record round trip, the lock, the bucket's owner.

Each test uses its own bucket (names are global in S3, and moto lives for the whole session), except
the reference example, whose bucket name is fixed by the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from octcli import api, state
from octcli.errors import InvalidConfig, OctError, Unreachable
from octcli.main import app
from octcli.state import ClusterRecord, StateStore
from octcli.state.s3 import S3Store
from octctl.config import load_config
from octctl.config.models import S3Backend
from tests.e2e.harness import kill_leftovers
from tests.fixtures import REFERENCE_EXAMPLES
from tests.wait import wait_until

pytestmark = pytest.mark.aws

TOKEN = "s3cr3t-t0ken-never-shown"
EXAMPLES = REFERENCE_EXAMPLES
REFERENCE_EXAMPLE = EXAMPLES / "s3-remote-state-storage.toml"
FOREIGN_ACCOUNT = "111111111111"
PROJECT = """\
[project]
name = "{name}"

[project.state_backend.s3]
region = "eu-central-1"
bucket = "{bucket}"
key = "projects/{name}/state.json"

[project.provider.local]
nodes = 1
cpus = 2000
memory = 2048

[[project.services]]
name = "web"
runtime = "process"
command = "sleep 1000"
cpus = 250
memory = 64
"""


def record(token: str = TOKEN, **extra: Any) -> ClusterRecord:
    return ClusterRecord(
        cluster="c-s3test",
        project="demo",
        token=token,
        nodes=["127.0.0.2:31888"],
        root="/nowhere/.oct",
        **extra,
    )


def unique_bucket() -> str:
    return f"oct-test-{uuid.uuid4().hex[:16]}"


def store(bucket: str, key: str = "team/state.json", region: str = "us-west-2") -> S3Store:
    return S3Store(S3Backend(region=region, bucket=bucket, key=key), Path("/proj/oct.toml"))


def raw(region: str = "us-west-2", account: str | None = None) -> Any:
    """A plain client to look behind the store's back; ``account`` makes moto act for another account."""
    client = boto3.client("s3", region_name=region)
    if account is not None:

        def as_account(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account

        client.meta.events.register("before-sign.s3.*", as_account)
    return client


def code(call: Any) -> str:
    try:
        call()
    except ClientError as e:
        return str(e.response["Error"]["Code"])
    return "ok"


@pytest.fixture
def bucket(aws_env: str) -> str:
    return unique_bucket()


def test_round_trip_creates_a_private_bucket_only_when_saving(bucket: str) -> None:
    s = store(bucket)
    assert s.where == f"s3://{bucket}/team/state.json"
    assert s.load() is None
    assert code(lambda: raw().head_bucket(Bucket=bucket)) == "404"  # reading creates nothing

    saved = record()
    s.save(saved)
    assert s.load() == saved
    assert store(bucket).load() == saved  # another store (another command) sees it
    head = raw().head_object(Bucket=bucket, Key="team/state.json")
    assert head["ServerSideEncryption"] == "AES256"
    assert raw().get_bucket_location(Bucket=bucket)["LocationConstraint"] == "us-west-2"
    blocked = raw().get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert blocked == dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )

    s.save(saved.model_copy(update={"nodes": ["127.0.0.9:31888"]}))
    loaded = store(bucket).load()
    assert loaded is not None and loaded.nodes == ["127.0.0.9:31888"]

    s.remove()
    s.remove()
    assert s.load() is None
    assert code(lambda: raw().head_bucket(Bucket=bucket)) == "ok"  # the bucket stays: it may hold other keys


def test_us_east_1_bucket_is_created_without_a_location(aws_env: str) -> None:
    bucket = unique_bucket()
    s = store(bucket, region="us-east-1")
    s.save(record())
    assert raw("us-east-1").get_bucket_location(Bucket=bucket)["LocationConstraint"] in (None, "us-east-1")
    assert s.load() == record()


def test_older_records_load_and_unknown_fields_survive_a_rewrite(bucket: str) -> None:
    s = store(bucket)
    s.save(record())
    older = {
        "cluster": "c-old",
        "project": "demo",
        "token": TOKEN,
        "nodes": ["127.0.0.2:31888"],
        "root": "/r",
    }
    raw().put_object(Bucket=bucket, Key="team/state.json", Body=json.dumps(older).encode())
    loaded = store(bucket).load()
    assert loaded is not None and loaded.provider == "local" and loaded.cluster == "c-old"

    newer = {**older, "aws": {"vpc": "vpc-123"}}
    raw().put_object(Bucket=bucket, Key="team/state.json", Body=json.dumps(newer).encode())
    old_oct = store(bucket)
    loaded = old_oct.load()
    assert loaded is not None
    old_oct.save(loaded.model_copy(update={"nodes": ["127.0.0.3:31888"]}))
    body = json.loads(raw().get_object(Bucket=bucket, Key="team/state.json")["Body"].read())
    assert body["aws"] == {"vpc": "vpc-123"} and body["nodes"] == ["127.0.0.3:31888"]


def test_a_write_behind_our_back_is_not_overwritten(bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = store(bucket)
    s.save(record())
    raw().put_object(
        Bucket=bucket, Key="team/state.json", Body=record(cluster_note="x").model_dump_json().encode()
    )
    with pytest.raises(OctError, match="changed by someone else") as caught:
        s.save(record(token="new-" + TOKEN))
    assert TOKEN not in str(caught.value)
    body = json.loads(raw().get_object(Bucket=bucket, Key="team/state.json")["Body"].read())
    assert body["cluster_note"] == "x"  # theirs is kept

    fresh = store(bucket)
    assert fresh.load() is not None  # reading makes the next write conditional on what it saw
    raw().delete_object(Bucket=bucket, Key="team/state.json")
    with pytest.raises(OctError, match="changed by someone else"):
        fresh.save(record())
    assert TOKEN not in caplog.text


def test_a_record_created_behind_our_back_is_not_overwritten(bucket: str) -> None:
    s = store(bucket)
    assert s.load() is None
    other = store(bucket)
    other.save(record(token="theirs-" + TOKEN))
    with pytest.raises(OctError, match="changed by someone else"):
        s.save(record())
    loaded = store(bucket).load()
    assert loaded is not None and loaded.token == "theirs-" + TOKEN


def test_corrupt_record_is_reported_without_its_content(bucket: str) -> None:
    store(bucket).save(record())
    raw().put_object(
        Bucket=bucket, Key="team/state.json", Body=json.dumps({"token": TOKEN, "nodes": 5}).encode()
    )
    with pytest.raises(OctError, match="corrupt") as caught:
        store(bucket).load()
    assert TOKEN not in str(caught.value)
    assert f"s3://{bucket}/team/state.json" in str(caught.value)


def test_second_lock_fails_naming_the_holder(bucket: str) -> None:
    first, second = store(bucket), store(bucket)
    with first.lock():
        with pytest.raises(OctError) as caught, second.lock():
            pytest.fail("two holders of one lock")
        message = str(caught.value)
        assert "another oct command is running for this project" in message
        assert f"s3://{bucket}/team/state.json.lock" in message
        assert "(pid " in message and " since " in message and "@" in message
        assert "oct unlock -c /proj/oct.toml" in message
    with second.lock():  # released on exit
        pass
    assert code(lambda: raw().head_object(Bucket=bucket, Key="team/state.json.lock")) == "404"


def test_concurrent_lockers_get_exactly_one_lock(bucket: str) -> None:
    store(bucket).save(record())  # the bucket exists, so every thread races on the lock object itself
    racers = 4
    start = threading.Barrier(racers, timeout=20)
    done = threading.Event()
    results: list[str] = []
    mutex = threading.Lock()

    def race() -> None:
        s = store(bucket)
        s._owner()  # resolve the account first so the racers hit the lock at the same moment
        start.wait()
        try:
            with s.lock():
                with mutex:
                    results.append("held")
                done.wait(20)
        except OctError as e:
            with mutex:
                results.append(str(e))

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for t in threads:
        t.start()

    def seen() -> list[str]:
        with mutex:
            return list(results)

    try:
        snapshot = wait_until(
            seen,
            until=lambda got: len(got) == racers,
            timeout=20,
            message="every racer to hold the lock or have its refusal",
        )
    finally:
        done.set()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert snapshot.count("held") == 1, snapshot
    refusals = [r for r in snapshot if r != "held"]
    assert len(refusals) == racers - 1
    assert all("another oct command is running" in r and "(pid " in r for r in refusals), refusals


def test_release_removes_only_our_own_lock(bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    stuck, rescuer, newcomer = store(bucket), store(bucket), store(bucket)

    def lock_etag() -> str:
        return str(raw().head_object(Bucket=bucket, Key="team/state.json.lock")["ETag"])

    with contextlib.ExitStack() as newcomer_holds, caplog.at_level(logging.WARNING):
        with stuck.lock():
            removed = rescuer.break_lock()  # what `oct unlock` does for a command that looks dead
            assert removed is not None and removed.startswith(f"s3://{bucket}/team/state.json.lock, held by ")
            newcomer_holds.enter_context(newcomer.lock())
            theirs = lock_etag()
        # stuck has left its block: its release saw another ETag and left the newcomer's lock alone.
        assert lock_etag() == theirs
        assert "no longer ours" in caplog.text
        with pytest.raises(OctError, match="another oct command is running"), store(bucket).lock():
            pytest.fail("the newcomer's lock was removed")
    assert code(lambda: raw().head_object(Bucket=bucket, Key="team/state.json.lock")) == "404"
    assert rescuer.break_lock() is None


def test_unreadable_lock_still_names_when(bucket: str) -> None:
    store(bucket).save(record())
    raw().put_object(Bucket=bucket, Key="team/state.json.lock", Body=b"garbage")
    with (
        pytest.raises(OctError, match="an unknown holder \\(unreadable lock\\) since 20"),
        store(bucket).lock(),
    ):
        pass


def test_foreign_bucket_is_refused(bucket: str) -> None:
    """The name is taken by another account between our HeadBucket and our CreateBucket.

    (moto answers HeadBucket for any account's bucket and ignores ExpectedBucketOwner, so the race is
    how a foreign name reaches CreateBucket here; real S3 already refuses it at HeadBucket with 403.)
    """
    s = store(bucket)
    foreign = raw(account=FOREIGN_ACCOUNT)

    def taken(**_: Any) -> None:
        foreign.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})

    s.client.meta.events.register("before-call.s3.CreateBucket", taken)
    with pytest.raises(InvalidConfig, match="belongs to another AWS account") as caught:
        s.save(record())
    assert bucket in str(caught.value) and "[project.state_backend.s3]" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert foreign.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # nothing of ours landed there


def test_bucket_created_meanwhile_by_our_account_is_fine(bucket: str) -> None:
    s = store(bucket)

    def teammate(**_: Any) -> None:
        raw().create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})

    s.client.meta.events.register("before-call.s3.CreateBucket", teammate)
    with s.lock():
        s.save(record())
    assert store(bucket).load() == record()


def test_reference_example_backend_works(aws_env: str) -> None:
    config = load_config(REFERENCE_EXAMPLE, {})
    backend = config.project.state_backend
    assert backend.s3 is not None and backend.s3.bucket == "oct-state" and backend.s3.key == "state.json"
    assert config.project.user_state_backend is not None  # parsed; oct does not use it
    s: StateStore = state.open_store(REFERENCE_EXAMPLE, backend)
    assert s.where == "s3://oct-state/state.json"
    with s.lock():
        assert s.load() is None
        s.save(record())
        assert s.load() == record()
        s.remove()
    assert raw("us-west-2").get_bucket_location(Bucket="oct-state")["LocationConstraint"] == "us-west-2"
    assert raw().list_objects_v2(Bucket="oct-state").get("KeyCount", 0) == 0  # no record, no lock left


@pytest.fixture
def s3_project(aws_env: str, tmp_path: Path) -> Iterator[Path]:
    name = f"s3t{uuid.uuid4().hex[:10]}"
    path = tmp_path / "proj" / "oct.toml"
    path.parent.mkdir()
    path.write_text(PROJECT.format(name=name, bucket=unique_bucket()))
    try:
        yield path
    finally:
        try:
            api.destroy(path, timeout=30, approve=True)
        finally:
            kill_leftovers(path.parent)


def test_commands_use_the_s3_lock_and_unlock_breaks_it(s3_project: Path) -> None:
    backend = load_config(s3_project, {}).project.state_backend
    held_by_a_dead_command = state.open_store(s3_project, backend)
    assert isinstance(held_by_a_dead_command, S3Store)
    held_by_a_dead_command._acquire()  # taken and never released, as by a command killed with -9

    with pytest.raises(OctError, match="another oct command is running") as caught:
        api.deploy(s3_project, timeout=30)
    assert f"oct unlock -c {s3_project}" in str(caught.value)
    assert not (s3_project.parent / ".oct").exists()  # refused before starting anything

    runner = CliRunner()
    result = runner.invoke(app, ["unlock", "-c", str(s3_project)])
    assert result.exit_code == 0, result.output
    assert "removed lock s3://" in result.stdout and "held by " in result.stdout
    again = runner.invoke(app, ["unlock", "-c", str(s3_project)])
    assert again.exit_code == 0 and "no lock is held" in again.stdout

    with pytest.raises(Unreachable, match="no state at s3://"):
        api.status(s3_project)


@pytest.mark.e2e
def test_deploy_and_destroy_with_s3_state(s3_project: Path) -> None:
    backend = load_config(s3_project, {}).project.state_backend
    result = api.deploy(s3_project, timeout=60)
    assert [s.state for s in result.services] == ["running"]
    saved = state.open_store(s3_project, backend).load()
    assert saved is not None and saved.cluster == result.cluster and saved.nodes
    assert not list(s3_project.parent.glob("state.json*"))  # nothing local but the nodes' own .oct/
    assert api.status(s3_project).cluster == result.cluster

    api.destroy(s3_project, timeout=30, approve=True)
    assert state.open_store(s3_project, backend).load() is None
    assert s3_project.parent.joinpath(".oct").exists() is False
