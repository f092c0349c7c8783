"""What the world sees: nodes' public addresses and services' public DNS names, via the provider.

Both are provider API calls (EC2, Route53) made from the leader, so both are rate-limited here:
a public address is asked for once per node per leader term (an instance has it from launch; a
local node never has one) and again :data:`PUBLISH_RETRY` after a failure; names are published
when they change, re-checked every :data:`PUBLISH_REFRESH` (which repairs records changed behind
the leader's back), and tried again :data:`PUBLISH_RETRY` after a failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from octctl.config import Config
from octctl.leader.ports import ClusterLog
from octctl.providers.base import Provider
from octctl.specs import public_names, serving_nodes
from octctl.state.model import ClusterState, command

__all__ = ["PUBLISH_REFRESH", "PUBLISH_RETRY", "Publisher"]

log = logging.getLogger(__name__)

#: Public DNS names are published as soon as a service is placed somewhere else, and besides
#: re-checked this often (one read).
PUBLISH_REFRESH = 60.0
#: The next try after a publish failed (provider API unreachable, throttled) or a node had no
#: public address yet.
PUBLISH_RETRY = 10.0


@dataclass
class Publisher:
    cluster: ClusterLog
    provider: Provider | None
    #: What this leader last published, and when to check it again.
    published: tuple[Any, ...] | None = None
    due: float = 0.0
    #: Nodes whose public address was asked for: when it may be asked again (never after an
    #: answer, ``PUBLISH_RETRY`` after a failure).
    asked: dict[str, float] = field(default_factory=dict)

    async def learn_public_addresses(self, view: ClusterState) -> bool:
        """Record the provider's public address of nodes that have none recorded yet, before specs
        are rendered, so ``{{ services.X.public_ip }}`` is the address the world reaches (AWS)
        and a service is not started with the private one first. True when one was recorded."""
        if self.provider is None:
            return False
        now = time.monotonic()
        missing = [
            n["id"]
            for n in view["nodes"].values()
            if "public_address" not in n and self.asked.get(n["id"], -PUBLISH_RETRY) <= now
        ]
        if not missing:
            return False
        for node in missing:
            self.asked[node] = float("inf")
        try:
            found = await asyncio.to_thread(self.provider.public_addresses, missing)
        except Exception as e:  # the provider's API: public_ip stays the node's address meanwhile
            log.warning("public addresses of %s unknown (next try in %.0fs): %s", missing, PUBLISH_RETRY, e)
            for node in missing:
                self.asked[node] = now + PUBLISH_RETRY
            return False
        learned = False
        for node, address in sorted(found.items()):
            if node in missing:
                await self.cluster.execute(command("node_public_address", node=node, address=address))
                learned = True
        return learned

    async def publish(self, view: ClusterState, config: Config | None, placements: dict[str, str]) -> None:
        """Keep ``<service>.<domain>`` pointing at the nodes that serve the service (every ready
        node: the ingress serves it on each), through the provider's public DNS, when the
        deployment names a zone (AWS). A node that dies or joins, or a host-bound service the
        cluster moves, is republished at once, not at the next ``oct deploy``."""
        zone = view.get("public_zone")
        if self.provider is None or not zone:
            return
        ready = [n["id"] for n in view["nodes"].values() if n["status"] == "ready"]
        names = public_names(config, serving_nodes(config, placements, ready))
        wanted = (zone, view["cluster"], sorted(names.items()))
        now = time.monotonic()
        if wanted == self.published and now < self.due:
            return
        self.published, self.due = wanted, now + PUBLISH_RETRY
        try:
            complete = await asyncio.to_thread(self.provider.publish, zone, names, view["cluster"])
        except Exception as e:  # the provider's API: logged, tried again after PUBLISH_RETRY
            log.warning("public DNS names not published (next try in %.0fs): %s", PUBLISH_RETRY, e)
            return
        if complete:
            self.due = now + PUBLISH_REFRESH
