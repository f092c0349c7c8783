"""Idle memory (VmRSS) of each oct-ctl node of a local 3-node cluster, process and docker runtimes.

Why: oct-ctl runs on every machine beside the user's services, so what it holds while doing
nothing is memory taken from them. Each cluster runs one of the quickstart projects, sits idle
for 10 s, then every node's VmRSS is sampled 5 times 1 s apart; the per-node maximum is reported.

Usage: .venv/bin/python bench/idle_rss.py [--idle SECONDS]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, BenchError, emit, exit_on_sigterm, log, temp_project_dir, wait_all_http
from _docker import docker_ready, ensure_image_tag, ensure_test_image, remove_image_tag
from _procs import cmdline_arg_after, proc_status_mb
from _projects import check_clash, log_tails, oct_cleanup, retry_on_clash

from octctl.providers.local.provider import octctl_pids

NODES = 3
SAMPLES = 5
SAMPLE_INTERVAL = 1.0
GOAL_MB = 60
DOCKER_IMAGE = "busybox:1.36"  # what examples/quickstart-docker/oct.toml asks for
DEPLOY_TIMEOUT = 300.0
HTTP_TIMEOUT = 60.0


FIELDS = ("VmRSS", "RssAnon", "RssFile")


def node_rss(example: str, idle: float) -> dict[str, dict[str, float]]:
    """Deploy ``example`` in a temp copy, idle, sample; ``{node: {VmRSS/RssAnon/RssFile: max MB}}``.

    RssAnon (heap, Python objects) is what oct can shrink; RssFile is mostly shared libraries.
    """
    import octcli
    from octcli.errors import OctError

    with temp_project_dir(f"octbench-rss-{Path(example).name}-") as folder:
        project = folder / "project"
        shutil.copytree(REPO / example, project, ignore=shutil.ignore_patterns(".oct", "state.json"))
        config = project / "oct.toml"
        name = octcli.validate(config).project.name
        try:
            log(f"{example}: deploying in {project}")
            try:
                status = octcli.deploy(config, on_phase=log, timeout=DEPLOY_TIMEOUT)
            except OctError as e:
                check_clash(project, str(e))
                raise BenchError(f"oct deploy of {example} failed: {e}\n{log_tails(project)}") from e
            urls = [str(s.endpoint) + "/" for s in status.services if s.endpoint]
            if not urls:
                raise BenchError(f"{example}: no service has an endpoint")
            wait_all_http(urls, HTTP_TIMEOUT)
            check_clash(project)
            log(f"{example}: {len(urls)} service(s) answer; idling {idle:.0f} s")
            time.sleep(idle)
            pids = octctl_pids(project)
            if len(pids) != NODES:
                raise BenchError(f"{example}: found {len(pids)} oct-ctl processes, expected {NODES}: {pids}")
            nodes = {pid: Path(cmdline_arg_after(pid, "--data-dir") or str(pid)).name for pid in pids}
            peak: dict[str, dict[str, float]] = {node: dict.fromkeys(FIELDS, 0.0) for node in nodes.values()}
            for i in range(SAMPLES):
                for pid, node in nodes.items():
                    sampled = proc_status_mb(pid, *FIELDS)
                    if sampled is None:
                        raise BenchError(f"{example}: oct-ctl {node} (pid {pid}) exited while idle")
                    for key in FIELDS:
                        peak[node][key] = max(peak[node][key], sampled[key])
                if i < SAMPLES - 1:
                    time.sleep(SAMPLE_INTERVAL)
            peak = {node: {k: round(mb, 1) for k, mb in f.items()} for node, f in sorted(peak.items())}
            log(f"{example}: idle memory per node, MB (max of {SAMPLES} samples): {peak}")
        finally:
            log(f"{example}: destroying")
            failure = oct_cleanup(config, name)
    if failure is not None:
        raise BenchError(failure)
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to idle before sampling")
    args = parser.parse_args()
    exit_on_sigterm()
    result: dict[str, Any] = {"bench": "idle_rss"}
    tagged = False
    clashes: list[str] = []
    try:
        process = retry_on_clash(lambda: node_rss("examples/quickstart", args.idle), "process", clashes)
        docker_ready()
        ensure_test_image()
        tagged = ensure_image_tag(DOCKER_IMAGE)
        docker = retry_on_clash(lambda: node_rss("examples/quickstart-docker", args.idle), "docker", clashes)
    except BenchError as e:
        log(f"BROKEN: {e}")
        emit({**result, "error": str(e).splitlines()[0], "address_clash_retries": clashes})
        return 1
    finally:
        if tagged:
            remove_image_tag(DOCKER_IMAGE)
    max_mb = max(fields["VmRSS"] for fields in [*process.values(), *docker.values()])
    result.update(
        process_nodes_mb=[fields["VmRSS"] for fields in process.values()],
        docker_nodes_mb=[fields["VmRSS"] for fields in docker.values()],
        max_mb=max_mb,
        goal_mb=GOAL_MB,
        goal_met=max_mb <= GOAL_MB,
        process_nodes=list(process),
        docker_nodes=list(docker),
        process_nodes_anon_file_mb=[[f["RssAnon"], f["RssFile"]] for f in process.values()],
        docker_nodes_anon_file_mb=[[f["RssAnon"], f["RssFile"]] for f in docker.values()],
        idle_s=args.idle,
        address_clash_retries=clashes,
    )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
