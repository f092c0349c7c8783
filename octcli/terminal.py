"""What ``oct`` shows on a terminal: status tables, deploy progress, what a command asks to approve, the plan.

Everything is built as rich renderables from the library's results (:mod:`octcli.api`), kept apart
from the commands (:mod:`octcli.main`), which decide where each goes: results to stdout, the rest
to stderr. Names and errors are shown as plain ``Text``, never parsed as rich markup: they may
contain brackets.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from octctl.api.models import (
    EventView,
    HistoryResponse,
    PlanResponse,
    ServiceChange,
    StatusResponse,
    VolumeView,
)

if TYPE_CHECKING:
    from octcli.plan import DeployPlan, FargateComparison
    from octcli.provider import DestroySummary
    from octcli.top import Frame

__all__ = [
    "DeployView",
    "change_lines",
    "destroy_summary",
    "diff_lines",
    "nodes_table",
    "plan_lines",
    "plan_summary",
    "services_table",
    "status_summary",
    "top_view",
]


# -- what a command asks a person to approve ----------------------------------------------------


def destroy_summary(summary: DestroySummary) -> list[RenderableType]:
    where = f"{summary.provider}" + (f", {summary.region}" if summary.region else "")
    head = Text.assemble(
        "oct destroy will remove project ", (summary.project, "bold"),
        f", cluster {summary.cluster}" if summary.cluster else ", which has no state record",
        f" ({where})",
    )  # fmt: skip
    if summary.nodes:
        count = len(summary.nodes)
        head.append(f"\n{count} node{'' if count == 1 else 's'}: {', '.join(summary.nodes)}")
    kept = [
        Text("and keep (oct destroy --volumes removes them too):"),
        *(Text(f"  - {v}") for v in summary.keeps),
    ]
    return [head, *(Text(f"  - {line}") for line in summary.removes), *(kept if summary.keeps else [])]


_EVENT_STYLES = {"failed": "red", "down": "red", "unhealthy": "red", "exited": "red", "succeeded": "green"}


def event_line(event: EventView) -> Text:
    """``2026-12-05 09:41:02  deployment.succeeded  d-1a2b  d-1a2b succeeded``."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.at)) if event.at else "-" * 19
    style = _EVENT_STYLES.get(event.kind.rsplit(".", 1)[-1], "dim" if event.kind == "audit" else "")
    message = f"{event.subject}: {event.message}" if event.kind == "audit" else event.message
    return Text.assemble((when, "dim"), "  ", (event.kind, style), "  ", message)


def volumes_table(found: list[VolumeView]) -> Table:
    table = Table(title="volumes", title_justify="left", box=None, pad_edge=False)
    for column in ("name", "service", "node", "state", "size", "where"):
        table.add_column(column)
    for volume in found:
        table.add_row(
            _cell(volume.name),
            _cell(volume.service),
            _cell(volume.node),
            Text(volume.state, style={"in use": "green", "waiting": "red"}.get(volume.state, "yellow")),
            _cell(f"{volume.size_gb} GB" if volume.size_gb else None),
            _cell(volume.where),
        )
    return table


def plan_summary(plan: DeployPlan) -> list[RenderableType]:
    cost = f" for about ${plan.monthly_usd:,.2f} a month" if plan.monthly_usd is not None else ""
    return [
        *plan_lines(plan),
        Text.assemble(
            "oct deploy will create the AWS resources above for project ", (plan.project, "bold"),
            f"{cost} ({plan.region or 'default region'})",
        ),
    ]  # fmt: skip


# -- status and deploy progress -------------------------------------------------------------------

_STATE_STYLES = {
    "running": "green",
    "succeeded": "green",
    "ready": "green",
    "leader": "bold",
    "follower": "",
    "non-voter": "dim",
    "failed": "red",
    "exited": "red",
    "unreachable": "red",
    "destroyed": "dim",
}


def _state(value: str | None) -> Text:
    if value is None:
        return Text("-", style="dim")
    return Text(value, style=_STATE_STYLES.get(value, "yellow"))


def _cell(value: object) -> Text:
    """Plain text, never parsed as rich markup: names and errors may contain brackets."""
    return Text("-", style="dim") if value is None or value == "" else Text(str(value))


def _cores(millicores: int) -> str:
    return f"{millicores / 1000:g}"


def _progress_table(snapshot: StatusResponse) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("service", "node", "state", ""):
        table.add_column(column)
    for svc in sorted(snapshot.services, key=lambda s: s.name):
        table.add_row(_cell(svc.name), _cell(svc.node), _state(svc.state), Text(svc.error or "", style="red"))
    return table


def history_table(found: HistoryResponse) -> Table:
    table = Table(title="deployments", title_justify="left", box=None, pad_edge=False)
    for column in ("id", "started", "result", "changes"):
        table.add_column(column)
    for entry in found.deployments:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.started_at))
        changed = [f"{name} {change}" for name, change in entry.changes.items() if change != "unchanged"]
        note = f" (rollback to {entry.rollback_of})" if entry.rollback_of else ""
        result = _state(entry.state) + Text((" current" if entry.current else "") + note, style="dim")
        if entry.error:
            result += Text(f": {entry.failed_service or ''} {entry.error}", style="red")
        table.add_row(_cell(entry.id), started, result, ", ".join(changed) or "nothing")
    return table


def services_table(snapshot: StatusResponse) -> Table:
    table = Table(title="services", title_justify="left", box=None, pad_edge=False)
    for column in ("name", "node", "state", "reach at"):
        table.add_column(column)
    table.add_column("restarts", justify="right")
    for svc in sorted(snapshot.services, key=lambda s: s.name):
        state = _instance_state(svc.state, svc.instances[0].health if svc.instances else "none", False)
        if svc.node is None and svc.error:  # (why it has no node: e.g. its volumes' node is down)
            state += Text(f": {svc.error}", style="yellow")
        table.add_row(
            _cell(svc.name),
            _cell(svc.node),
            state,
            _cell(" ".join(svc.urls) if svc.urls else svc.endpoint),
            str(svc.restarts),
        )
        for instance in svc.instances[1:]:  # replicas: one row each, under their service
            table.add_row(
                Text(f"  {instance.name}", style="dim"),
                _cell(instance.node),
                _instance_state(instance.state, instance.health, instance.draining, instance.surge),
                _cell(f"{instance.address}:{instance.port}" if instance.address and instance.port else None),
                str(instance.restarts),
            )
    return table


def _instance_state(state: str, health: str, draining: bool, surge: bool = False) -> Text:
    """The state, and what the health check says when there is one (``running (starting)``)."""
    shown = _state(state)
    if health not in ("none", "healthy") or (health == "healthy" and state != "running"):
        shown += Text(f" ({health})", style="yellow" if health == "starting" else "red")
    if draining:
        shown += Text(" draining", style="yellow")
    if surge:
        shown += Text(" surge (start-first update)", style="cyan")
    return shown


def nodes_table(snapshot: StatusResponse) -> Table:
    """The nodes; their machine type too when they have one (aws, where a fleet may mix types)."""
    typed = any(node.instance_type for node in snapshot.nodes)
    table = Table(title="nodes", title_justify="left", box=None, pad_edge=False)
    for column in ("id", "address", *(("type",) if typed else ()), "role", "status"):
        table.add_column(column)
    table.add_column("cpus used/cap", justify="right")
    table.add_column("memory used/cap", justify="right")
    for node in sorted(snapshot.nodes, key=lambda n: n.id):
        table.add_row(
            _cell(node.id),
            _cell(f"{node.address}:{node.api_port}"),
            *((_cell(node.instance_type or "-"),) if typed else ()),
            _state(node.role),
            _state(node.status),
            f"{_cores(node.cpus_used)}/{_cores(node.cpus)}",
            f"{node.memory_used}/{node.memory} MB",
        )
    return table


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:.1f} MiB"


def _percent(cores: float | None) -> str:
    """CPU as ``top`` shows it: 100% is one core."""
    return "-" if cores is None else f"{cores * 100:.1f}%"


def top_view(frame: Frame) -> Group:
    """``oct top``: the nodes with what their instances use against what they offer, then each
    instance's CPU (100% = one core), memory, health and restarts."""
    nodes = Table(title="nodes", title_justify="left", box=None, pad_edge=False)
    for column in ("id", "role", "status"):
        nodes.add_column(column)
    for column in ("cpu", "of", "memory", "of"):
        nodes.add_column(column, justify="right")
    for n in frame.nodes:
        nodes.add_row(
            _cell(n.node),
            _state(n.role),
            _state(n.status) if n.error is None else Text(f"{n.status}: {n.error}", style="red"),
            _percent(n.cores),
            f"{_cores(n.cpus)} cores",
            _mib(n.memory_bytes),
            f"{n.memory} MB",
        )
    instances = Table(title="instances", title_justify="left", box=None, pad_edge=False)
    for column in ("instance", "node", "state"):
        instances.add_column(column)
    for column in ("cpu", "memory", "restarts"):
        instances.add_column(column, justify="right")
    for i in frame.instances:
        instances.add_row(
            _cell(i.instance),
            _cell(i.node),
            _instance_state(i.state, i.health, False),
            _percent(i.cores),
            _mib(i.memory_bytes),
            str(i.restarts),
        )
    return Group(status_summary(frame.status), Text(), nodes, Text(), instances)


def status_summary(snapshot: StatusResponse) -> Text:
    text = Text.assemble(
        ("cluster ", "dim"), snapshot.cluster, ("  project ", "dim"), snapshot.project or "-",
        ("  leader ", "dim"), snapshot.leader or "none",
    )  # fmt: skip
    deployment = snapshot.deployment
    if deployment is not None:
        text.append("  deployment ", style="dim")
        text.append(f"{deployment.id} ")
        text.append_text(_state(deployment.state))
        if deployment.message:
            text.append(f" ({deployment.message})")
    if snapshot.stale:
        text.append(f"\nanswered by {snapshot.node}, a follower: may lag behind the leader", style="yellow")
    return text


class DeployView:
    """Deploy progress: a live spinner and table on a terminal, one line per change elsewhere (CI logs)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.interactive = console.is_terminal
        self.spinner = Spinner("dots", text="reading oct.toml")
        self.snapshot: StatusResponse | None = None
        self._shown: dict[str, str] = {}
        self.display: Live | None = None

    def phase(self, message: str) -> None:
        if self.interactive:
            self.spinner.update(text=Text(message))
        else:
            self.console.print(Text(message), soft_wrap=True)

    def progress(self, snapshot: StatusResponse) -> None:
        self.snapshot = snapshot
        if self.interactive:
            if snapshot.deployment is not None:
                deployment = snapshot.deployment
                self.spinner.update(text=Text(f"deployment {deployment.id}: {deployment.state}"))
            return
        for svc in snapshot.services:
            line = f"{svc.name}: {svc.state}" + (f" on {svc.node}" if svc.node else "")
            if svc.error:
                line += f" ({svc.error})"
            if self._shown.get(svc.name) != line:
                self._shown[svc.name] = line
                self.console.print(Text(line), soft_wrap=True)

    def render(self) -> RenderableType:
        if self.snapshot is None:
            return self.spinner
        return Group(self.spinner, _progress_table(self.snapshot))

    def live(self) -> contextlib.AbstractContextManager[object]:
        if not self.interactive:
            return contextlib.nullcontext()
        self.display = Live(
            get_renderable=self.render, console=self.console, transient=True, refresh_per_second=10
        )
        return self.display


_CHANGE_STYLES: dict[ServiceChange, tuple[str, str]] = {
    "started": ("+", "green"),
    "replaced": ("~", "yellow"),
    "removed": ("-", "red"),
    "unchanged": ("=", "dim"),
}


def change_lines(changes: dict[str, ServiceChange]) -> list[Text]:
    """One line per service: what this deploy did to it."""
    width = max((len(name) for name in changes), default=0)
    lines = []
    for name, change in changes.items():
        mark, style = _CHANGE_STYLES[change]
        lines.append(Text.assemble((f"  {mark} ", style), name.ljust(width), "  ", (change, style)))
    return lines


# -- the plan --------------------------------------------------------------------------------------


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _size(cpus: int, memory: int) -> str:
    return f"{cpus / 1000:g} vCPU, {memory} MB"


_MARKS = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "replace": ("-/+", "yellow"),
    "remove": ("-", "red"),
    "unchanged": ("=", "dim"),
}


def _shown(value: object) -> str:
    return "(unset)" if value is None else str(value)


def diff_lines(diff: PlanResponse) -> list[Text]:
    """``oct plan`` against a running cluster: per service what changes and where its instances
    go (real node ids; new-N is a node to launch), the nodes, the cost before and after."""
    against = f"deployment {diff.deployment}" if diff.deployment else "nothing deployed yet"
    out = [Text(f"  against {against} on cluster {diff.cluster}", style="dim")]
    for service in diff.services:
        mark, style = _MARKS[service.change]
        if service.change == "unchanged":
            continue
        out.append(Text.assemble((f"  {mark:>3} {service.change:<8}", style), (service.name, "bold")))
        for change in service.fields:
            out.append(Text(f"        {change.field}: {_shown(change.before)} -> {_shown(change.after)}"))
        for i in service.instances:
            if i.node != i.was:
                where = (
                    f"{i.was or 'new'} -> {i.node or ('gone' if service.change == 'remove' else 'no room')}"
                )
                out.append(Text(f"        {i.name}: {where}", style="dim"))
    same = [s.name for s in diff.services if s.change == "unchanged"]
    if same:
        out.append(Text(f"    = unchanged {', '.join(same)}", style="dim"))
    nodes = f"  nodes: {diff.nodes_before} -> {diff.nodes_after}"
    launches = (
        f"launch {n}" + (f" ({diff.launch_types[n]})" if n in diff.launch_types else "") for n in diff.launch
    )
    moves = [*launches, *(f"retire {n}" for n in diff.retire)]
    out.append(Text(nodes + (f" ({', '.join(moves)})" if moves else "")))
    if diff.unplaced:
        out.append(Text(f"  no room for {', '.join(diff.unplaced)}", style="red"))
    if diff.monthly_usd_after is not None:
        before = _money(diff.monthly_usd_before)
        out.append(Text(f"  cost: ${before} -> ${_money(diff.monthly_usd_after)} a month ({diff.cost_note})"))
    if not diff.changed:
        out.append(Text("  no changes: the cluster already runs this", style="green"))
    return out


def plan_lines(plan: DeployPlan) -> list[RenderableType]:
    """The plan as terminal output; plain Text everywhere, since names may contain brackets."""
    out: list[RenderableType] = []
    where = f"{plan.provider}, {plan.region}" if plan.region else plan.provider
    out.append(Text.assemble(("plan", "bold"), f" for {plan.project} ({where})"))
    if plan.diff is not None:  # a running cluster: what changes there, on its real nodes
        out.extend(diff_lines(plan.diff))
        if plan.fargate is not None:
            out += [Text(), _fargate_table(plan.fargate)]
        return out
    out.extend(Text(f"  {line}") for line in plan.changes)
    if plan.resources:
        table = Table(title="resources", title_justify="left", box=None, pad_edge=False)
        for column in ("kind", "name", "detail"):
            table.add_column(column)
        for resource in plan.resources:
            table.add_row(Text(resource.kind), Text(resource.name), Text(resource.detail))
        out += [Text(), table]
    table = Table(title="nodes", title_justify="left", box=None, pad_edge=False)
    priced = plan.provider == "aws"
    for column in ("id", "role", *(("type",) if priced else ()), "offers", "services"):
        table.add_column(column)
    if priced:
        table.add_column("$/month", justify="right")
    for node in plan.nodes:
        row = [Text(node.id), Text(node.role)]
        if priced:
            row.append(Text(f"{node.instance_type} ({node.arch})"))
        row += [Text(_size(node.cpus, node.memory)), Text(", ".join(node.services) or "-")]
        if priced:
            row.append(Text(_money(node.monthly_usd)))
        table.add_row(*row)
    out += [Text(), table]
    if plan.volumes_monthly_usd:
        out.append(Text(f"volumes (gp3 EBS): ${_money(plan.volumes_monthly_usd)} a month"))
    if plan.monthly_usd is not None:
        out += [Text(), Text.assemble(("total", "bold"), f": ${_money(plan.monthly_usd)} a month")]
    if plan.fargate is not None:
        out += [Text(), _fargate_table(plan.fargate)]
    if plan.notes:
        out.append(Text())
        out.extend(Text(f"note: {note}", style="dim") for note in plan.notes)
    return out


def _fargate_table(fargate: FargateComparison) -> Group:
    table = Table(title="the same on ECS Fargate", title_justify="left", box=None, pad_edge=False)
    for column in ("service", "task"):
        table.add_column(column)
    table.add_column("$/month", justify="right")
    for task in fargate.tasks:
        table.add_row(
            Text(task.service),
            Text(f"{task.vcpu:g} vCPU, {task.memory_gb:g} GB"),
            Text(_money(task.monthly_usd)),
        )
    for name in fargate.unpriced:
        table.add_row(Text(name), Text("bigger than any Fargate task"), Text("-"))
    if fargate.load_balancer_monthly_usd:
        table.add_row(
            Text("load balancer"), Text("application"), Text(_money(fargate.load_balancer_monthly_usd))
        )
    if fargate.volumes_monthly_usd:
        table.add_row(
            Text("volumes"), Text("gp3 EBS, on the tasks"), Text(_money(fargate.volumes_monthly_usd))
        )
    ratio = f" ({fargate.ratio:g}x the EC2 plan)" if fargate.ratio is not None else ""
    total = Text.assemble(("total", "bold"), f": ${_money(fargate.monthly_usd)} a month{ratio}")
    return Group(table, Text(), total)
