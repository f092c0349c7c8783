"""Certificates for the project's HTTPS sites, ordered by the leader over ACME and kept in Raft.

One certificate per site (a service's names), so adding a service orders one certificate and
leaves the others alone. The leader orders it once for the whole cluster; every node serves it
from its replica. The challenges' answers go through Raft too, so whichever node the CA's request
reaches (DNS names every node) answers it. The account is kept there as well: a new leader reuses
it rather than registering again.

An order waits on the CA for seconds, so it runs in a task of its own, one order at a time (the
first one may have to register the account), never inside a leader pass. A failed order is tried
again after :data:`RETRY_FIRST`, doubling up to :data:`RETRY_MAX`: a CA limits failed
validations, and a misconfigured domain would otherwise hammer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from octctl.config import Config
from octctl.config.models import AcmeSettings
from octctl.ingress.acme_orders import AcmeEndpoint, AcmeError, Challenge, Issued, Order, new_key_pem
from octctl.leader.ports import ClusterLog
from octctl.sites import sites
from octctl.state.model import ClusterState, acme_of, command

__all__ = ["RENEW_BEFORE", "RETRY_FIRST", "RETRY_MAX", "Certifier"]

log = logging.getLogger(__name__)

#: A certificate is renewed when it has less than this left (Let's Encrypt's are valid for 90
#: days and it advises renewing at 60; a test CA's short-lived ones renew a third of the way in).
RENEW_BEFORE = 30 * 24 * 3600.0
#: Waits before the next order of a site whose order failed: the first, and the longest.
RETRY_FIRST = 30.0
RETRY_MAX = 3600.0
#: How long to wait for every node's proxy to answer a new challenge before asking the CA to check.
SERVED_TIMEOUT = 20.0


def due(record: dict[str, Any] | None, names: tuple[str, ...], now: float) -> bool:
    """Whether a site needs a new certificate: none yet, for other names, or in the last third of
    its life (at most :data:`RENEW_BEFORE` before its end)."""
    if record is None or tuple(record["names"]) != names:
        return True
    not_before, not_after = float(record["not_before"]), float(record["not_after"])
    return not_after - now < min(RENEW_BEFORE, (not_after - not_before) / 3)


@dataclass
class Certifier:
    cluster: ClusterLog
    orders: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: service -> (monotonic time of the next try, the wait after the next failure)
    backoff: dict[str, tuple[float, float]] = field(default_factory=dict)
    _one_at_a_time: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def keep(self, view: ClusterState, config: Config | None) -> None:
        """Start an order for each site that needs a certificate; drop those of sites gone."""
        wanted = {site.service: site.names for site in sites(config)}
        certificates = acme_of(view)["certificates"]
        for service in sorted(set(certificates) - set(wanted)):
            await self.cluster.execute(command("certificate", service=service, certificate=None))
        settings = config.project.https if config is not None else None
        if settings is None:
            return
        now, clock = time.time(), time.monotonic()
        for service, names in wanted.items():
            running = self.orders.get(service)
            if running is not None and not running.done():
                continue
            if (
                not due(certificates.get(service), names, now)
                or self.backoff.get(service, (0.0, 0.0))[0] > clock
            ):
                continue
            self.orders[service] = asyncio.create_task(self._order(service, names, settings))

    def close(self) -> None:
        """The term ended: orders stop (the next leader starts its own, from the state)."""
        for task in self.orders.values():
            task.cancel()

    async def _order(self, service: str, names: tuple[str, ...], settings: AcmeSettings) -> None:
        async with self._one_at_a_time:
            try:
                issued = await self._issue(names, settings)
            except AcmeError as e:
                wait = self.backoff.get(service, (0.0, RETRY_FIRST))[1]
                self.backoff[service] = (time.monotonic() + wait, min(wait * 2, RETRY_MAX))
                log.warning("https: %s (next try in %.0fs)", e, wait)
                return
            except Exception:  # a bug must not end the leader's ability to order; logged whole
                log.exception("https: ordering a certificate for %s failed", ", ".join(names))
                self.backoff[service] = (time.monotonic() + RETRY_FIRST, RETRY_FIRST * 2)
                return
        record = {
            "names": list(issued.names),
            "fullchain": issued.fullchain,
            "key": issued.key,
            "not_before": issued.not_before,
            "not_after": issued.not_after,
        }
        await self.cluster.execute(command("certificate", service=service, certificate=record))
        self.backoff.pop(service, None)
        log.info(
            "https: certificate for %s issued, valid until %s", ", ".join(names), time.ctime(issued.not_after)
        )

    async def _issue(self, names: tuple[str, ...], settings: AcmeSettings) -> Issued:
        account = acme_of(self.cluster.view())["account"]
        key = account["key"] if account else new_key_pem()
        endpoint = AcmeEndpoint(settings.directory, settings.email, settings.ca_pem)
        with Order(endpoint, key, account["uri"] if account else None, list(names)) as order:
            challenges = await asyncio.to_thread(order.begin)
            if order.account_uri and (account is None or account["uri"] != order.account_uri):
                await self.cluster.execute(command("acme_account", key=key, uri=order.account_uri))
            tokens = {c.token: c.validation for c in challenges}
            await self.cluster.execute(command("acme_challenges", add=tokens, remove=[]))
            try:
                await self._served(challenges, names[0])
                return await asyncio.to_thread(order.finish)
            finally:
                await self.cluster.execute(command("acme_challenges", add={}, remove=sorted(tokens)))

    async def _served(self, challenges: list[Challenge], host: str) -> None:
        """Wait until every ready node's proxy answers each challenge (the CA may ask any of
        them), or :data:`SERVED_TIMEOUT`: then the CA checks anyway and says what it saw."""
        nodes = [n["address"] for n in self.cluster.view()["nodes"].values() if n["status"] == "ready"]
        deadline = time.monotonic() + SERVED_TIMEOUT
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            waiting = {(address, c) for address in nodes for c in challenges}
            while waiting and time.monotonic() < deadline:
                for address, challenge in sorted(waiting, key=lambda w: (w[0], w[1].token)):
                    url = f"http://{address}/.well-known/acme-challenge/{challenge.token}"
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with session.get(url, headers={"Host": host}) as response:
                            if (
                                response.status == 200
                                and (await response.text()).strip() == challenge.validation
                            ):
                                waiting.discard((address, challenge))
                if waiting:
                    await asyncio.sleep(0.2)
        if waiting:
            log.warning(
                "https: %d node(s) do not answer the challenge yet; asking the CA anyway", len(waiting)
            )
