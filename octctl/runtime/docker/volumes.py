"""The project's named volumes on this engine: created labelled, mounted into containers, kept.

A container is replaced on every change of its service; its volume is not, so the data outlives
the container the way ``docker compose`` volumes do. The labels say whose a volume is, which is
how ``oct volumes`` and ``oct destroy --volumes`` find them (:func:`project_volumes`), and the
name is the project's and the volume's only, so a cluster made again after ``oct destroy`` finds
its data where it left it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from octctl.names import check_name
from octctl.runtime.base import (
    LABEL_CLUSTER,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_VOLUME,
    InstanceSpec,
)
from octctl.runtime.process.volumes import volume_folder

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container
    from docker.models.volumes import Volume


def volume_name(project: str, volume: str) -> str:
    return f"oct-{check_name('project', project)}-{check_name('volume', volume)}"


def ensure_volumes(
    client: docker.DockerClient, spec: InstanceSpec, node: str, disks_dir: Path | None = None
) -> dict[str, dict[str, str]]:
    """Create the spec's volumes that do not exist yet; the ``volumes`` argument of
    ``containers.run`` that mounts them. An existing volume is used as it is (the engine answers a
    create of an existing name with that volume, its labels unchanged).

    A volume on a network disk (``mount.disk``) is the engine's bind of the folder the node
    mounted the disk at (``disks_dir``, see ``Agent``), so the data is on the disk; one left
    binding another folder (a machine whose disk moved) is made again, the data being elsewhere."""
    mounts: dict[str, dict[str, str]] = {}
    for mount in spec.volumes:
        if mount.path is None:
            continue
        name = volume_name(spec.project, mount.name)
        labels = {
            LABEL_MANAGED: "true",
            LABEL_PROJECT: spec.project,
            LABEL_SERVICE: spec.service,
            LABEL_VOLUME: mount.name,
            LABEL_CLUSTER: spec.cluster,
            LABEL_NODE: spec.node or node,
        }
        if mount.disk is not None and disks_dir is not None:
            _bind_volume(client, name, labels, volume_folder(disks_dir, spec.project, mount.name))
        else:
            client.volumes.create(name=name, driver="local", labels=labels)
        mounts[name] = {"bind": mount.path, "mode": "rw"}
    return mounts


def _bind_volume(client: docker.DockerClient, name: str, labels: dict[str, str], folder: Path) -> None:
    import docker.errors

    options = {"type": "none", "o": "bind", "device": str(folder)}
    try:
        existing = client.volumes.get(name)
    except docker.errors.NotFound:
        existing = None
    if existing is not None and (existing.attrs.get("Options") or {}) != options:
        existing.remove(force=True)
        existing = None
    if existing is None:
        client.volumes.create(name=name, driver="local", driver_opts=options, labels=labels)


def project_volumes(client: docker.DockerClient, project: str) -> list[Volume]:
    """Every volume oct made for ``project`` on this engine."""
    found: list[Volume] = client.volumes.list(
        filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_PROJECT}={check_name('project', project)}"]}
    )
    return sorted(found, key=lambda v: v.name or "")


def describe(volume: Volume) -> dict[str, Any]:
    labels = volume.attrs.get("Labels") or {}
    return {
        "name": labels.get(LABEL_VOLUME, volume.name),
        "service": labels.get(LABEL_SERVICE, ""),
        "node": labels.get(LABEL_NODE, ""),
        "where": f"docker volume {volume.name}",
    }


def mounted_folders(client: docker.DockerClient, container: Container, project: str) -> dict[str, Path]:
    """The host folder of each of the project's volumes mounted in ``container``, by volume name
    (the engine's own folder: only root may read it, as ``oct-ctl`` runs on a node). A volume that
    binds a network disk's folder gives that folder: the engine's own is only the disk's while the
    container runs, so a restore into it while stopped would miss the disk."""
    prefix = volume_name(project, "x")[:-1]
    found = {}
    for mount in container.attrs.get("Mounts") or []:
        name = str(mount.get("Name", ""))
        if mount.get("Type") != "volume" or not name.startswith(prefix):
            continue
        options = client.volumes.get(name).attrs.get("Options") or {}
        bound = options.get("device") if options.get("o") == "bind" else None
        found[name.removeprefix(prefix)] = Path(bound or mount["Source"])
    return found
