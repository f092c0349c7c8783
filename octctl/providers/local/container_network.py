"""Bringing a local node's container address (``octctl.addresses.container_address``) up on the
loopback interface, and down again, with iproute2. Only root may; elsewhere the node runs without
it (containers then cannot reach ``{{ services.X.ip }}``; processes and the CLI are unaffected)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from octctl.addresses import container_address

__all__ = ["bring_up", "take_down"]

log = logging.getLogger(__name__)


def _present(address: str) -> bool:
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    return f" {address}/" in shown.stdout


def bring_up(local_address: str) -> str | None:
    """The node's container address once it is on ``lo``, or None when it cannot be (not root,
    no ``ip``): said once in the node's log."""
    address = container_address(local_address)
    if shutil.which("ip") is None or os.geteuid() != 0:
        log.warning("containers cannot reach this node's ingress at %s: it needs root and iproute2", address)
        return None
    if not _present(address):
        added = subprocess.run(
            ["ip", "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True, text=True
        )
        if added.returncode != 0 and not _present(address):
            log.warning("could not add %s to lo: %s", address, added.stderr.strip())
            return None
    return address


def take_down(local_address: str) -> None:
    """Remove the node's container address (nothing when it is not there, or when not root)."""
    address = container_address(local_address)
    if shutil.which("ip") is not None and os.geteuid() == 0 and _present(address):
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True)
