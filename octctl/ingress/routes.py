"""What one node's ingress serves: each public port, and the instances behind it.

Pure data, compared as a whole: the node rewrites its proxy's configuration only when the routes
it computes from the replicated state differ from the ones the proxy serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["http", "tcp"]


@dataclass(frozen=True, order=True)
class Upstream:
    """One instance the ingress may send a service's traffic to."""

    address: str
    port: int

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "upstreams", tuple(sorted(set(self.upstreams))))


@dataclass(frozen=True)
class IngressRoutes:
    """Everything one node's proxy serves, on ``address``."""

    address: str
    routes: tuple[Route, ...] = field(default=())

    def __post_init__(self) -> None:
        ports = [route.port for route in self.routes]
        if len(ports) != len(set(ports)):
            raise ValueError(f"two routes on one port of {self.address}: {sorted(ports)}")
        object.__setattr__(self, "routes", tuple(sorted(self.routes, key=lambda r: r.port)))
