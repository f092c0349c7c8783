"""What oct is as an installed distribution: its name, and the wheel a node was installed from.

Nodes report the sha256 of their wheel in ``/v1/health``, so anyone can check that every node runs
exactly the code the deploying CLI shipped (``octcli.artifact`` builds it; ``deploy/install-oct.sh``
installs it with the hash checked).
"""

from __future__ import annotations

import importlib.metadata
import json
from functools import cache

__all__ = ["DIST_NAME", "installed_artifact_sha256"]

#: oct's name on package indexes ("opencloudtool" belongs to the Rust original).
DIST_NAME = "oct-cloud"


@cache
def installed_artifact_sha256() -> str | None:
    """The sha256 of the wheel this oct was installed from, as pip recorded it; None if unknown.

    pip writes ``direct_url.json`` with the archive's hash when it installs a wheel file whose hash
    it checked (``--require-hashes``), which is how ``install-oct.sh`` installs nodes. A development
    checkout or an install from an index has none.
    """
    try:
        raw = importlib.metadata.distribution(DIST_NAME).read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        info = json.loads(raw or "{}").get("archive_info") or {}
    except (ValueError, AttributeError):
        return None
    found = (info.get("hashes") or {}).get("sha256")
    if not isinstance(found, str):
        legacy = info.get("hash")
        found = (
            legacy.removeprefix("sha256=")
            if isinstance(legacy, str) and legacy.startswith("sha256=")
            else None
        )
    return found
