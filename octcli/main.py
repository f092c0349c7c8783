"""``oct``: the command line over :mod:`octcli.api`.

Results go to stdout and everything else (progress, warnings, errors) to stderr, so ``oct status
--json | jq`` and ``oct deploy > endpoints.txt`` get clean output. Errors end with the exit codes
documented in :mod:`octcli.errors`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
import yaml
from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from octcli import api, terminal
from octcli.errors import NotConfirmed, OctError
from octctl import __version__

if TYPE_CHECKING:
    from octcli.plan import DeployPlan

app = typer.Typer(
    name="oct",
    help="Deploy the services described in oct.toml onto a cluster of oct-ctl nodes you own.",
    no_args_is_help=True,
    add_completion=False,
    # Locals would include the API token in a crash report.
    pretty_exceptions_show_locals=False,
)

ConfigOption = Annotated[
    Path,
    typer.Option("-c", "--config", help="oct.toml, or the folder that holds it.", show_default=True),
]
DEFAULT_CONFIG = Path("oct.toml")
YesOption = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Do not ask for confirmation (needed when stdin is not a terminal, e.g. in scripts and CI).",
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        help="Seconds to wait for the cluster (deploy gives up with exit 4; destroy tears down anyway).",
        min=1,
    ),
]


def _stdout() -> Console:
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(error: OctError) -> NoReturn:
    """Print ``error: <message>`` (config problems one per line) and exit with the error's code."""
    err = _stderr()
    lines = str(error).splitlines() or [type(error).__name__]
    err.print(Text.assemble(("error:", "bold red"), " ", lines[0]), soft_wrap=True)
    for line in lines[1:]:
        err.print(Text(line), soft_wrap=True)
    raise typer.Exit(error.exit_code)


def _warn(message: str) -> None:
    _stderr().print(Text.assemble(("warning:", "bold yellow"), " ", message), soft_wrap=True)


# -- asking first ----------------------------------------------------------------------------------


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


@contextlib.contextmanager
def _paused(live: Live | None) -> Iterator[None]:
    """Take a live display off the terminal while the user reads and answers a question."""
    if live is None or not live.is_started:
        yield
        return
    live.stop()
    try:
        yield
    finally:
        live.start()


def _ask(question: str, shown: list[RenderableType], refusal: str, live: Live | None) -> bool:
    """Show ``shown`` and ask ``question`` on the terminal (on stderr: stdout stays the result's).

    With nobody at a terminal to answer, refuse with ``refusal`` instead, like ``terraform destroy``
    (what would have happened is still shown, for the CI log): a script must say ``--yes``. End of
    input or Ctrl-C counts as no.
    """
    err = _stderr()
    with _paused(live):
        for part in shown:
            err.print(part, soft_wrap=True)
        if not _stdin_is_terminal():
            raise NotConfirmed(f"{refusal} without confirmation: stdin is not a terminal, run with --yes")
        try:
            return typer.confirm(question, default=False, err=True)
        except typer.Abort:
            err.print()
            return False


# -- commands --------------------------------------------------------------------------------------


@app.command()
def deploy(
    config: ConfigOption = DEFAULT_CONFIG,
    timeout: TimeoutOption = 600.0,
    yes: YesOption = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the final status and what changed per service as one JSON object, and nothing else.",
        ),
    ] = False,
) -> None:
    """Start the project's cluster if needed and roll out oct.toml; waits until every service runs.

    A first deploy on AWS shows what it will create and its monthly cost, and asks first.
    """
    view = terminal.DeployView(_stderr())
    if not as_json and _stderr().is_terminal:  # what will change, before it does (oct plan's diff)
        diff = api.plan_diff(config)
        if diff is not None:
            for line in terminal.diff_lines(diff):
                _stderr().print(line, soft_wrap=True)

    def approve(plan: DeployPlan) -> bool:
        return _ask(
            "Create them?", terminal.plan_summary(plan), "refusing to create AWS resources", view.display
        )

    try:
        with view.live():
            result = api.deploy(
                config,
                approve=True if yes else approve,
                on_progress=view.progress,
                on_phase=view.phase,
                timeout=timeout,
            )
    except OctError as e:
        _fail(e)
    except KeyboardInterrupt:
        _warn("interrupted: the cluster carries on with the deployment; `oct status` shows how it goes")
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    out = _stdout()
    deployment = result.deployment
    out.print(
        Text(f"deployed {result.project or '-'} to cluster {result.cluster}")
        + Text(f" (deployment {deployment.id})" if deployment else "", style="dim"),
        soft_wrap=True,
    )
    for line in terminal.change_lines(result.changes):
        out.print(line, soft_wrap=True)
    for svc in sorted(result.services, key=lambda s: s.name):
        if svc.urls or svc.endpoint:
            where = "  ".join(svc.urls) if svc.urls else svc.endpoint or ""
            out.print(Text.assemble((f"  {svc.name}: ", "bold"), where), soft_wrap=True)
    out.print(terminal.services_table(result))


@app.command()
def status(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the raw status as JSON (the API's StatusResponse) and nothing else."
        ),
    ] = False,
) -> None:
    """Show the cluster's nodes and the project's services."""
    try:
        snapshot = api.status(config)
    except OctError as e:
        _fail(e)
    if as_json:
        typer.echo(snapshot.model_dump_json(indent=2))
        return
    out = _stdout()
    out.print(terminal.status_summary(snapshot), soft_wrap=True)
    out.print()
    out.print(terminal.nodes_table(snapshot))
    out.print()
    out.print(terminal.services_table(snapshot))
    deployment = snapshot.deployment
    if deployment is not None and deployment.state == "failed" and deployment.failed_service:
        out.print()
        out.print(Text(f"{deployment.failed_service} failed: {deployment.error or '-'}", style="red"))
        for line in deployment.log_tail:
            out.print(Text(f"  {line}"), soft_wrap=True)


@app.command()
def history(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the API's HistoryResponse as JSON and nothing else.")
    ] = False,
) -> None:
    """Show the last deployments (at most 20): when, what changed per service, and how each ended."""
    try:
        found = api.history(config)
    except OctError as e:
        _fail(e)
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    _stdout().print(terminal.history_table(found))


@app.command()
def events(
    config: ConfigOption = DEFAULT_CONFIG,
    last: Annotated[int, typer.Option("-n", "--last", help="How many of the latest entries.", min=0)] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Go on printing new entries.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One EventView JSON object a line, and nothing else.")
    ] = False,
) -> None:
    """Show the cluster's events (deployments, nodes, instances, leaders) and audit trail."""
    out = _stdout()
    try:
        for event in api.events(config, last, follow=follow):
            if as_json:
                typer.echo(event.model_dump_json())
            else:
                out.print(terminal.event_line(event), soft_wrap=True, highlight=False)
    except OctError as e:
        _fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def top(
    config: ConfigOption = DEFAULT_CONFIG,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between readings.", min=0.5, max=3600)
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame (two readings, an interval apart) and stop.")
    ] = False,
) -> None:
    """A live view of the nodes and instances: CPU, memory, health, restarts (Ctrl-C ends it)."""
    try:
        if once:
            *_, last = api.top(config, interval, frames=2)
            _stdout().print(terminal.top_view(last))
            return
        with Live(console=_stdout(), auto_refresh=False) as live:
            for shown in api.top(config, interval):
                live.update(terminal.top_view(shown), refresh=True)
    except OctError as e:
        _fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def ui(
    config: ConfigOption = DEFAULT_CONFIG,
    open_browser: Annotated[bool, typer.Option("--open", help="Open it in the default browser too.")] = False,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="Write the cluster's CA certificate here, to import.")
    ] = None,
) -> None:
    """Print a login link to the web dashboard: it works once, within a minute (the API token is
    never in it)."""
    try:
        url, ca_pem = api.ui_link(config)
    except OctError as e:
        _fail(e)
    if ca is not None:
        ca.write_text(ca_pem)
    typer.echo(url)
    _stderr().print(
        "The link works once, for a minute. The node's certificate is signed by the cluster's own "
        "CA, so the browser warns unless you import it (--ca FILE writes it).",
        soft_wrap=True,
        highlight=False,
    )
    if open_browser:
        webbrowser.open(url)


@app.command()
def rollback(
    deployment: Annotated[
        str | None,
        typer.Argument(help="The deployment to go back to (default: the last success before now)."),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    timeout: TimeoutOption = 600.0,
) -> None:
    """Deploy a recorded deployment again, the rolling way a deploy goes; waits until it runs."""
    view = terminal.DeployView(_stderr())
    try:
        with view.live():
            result = api.rollback(config, deployment, on_progress=view.progress, timeout=timeout)
    except OctError as e:
        _fail(e)
    out = _stdout()
    current = result.deployment
    out.print(Text(f"rolled back: deployment {current.id if current else '-'} runs"), soft_wrap=True)
    for line in terminal.change_lines(result.changes):
        out.print(line, soft_wrap=True)
    out.print(terminal.services_table(result))


@app.command()
def volumes(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the volumes as a JSON list of VolumeView and nothing else.")
    ] = False,
) -> None:
    """List the project's volumes: their service, the node that holds them, their state, where the data is."""
    try:
        found = api.volumes(config)
    except OctError as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps([v.model_dump(mode="json") for v in found], indent=2))
        return
    _stdout().print(terminal.volumes_table(found))


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (a PEM certificate) as ``|`` blocks, as a person would write them."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


@app.command("scrape-config")
def scrape_config(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print a Prometheus scrape config for the cluster's nodes (read-only token, cluster CA inline)."""
    try:
        found = api.scrape_config(config)
    except OctError as e:
        _fail(e)
    typer.echo(yaml.dump({"scrape_configs": [found]}, Dumper=_BlockDumper, sort_keys=False), nl=False)


@app.command()
def backup(
    service: Annotated[str, typer.Argument(help="The service whose volumes to back up.")],
    config: ConfigOption = DEFAULT_CONFIG,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Where to write it (default: backups/<project>-<service>-<time>.tar.gz)."
        ),
    ] = None,
) -> None:
    """Back up a service's volumes while it runs: EBS snapshots on AWS (`oct restore SERVICE NAME`
    takes the name it prints), else (or with -o) a gzipped tarball on this machine."""
    try:
        taken = api.snapshot_backup(config, service) if output is None else None
        if taken is not None:
            listed = ", ".join(
                f"{volume}: {snapshot}" for volume, snapshot in sorted(taken.snapshots.items())
            )
            _stdout().print(
                Text(f"{service}: backed up as {taken.name} (EBS snapshots {listed})"), soft_wrap=True
            )
            return
        written = api.backup(config, service, output)
    except OctError as e:
        _fail(e)
    size = written.stat().st_size
    _stdout().print(Text(f"{service}: backed up to {written} ({size:,} bytes)"), soft_wrap=True)


@app.command()
def restore(
    service: Annotated[str, typer.Argument(help="The service whose volumes to restore.")],
    archive: Annotated[
        Path,
        typer.Argument(help="A backup that `oct backup` wrote, or the name it gave EBS snapshots (aws)."),
    ],
    config: ConfigOption = DEFAULT_CONFIG,
    yes: YesOption = False,
) -> None:
    """Replace a service's volumes' data with a backup's; the service stops meanwhile.

    Asks first, unless --yes.
    """

    def approve(summary: str) -> bool:
        return _ask("Restore?", [Text(summary)], "refusing to restore", None)

    try:
        restored = api.restore(config, service, archive, approve=True if yes else approve)
    except OctError as e:
        _fail(e)
    _stdout().print(Text(f"{service}: restored {', '.join(restored)} from {archive}"), soft_wrap=True)


@app.command()
def destroy(
    config: ConfigOption = DEFAULT_CONFIG,
    timeout: TimeoutOption = 300.0,
    yes: YesOption = False,
    with_volumes: Annotated[
        bool, typer.Option("--volumes", help="Remove the project's volumes and their data too.")
    ] = False,
) -> None:
    """Remove the project's services and its cluster, including whatever a crash left behind.

    Volumes (and the data in them) are kept unless --volumes. Shows what will be removed and asks
    first, unless --yes.
    """
    err = _stderr()
    spinner = Spinner("dots", text="looking for the project's cluster")
    display = Live(spinner, console=err, transient=True, refresh_per_second=10) if err.is_terminal else None
    live: contextlib.AbstractContextManager[object] = (
        display if display is not None else contextlib.nullcontext()
    )

    def phase(message: str) -> None:
        if err.is_terminal:
            spinner.update(text=Text(message))
        else:
            err.print(Text(message), soft_wrap=True)

    def approve(summary: api.DestroySummary) -> bool:
        return _ask("Destroy all of this?", terminal.destroy_summary(summary), "refusing to destroy", display)

    try:
        with live:
            kept = api.destroy(
                config,
                timeout,
                approve=True if yes else approve,
                on_phase=phase,
                on_warning=_warn,
                volumes=with_volumes,
            )
    except OctError as e:
        _fail(e)
    out = _stdout()
    out.print(
        Text(f"{api.config_file(config)}: destroyed, nothing of this project is left running"), soft_wrap=True
    )
    if kept:
        names = ", ".join(
            f"{v.name} ({', '.join(x for x in (f'{v.size_gb} GB' if v.size_gb else '', v.where or '') if x)})"
            for v in kept
        )
        out.print(Text(f"kept {len(kept)} volume(s): {names}; `oct destroy --volumes` removes them"))


@app.command()
def validate(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Check oct.toml without touching any cluster; lists every problem at once."""
    try:
        parsed = api.validate(config)
    except OctError as e:
        _fail(e)
    count = len(parsed.project.services)
    _stdout().print(
        Text(f"{api.config_file(config)}: ok ({count} service{'' if count == 1 else 's'})"), soft_wrap=True
    )


@app.command()
def plan(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON object.")] = False,
    detailed_exitcode: Annotated[
        bool,
        typer.Option(
            "--detailed-exitcode",
            help="Exit 0 when nothing would change, 2 when something would, 1 on error.",
        ),
    ] = False,
) -> None:
    """Show what deploy would change and what it costs a month: against the running cluster when
    there is one (per service, on its real nodes), else what a first deploy creates. Touches nothing."""
    try:
        result = api.plan(config)
    except OctError as e:
        if detailed_exitcode:  # (Terraform's convention: 1 is any error, 2 means changes)
            e.exit_code = 1
        _fail(e)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        out = _stdout()
        for part in terminal.plan_lines(result):
            out.print(part, soft_wrap=True)
    if detailed_exitcode and result.changed:
        raise typer.Exit(2)


#: ``--since`` units, as ``docker logs --since`` and ``journalctl`` take them.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Instances' prefixes take these in turn on a terminal.
_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red")


def _duration(text: str | None) -> float | None:
    """``--since 10m`` in seconds (``s``, ``m``, ``h``, ``d``; a bare number is seconds)."""
    if text is None:
        return None
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 10m, 2h or 1d") from None
    if seconds <= 0:
        raise typer.BadParameter(f"{text!r} is not a positive duration")
    return seconds


@app.command()
def logs(
    service: Annotated[str | None, typer.Argument(help="The service whose output to show.")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    node: Annotated[
        str | None, typer.Option("--node", help="A node's own log (oct-ctl's) instead of a service's.")
    ] = None,
    tail: Annotated[
        int, typer.Option("-n", "--tail", help="How many lines of each instance.", min=1, max=10_000)
    ] = 50,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Go on printing new lines, across restarts and rollouts.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only lines of the last 30s, 10m, 2h or 1d (docker services)."),
    ] = None,
    access: Annotated[
        bool,
        typer.Option(
            "--access", help="The ingress's access log of the service instead: every node's, by time."
        ),
    ] = False,
) -> None:
    """Show the lines every instance of a service wrote, each after its instance and node."""
    window = _duration(since)
    if (service is None) == (node is None):
        raise typer.BadParameter("name a SERVICE, or a node with --node (not both)")
    try:
        if node is not None:
            for entry in api.node_log(config, node, tail, follow=follow):
                typer.echo(f"{entry['node']} | {entry['text']}")
            return
        assert service is not None
        if access:
            for line in api.logs(config, service, tail, access=True):
                typer.echo(line)
            return
        out = _stdout()
        colours: dict[str, str] = {}
        started = time.time()
        stream = api.log_stream(
            config, service, tail, since=started - window if window else None, follow=follow
        )
        for entry in stream:
            prefix = f"{entry['instance']} {entry['node']} |"
            if out.is_terminal:
                colour = colours.setdefault(entry["instance"], _COLOURS[len(colours) % len(_COLOURS)])
                out.print(
                    Text.assemble((prefix, colour), " ", entry["text"]), soft_wrap=True, highlight=False
                )
            else:
                typer.echo(f"{prefix} {entry['text']}")
    except OctError as e:
        _fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def unlock(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Remove the project's lock left by an oct command that died (S3 state); run only when none runs."""
    try:
        removed = api.unlock(config)
    except OctError as e:
        _fail(e)
    message = f"removed lock {removed}" if removed else "no lock is held"
    _stdout().print(Text(f"{api.config_file(config)}: {message}"), soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"oct {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Deploy the services described in oct.toml onto a cluster of oct-ctl nodes you own."""


def main() -> None:
    app()
