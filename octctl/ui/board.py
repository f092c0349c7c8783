"""What one dashboard page shows: the cluster as one replica saw it at one moment
(``octctl/server/ui_routes.py`` reads it from the state)."""

from __future__ import annotations

from dataclasses import dataclass

from octctl.api.models import EventView, HistoryView, StatusResponse
from octctl.fleet_cost import FleetCost

__all__ = ["DEPLOYMENTS", "EVENTS", "Board"]

#: Deployments and events a page lists (the API has them all).
DEPLOYMENTS = 8
EVENTS = 40


@dataclass(frozen=True)
class Board:
    status: StatusResponse
    deployments: list[HistoryView]
    events: list[EventView]
    cost: FleetCost
    at: float

    @property
    def restarts(self) -> int:
        return sum(i.restarts for s in self.status.services for i in s.instances)
