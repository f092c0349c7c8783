"""A process service's volumes: one folder each, owned by the service's user, named in its env.

The folders live in the node's volumes folder (``NodeSettings.volumes_dir``): outside the daemon's
private data folder, which a service may not enter, and outside anything ``oct destroy`` removes
unless told to (``--volumes``). The parent is searchable but not listable by others (0711), each
volume folder is its user's alone (0700), so one project's services cannot read another's data
by guessing a name they cannot list.
"""

from __future__ import annotations

import os
from pathlib import Path

from octctl.names import check_name, volume_env
from octctl.runtime.base import InstanceSpec, RuntimeFailure
from octctl.runtime.process.isolation import ServiceUser, may_enter


def volume_folder(root: Path, project: str, volume: str) -> Path:
    return root / f"{check_name('project', project)}-{check_name('volume', volume)}"


def prepare_volumes(spec: InstanceSpec, root: Path | None, user: ServiceUser | None) -> InstanceSpec:
    """Make the spec's volume folders (kept if they exist) and name them in its env.

    Raises :class:`RuntimeFailure` with the reason when a folder cannot be made or reached.
    """
    if not spec.volumes:
        return spec
    if root is None:
        raise RuntimeFailure("this node has no volumes folder (volumes_dir) for process volumes")
    env = dict(spec.env)
    try:
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o711)
        for mount in spec.volumes:
            folder = volume_folder(root, spec.project, mount.name)
            folder.mkdir(mode=0o700, exist_ok=True)
            if user is not None:
                os.chown(folder, user.uid, user.gid)
            env[volume_env(mount.name)] = str(folder)
    except OSError as exc:
        raise RuntimeFailure(f"cannot make the volume folders in {root}: {exc.strerror or exc}") from exc
    if user is not None and not may_enter(folder, user):  # (and every folder above it)
        raise RuntimeFailure(
            f"the volumes folder {root} is not reachable by the service user '{user.name}' "
            f"(uid {user.uid}): make every folder above it searchable by that user"
        )
    return spec.model_copy(update={"env": env})
