"""The connection to this node's Docker engine: opened on first use, its errors put in the contract's words.

The ``docker`` package is imported lazily: the daemon only loads the docker runtime when a docker
service is scheduled here, and even then a node without an engine must still start and report a
clear error instead of crashing at import time. Containers, images and networks all go through this
one connection, so how it is opened and how its failures read is decided here once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from octctl.runtime.base import RuntimeFailure

if TYPE_CHECKING:
    import docker

#: The leader may start ~30 services at once; the SDK's default pool of 10 would make the extra
#: threads open throw-away connections (and log "connection pool is full" warnings).
MAX_POOL_SIZE = 32


def explain(exc: BaseException) -> str:
    """The engine's own sentence ("port is already allocated") beats the SDK's HTTP wrapper text."""
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc).strip()


@contextlib.contextmanager
def engine_errors(doing: str) -> Iterator[None]:
    """Turn SDK/transport exceptions into the contract's user-facing ``RuntimeFailure``."""
    try:
        yield
    except RuntimeFailure:
        raise
    except Exception as exc:
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        if isinstance(exc, DockerException | RequestException):
            raise RuntimeFailure(f"{doing}: {explain(exc)}") from exc
        raise


class Engine:
    """One client per runtime, shared by its worker threads (the SDK's pool is thread-safe)."""

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()

    def client(self) -> docker.DockerClient:
        """Connect on first use, so constructing the runtime never fails on an engine-less node."""
        with self._lock:
            if self._client is None:
                try:
                    import docker
                except ImportError as exc:
                    raise RuntimeFailure("the docker Python package is not installed on this node") from exc
                try:
                    client = docker.from_env(max_pool_size=MAX_POOL_SIZE)
                    client.ping()
                except Exception as exc:  # DockerException, connection errors, bad DOCKER_HOST
                    raise RuntimeFailure(f"cannot reach the Docker engine: {exc}") from exc
                self._client = client
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
