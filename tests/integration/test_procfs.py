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
