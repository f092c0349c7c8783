"""Keep containers away from the node's control ports (Raft, API, the mesh's), on this host and on the others.

Why: on AWS a container's traffic leaves the node masqueraded as the node itself, so the security
group, which lets nodes reach each other's Raft and API ports, lets every container in too; and the
bridge gateway is the host, so a container reaches this node's own ports as well. Raft frames are
sealed with the Raft password, the API wants TLS plus the token and the mesh port a certificate
of the cluster CA, so a container cannot take over, but it can still knock, and guessing is not
a service's business (a container calls other services through its own node's proxy). DNS
stays open: containers resolve each other through the node.

The rules live in one chain of our own, ``OCT-CONTAINERS``, jumped to from ``INPUT`` (to this host)
and ``DOCKER-USER`` (routed to other nodes; Docker sends all forwarded traffic there first and
never flushes it) for packets that arrive from a Docker bridge (``docker0``, ``br-*``). Applying
is idempotent, so a restarting daemon re-asserts the same rules; :func:`unguard` takes them away.
IPv4 only: oct's Docker networks have no IPv6.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence

__all__ = ["BRIDGES", "CHAIN", "FirewallError", "guard", "unguard"]

log = logging.getLogger(__name__)

CHAIN = "OCT-CONTAINERS"
#: Interfaces of Docker bridges: the default one and every user-defined network.
BRIDGES = ("docker0", "br-+")
#: Where our chain is jumped to from: this host, and traffic routed through it to other nodes.
HOOKS = ("INPUT", "DOCKER-USER")


class FirewallError(Exception):
    """iptables is missing or refused a rule; the message says which."""


def _iptables(*args: str, check: bool = True) -> bool:
    binary = shutil.which("iptables")
    if binary is None:
        raise FirewallError("iptables is not installed: containers could reach the node's control ports")
    # -w: wait for the xtables lock (dockerd edits the same tables)
    proc = subprocess.run([binary, "-w", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise FirewallError(f"iptables {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.returncode == 0


def _ensure_chain(chain: str) -> None:
    if not _iptables("-n", "-L", chain, check=False):
        _iptables("-N", chain)


def guard(ports: Sequence[int]) -> None:
    """Drop TCP from Docker bridges to ``ports`` (this node's Raft and API ports), here and beyond."""
    if not ports:
        raise ValueError("no port to guard")
    _ensure_chain(CHAIN)
    _ensure_chain("DOCKER-USER")  # Docker adds its jump to it from FORWARD, and keeps what is in it
    _iptables("-F", CHAIN)
    _iptables(
        "-A", CHAIN, "-p", "tcp", "-m", "multiport", "--dports", ",".join(map(str, ports)), "-j", "DROP"
    )
    for hook in HOOKS:
        for bridge in BRIDGES:
            rule = (hook, "-i", bridge, "-j", CHAIN)
            if not _iptables("-C", *rule, check=False):
                _iptables("-I", *rule)
    log.info("containers may not reach TCP ports %s of any node", ", ".join(map(str, ports)))


def unguard() -> None:
    """Remove the jumps and the chain (tests; a node that stops being one)."""
    for hook in HOOKS:
        for bridge in BRIDGES:
            while _iptables("-D", hook, "-i", bridge, "-j", CHAIN, check=False):
                pass
    if _iptables("-n", "-L", CHAIN, check=False):
        _iptables("-F", CHAIN)
        _iptables("-X", CHAIN)
