"""The process runtime's folder and its records: what the next oct-ctl needs to find a child again.

Per instance the folder holds ``<project>-<service>.json`` (the record) and ``<project>-<service>.log``
(see :mod:`~octctl.runtime.process.logs`). A record is written at each start and state change and
read back when a new oct-ctl opens the folder (to stop what its predecessor left running), and by
the local provider's cleanup of a dead node (``providers/local/leftovers.py`` reads ``pid`` and
``start_time``). Its keys are the docker runtime's labels plus the child's identity, so both
runtimes' instances are found the same way; env *values* stay out of it (they may be secrets).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from octctl.names import check_instance, check_name
from octctl.runtime.base import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    InstanceSpec,
    InstanceState,
)

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".json"


def record(
    spec: InstanceSpec,
    *,
    node: str,
    pid: int | None,
    start_time: int | None,
    state: InstanceState,
    error: str | None,
    restarts: int,
) -> dict[str, Any]:
    """The record of one instance; ``node`` is the runtime's, used when the spec names none."""
    spec_data = spec.model_dump(exclude={"env"})
    spec_data["env_keys"] = sorted(spec.env)
    return {
        LABEL_MANAGED: "true",
        LABEL_PROJECT: spec.project,
        LABEL_SERVICE: spec.service,
        LABEL_DEPLOYMENT: spec.deployment,
        LABEL_SPEC_HASH: spec.spec_hash,
        LABEL_NODE: spec.node or node,
        "pid": pid,
        "start_time": start_time,
        "state": state,
        "error": error,
        "restarts": restarts,
        "spec": spec_data,
    }


def _write_private(path: Path, payload: dict[str, Any]) -> None:
    """Atomic and owner-only: a half-written record must not confuse the next start."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


class StateDir:
    """The folder (0700: the daemon's, never the services') holding every instance's record and log."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)

    def stem(self, project: str, service: str) -> str:
        """``<project>-<service>``: the names are checked, so the files stay inside the folder."""
        return f"{check_name('project', project)}-{check_instance(service)}"

    def log_path(self, project: str, service: str) -> Path:
        return self.path / f"{self.stem(project, service)}.log"

    def record_path(self, project: str, service: str) -> Path:
        return self.path / f"{self.stem(project, service)}{RECORD_SUFFIX}"

    def save(self, payload: dict[str, Any]) -> None:
        """Write a :func:`record`; a failure is logged, not raised."""
        project, service = payload[LABEL_PROJECT], payload[LABEL_SERVICE]
        try:
            _write_private(self.record_path(project, service), payload)
        except OSError as exc:  # a full disk must not take the supervised child down with it
            log.warning("%s/%s: cannot write its record: %s", project, service, exc)

    def forget(self, project: str, service: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.record_path(project, service).unlink()

    def load(self) -> list[tuple[InstanceSpec, dict[str, Any]]]:
        """Every readable record with its spec; an unreadable one is set aside as ``.corrupt``."""
        loaded: list[tuple[InstanceSpec, dict[str, Any]]] = []
        for path in sorted(self.path.glob(f"*{RECORD_SUFFIX}")):
            try:
                data = json.loads(path.read_text())
                spec_data = dict(data["spec"])
                spec_data.pop("env_keys", None)
                spec = InstanceSpec.model_validate(spec_data)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable record %s: %s", path.name, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".corrupt"))
                continue
            loaded.append((spec, data))
        return loaded
