"""The deployment's life as the leader sees it: progress, failure, and the end of a destroy."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from octctl.config import Config
from octctl.instances import instances_of, service_of, serving
from octctl.leader.ports import ClusterLog, Observed
from octctl.names import new_id
from octctl.runtime.base import InstanceSpec
from octctl.state.history import rollback_target
from octctl.state.model import ClusterState, NodeRecord, command, history_of, rollback_command, volumes_of
from octctl.volumes import waiting_reason

__all__ = ["CRASH_LOOP_RESTARTS", "Deployments", "fail_deployment"]

log = logging.getLogger(__name__)

#: An instance that keeps crashing this often makes the deployment fail (it keeps being restarted).
CRASH_LOOP_RESTARTS = 3


def _crash(name: str, instance: Mapping[str, Any]) -> str | None:
    """Why ``instance`` fails its deployment, or None while it may still come up."""
    if instance["state"] == "failed" or (
        instance["state"] in ("restarting", "exited") and instance.get("restarts", 0) >= CRASH_LOOP_RESTARTS
    ):
        return str(instance.get("error") or f"{name} keeps exiting (exit code {instance.get('exit_code')})")
    return None


async def fail_deployment(
    cluster: ClusterLog, view: ClusterState, service: str | None, error: str, log_tail: list[str]
) -> bool:
    """Mark the deployment under way failed: ``service`` is the one to blame, or None when the
    cluster itself could not do it (no node could be started). False (nothing written) once the
    deployment has finished, so a failure that persists does not count as news every pass."""
    deployment = view["deployment"]
    if deployment is None or deployment["state"] not in ("pending", "in_progress"):
        return False
    fields = {
        "state": "failed",
        "finished_at": time.time(),
        "failed_service": service,
        "error": error,
        "log_tail": log_tail[-20:],
        "message": f"{service} failed" if service else error,
    }
    await cluster.execute(command("deployment_update", deployment=deployment["id"], fields=fields))
    return True


def _is_rollback(view: ClusterState, deployment: str) -> bool:
    entry = next((e for e in history_of(view) if e["id"] == deployment), None)
    return entry is not None and entry.get("rollback_of") is not None


@dataclass
class Deployments:
    cluster: ClusterLog
    this_node: str
    #: Takes a node out of the cluster and hands its machine back (the fleet's job).
    retire: Callable[[NodeRecord], Awaitable[None]]
    #: (node, instance, spec hash) -> when this leader first saw it run the new spec unhealthy
    #: (a new leader starts counting again: a deadline can only come later, never sooner).
    unready_since: dict[tuple[str, str, str], float] = field(default_factory=dict)

    async def update(
        self,
        view: ClusterState,
        config: Config | None,
        specs: Mapping[str, InstanceSpec],
        observed: Observed,
        surge: Set[str] = frozenset(),
    ) -> None:
        """Fail the deployment on an instance of the new spec that crashes or misses its health
        deadline (surge instances too), or mark it succeeded once every instance but the ``surge``
        (a start-first update's extras: they leave afterwards) serves the new spec."""
        deployment = view["deployment"]
        if deployment is None:
            return
        state = deployment["state"]
        if state == "destroying":
            await self._finish_destroy(view, observed)
            return
        if state not in ("pending", "in_progress") or config is None:
            return
        names = [name for name, _ in instances_of(config)]
        running = 0
        for name in names:
            spec = specs.get(name)
            instance = observed.get(spec.node, {}).get(name) if spec else None
            if spec is None or instance is None or instance.get("spec_hash") != spec.spec_hash:
                continue
            error = _crash(name, instance) or self._late(name, spec, instance, config)
            if error is not None:
                await self.fail(view, service_of(name), error, instance.get("log_tail") or [], config)
                return
            running += serving(instance) and name not in surge
        names = [name for name in names if name not in surge]
        noun = "services" if len(names) == len(config.project.services) else "instances"
        waiting = [
            reason
            for service in config.project.services
            if (
                reason := waiting_reason(
                    service, volumes_of(view), view["nodes"], view["placements"], view["provisioning"]
                )
            )
        ]
        fields: dict[str, Any] = {"message": "; ".join([f"{running}/{len(names)} {noun} running", *waiting])}
        if running == len(names):
            fields.update(state="succeeded", finished_at=time.time())
        elif state == "pending":
            fields["state"] = "in_progress"
        if fields.get("state") or fields["message"] != deployment["message"]:
            await self.cluster.execute(
                command("deployment_update", deployment=deployment["id"], fields=fields, at=time.time())
            )

    def _late(self, name: str, spec: InstanceSpec, instance: Mapping[str, Any], config: Config) -> str | None:
        """Why an instance of the new spec fails its deployment by taking too long to pass its
        health check (``update.healthy_deadline``), or None."""
        key = (spec.node, name, spec.spec_hash)
        if serving(instance):
            self.unready_since.pop(key, None)
            return None
        deadline = config.service(service_of(name)).update.healthy_deadline
        since = self.unready_since.setdefault(key, time.time())
        if time.time() - since < deadline:
            return None
        said = instance.get("health_output") or instance.get("state")
        return f"{name} did not pass its health check within {deadline:g} s (last: {said})"

    async def fail(
        self,
        view: ClusterState,
        service: str | None,
        error: str,
        log_tail: list[str],
        config: Config | None = None,
    ) -> None:
        if not await fail_deployment(self.cluster, view, service, error, log_tail):
            return
        deployment = view["deployment"]
        if config is None or service is None or deployment is None:
            return
        if not config.service(service).update.auto_rollback or _is_rollback(view, deployment["id"]):
            return  # (a failed rollback is not rolled back again: that could go round forever)
        target = rollback_target(history_of(view), deployment["id"], None)
        if target is None:
            log.warning("deployment %s failed and nothing earlier succeeded: no rollback", deployment["id"])
            return
        log.warning("deployment %s failed (%s): rolling back to %s", deployment["id"], service, target["id"])
        await self.cluster.execute(rollback_command(target, new_id("d"), time.time()))

    async def _finish_destroy(self, view: ClusterState, observed: Observed) -> None:
        """Once no instance is left on any reachable node, hand every other node back to the provider.

        An unreachable node's last-seen instances cannot be removed through its agent; retiring the
        node (the provider stops the machine and what ran on it) is what removes them, so they must
        not hold up the destroy until the node is replaced.
        """
        deployment = view["deployment"]
        assert deployment is not None
        reachable = {n for n, record in view["nodes"].items() if record["status"] != "unreachable"}
        left = [seen for node, seen in view["instances"].items() if node in reachable]
        if any(observed.values()) or any(left):
            return
        # Unreachable nodes leave Raft first: each removal must still find a majority of the voters
        # that remain, and a dead voter counted among them could leave none (see the fleet's shrink).
        others = [n for n in view["nodes"].values() if n["id"] != self.this_node]
        for node in sorted(others, key=lambda n: n["status"] != "unreachable"):
            await self.retire(node)
        await self.cluster.execute(
            command(
                "deployment_update",
                deployment=deployment["id"],
                fields={"state": "destroyed", "finished_at": time.time(), "message": "all services removed"},
            )
        )
