"""One process service kept running: a child in its own session and the thread that restarts it.

Each instance is a child in its own session (so the whole process group can be signalled), with a
monitor thread that restarts it with exponential backoff, the way docker's ``unless-stopped``
policy does. There is no port mapping: ``spec.ports`` is informational and the leader tells the
child where to listen through ``spec.env`` (HOST/PORT). This module is that loop and the process
group signalling it needs; who the child runs as is :mod:`~octctl.runtime.process.isolation`'s
business, where its files live :mod:`~octctl.runtime.process.records`'.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from octctl import procfs
from octctl.log_files import copy_truncate
from octctl.runtime.base import InstanceSpec, InstanceState, InstanceStatus, RuntimeFailure
from octctl.runtime.process.isolation import ServiceUser, child_env, may_enter, privilege_drop
from octctl.runtime.process.logs import (
    LOG_TAIL_LINES,
    MAX_LOG_BYTES,
    open_for_child,
    rotate_if_large,
    tail_lines,
)
from octctl.runtime.process.records import StateDir, record

log = logging.getLogger(__name__)

#: How long a child gets between SIGTERM and SIGKILL of its whole group.
STOP_TIMEOUT = 5.0
#: How often a running child's log is looked at for its size.
LOG_CHECK = 5.0


def exited_within(popen: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether the child exits within ``seconds``, asleep until it does (a pidfd in ``select``).

    ``Popen.wait(timeout=...)`` polls instead, every 50 ms once the first few are past: 33 idle
    instances cost their node a tenth of a core, and 30 such nodes saturated a two-core machine
    (bench/scale.py). Without pidfds (a kernel before 5.3) it falls back to that poll.
    """
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (OSError, AttributeError):
        try:
            popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], seconds)
        return bool(readable)
    finally:
        os.close(pidfd)


def is_alive(pid: int, start_time: int | None) -> bool:
    """True if ``pid`` is still the (non-zombie) process we started."""
    if procfs.available():
        stat = procfs.stat(pid)
        if stat is None or stat.dead:
            return False
        return start_time is None or stat.start_time == start_time
    try:  # no /proc (macOS): the best we can do is "a process with that pid leads that group"
        os.kill(pid, 0)
        return os.getpgid(pid) == pid
    except OSError:
        return False


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exit_code(returncode: int) -> int:
    """Report death by signal N as 128+N, like shells and docker do, not Python's negative code."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass(frozen=True)
class Supervision:
    """How children of one runtime are run: as whom, where, and how they are restarted."""

    files: StateDir
    node: str
    run_as: ServiceUser | None
    #: A first run that survives this long counts as started (``apply`` waits for it).
    startup_grace: float
    backoff_initial: float
    backoff_max: float
    #: A run this long resets the backoff: the service was healthy, this is a new failure.
    healthy_after: float


class SupervisedInstance:
    """A child process plus the thread that keeps it running; all mutable state is under ``_cond``."""

    def __init__(self, supervision: Supervision, spec: InstanceSpec) -> None:
        self.supervision = supervision
        self.spec = spec
        self.project = spec.project
        self.service = spec.service
        self.state: InstanceState = "starting"
        self.error: str | None = None
        self.restarts = 0
        self.exit_code: int | None = None
        self.pid: int | None = None
        self.start_time: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def label(self) -> str:
        return f"{self.project}/{self.service}"

    # lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name=f"oct-proc-{self.label}", daemon=True)
        self._thread.start()

    def wait_settled(self, grace: float) -> None:
        """Block until the first run survived ``grace`` seconds or ended, so apply reports the truth."""
        with self._cond:
            self._cond.wait_for(lambda: self.state != "starting", timeout=grace + 2.0)

    def alive(self) -> bool:
        with self._cond:
            return not self._stopping and self.state in ("starting", "running", "restarting")

    def running_pid(self) -> int | None:
        """The current child's pid while it starts or runs, else None."""
        with self._cond:
            return self.pid if self.state in ("starting", "running") else None

    def begin_stop(self) -> None:
        """Phase one of a stop (SIGTERM), split out so ``close`` can signal every child at once."""
        with self._cond:
            self._stopping = True
            if self._popen is not None and self._popen.poll() is None:
                signal_group(self._popen.pid, signal.SIGTERM)
            self._cond.notify_all()

    def finish_stop(self, deadline: float) -> None:
        """Phase two: wait for the child until ``deadline``, then SIGKILL its whole group."""
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                with self._cond:
                    pid = self.pid
                if pid is not None:
                    log.warning("%s ignored SIGTERM for %.0fs; killing it", self.label, STOP_TIMEOUT)
                    signal_group(pid, signal.SIGKILL)
                thread.join(STOP_TIMEOUT)
        with self._cond:
            if self.state != "failed":
                self.state = "exited"

    def restart(self) -> bool:
        """Stop the current child as ``stop`` would (SIGTERM, then SIGKILL after STOP_TIMEOUT) and
        let the supervision loop start it again, with its backoff and its count: the same path as
        a crash. False when there is no running child to restart."""
        with self._cond:
            popen = self._popen
            if self._stopping or popen is None or popen.poll() is not None:
                return False
            signal_group(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0fs; killing it", self.label, STOP_TIMEOUT)
            signal_group(popen.pid, signal.SIGKILL)
        return True

    # supervision

    def _working_dir(self) -> Path:
        """Without a workdir a service under another user starts in "/", never in our private folder."""
        files, user = self.supervision.files, self.supervision.run_as
        return Path(self.spec.workdir) if self.spec.workdir else (Path("/") if user else files.path)

    def _spawn(self) -> str | None:
        """Start one run of the child; returns an error message if it cannot be started at all."""
        spec = self.spec
        argv = list(spec.command or [])
        if not argv:
            return "the process runtime needs a command"
        files, user = self.supervision.files, self.supervision.run_as
        cwd = self._working_dir()
        if not cwd.is_dir():
            return f"working directory '{cwd}' does not exist"
        if user is not None and not may_enter(cwd, user):
            return (
                f"working directory '{cwd}' is not readable by the service user '{user.name}' "
                f"(uid {user.uid}): permission denied; make it readable and searchable by that user"
            )
        log_path = files.log_path(self.project, self.service)
        rotate_if_large(log_path)
        try:
            # Opened here and handed over as stdout: the child never opens anything in our folder.
            logfile = open_for_child(log_path)
        except OSError as exc:
            return f"cannot open the log file '{log_path}': {exc.strerror or exc}"
        try:
            popen = subprocess.Popen(
                argv,
                env=child_env(spec.env, user),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                **privilege_drop(user),
            )
        except FileNotFoundError:
            return f"command not found: '{argv[0]}'"
        except PermissionError:
            who = f" by the service user '{user.name}'" if user else ""
            return f"command is not executable{who}: '{argv[0]}'"
        except OSError as exc:
            return f"cannot start '{argv[0]}': {exc.strerror or exc}"
        finally:
            logfile.close()  # the child holds its own descriptor
        self._popen = popen
        self.pid = popen.pid
        self.start_time = procfs.start_time(popen.pid)
        self.exit_code = None
        self.error = None
        self.save()
        log.info("%s: started pid %d (deployment %s)", self.label, popen.pid, spec.deployment)
        return None

    def _supervise(self) -> None:
        try:
            self._supervise_loop()
        except Exception as exc:  # a bug here must show up in status, not as a silent dead thread
            log.exception("%s: supervisor crashed", self.label)
            with self._cond:
                self.state = "failed"
                self.error = f"oct-ctl stopped supervising this process: {exc}"
                self._cond.notify_all()

    def _wait_keeping_the_log_small(self, popen: subprocess.Popen[bytes]) -> int:
        """Wait for the child; meanwhile rotate its output once it outgrows ``MAX_LOG_BYTES``
        (copied aside and truncated: the child keeps its descriptor)."""
        log_path = self.supervision.files.log_path(self.project, self.service)
        while True:
            if exited_within(popen, LOG_CHECK):
                return popen.wait()
            copy_truncate(log_path, MAX_LOG_BYTES)

    def _supervise_loop(self) -> None:
        policy = self.supervision
        backoff = policy.backoff_initial
        while True:
            with self._cond:
                if self._stopping:
                    break
                error = self._spawn()
                if error is not None:
                    # A missing command or directory does not fix itself: do not retry in a loop.
                    log.warning("%s: %s", self.label, error)
                    self.state = "failed"
                    self.error = error
                    self.save()
                    self._cond.notify_all()
                    return
                self.state = "starting"
                self._cond.notify_all()
                popen = self._popen
            assert popen is not None
            started = time.monotonic()
            if exited_within(popen, policy.startup_grace):
                returncode = popen.wait()
            else:
                with self._cond:
                    if self.state == "starting":
                        self.state = "running"
                        self._cond.notify_all()
                returncode = self._wait_keeping_the_log_small(popen)
            ran_for = time.monotonic() - started
            # Like a container's pid namespace: when the main process is gone, its helpers go too,
            # so a restarted child never finds its port held by an orphaned grandchild.
            signal_group(popen.pid, signal.SIGKILL)
            with self._cond:
                self.exit_code = _exit_code(returncode)
                if self._stopping:
                    break
                if ran_for >= policy.healthy_after:
                    backoff = policy.backoff_initial
                delay = backoff
                backoff = min(backoff * 2, policy.backoff_max)
                self.state = "restarting"
                self._cond.notify_all()
                log.info(
                    "%s: exited with %d after %.1fs; restarting in %.1fs",
                    self.label,
                    self.exit_code,
                    ran_for,
                    delay,
                )
                if self._cond.wait_for(lambda: self._stopping, timeout=delay):
                    break
                self.restarts += 1
        with self._cond:
            self.state = "exited"
            self._cond.notify_all()

    def execute(self, argv: list[str], timeout: float) -> tuple[int, str]:
        """Run ``argv`` as the service runs (its user, environment and folder), in a session of its
        own killed whole at ``timeout``: a health check command. Its exit status and output."""
        user = self.supervision.run_as
        try:
            done = subprocess.run(
                argv,
                env=child_env(self.spec.env, user),
                cwd=self._working_dir(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                start_new_session=True,
                close_fds=True,
                timeout=timeout,
                check=False,
                **privilege_drop(user),
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.stdout or b""
            return 124, output.decode("utf-8", "replace") + f"\nno answer within {timeout:g} s"
        except OSError as exc:
            raise RuntimeFailure(f"cannot run '{argv[0] if argv else ''}': {exc.strerror or exc}") from exc
        output = (done.stdout or b"") + (done.stderr or b"")
        return _exit_code(done.returncode), output[-4096:].decode("utf-8", "replace")

    # reporting

    def status(self) -> InstanceStatus:
        with self._cond:
            state = self.state
            status = InstanceStatus(
                project=self.project,
                service=self.service,
                runtime="process",
                deployment=self.spec.deployment,
                spec_hash=self.spec.spec_hash,
                state=state,
                error=self.error,
                restarts=self.restarts,
                exit_code=self.exit_code if state != "running" else None,
            )
        if state != "running":
            log_path = self.supervision.files.log_path(self.project, self.service)
            status.log_tail = tail_lines(log_path, LOG_TAIL_LINES)
        return status

    def save(self) -> None:
        """Write this instance's record (see :mod:`~octctl.runtime.process.records`)."""
        self.supervision.files.save(
            record(
                self.spec,
                node=self.supervision.node,
                pid=self.pid,
                start_time=self.start_time,
                state=self.state,
                error=self.error,
                restarts=self.restarts,
            )
        )
