"""A real ``moto_server`` per test session: the AWS endpoint every AWS test talks to over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from octcli.providers.aws.addresses import ADDRESS_BOOK_ENV
from tests.aws.hypervisor import Hypervisor
from tests.wait import WaitTimeout, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto_server that lives for the session."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = Path(sys.executable).with_name("moto_server")
    env = {**os.environ, "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env
        )

    def listening() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"moto_server exited:\n{log.read_text()}", pytrace=False)
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True

    try:
        wait_until(
            listening,
            timeout=30,
            interval=0.1,
            ignore=(OSError,),
            message=lambda: f"moto_server to listen on {port}:\n{log.read_text()}",
        )
    except WaitTimeout:
        proc.kill()
        raise
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (and anything it starts) at moto with throwaway credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint


@pytest.fixture
def cloud(aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hypervisor]:
    """Instances moto says run, booted as real nodes from their user data (``hypervisor.py``)."""
    project = f"aws{os.getpid() % 10000}x{time.monotonic_ns() % 10000}"
    env = {**os.environ}
    with Hypervisor(project, tmp_path / "vms", env) as hypervisor:
        monkeypatch.setenv(ADDRESS_BOOK_ENV, str(hypervisor.book))
        yield hypervisor
