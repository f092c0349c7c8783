"""What one node's ingress serves: each public port, the HTTPS sites, and the instances behind them.

Pure data, compared as a whole: the node rewrites its proxy's configuration only when the routes
it computes from the replicated state differ from the ones the proxy serves.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["http", "tcp"]

#: What may be written into the proxy's configuration from the state: host names, and the
#: base64url token and key authorization of an ACME challenge (RFC 8555 §8.1, §8.3).
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
_ANSWER = re.compile(r"[A-Za-z0-9_-]{16,128}\.[A-Za-z0-9_-]{16,128}")
#: A mesh server name: ``<port>.<service>.<project>.mesh`` (service names may hold underscores).
_MESH_NAME = re.compile(r"[0-9]{1,5}\.[a-z0-9_][a-z0-9_.-]{0,200}\.mesh")


@dataclass(frozen=True, order=True)
class Upstream:
    """One instance the proxy may send a service's traffic to, at ``address:port``; or, when
    ``via`` is set (an instance on another node), through that node's mesh port over mutual TLS,
    asking for server name ``via`` (see :class:`Mesh`)."""

    address: str
    port: int
    via: str | None = None
    #: Used only when every other server of its route is down (a meshed service's instances on
    #: other nodes, while one runs on this node).
    backup: bool = False

    @property
    def name(self) -> str:
        """A server name HAProxy accepts, stable for the same endpoint across reloads."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.address}_{self.port}")


@dataclass(frozen=True)
class Route:
    """``port`` on the node's address carries ``service``'s traffic to ``upstreams``.

    ``http`` routes are proxied request by request (a request that cannot connect to one instance is
    sent to another); ``tcp`` routes connection by connection (Postgres, Redis, anything else).
    """

    service: str
    port: int
    mode: Mode = "http"
    upstreams: tuple[Upstream, ...] = ()
    #: The source addresses that may call (a service's ``allow``: its callers' instances on this
    #: node); None: anyone. Others are refused, logged and counted.
    allowed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "upstreams", tuple(sorted(set(self.upstreams))))
        if self.allowed is not None:
            for source in self.allowed:
                ipaddress.ip_address(source)  # (written into the configuration: addresses only)
            object.__setattr__(self, "allowed", tuple(sorted(set(self.allowed))))


@dataclass(frozen=True)
class Site:
    """``names`` are served over HTTPS by ``service``'s instances, once ``certificate`` (the chain
    and its key, PEM) exists; until then, over plain HTTP on port 80."""

    service: str
    names: tuple[str, ...]
    upstreams: tuple[Upstream, ...] = ()
    certificate: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not all(_HOST_NAME.fullmatch(name) for name in self.names):
            raise ValueError(f"not host names: {self.names}")
        object.__setattr__(self, "upstreams", tuple(sorted(set(self.upstreams))))


@dataclass(frozen=True)
class Web:
    """Ports 80 and 443 of a node whose project is served over HTTPS: ACME challenges answered on
    80, sites with a certificate redirected to 443 and served there, and ``fallback`` (the service
    whose ``external_port`` is 80, if any) for every other request on 80."""

    sites: tuple[Site, ...] = ()
    challenges: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (token, answer)
    fallback: Route | None = None

    def __post_init__(self) -> None:
        for token, answer in self.challenges:
            if not _TOKEN.fullmatch(token) or not _ANSWER.fullmatch(answer):
                raise ValueError("an ACME challenge that is not base64url")
        object.__setattr__(self, "sites", tuple(sorted(self.sites, key=lambda s: s.service)))
        object.__setattr__(self, "challenges", tuple(sorted(self.challenges)))

    @property
    def secure(self) -> tuple[Site, ...]:
        """The sites served on 443: those with a certificate."""
        return tuple(site for site in self.sites if site.certificate)


@dataclass(frozen=True)
class Inbound:
    """An instance on this node that other nodes' proxies reach through its mesh port: a TLS
    connection asking for server name ``name`` is carried to ``port`` on the node's address."""

    name: str
    port: int

    @property
    def backend(self) -> str:
        """``mesh.<service>_<port>``: the access log keeps these hops apart from the service's
        own lines (the caller's node logs the request itself)."""
        return f"mesh.{self.name.split('.')[1]}_{self.port}"


@dataclass(frozen=True)
class Mesh:
    """This node's end of the service mesh: ``port`` on its address takes mutual TLS from the
    other nodes' proxies (their certificates chain to the cluster CA ``ca``) and carries each
    connection to the local instance its server name asks for (``inbound``). ``names`` are the
    services this node serves, which its certificate (``credentials``: certificate and key, PEM)
    carries; the same certificate is presented to other nodes' mesh ports."""

    port: int
    names: tuple[str, ...] = ()
    inbound: tuple[Inbound, ...] = ()
    credentials: str = field(default="", repr=False)
    ca: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not all(_MESH_NAME.fullmatch(i.name) for i in self.inbound):
            raise ValueError("a mesh server name that is not a host name")
        object.__setattr__(self, "names", tuple(sorted(set(self.names))))
        object.__setattr__(self, "inbound", tuple(sorted(set(self.inbound), key=lambda i: i.name)))


@dataclass(frozen=True)
class IngressRoutes:
    """Everything one node's proxy serves, on ``address``: ``routes`` on their ports, and
    ``web`` on 80 and 443 when the project is served over HTTPS."""

    address: str
    routes: tuple[Route, ...] = field(default=())
    web: Web | None = None
    #: Further addresses of the node every route is also served on (a local node's address for
    #: containers: ``octctl.addresses.container_address``).
    also: tuple[str, ...] = ()
    mesh: Mesh | None = None

    def __post_init__(self) -> None:
        ports = [route.port for route in self.routes] + ([80, 443] if self.web is not None else [])
        if len(ports) != len(set(ports)):
            raise ValueError(f"two routes on one port of {self.address}: {sorted(ports)}")
        object.__setattr__(self, "routes", tuple(sorted(self.routes, key=lambda r: r.port)))

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address, *self.also)

    @property
    def empty(self) -> bool:
        """Nothing to listen on: HAProxy does not run without a listener."""
        return not self.routes and self.web is None and (self.mesh is None or not self.mesh.inbound)

    @property
    def upstreams(self) -> frozenset[Upstream]:
        """Every instance this proxy may send traffic to, on any port or site."""
        found = {u for route in self.routes for u in route.upstreams}
        if self.web is not None:
            found.update(u for site in self.web.sites for u in site.upstreams)
            if self.web.fallback is not None:
                found.update(self.web.fallback.upstreams)
        return frozenset(found)
