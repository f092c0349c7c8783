"""What a node keeps for itself: the memory and idle CPU of oct-ctl, its HAProxy, dockerd and
containerd, measured on a local cluster running the docker quickstart, and the reserve that
gives (the default of ``reserve_memory``/``reserve_cpus`` on AWS, ``octctl/providers/aws/pricing.py``).

Why: a node that offers its whole size to services leaves nothing for the machinery that runs
them, and a plan that ignores it flatters oct's price. The operating system's own share cannot
be measured on this machine (it is not a fresh Debian cloud image), so a documented baseline is
added: what a Debian 12 ``genericcloud`` instance uses idle (systemd, journald, udevd, sshd,
timesyncd, dbus, cron; about 100 MB "used" in ``free -m`` on a t4g.small).

The reserve derived: memory = (measured + OS baseline) x 1.15, rounded up to 64 MB; CPU = twice
the measured idle CPU, rounded up to 10 millicores. It prints the configured default beside it.

Usage: .venv/bin/python bench/node_reserve.py [--idle SECONDS]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from typing import Any

from _common import REPO, BenchError, emit, exit_on_sigterm, log, temp_project_dir, wait_all_http
from _docker import docker_ready, ensure_image_tag, ensure_test_image, remove_image_tag
from _procs import cmdline_arg_after, cpu_seconds, pids_named, proc_status_mb
from _projects import check_clash, log_tails, oct_cleanup

from octctl.procfs import cmdline
from octctl.providers.aws.pricing import DEFAULT_RESERVE
from octctl.providers.local.provider import octctl_pids

EXAMPLE = "examples/quickstart-docker"
DOCKER_IMAGE = "busybox:1.36"
OS_BASELINE_MB = 100
HEADROOM = 1.15
CPU_WINDOW = 10.0


def _rss(pids: list[int]) -> float:
    return sum((proc_status_mb(pid, "VmRSS") or {"VmRSS": 0.0})["VmRSS"] for pid in pids)


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def measure(idle: float) -> dict[str, Any]:
    import octcli
    from octcli.errors import OctError

    with temp_project_dir("octbench-reserve-") as folder:
        project = folder / "project"
        shutil.copytree(REPO / EXAMPLE, project, ignore=shutil.ignore_patterns(".oct", "state.json"))
        config = project / "oct.toml"
        name = octcli.validate(config).project.name
        try:
            try:
                status = octcli.deploy(config, on_phase=log, timeout=300)
            except OctError as e:
                check_clash(project, str(e))
                raise BenchError(f"oct deploy failed: {e}\n{log_tails(project)}") from e
            wait_all_http([str(s.endpoint) + "/" for s in status.services if s.endpoint], 60)
            log(f"idling {idle:.0f} s")
            time.sleep(idle)
            node = sorted(octctl_pids(project))[0]  # one node's share (every node runs the same)
            folder_of_node = cmdline_arg_after(node, "--data-dir") or "?"
            haproxy = [p for p in pids_named("haproxy") if folder_of_node in " ".join(cmdline(p) or [])]
            parts = {
                "oct_ctl": [node],
                "haproxy": haproxy,
                "dockerd": pids_named("dockerd"),
                "containerd": pids_named("containerd"),
            }
            memory = {part: round(_rss(pids), 1) for part, pids in parts.items()}
            every = [pid for pids in parts.values() for pid in pids]
            before = _cpu(every)
            time.sleep(CPU_WINDOW)
            idle_millicores = round((_cpu(every) - before) / CPU_WINDOW * 1000, 1)
        finally:
            failure = oct_cleanup(config, name)
    if failure is not None:
        raise BenchError(failure)
    return {"memory_mb": memory, "idle_millicores": idle_millicores}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    exit_on_sigterm()
    result: dict[str, Any] = {"bench": "node_reserve"}
    tagged = False
    try:
        docker_ready()
        ensure_test_image()
        tagged = ensure_image_tag(DOCKER_IMAGE)
        found = measure(args.idle)
    except BenchError as e:
        log(f"BROKEN: {e}")
        emit({**result, "error": str(e).splitlines()[0]})
        return 1
    finally:
        if tagged:
            remove_image_tag(DOCKER_IMAGE)
    measured = sum(found["memory_mb"].values())
    memory = math.ceil((measured + OS_BASELINE_MB) * HEADROOM / 64) * 64
    cpus = math.ceil(max(found["idle_millicores"], 1) * 2 / 10) * 10
    result.update(
        **found,
        measured_memory_mb=round(measured, 1),
        os_baseline_mb=OS_BASELINE_MB,
        derived_reserve={"memory": memory, "cpus": cpus},
        default_reserve={"memory": DEFAULT_RESERVE.memory, "cpus": DEFAULT_RESERVE.cpus},
        memory_ratio=round(DEFAULT_RESERVE.memory / memory, 2),
    )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
