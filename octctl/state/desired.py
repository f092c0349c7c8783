"""The desired project as the typed model, parsed once per state version.

The state keeps the project as the JSON the deploy command carried (readable across versions of
oct, see :mod:`octctl.state.model`); every reader (the leader's specs, ``/v1/status``, the DNS
zone, logs) wants the model, with its one rule per fact (``Service.host_port``,
``Service.public_port``). Read views are snapshots shared until the next change, so the parse is
remembered against the very dict it came from: a new state version is parsed once, a view of the
same version not again.
"""

from __future__ import annotations

import threading
from typing import Any

from octctl.config import Config
from octctl.state.model import ClusterState

__all__ = ["desired_project"]

_lock = threading.Lock()
#: (the project dict parsed, its model); the reference keeps the dict alive, so identity is sound.
_last: tuple[dict[str, Any] | None, Config | None] = (None, None)


def desired_project(state: ClusterState) -> Config | None:
    """The deployed project of ``state`` as a :class:`Config`, or None when nothing is deployed."""
    global _last
    project = state["project"]
    if not project:
        return None
    with _lock:
        seen, config = _last
        if seen is project or (seen is not None and seen == project):
            return config
    parsed = Config.model_validate(project)
    with _lock:
        _last = (project, parsed)
    return parsed
