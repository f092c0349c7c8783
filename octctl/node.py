"""One oct-ctl node: its Raft replica, agent, membership, leader loop and DNS, and how they start and stop.

Start-up order matters for joining: a new node starts its Raft replica with the current members
as partners *before* asking the leader to add it, because the leader's membership change only
commits once the new node can acknowledge it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from pathlib import Path

import aiohttp

from octctl.addresses import DEFAULT_DNS_PORT, MESH_PORT, host_port
from octctl.agent import Agent
from octctl.api.models import JoinRequest
from octctl.dns.forwarding import docker_bridge_networks, resolv_conf_upstreams
from octctl.dns.server import DnsServer
from octctl.dns.zone import Zone, build_zone
from octctl.fencing import TermFence
from octctl.ingress.haproxy import Haproxy
from octctl.leader import Leader
from octctl.membership import Membership
from octctl.mesh import MeshIdentity
from octctl.metrics import NodeFigures, NodeMetrics, dns_counts
from octctl.node_settings import NodeSettings, Secrets
from octctl.peers import PeerClient, PeerError
from octctl.providers.base import Provider
from octctl.providers.metered import MeteredProvider
from octctl.providers.registry import build_provider
from octctl.runtime import firewall
from octctl.runtime.base import InstanceStatus, Usage
from octctl.served_routes import FollowedIngress
from octctl.state.machine import RaftNode, unsafe_no_fsync
from octctl.state.model import NodeRecord, api_address, command
from octctl.tls import NodeIdentity
from octctl.ui.login import Logins

log = logging.getLogger(__name__)

MEMBERS_FILE = "members.json"


class Node:
    def __init__(
        self, settings: NodeSettings, secrets: Secrets, data_dir: Path, log_file: Path | None = None
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        #: The dashboard's login links and session cookies (``octctl/ui/login.py``).
        self.logins = Logins(secrets.token, settings.node)
        self.data_dir = data_dir
        #: Where this daemon logs (``--log-file``); None: the journal (systemd) or stderr.
        self.log_file = log_file
        self.stopping = asyncio.Event()
        #: This node's certificate for the API (server) and its calls to other nodes (mutual TLS).
        addresses = [settings.address, *([settings.public_address] if settings.public_address else [])]
        self.identity = NodeIdentity.issue(secrets.ca_key, secrets.ca_cert, settings.node, addresses)
        #: Built on every node: a follower's pulls need the registry login too, should it lead.
        self.metrics = NodeMetrics(self._figures)
        built = build_provider(settings)
        self.provider: Provider | None = (
            MeteredProvider(built, functools.partial(self.metrics.provider_call, settings.provider.kind))
            if built is not None
            else None
        )
        login = self.provider.registry_auth if self.provider is not None else None
        volumes = Path(settings.volumes_dir) if settings.volumes_dir else None
        disks = self.provider if self.provider is not None and self.provider.network_disks else None
        self.agent = Agent(
            settings.node,
            data_dir,
            registry_login=login,
            volumes_dir=volumes,
            mount_disk=disks.mount_disk if disks else None,
            fill_from_snapshot=disks.fill_from_snapshot if disks else None,
        )
        self.fence = TermFence(data_dir)
        self._tasks: list[asyncio.Task[None]] = []
        self._restarted = False
        #: What this node runs, as last read for a scrape (``scrape``).
        self._scraped: list[InstanceStatus] = []
        self._used: list[Usage] = []
        self._ingress_stats: list[dict[str, str]] = []
        self.dns: DnsServer | None = None
        self._zone_cache: tuple[int, Zone | None] | None = None
        self.session: aiohttp.ClientSession
        self.peers: PeerClient
        self.raft: RaftNode
        self.membership: Membership
        self.leader: Leader
        self.ingress: FollowedIngress

    def _figures(self) -> NodeFigures:
        raft = getattr(self, "raft", None)  # (a scrape before the replica opened sees zeros)
        if raft is None:
            return NodeFigures(instances=self._scraped, usage=self._used, ingress=self._ingress_stats)
        return NodeFigures(
            term=raft.term(),
            commit_index=raft.commit_index(),
            applied_index=raft.applied_index(),
            is_leader=raft.is_leader(),
            dns=dns_counts(self.dns.stats if self.dns is not None else None),
            instances=self._scraped,
            usage=self._used,
            ingress=self._ingress_stats,
        )

    async def scrape(self) -> bytes:
        """The metrics, with what this node runs read now."""
        self._scraped = await self.agent.list()
        self._used = await self.agent.usage()
        ingress = getattr(self, "ingress", None)  # (made when the node starts)
        self._ingress_stats = await ingress.proxy.stats() if ingress is not None else []
        return self.metrics.render()

    def self_record(self) -> NodeRecord:
        s = self.settings
        record: NodeRecord = {
            "id": s.node,
            "address": s.address,
            "api_port": s.api_port,
            "raft_port": s.raft_port,
            "dns_port": s.dns_port,
            "cpus": s.cpus,
            "memory": s.memory,
            "status": "ready",
            "joined_at": time.time(),
            "last_seen": time.time(),
        }
        if s.instance_type:
            record["instance_type"] = s.instance_type
        return record

    async def start(self) -> None:
        if self.settings.guard_containers:
            ports = [self.settings.raft_port, self.settings.api_port, MESH_PORT]
            await asyncio.get_running_loop().run_in_executor(None, firewall.guard, ports)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, ssl=self.identity.client_context())
        )
        self.peers = PeerClient(self.secrets.token, self.session)
        try:
            partners, voter = await self._partners()
            self.raft = RaftNode(
                self.settings.raft_address,
                partners,
                self.data_dir,
                self.secrets.raft_password,
                asyncio.get_running_loop(),
                voter=voter,
                unsafe_no_fsync=unsafe_no_fsync(),
            )
        except BaseException:
            await self.session.close()  # the node never started: leave no open session behind
            raise
        self.membership = Membership(self.raft, self.secrets, self.settings.cluster)
        self.leader = Leader(
            cluster=self.raft,
            agents=self.peers,
            settings=self.settings,
            secrets=self.secrets,
            provider=self.provider,
            on_pass=self.metrics.pass_seconds.observe,
        )
        self.raft.on_commit = self.metrics.commit_seconds.observe
        self.raft.on_leader_change = self.metrics.leader_changes.inc
        also = None
        if self.provider is not None:
            also = await asyncio.to_thread(self.provider.container_address, self.settings.address)
        s, secrets = self.settings, self.secrets
        mesh = MeshIdentity(s.node, s.address, secrets.ca_key, secrets.ca_cert)
        self.ingress = FollowedIngress(
            Haproxy(self.data_dir / "ingress"), self.raft.view, self.settings.address, also, mesh
        )
        self.raft.machine.subscribe(self._on_change)
        self._spawn(self.leader.run())
        self._spawn(self.ingress.run())
        self._spawn(self._persist_members())
        self._spawn(self._register())
        self._spawn(self._follow_role())
        self._spawn(self.agent.watch_health())
        await self._start_dns()

    async def _start_dns(self) -> None:
        """DNS failing to bind (port 53 without privileges) must not take the node down with it."""
        s = self.settings
        upstreams = (
            [host_port(u, DEFAULT_DNS_PORT) for u in s.dns_upstreams]
            if s.dns_upstreams is not None
            else resolv_conf_upstreams(exclude={s.address})
        )
        # Forwarding (names outside the zone) only for this host: loopback, the node's address, and
        # its containers on Docker's bridges; anyone else gets the zone and REFUSED.
        self.dns = DnsServer(
            s.address,
            s.dns_port,
            self._zone,
            upstreams=upstreams,
            domain=s.dns_domain,
            local_networks=docker_bridge_networks,
            on_forward=self.metrics.dns_forward_seconds.observe,
            on_answer=self.metrics.dns_answer_seconds.observe,
        )
        try:
            await self.dns.start()
        except OSError as e:
            log.error(
                "DNS cannot listen on %s:%d: %s; service discovery is off on this node",
                s.address,
                s.dns_port,
                e,
            )
            self.dns = None

    def _zone(self) -> Zone | None:
        """The zone of the current state, rebuilt only when a command changed the state."""
        version = self.raft.machine.version
        if self._zone_cache is None or self._zone_cache[0] != version:
            started = time.perf_counter()
            s = self.settings
            zone = build_zone(self.raft.view(), s.dns_domain, s.dns_ttl, here=s.node)
            self.metrics.dns_zone_seconds.observe(time.perf_counter() - started)
            self._zone_cache = (version, zone)
        return self._zone_cache[1]

    def _on_change(self) -> None:
        """Runs inside a Raft tick: nudge the leader's loop so a new deploy starts without waiting a
        tick, and the ingress so a moved service is served at once."""
        self.leader.wake()
        self.ingress.changed()

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        self._tasks.append(asyncio.create_task(coro))

    async def _partners(self) -> tuple[list[str], bool]:
        """Who to talk Raft with, and whether as a voter: remembered after a restart, else asked of
        a live member (which says whether voter seats are free; the leader confirms on joining)."""
        members_file = self.data_dir / MEMBERS_FILE
        if members_file.exists():
            self._restarted = True
            remembered = json.loads(members_file.read_text())
            if isinstance(remembered, list):  # written before non-voters existed
                return list(remembered), True
            return list(remembered["members"]), bool(remembered["voter"])
        if not self.settings.join:
            return [], True
        deadline = time.monotonic() + 120
        while True:
            for address in self.settings.join:
                try:
                    answer = await self.peers.members(address)
                    return answer.members, answer.voter_slots > 0
                except PeerError as e:
                    log.info("waiting for cluster member %s: %s", address, e)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no member of the cluster answered at {self.settings.join}")
            await asyncio.sleep(1)

    async def _register(self) -> None:
        """Genesis registers itself once it leads; a new node asks the leader to add it."""
        while not self.stopping.is_set():
            if await self._join_once():
                return
            await asyncio.sleep(0.5)

    async def _join_once(self, ask: bool = False) -> bool:
        """One attempt to be known to the cluster in this node's current role; True when it is.

        ``ask``: ask the leader even if the state already names this node in its role. A promoted
        node must: the leader's promotion marks it a voter in the state before it is a Raft
        member, and only its own request makes it one (a replica reopened as a voter may already
        have replayed the promotion, and would otherwise never ask)."""
        request = JoinRequest(
            node=self.settings.node,
            voter=self.raft.voter,
            address=self.settings.address,
            api_port=self.settings.api_port,
            raft_port=self.settings.raft_port,
            dns_port=self.settings.dns_port,
            cpus=self.settings.cpus,
            memory=self.settings.memory,
            instance_type=self.settings.instance_type,
            proof=self.secrets.raft_proof(
                self.settings.cluster, self.settings.node, self.settings.address, self.settings.raft_port
            ),
        )
        if self._restarted and not self.raft.sync.isReady():
            return False  # a restarted member learns from its replica whether it is still registered
        own = self.raft.view()["nodes"].get(self.settings.node)
        if not ask and own is not None and own.get("voter", True) == self.raft.voter:
            return True
        try:
            if not self.settings.join:
                if self.raft.is_leader():
                    await self.raft.execute(command("init", cluster=self.settings.cluster))
                    await self.raft.execute(command("node_joined", node=self.self_record()))
                    log.info("genesis: cluster %s started on %s", self.settings.cluster, self.settings.node)
                    return True
                return False
            for address in self.settings.join + self._member_apis():
                try:
                    await self.peers.join(address, request)
                except PeerError as e:
                    if e.status == 403:
                        log.error("cannot join cluster %s: %s", self.settings.cluster, e)
                        await asyncio.sleep(10)  # a wrong secret will not fix itself soon
                    elif e.status == 409 and self.raft.voter:
                        log.info("%s; following as a non-voting replica", e)
                        await self.raft.reopen(voter=False)
                        return False
                    continue
                log.info(
                    "joined cluster %s through %s as a %s",
                    self.settings.cluster,
                    address,
                    "voter" if self.raft.voter else "non-voter",
                )
                return True
        except Exception as e:
            log.info("registration not done yet: %s", e)
        return False

    def _member_apis(self) -> list[str]:
        """API addresses of the known members: the join list may name a node long gone."""
        return [api_address(n) for n in self.raft.view()["nodes"].values()]

    async def _follow_role(self) -> None:
        """A non-voter the leader promoted reopens its replica as a voter and asks to be added."""
        while not self.stopping.is_set():
            await asyncio.sleep(0.5)
            own = self.raft.view()["nodes"].get(self.settings.node)
            if own is None or not own.get("voter", True) or self.raft.voter:
                continue
            log.info("promoted to voter; reopening the Raft replica")
            try:
                await self.raft.reopen(voter=True)
                while not await self._join_once(ask=True) and not self.stopping.is_set():
                    await asyncio.sleep(0.5)
            except Exception as e:
                log.warning("promotion not done yet: %s", e)

    async def _persist_members(self) -> None:
        """Remember the membership so a restarted node knows its partners without asking anyone."""
        last: dict[str, object] = {}
        path = self.data_dir / MEMBERS_FILE
        while True:
            members = self.raft.members()
            current = {"members": members, "voter": self.raft.voter}
            if current != last and (len(members) > 1 or not self.settings.join):
                path.write_text(json.dumps(current))
                last = current
            await asyncio.sleep(1)

    async def stop(self) -> None:
        if self.dns is not None:
            await self.dns.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.ingress.stop()
        if self.provider is not None and self.ingress.also is not None:
            await asyncio.to_thread(self.provider.release_container_address, self.settings.address)
        await asyncio.to_thread(self.agent.close)
        self.raft.close()
        await self.session.close()
