"""Following a deployment the cluster accepted until it succeeds, fails or runs out of time.

The CLI polls whichever node answers, so it must tell its own deployment from the previous one a
lagging replica still shows, give an unchanged redeploy a moment for restarted instances to come
back, and keep the state record's node list in step with the cluster as it goes, so that the CLI
can still find the cluster if the node it first talked to is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from octcli.client import OctClient
from octcli.errors import DeployFailed, OctError, Timeout, Unreachable
from octcli.provider import ClusterProvider
from octcli.state import ClusterRecord
from octctl.api.models import DeploymentView, StatusResponse

__all__ = ["POLL_INTERVAL", "SETTLE_GRACE", "failure", "track_nodes", "wait_for_deployment"]

ProgressCallback = Callable[[StatusResponse], None]
POLL_INTERVAL = 0.3
#: How long a succeeded deployment may wait for its services to show running again.
SETTLE_GRACE = 30.0
#: How long a failed deployment waits for the leader's automatic rollback to show (one Raft
#: commit after the failure, normally milliseconds).
ROLLBACK_GRACE = 2.0


def wait_for_deployment(
    client: OctClient,
    deployment: str,
    provider: ClusterProvider,
    record: ClusterRecord,
    save: Callable[[ClusterRecord], None],
    on_progress: ProgressCallback | None,
    timeout: float,
) -> StatusResponse:
    """The cluster's status once ``deployment`` succeeded; :class:`DeployFailed` with the failing
    service's reason and log lines, or :class:`Timeout` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    seen: DeploymentView | None = None
    ours: StatusResponse | None = None
    succeeded_at: float | None = None
    while True:
        try:
            snapshot = client.status()
        except Unreachable:
            # The node the CLI knew is gone (a VM replaced since): ask the provider where the others are.
            found = provider.addresses(record) if time.monotonic() < deadline else None
            if found is None:
                raise
            record = record.model_copy(update={"nodes": found})
            save(record)
            client.learn(record.nodes)
            continue
        if provider.tracks_nodes:
            record = track_nodes(record, snapshot, save)
        client.learn(record.nodes)
        current = snapshot.deployment
        # A lagging replica may still show the previous deployment; only ours counts.
        if current is not None and current.id == deployment:
            seen, ours = current, snapshot
            if on_progress is not None:
                on_progress(snapshot)
            if current.state == "succeeded":
                # An unchanged redeploy gets the old, already succeeded deployment back, even when
                # the nodes were just restarted and their instances are not running yet: give the
                # cluster a moment to bring them back before reporting.
                settled = all(svc.state == "running" for svc in snapshot.services)
                if succeeded_at is None:
                    succeeded_at = time.monotonic()
                if settled or time.monotonic() - succeeded_at >= SETTLE_GRACE:
                    return snapshot
            if current.state == "failed":
                _raise_failure(client, deployment, current)
        elif current is not None:
            _check_ended_elsewhere(client, deployment, current.id)
        if time.monotonic() >= deadline:
            if succeeded_at is not None and ours is not None:
                return ours
            where = f"it is {seen.state}" if seen is not None else "the cluster has not started it yet"
            raise Timeout(
                f"deployment {deployment} did not finish within {timeout:.0f} s ({where}); "
                "it may still finish: see `oct status`"
            )
        time.sleep(POLL_INTERVAL)


def track_nodes(
    record: ClusterRecord, snapshot: StatusResponse, save: Callable[[ClusterRecord], None]
) -> ClusterRecord:
    """Keep the record's node list in step with the cluster so the CLI can still find it if genesis
    dies (for providers whose node addresses the CLI reaches: ``ClusterProvider.tracks_nodes``)."""
    live = [f"{n.address}:{n.api_port}" for n in snapshot.nodes]
    if not live:
        return record
    nodes = [n for n in record.nodes if n in live] + [n for n in live if n not in record.nodes]
    if nodes == record.nodes:
        return record
    record = record.model_copy(update={"nodes": nodes})
    save(record)
    return record


def _raise_failure(client: OctClient, deployment: str, failed: DeploymentView) -> None:
    """Raise :class:`DeployFailed` for ``deployment``, saying so when the leader rolls it back.

    The leader commits the failure and the rollback's deployment one after the other, so a poll
    can fall between them: for up to :data:`ROLLBACK_GRACE` the CLI looks for the rollback before
    it reports the failure alone (a deployment that is not rolled back waits that long)."""
    until = time.monotonic() + ROLLBACK_GRACE
    while time.monotonic() < until:
        time.sleep(POLL_INTERVAL)
        try:
            now = client.status().deployment
        except OctError:
            continue
        if now is not None and now.id != deployment:
            _check_ended_elsewhere(client, deployment, now.id)  # (raises, with the rollback if any)
    raise DeployFailed(failure(failed))


def _check_ended_elsewhere(client: OctClient, deployment: str, current: str) -> None:
    """Another deployment is the cluster's current one: ours was rolled back after it failed, or a
    later deploy superseded it (or this replica lags, and ours is still under way: keep waiting)."""
    try:
        entries = client.history().deployments
    except OctError:  # a node too old to keep a history
        return
    ours = next((e for e in entries if e.id == deployment), None)
    if ours is None or ours.state in ("pending", "in_progress", "succeeded"):
        return
    if ours.state == "superseded":
        raise OctError(f"deployment {deployment} was superseded by deployment {current} (another deploy)")
    then = next((e for e in entries if e.id == current), None)
    view = DeploymentView(
        id=ours.id,
        state="failed",
        failed_service=ours.failed_service,
        error=ours.error,
        log_tail=ours.log_tail,
    )
    message = failure(view)
    if then is not None and then.rollback_of:
        again = f"deployment {current} deploys {then.rollback_of} again ({then.state})"
        message += f"\nrolled back automatically: {again}"
    raise DeployFailed(message)


def failure(deployment: DeploymentView) -> str:
    reason = deployment.error or deployment.message or "no reason given"
    if deployment.failed_service is None:
        return f"deployment {deployment.id} failed: {reason}"
    lines = [f"service {deployment.failed_service} failed: {reason}"]
    if deployment.log_tail:
        lines.append(f"last log lines of {deployment.failed_service}:")
        lines.extend(f"  {line}" for line in deployment.log_tail)
    return "\n".join(lines)
