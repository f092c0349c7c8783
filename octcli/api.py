"""The Python library behind ``oct``: the CLI is a shell over these calls (``validate``, ``plan``,
``deploy``, ``status``, ``logs``, ``destroy``, ``unlock``).

Every call takes the path of an oct.toml (or of the folder holding it), so a program drives a
project exactly the way a person at the terminal does, and finds the same cluster through the same
state file. Failures are raised as :mod:`octcli.errors` exceptions carrying the CLI's exit codes.
How ``deploy`` follows the cluster to the end of its deployment is :mod:`octcli.rollout`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import Field

import octctl.config as octconfig
from octcli import state
from octcli.acme_ca import inline_acme_ca
from octcli.client import OctClient
from octcli.errors import InvalidConfig, NotConfirmed, OctError, Unreachable
from octcli.images import build_images, dockerfile_services
from octcli.provider import ClusterProvider, DestroySummary, cluster_provider
from octcli.rollout import POLL_INTERVAL, ProgressCallback, wait_for_deployment
from octcli.state import ClusterRecord, StateStore
from octcli.top import Frame
from octcli.top import frame as top_frame
from octctl.api.models import (
    EventView,
    HistoryResponse,
    PlanResponse,
    ServiceChange,
    StatusResponse,
    VolumeView,
)
from octctl.node_settings import scrape_token

if TYPE_CHECKING:
    from octcli.plan import DeployPlan, ExistingCluster
    from octctl.config import Config

__all__ = [
    "DeployApproval",
    "DeployResult",
    "DestroyApproval",
    "DestroySummary",
    "backup",
    "config_file",
    "deploy",
    "destroy",
    "events",
    "history",
    "log_stream",
    "logs",
    "node_log",
    "plan",
    "restore",
    "rollback",
    "scrape_config",
    "status",
    "unlock",
    "validate",
    "volumes",
]

MessageCallback = Callable[[str], None]
PathLike = str | os.PathLike[str]


class DeployResult(StatusResponse):
    """What ``deploy`` returns: the cluster's status once every service runs, and what the deploy did.

    ``changes`` maps each service to ``started`` (new), ``replaced`` (its spec changed), ``removed``
    (gone from oct.toml) or ``unchanged``; services of the file first, in file order, then the
    removed ones. An unchanged redeploy reports every service ``unchanged``. Empty when the cluster
    runs an oct too old to say.
    """

    changes: dict[str, ServiceChange] = Field(default_factory=dict)


S = TypeVar("S", "DeployPlan", DestroySummary, str)
T = TypeVar("T")
#: How ``deploy`` may go ahead when it would create AWS resources (a first deploy on AWS, which
#: costs money): ``True`` yes, ``False`` no (it raises :class:`NotConfirmed`), or a function that is
#: shown the plan (with its monthly cost) and answers.
DeployApproval = bool | Callable[["DeployPlan"], bool]
#: The same for ``destroy``, whose function is shown a :class:`DestroySummary`.
DestroyApproval = bool | Callable[[DestroySummary], bool]


def _approved(approve: bool | Callable[[S], bool], summary: S, refused: str, declined: str) -> None:
    """Return if ``approve`` says yes to ``summary``; raise :class:`NotConfirmed` otherwise."""
    if callable(approve):
        if not approve(summary):
            raise NotConfirmed(declined)
    elif approve is not True:
        raise NotConfirmed(refused)


def _quiet(_message: str) -> None:
    pass


def config_file(path: PathLike = "oct.toml") -> Path:
    """The oct.toml meant by ``path``: the file itself, or ``oct.toml`` inside a folder."""
    p = Path(path).expanduser()
    return p / "oct.toml" if p.is_dir() else p


def _load(path: PathLike, *, strict: bool = True) -> tuple[Path, Config]:
    """Read oct.toml; ``strict=False`` is for status/logs/destroy/unlock, which must work on a config
    mid-edit and without the services' secrets (a ``{{ env.X }}`` unset inside project.services)."""
    file = config_file(path)
    if not file.is_file():
        raise InvalidConfig(f"{file}: no such file (pass -c PATH to point at your oct.toml)")
    try:
        config = octconfig.load_config(file, validate=strict, require_env=strict)
    except octconfig.ConfigError as e:
        problems = [str(p) for p in e.problems] or [str(e)]
        noun = "problem" if len(problems) == 1 else "problems"
        raise InvalidConfig(f"{file}: {len(problems)} {noun}", problems) from None
    except OSError as e:
        raise InvalidConfig(f"{file}: cannot read ({e.strerror})") from None
    if strict:
        config, unreadable = inline_acme_ca(file, config)
        if unreadable:
            raise InvalidConfig(f"{file}: 1 problem", [str(p) for p in unreadable])
    return file, config


def validate(path: PathLike = "oct.toml") -> Config:
    """The parsed config, or :class:`InvalidConfig` listing every problem at once."""
    return _load(path)[1]


def plan(path: PathLike = "oct.toml") -> DeployPlan:
    """What ``deploy`` would create and what it would cost; offline: no cluster, no AWS call.

    Only a local state file is read: an S3 record would need credentials, and a plan must not.
    """
    from octcli.plan import ExistingCluster

    file, config = _load(path)
    existing, record = None, None
    state_read = config.project.state_backend.local is not None
    if state_read:
        store = _store(file, config)
        record = store.load()
        if record is not None and not record.nodes:
            record = None
        if record is not None:
            existing = ExistingCluster(
                cluster=record.cluster,
                provider=record.provider,
                nodes=len(record.nodes),
                state_file=store.where,
            )
    result = _build_plan(file, config, existing, state_read=state_read)
    if record is not None:
        try:
            result.diff = _ask_plan(file, config, record)
        except OctError as e:
            result.notes.append(f"the cluster did not answer ({e}): this is what a first deploy would create")
    return result


def plan_diff(path: PathLike = "oct.toml") -> PlanResponse | None:
    """What deploying oct.toml would change on the running cluster (what ``oct deploy`` shows
    first on a terminal); None when there is no cluster or it does not answer at once."""
    file, config = _load(path)
    record = _store(file, config).load()
    if record is None or not record.nodes:
        return None
    try:
        return _ask_plan(file, config, record, retry_for=0.0)
    except OctError:
        return None


def _ask_plan(file: Path, config: Config, record: ClusterRecord, retry_for: float = 3.0) -> PlanResponse:
    with OctClient(record.nodes, record.token, record.ca_cert, retry_for=retry_for) as client:
        return client.plan(config.model_dump(mode="json"), str(file.resolve().parent))


def _build_plan(
    file: Path, config: Config, existing: ExistingCluster | None, *, state_read: bool
) -> DeployPlan:
    # Not ``from octcli import plan``: the package's ``plan`` is this module's function.
    from octcli.plan import build

    try:
        return build(config, existing, state_read=state_read)
    except ValueError as e:  # no instance type or fleet fits (pricing.NoInstanceTypeFits)
        raise InvalidConfig(f"{file}: {e}") from None


def _store(file: Path, config: Config) -> StateStore:
    return state.open_store(file, config.project.state_backend)


def deploy(
    path: PathLike = "oct.toml",
    *,
    approve: DeployApproval = False,
    on_progress: ProgressCallback | None = None,
    on_phase: MessageCallback | None = None,
    timeout: float = 600.0,
) -> DeployResult:
    """Roll out oct.toml and wait until every service runs; returns the final status and the changes.

    Starts (or restarts) the project's cluster first when needed. ``on_progress`` is called with
    each status snapshot of this deployment; ``on_phase`` with short notes about what is happening
    before there is one (starting nodes, electing a leader).

    ``approve`` matters only when the deploy would create AWS resources, that is on AWS with no
    cluster in the state record yet: ``True`` goes ahead, a function is handed the
    :class:`~octcli.plan.DeployPlan` (resources, instances, monthly cost) and answers, and the
    default ``False`` raises :class:`NotConfirmed` before anything is built or created. The default
    refuses because a library has nobody to ask: a program that spends money on AWS says so
    explicitly, as ``terraform apply -auto-approve`` does; the library never reads stdin. Local
    deploys, and deploys to an existing cluster (finishing an interrupted genesis included), never
    consult it.
    """
    say = on_phase or _quiet
    file, config = _load(path)
    store = _store(file, config)
    provider = cluster_provider(config.project.provider_kind, file)
    asked = False
    if provider.needs_approval(store.load()):
        # Before the images are built: nobody should wait for a build to be asked.
        _approve_genesis(file, config, approve)
        asked = True
    # Before anything starts: a broken Dockerfile must leave the cluster as it was.
    built = [s.name for s in dockerfile_services(config)]
    config = build_images(config, file.resolve().parent, on_phase=say)
    with store.lock():
        save = store.save
        found = store.load()
        if provider.needs_approval(found) and not asked:  # removed since we looked
            _approve_genesis(file, config, approve)
        record = provider.ensure(config, found, on_phase=say, save=save)
        config = provider.ship_images(config, built, record, say)
        save(record)
        with OctClient(record.nodes, record.token, record.ca_cert) as client:
            say(f"submitting the deployment to cluster {record.cluster}")
            accepted = client.deploy(
                config.model_dump(mode="json"),
                source_dir=str(file.resolve().parent),
                public_zone=provider.public_zone(config, record),
            )
            say(
                f"deployment {accepted.deployment} accepted"
                + ("" if accepted.changed else " (nothing changed)")
            )
            final = wait_for_deployment(
                client, accepted.deployment, provider, record, save, on_progress, timeout
            )
        provider.after_deploy(config, record, final, say, save)
        return DeployResult.model_validate({**final.model_dump(), "changes": accepted.changes})


def _approve_genesis(file: Path, config: Config, approve: DeployApproval) -> None:
    """Ask ``approve`` before the first deploy on AWS creates anything (it costs money)."""
    summary = _build_plan(file, config, None, state_read=True)
    cost = f" (about ${summary.monthly_usd:,.2f} a month)" if summary.monthly_usd is not None else ""
    _approved(
        approve,
        summary,
        refused=f"refusing to create AWS resources for {config.project.name}{cost} without confirmation: "
        "run `oct plan` to see them, then `oct deploy --yes` (library: approve=True)",
        declined=f"deploy cancelled: nothing was created for {config.project.name}",
    )


def _existing_record(path: PathLike) -> tuple[ClusterRecord, ClusterProvider]:
    file, config = _load(path, strict=False)
    store = _store(file, config)
    record = cluster_provider(config.project.provider_kind, file).recover(config, store.load())
    if record is None:
        raise Unreachable(
            f"project {config.project.name} has no cluster yet (no state at {store.where}); run `oct deploy`"
        )
    return record, cluster_provider(record.provider, file)


def volumes(path: PathLike = "oct.toml") -> list[VolumeView]:
    """The project's volumes: the cluster's account (which node holds each, whether its service
    runs there) joined with where the provider keeps the data; with no cluster (after ``oct
    destroy``), the volumes it kept."""
    file, config = _load(path, strict=False)
    record = _store(file, config).load()
    provider = cluster_provider(record.provider if record is not None else config.project.provider_kind, file)
    kept = provider.volumes(config, record)
    if record is None or not record.nodes:
        return kept
    wheres = {v.name: v.where for v in kept}
    found = status(path).volumes
    known = {v.name for v in found}
    merged = [v.model_copy(update={"where": v.where or wheres.get(v.name)}) for v in found]
    return sorted([*merged, *(v for v in kept if v.name not in known)], key=lambda v: v.name)


def backup(path: PathLike = "oct.toml", service: str = "", out: PathLike | None = None) -> Path:
    """Back up a service's volumes while it runs: the node that runs it packs them into a gzipped
    tarball, written to ``out`` (default ``backups/<project>-<service>-<UTC time>.tar.gz`` beside
    oct.toml). Returns where. A copy of files being written is not a consistent database
    snapshot: see docs/oct-toml.md, Backups."""
    file, config = _load(path, strict=False)
    if out is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = file.parent / "backups" / f"{config.project.name}-{service}-{stamp}.tar.gz"
    else:
        target = Path(out).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    _on_cluster(path, lambda client: client.backup(service, target))
    return target


@dataclass(frozen=True)
class SnapshotBackup:
    """A backup kept by the provider (EBS snapshots on AWS): ``oct restore SERVICE NAME`` takes it."""

    name: str
    snapshots: dict[str, str]  # volume -> snapshot id


def snapshot_backup(path: PathLike = "oct.toml", service: str = "") -> SnapshotBackup | None:
    """Back up a service's volumes as the provider's snapshots (EBS on AWS: each volume as it is
    at this moment, crash-consistent), named ``<service>-<UTC time>``; None when the provider
    has no snapshots (then :func:`backup` writes a tarball)."""
    file, config = _load(path, strict=False)
    record, provider = _existing_record(path)
    if service not in {s.name for s in config.project.services}:
        raise OctError(f"no service {service!r} in {file}")
    name = f"{service}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    taken = provider.snapshot_backup(config, record, service, name)
    return None if taken is None else SnapshotBackup(name, taken)


#: What ``restore`` asks before it replaces a service's data; a function is shown this text.
RestoreApproval = bool | Callable[[str], bool]


def restore(
    path: PathLike = "oct.toml",
    service: str = "",
    archive: PathLike = "",
    *,
    approve: RestoreApproval = False,
) -> list[str]:
    """Replace a service's volumes' content with a backup's: the service is stopped meanwhile and
    started again afterwards. Asks first, like ``destroy`` (``approve``); returns the volumes
    restored. A backup that does not fit the service (another volume, something unsafe) changes
    nothing."""
    source = Path(archive).expanduser()
    record, provider = _existing_record(path)  # (no cluster: said before the question)
    snapshots = (
        None
        if source.is_file()
        else provider.backup_snapshots(_load(path, strict=False)[1], record, str(archive))
    )
    summary = f"restore {service} from {archive}: its volumes' data is replaced, and it stops meanwhile"
    _approved(
        approve,
        summary,
        refused=f"refusing to {summary} without confirmation: run `oct restore --yes` "
        "(library: approve=True)",
        declined=f"restore cancelled: {service} was not touched",
    )
    if snapshots is not None:
        found = snapshots
        restored: list[str] = _on_cluster(path, lambda client: client.restore_snapshots(service, found))
    else:
        restored = _on_cluster(path, lambda client: client.restore(service, source))
    return restored


def scrape_config(path: PathLike = "oct.toml") -> dict[str, Any]:
    """A Prometheus ``scrape_configs`` entry for the cluster's nodes: their API addresses, the
    read-only scrape token (it opens ``/v1/metrics`` and nothing else) and the cluster CA inline."""
    record, _ = _existing_record(path)
    token = scrape_token(record.token)
    return {
        "job_name": f"oct-{record.project}",
        "scheme": "https",
        "metrics_path": "/v1/metrics",
        "authorization": {"type": "Bearer", "credentials": token},
        "tls_config": {"ca": record.ca_cert},
        "static_configs": [{"targets": list(record.nodes), "labels": {"cluster": record.cluster}}],
    }


#: How often ``events(follow=True)`` asks for new entries.
EVENTS_POLL = 1.0


def events(path: PathLike = "oct.toml", last: int = 50, *, follow: bool = False) -> Iterator[EventView]:
    """The cluster's event and audit trail: its ``last`` entries, oldest first, then (``follow``)
    each new one as it is noted, until the caller stops iterating."""
    record, _ = _existing_record(path)
    with OctClient(record.nodes, record.token, record.ca_cert, retry_for=5.0) as client:
        found = client.events()
        yield from found.events[-last:] if last > 0 else []
        seen = found.last
        while follow:
            time.sleep(EVENTS_POLL)
            newer = client.events(after=seen)
            yield from newer.events
            seen = max(seen, newer.last)


def top(path: PathLike = "oct.toml", interval: float = 2.0, frames: int | None = None) -> Iterator[Frame]:
    """``oct top``'s frames: status and usage every ``interval`` seconds, CPU rates from the
    reading before (the first frame has none), ``frames`` of them or until the caller stops."""
    record, _ = _existing_record(path)
    with OctClient(record.nodes, record.token, record.ca_cert, retry_for=5.0) as client:
        before = None
        shown = 0
        while frames is None or shown < frames:
            usage = client.usage()
            yield top_frame(client.status(), usage, before)
            before, shown = usage, shown + 1
            if frames is None or shown < frames:
                time.sleep(interval)


def ui_link(path: PathLike = "oct.toml") -> tuple[str, str]:
    """A dashboard login link (one use, for a minute), and the cluster CA (PEM) its node's
    certificate chains to: a browser warns about it unless the CA is imported."""
    record, _ = _existing_record(path)
    with OctClient(record.nodes, record.token, record.ca_cert, retry_for=5.0) as client:
        return client.ui_link(), record.ca_cert or ""


def history(path: PathLike = "oct.toml") -> HistoryResponse:
    """The cluster's last deployments (at most 20), newest first, with what each did per service."""
    record, _ = _existing_record(path)
    with OctClient(record.nodes, record.token, record.ca_cert, retry_for=5.0) as client:
        return client.history()


def rollback(
    path: PathLike = "oct.toml",
    deployment: str | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    timeout: float = 600.0,
) -> DeployResult:
    """Deploy a recorded deployment's project again (default: the last that succeeded before the
    current one) and wait, as :func:`deploy` does. oct.toml only finds the cluster: what is deployed
    is the recorded project, so the file may already hold the change being undone."""
    file, config = _load(path, strict=False)
    store = _store(file, config)
    record, provider = _existing_record(path)
    with store.lock(), OctClient(record.nodes, record.token, record.ca_cert, retry_for=5.0) as client:
        accepted = client.rollback(deployment)
        final = wait_for_deployment(
            client, accepted.deployment, provider, record, store.save, on_progress, timeout
        )
    return DeployResult.model_validate({**final.model_dump(), "changes": accepted.changes})


def logs(
    path: PathLike = "oct.toml", service: str = "", tail: int = 50, *, access: bool = False
) -> list[str]:
    """The last ``tail`` lines a service wrote, fetched by the cluster from the node that runs it;
    with ``access``, the last requests the ingress served it, from every node, each line starting
    with the node that served it."""
    record, _ = _existing_record(path)
    with OctClient(record.nodes, record.token, record.ca_cert, retry_for=5.0) as client:
        return client.logs(service, tail, access=access)


def log_stream(
    path: PathLike = "oct.toml",
    service: str = "",
    tail: int = 50,
    *,
    since: float | None = None,
    follow: bool = False,
) -> Iterator[dict[str, str]]:
    """Every instance's lines, each ``{"instance", "node", "text"}``: the last ``tail`` of each
    (written after ``since``, a Unix time, for docker services), then, with ``follow``, every new
    line until the caller stops iterating, across restarts, moves and rollouts."""
    record, _ = _existing_record(path)
    with OctClient(record.nodes, record.token, record.ca_cert, retry_for=5.0) as client:
        yield from client.log_stream(service, tail, since, follow)


def node_log(
    path: PathLike = "oct.toml", node: str = "", tail: int = 50, *, follow: bool = False
) -> Iterator[dict[str, str]]:
    """A node's own log (``{"node", "text"}`` each line): its last ``tail`` lines and, with
    ``follow``, every new one until the caller stops iterating."""
    record, _ = _existing_record(path)
    with OctClient(record.nodes, record.token, record.ca_cert, retry_for=5.0) as client:
        yield from client.node_log(node, tail, follow)


def status(path: PathLike = "oct.toml") -> StatusResponse:
    """The cluster's view of the project, from whichever node answers first."""
    return _on_cluster(path, OctClient.status)


def _on_cluster(path: PathLike, call: Callable[[OctClient], T]) -> T:
    """``call`` through the nodes the state records, else through those the provider finds (an
    AWS cluster whose recorded nodes were replaced). Only when no node answered at all, so
    nothing was done, is it tried again elsewhere."""
    record, provider = _existing_record(path)
    with OctClient(record.nodes, record.token, record.ca_cert, retry_for=5.0) as client:
        try:
            return call(client)
        except Unreachable as e:
            elsewhere = provider.addresses(record)
            if elsewhere is None:
                raise provider.unreachable(e) from None
    with OctClient(elsewhere, record.token, record.ca_cert, retry_for=5.0) as found:
        return call(found)


def destroy(
    path: PathLike = "oct.toml",
    timeout: float = 300.0,
    *,
    approve: DestroyApproval = False,
    on_phase: MessageCallback | None = None,
    on_warning: MessageCallback | None = None,
    volumes: bool = False,
) -> list[VolumeView]:
    """Remove the project's services and its cluster; safe to repeat, and works after a crash.
    Returns the volumes kept: they stay unless ``volumes`` (``oct destroy --volumes``), and a
    cluster made again later finds its data in them.

    The cluster is asked to stop its services first, but the local teardown that follows does not
    depend on that: it kills whatever is left from the files on disk, so a dead or wedged cluster
    still ends up fully removed. Locally the project's address claims and state lock file go too.

    ``approve`` is asked once the state is read and before anything is touched: ``True`` goes
    ahead, a function is handed the :class:`DestroySummary` and answers, and the default ``False``
    raises :class:`NotConfirmed`: nothing is removed without a say-so, and the library never reads
    stdin. A project with nothing to remove (no state, no local nodes) needs no approval.
    """
    say = on_phase or _quiet
    warn = on_warning or _quiet
    file, config = _load(path, strict=False)
    store = _store(file, config)
    record = store.load()
    # The record says where the cluster is; without one, oct.toml says where it would be.
    provider = cluster_provider(record.provider if record is not None else config.project.provider_kind, file)
    if provider.absent(config, record, on_phase=say):
        if volumes:
            provider.remove_volumes(config, record, on_phase=say)
        return [] if volumes else provider.volumes(config, record)
    with store.lock():
        record = provider.recover(config, store.load())
        summary = provider.summary(config, store, record)
        named = provider.volumes_summary(config, record)
        if volumes:
            summary.removes.extend(f"{line} and its data" for line in named)
        else:
            summary.keeps.extend(named)
        _approve_destroy(approve, summary)
        if record is not None and record.nodes:
            _destroy_through_cluster(record, timeout, say, warn)
        provider.teardown(config, record, on_phase=say, save=store.save)
        if volumes:
            provider.remove_volumes(config, record, on_phase=say)
        store.remove()
    return [] if volumes else provider.volumes(config, record)


def _approve_destroy(approve: DestroyApproval, summary: DestroySummary) -> None:
    what = f"{summary.project}" + (f" (cluster {summary.cluster})" if summary.cluster else "")
    _approved(
        approve,
        summary,
        refused=f"refusing to destroy {what} without confirmation: run `oct destroy --yes` "
        "(library: approve=True)",
        declined=f"destroy cancelled: nothing of {what} was removed",
    )


def unlock(path: PathLike = "oct.toml") -> str | None:
    """Remove the lock an oct command that died left behind; returns what was removed, None if none.

    For the S3 backend, whose lock outlives its holder; a local lock already ended with its process.
    """
    file, config = _load(path, strict=False)
    return _store(file, config).break_lock()


def _destroy_through_cluster(
    record: ClusterRecord, timeout: float, say: MessageCallback, warn: MessageCallback
) -> None:
    """Let the cluster stop its services cleanly; any failure here is left to the local teardown."""
    if not _any_node_answers(record):
        say("no node answers; cleaning up from the files on disk")
        return
    try:
        with OctClient(record.nodes, record.token, record.ca_cert, retry_for=10.0) as client:
            say(f"asking cluster {record.cluster} to stop its services")
            accepted = client.destroy()
            deadline = time.monotonic() + timeout
            while True:
                current = client.status().deployment
                if current is not None and current.id == accepted.deployment and current.state == "destroyed":
                    return
                if time.monotonic() >= deadline:
                    warn(
                        f"the cluster did not finish destroying within {timeout:.0f} s; "
                        "removing everything locally"
                    )
                    return
                time.sleep(POLL_INTERVAL)
    except OctError as e:
        warn(f"the cluster could not destroy its services ({e}); removing everything locally")


def _any_node_answers(record: ClusterRecord) -> bool:
    """A node of *this* cluster that answers; health would not do, anyone's node answers that."""
    with OctClient(record.nodes, record.token, record.ca_cert, timeout=2.0, retry_for=0) as client:
        for node in record.nodes:
            with contextlib.suppress(OctError):
                client.status(node)
                return True
    return False
