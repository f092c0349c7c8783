"""The /proc readers, on this very process (Linux)."""

from __future__ import annotations

import os
import sys

import pytest

from octctl import procfs

pytestmark = pytest.mark.skipif(not procfs.available(), reason="needs Linux's /proc")


def test_this_process_is_running_in_its_group_with_a_fixed_start_time() -> None:
    stat = procfs.stat(os.getpid())
    assert stat is not None and not stat.dead
    assert stat.pgrp == os.getpgrp()
    assert procfs.start_time(os.getpid()) == stat.start_time
    assert procfs.group_has_members(os.getpgrp())
    assert os.getpid() in procfs.pids()


def test_argv_is_read_back_and_a_missing_pid_has_none() -> None:
    argv = procfs.cmdline(os.getpid())
    assert argv is not None and os.path.basename(sys.argv[0]) in " ".join(argv)
    missing = 2**22 + 1  # above Linux's pid_max ceiling: never a process
    assert procfs.stat(missing) is None and procfs.start_time(missing) is None
    assert procfs.cmdline(missing) == []


def test_a_zombie_that_is_not_our_child_counts_as_gone() -> None:
    """A stopped node's oct-ctl is reparented to pid 1, which may be slow to reap it (or never
    does, in a container without an init): a stop must not wait on the corpse."""
    import subprocess
    import time

    # The middle process forks a child that exits at once and is never reaped by its parent.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time\npid = os.fork()\nif pid == 0:\n    os._exit(0)\n"
            "print(pid, flush=True)\ntime.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while (found := procfs.stat(zombie)) is not None and not found.dead and time.monotonic() < deadline:
            time.sleep(0.01)
        assert found is not None and found.state == "Z", "the child exited and nobody reaped it"
        with pytest.raises(ChildProcessError):
            os.waitpid(zombie, os.WNOHANG)  # (not ours to reap)
        assert not procfs.pid_alive(zombie)
        assert procfs.pid_alive(parent.pid)
    finally:
        parent.kill()
        parent.wait()
