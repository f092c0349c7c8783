"""The volumes a local project keeps on this machine: Docker volumes and process volume folders.

They outlive the cluster on purpose (``oct destroy`` keeps them, as ``docker compose down``
does), so they are found from labels and folder names alone, cluster or no cluster, and removed
only when asked (``oct destroy --volumes``).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from octctl.names import check_name
from octctl.providers.local.provider import volumes_dir
from octctl.runtime.docker.volumes import describe, project_volumes

if TYPE_CHECKING:
    import docker

Phase = Callable[[str], None]

__all__ = ["KeptVolume", "kept_volumes", "remove_volumes"]


@dataclass(frozen=True)
class KeptVolume:
    name: str
    service: str
    node: str
    where: str


@contextlib.contextmanager
def _engine() -> Iterator[docker.DockerClient | None]:
    """This machine's Docker engine, or None: a project of process services needs none."""
    try:
        import docker

        engine = docker.from_env(timeout=10)
        engine.ping()
    except Exception:
        yield None
        return
    try:
        yield engine
    finally:
        engine.close()


def _folders(root: Path, project: str) -> list[tuple[str, Path]]:
    prefix = f"{check_name('project', project)}-"
    if not root.is_dir():
        return []
    return sorted((p.name.removeprefix(prefix), p) for p in root.iterdir() if p.name.startswith(prefix))


def kept_volumes(root: Path, project: str) -> list[KeptVolume]:
    """``root`` is the project's ``.oct`` folder (whose sibling holds the process volumes)."""
    found = [
        KeptVolume(name=name, service="", node="", where=f"folder {path}")
        for name, path in _folders(volumes_dir(root), project)
    ]
    with _engine() as engine:
        if engine is not None:
            for volume in project_volumes(engine, project):
                described = describe(volume)
                found.append(KeptVolume(**described))
    return sorted(found, key=lambda v: (v.name, v.where))


def remove_volumes(root: Path, project: str, on_phase: Phase | None = None) -> list[str]:
    """Remove the project's volumes and their data; returns what was removed."""
    removed = []
    for _, path in _folders(volumes_dir(root), project):
        shutil.rmtree(path)
        removed.append(f"folder {path}")
    with contextlib.suppress(OSError):
        volumes_dir(root).rmdir()  # only if nothing else is in it
    with _engine() as engine:
        if engine is not None:
            for volume in project_volumes(engine, project):
                volume.remove(force=True)
                removed.append(f"docker volume {volume.name}")
    if removed and on_phase is not None:
        on_phase(f"removed {len(removed)} volume(s): {', '.join(removed)}")
    return removed
