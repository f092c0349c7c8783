"""The CLI's record of the cluster a project runs on, and the lock around changing it.

``open_store`` picks the backend from ``[project.state_backend]``: a local file or an S3 object.
The path-based functions (``load``, ``save``, ``remove``, ``state_lock``, ``state_path``) are the
local backend's, kept for callers that work with a file directly.

``[project.user_state_backend]`` is accepted by the config but not used: the Rust original never
read it either, and oct keeps everything about running services in the cluster's own Raft state.
"""

from __future__ import annotations

from pathlib import Path

from octcli.errors import InvalidConfig
from octcli.state.base import StateStore
from octcli.state.local import LocalStore, load, remove, save, state_lock, state_path
from octcli.state.record import ClusterRecord

__all__ = [
    "ClusterRecord",
    "LocalStore",
    "StateStore",
    "load",
    "open_store",
    "remove",
    "save",
    "state_lock",
    "state_path",
]


def open_store(config_path: Path, backend: object) -> StateStore:
    """The store for a project whose oct.toml is ``config_path`` and ``project.state_backend`` is ``backend``.

    The S3 module (and boto3, slow to import) is loaded only for projects that use it.
    """
    s3 = getattr(backend, "s3", None)
    if s3 is not None:
        from octcli.state.s3 import S3Store

        return S3Store(s3, config_path)
    if getattr(backend, "local", None) is None:
        raise InvalidConfig(
            "oct.toml has no state backend: add [project.state_backend.local] with a path, "
            "or [project.state_backend.s3] with region, bucket and key"
        )
    return LocalStore(state_path(config_path, backend))
