"""The wheel of the oct that is running, so every AWS node runs exactly the deployer's code.

Nodes never install oct by name from a public index: a name can be taken, and a version published
later by someone else would run as root on every node. Instead the CLI makes a wheel of its own
installed distribution (an editable checkout and a normal install alike: the packages' files as
they are imported, plus the distribution's metadata), uploads it to the cluster's private bucket,
and the user data pins it by sha256. Its dependencies travel inside it, hash-pinned, as
``octctl/_deploy/requirements.lock``; ``deploy/install-oct.sh`` checks both before installing.

The wheel is deterministic (sorted entries, a fixed timestamp, fixed modes): the same code gives
the same hash on every machine, so a node can be checked against a wheel built anywhere. That is
why it is written with :mod:`zipfile` and a RECORD made here (PEP 376/427) rather than with the
``wheel`` package, whose ``WheelFile`` stamps RECORD with the current time.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from octctl.distribution import DIST_NAME

__all__ = ["LOCK_PATH", "PACKAGES", "Artifact", "build_artifact"]

#: The import packages the distribution holds.
PACKAGES = ("octctl", "octcli")
#: Where the hash-pinned lock of the dependencies sits inside the wheel.
LOCK_PATH = "octctl/_deploy/requirements.lock"

_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say; what reproducible wheels use
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Artifact:
    """One built wheel: where it is, what version it carries, and its sha256 (hex)."""

    path: Path
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name


def _wheel_name(dist: str) -> str:
    """The escaped project name used in wheel and dist-info file names (PEP 491)."""
    return re.sub(r"[-_.]+", "_", dist).lower()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _package_files(package: str) -> dict[str, Path]:
    """Archive name -> file for one import package, following the ``_deploy`` symlink to deploy/."""
    module = importlib.import_module(package)
    if module.__file__ is None:
        raise RuntimeError(f"package {package} has no files on disk: cannot ship it to nodes")
    root = Path(module.__file__).resolve().parent
    found: dict[str, Path] = {}
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in names:
            if name.endswith(_SKIP_SUFFIXES) or name.startswith("."):
                continue
            path = Path(folder) / name
            found[f"{package}/{path.relative_to(root).as_posix()}"] = path
    return found


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_TIMESTAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100000 | mode) << 16
    return info


def build_artifact(out_dir: Path) -> Artifact:
    """Write the wheel of the installed oct into ``out_dir`` and return it.

    Raises ``RuntimeError`` when oct is not installed as a distribution (run from a bare source
    tree), or when the lock of its dependencies is missing: a node could not install it then.
    """
    try:
        dist = importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"oct is not installed as the {DIST_NAME} distribution (pip install it, or `make venv` in a "
            "checkout): nodes install the wheel made from it"
        ) from None
    version = dist.version
    stem = f"{_wheel_name(DIST_NAME)}-{version}"
    dist_info = f"{stem}.dist-info"

    contents: dict[str, tuple[bytes, int]] = {}
    for package in PACKAGES:
        for name, path in _package_files(package).items():
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            contents[name] = (path.read_bytes(), mode)
    if LOCK_PATH not in contents:
        raise RuntimeError(
            f"{LOCK_PATH} is missing from the installed oct: nodes could not pin its dependencies"
        )
    metadata = dist.read_text("METADATA") or dist.read_text("PKG-INFO")  # egg-info has the latter
    if metadata is None:
        raise RuntimeError(f"the installed {DIST_NAME} has no metadata: reinstall it (`make venv`)")
    contents[f"{dist_info}/METADATA"] = (metadata.encode(), 0o644)
    entry_points = dist.read_text("entry_points.txt")
    if entry_points is not None:
        contents[f"{dist_info}/entry_points.txt"] = (entry_points.encode(), 0o644)
    wheel_meta = "Wheel-Version: 1.0\nGenerator: octcli.artifact\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    contents[f"{dist_info}/WHEEL"] = (wheel_meta.encode(), 0o644)

    record_name = f"{dist_info}/RECORD"
    record = "".join(
        f"{name},{_record_hash(data)},{len(data)}\n" for name, (data, _) in sorted(contents.items())
    )
    record += f"{record_name},,\n"

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}-py3-none-any.whl"
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as wheel:
        for name, (data, mode) in sorted(contents.items()):
            wheel.writestr(_entry(name, mode), data)
        wheel.writestr(_entry(record_name, 0o644), record.encode())
    os.replace(tmp, path)
    return Artifact(path=path, version=version, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
