"""The cluster's bridge network on this engine, through which containers reach each other by name.

Created on the first container that needs it and remembered, so later starts skip the look-up.
Apart from the containers because its one hard part is a race between nodes, not a container's life.
"""

from __future__ import annotations

import fcntl
import tempfile
from pathlib import Path

from octctl.runtime.base import LABEL_CLUSTER, LABEL_MANAGED, LABEL_PROJECT
from octctl.runtime.docker.engine import Engine


class ClusterNetworks:
    """The networks this runtime has seen exist; checked once per daemon."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._known: set[str] = set()

    def ensure(self, network: str, cluster: str, project: str) -> None:
        """Create the cluster's network once.

        The nodes of a local cluster share one engine, and this engine version lets two racing
        creates make two networks of the same name (then neither can be used by name); a file lock
        on the machine serialises them. On real nodes each engine is the node's own.
        """
        from docker.errors import APIError, NotFound

        if network in self._known:
            return
        engine = self._engine.client()
        lock_path = Path(tempfile.gettempdir()) / f"{network}.lock"
        with open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                engine.networks.get(network)
                self._known.add(network)
                return
            except NotFound:
                pass
            try:
                engine.networks.create(
                    network,
                    driver="bridge",
                    check_duplicate=True,
                    labels={LABEL_MANAGED: "true", LABEL_CLUSTER: cluster, LABEL_PROJECT: project},
                )
            except APIError as exc:
                if exc.status_code != 409:  # 409: it appeared meanwhile
                    raise
            self._known.add(network)
