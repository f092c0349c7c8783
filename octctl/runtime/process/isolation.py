"""Whom a process service runs as and what it sees: never the daemon's user, files or environment.

These are the process runtime's security rules, kept apart from the supervision loop so they can be
read and reviewed on their own. When oct-ctl runs as root, children run as an unprivileged user
(``oct-svc`` if it exists, else ``nobody``; see :func:`service_user`) with no supplementary groups
and umask 077 (:func:`privilege_drop`), and only their spec's env plus a minimal base
(:func:`child_env`), so they can read neither the node's data directory (0700: secrets, Raft
journal) nor the daemon's environment. Their log file is opened by the daemon and handed over as
stdout. When oct-ctl is not root it cannot switch users: children run as its own user (a warning
says so once).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from octctl.runtime.base import RuntimeFailure

log = logging.getLogger(__name__)

#: The base PATH of every child (nothing of the daemon's environment is passed on); the directory
#: of the daemon's own Python is appended, so a host whose only python3 is oct's still runs them.
MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NO_HOME = "/nonexistent"
#: Whom a root oct-ctl runs process services as: this system user (genesis.sh creates it on AWS
#: nodes), else nobody/nogroup. Looked up by name, never by a hard-coded uid.
SERVICE_USER = "oct-svc"
FALLBACK_USER = "nobody"
FALLBACK_GROUP = "nogroup"


@dataclass(frozen=True)
class ServiceUser:
    """The unprivileged account children run as."""

    name: str
    uid: int
    gid: int
    home: str


def service_user() -> ServiceUser | None:
    """Whom process services run as: None (the daemon's own user) unless oct-ctl is root.

    Raises :class:`RuntimeFailure` if oct-ctl is root and neither account exists: running services
    as root would hand them the node's secrets.
    """
    if os.geteuid() != 0:
        log.warning(
            "oct-ctl is not root (uid %d): process services run as its own user and can read this "
            "node's data directory, secrets included",
            os.geteuid(),
        )
        return None
    for name in (SERVICE_USER, FALLBACK_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        gid = entry.pw_gid
        if name == FALLBACK_USER:
            with contextlib.suppress(KeyError):
                gid = grp.getgrnam(FALLBACK_GROUP).gr_gid
        if entry.pw_uid == 0 or gid == 0:
            continue
        return ServiceUser(name=name, uid=entry.pw_uid, gid=gid, home=entry.pw_dir or NO_HOME)
    raise RuntimeFailure(
        f"oct-ctl runs as root and neither '{SERVICE_USER}' nor '{FALLBACK_USER}' exists: "
        f"create the user oct-svc (useradd --system --no-create-home --shell /usr/sbin/nologin oct-svc)"
    )


def privilege_drop(user: ServiceUser | None) -> dict[str, Any]:
    """The ``subprocess.Popen`` arguments that make a child ``user`` (none: the daemon's own user)."""
    if user is None:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": [], "umask": 0o077}


def _base_path() -> str:
    own = os.path.dirname(sys.executable)
    return MINIMAL_PATH if not own or own in MINIMAL_PATH.split(":") else f"{MINIMAL_PATH}:{own}"


def _home(user: ServiceUser | None) -> str:
    if user is not None:
        return user.home
    try:
        return pwd.getpwuid(os.getuid()).pw_dir or NO_HOME
    except KeyError:
        return NO_HOME


def child_env(spec_env: dict[str, str], user: ServiceUser | None = None) -> dict[str, str]:
    """Only the spec's env over a minimal base: the daemon's own environment is never passed on."""
    env = {"PATH": _base_path(), "HOME": _home(user), "LANG": "C.UTF-8"}
    env.update(spec_env)
    return env


def may_enter(path: Path, user: ServiceUser) -> bool:
    """Whether ``user`` may list and search ``path`` and search every folder above it.

    By mode bits (ACLs are not consulted). The parents matter although the child is placed in the
    folder before it drops root: programs open their files by absolute path (``python3 app.py``
    does), which walks from ``/``.
    """

    def allows(folder: Path, read: bool) -> bool:
        try:
            info = folder.stat()
        except OSError:
            return False
        if info.st_uid == user.uid:
            r, x = stat.S_IRUSR, stat.S_IXUSR
        elif info.st_gid == user.gid:
            r, x = stat.S_IRGRP, stat.S_IXGRP
        else:
            r, x = stat.S_IROTH, stat.S_IXOTH
        bits = (r | x) if read else x
        return info.st_mode & bits == bits

    resolved = path.resolve()
    return allows(resolved, read=True) and all(allows(parent, read=False) for parent in resolved.parents)
