"""Runs services as supervised child processes, for trying oct on a machine that only has Python.

Each instance is a child in its own session (so the whole process group can be signalled), with a
monitor thread that restarts it with exponential backoff, the way docker's ``unless-stopped``
policy does. There is no port mapping: ``spec.ports`` is informational and the leader tells the
child where to listen through ``spec.env`` (HOST/PORT).

Isolation: when oct-ctl runs as root, children run as an unprivileged user (``oct-svc`` if it
exists, else ``nobody``; see :func:`service_user`) with no supplementary groups, umask 077 and
only their spec's env plus a minimal base (:func:`_child_env`), so they can read neither the
node's data directory (0700: secrets, Raft journal) nor the daemon's environment. Their log file
is opened by the daemon and handed over as stdout. When oct-ctl is not root it cannot switch
users: children run as its own user (a warning says so once).

Restart policy of oct-ctl itself: children are **not adopted**. A child survives its daemon only
when the daemon dies abruptly (clean shutdown calls :meth:`ProcessRuntime.close`, which stops them
all). On start, the runtime reads the records left in ``state_dir``, kills any recorded child that
is still alive (checked by pid *and* process start time, so a recycled pid is never touched), and
reports the instance as ``exited`` until the leader re-applies it (which starts it again) or
removes it. Adopting would need a non-child we cannot ``wait()`` on, a lost exit status and a log
file shared with a process we do not supervise; a restart of a few seconds is the honest trade.
"""

from __future__ import annotations

import builtins
import contextlib
import grp
import json
import logging
import os
import pwd
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from octctl import procfs
from octctl.names import check_name
from octctl.runtime.base import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    InstanceSpec,
    InstanceState,
    InstanceStatus,
    Runtime,
    RuntimeFailure,
)

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 20
STOP_TIMEOUT = 5.0
#: One rotation (``.log`` → ``.log.1``) at (re)start keeps a chatty service from filling the disk.
MAX_LOG_BYTES = 16 * 1024 * 1024
#: The base PATH of every child (nothing of the daemon's environment is passed on); the directory
#: of the daemon's own Python is appended, so a host whose only python3 is oct's still runs them.
MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NO_HOME = "/nonexistent"
#: Whom a root oct-ctl runs process services as: this system user (genesis.sh creates it on AWS
#: nodes), else nobody/nogroup. Looked up by name, never by a hard-coded uid.
SERVICE_USER = "oct-svc"
FALLBACK_USER = "nobody"
FALLBACK_GROUP = "nogroup"
RECORD_SUFFIX = ".json"
RECOVERED_ERROR = (
    "stopped when oct-ctl restarted (the process runtime does not adopt children); "
    "it starts again when the leader re-applies it"
)


# -- process helpers ------------------------------------------------------------------------------


def _is_alive(pid: int, start_time: int | None) -> bool:
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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exit_code(returncode: int) -> int:
    """Report death by signal N as 128+N, like shells and docker do, not Python's negative code."""
    return 128 - returncode if returncode < 0 else returncode


def _tail_lines(path: Path, count: int) -> list[str]:
    """Last ``count`` lines without reading a large log from the start."""
    if count <= 0:
        return []
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            block = 8192
            data = b""
            while end > 0 and data.count(b"\n") <= count:
                start = max(0, end - block)
                handle.seek(start)
                data = handle.read(end - start) + data
                end = start
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-count:]


@dataclass(frozen=True)
class ServiceUser:
    """The unprivileged account children run as."""

    name: str
    uid: int
    gid: int
    home: str


def service_user() -> ServiceUser | None:
    """Whom process services run as: None (the daemon's own user) unless oct-ctl is root.

    Raises :class:`RuntimeFailure` if oct-ctl is root and neither account exists: running services
    as root would hand them the node's secrets.
    """
    if os.geteuid() != 0:
        log.warning(
            "oct-ctl is not root (uid %d): process services run as its own user and can read this "
            "node's data directory, secrets included",
            os.geteuid(),
        )
        return None
    for name in (SERVICE_USER, FALLBACK_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        gid = entry.pw_gid
        if name == FALLBACK_USER:
            with contextlib.suppress(KeyError):
                gid = grp.getgrnam(FALLBACK_GROUP).gr_gid
        if entry.pw_uid == 0 or gid == 0:
            continue
        return ServiceUser(name=name, uid=entry.pw_uid, gid=gid, home=entry.pw_dir or NO_HOME)
    raise RuntimeFailure(
        f"oct-ctl runs as root and neither '{SERVICE_USER}' nor '{FALLBACK_USER}' exists: "
        f"create the user oct-svc (useradd --system --no-create-home --shell /usr/sbin/nologin oct-svc)"
    )


def _base_path() -> str:
    own = os.path.dirname(sys.executable)
    return MINIMAL_PATH if not own or own in MINIMAL_PATH.split(":") else f"{MINIMAL_PATH}:{own}"


def _home(user: ServiceUser | None) -> str:
    if user is not None:
        return user.home
    try:
        return pwd.getpwuid(os.getuid()).pw_dir or NO_HOME
    except KeyError:
        return NO_HOME


def _child_env(spec_env: dict[str, str], user: ServiceUser | None = None) -> dict[str, str]:
    """Only the spec's env over a minimal base: the daemon's own environment is never passed on."""
    env = {"PATH": _base_path(), "HOME": _home(user), "LANG": "C.UTF-8"}
    env.update(spec_env)
    return env


def _may_enter(path: Path, user: ServiceUser) -> bool:
    """Whether ``user`` may list and search ``path`` and search every folder above it.

    By mode bits (ACLs are not consulted). The parents matter although the child is placed in the
    folder before it drops root: programs open their files by absolute path (``python3 app.py``
    does), which walks from ``/``.
    """

    def allows(folder: Path, read: bool) -> bool:
        try:
            info = folder.stat()
        except OSError:
            return False
        if info.st_uid == user.uid:
            r, x = stat.S_IRUSR, stat.S_IXUSR
        elif info.st_gid == user.gid:
            r, x = stat.S_IRGRP, stat.S_IXGRP
        else:
            r, x = stat.S_IROTH, stat.S_IXOTH
        bits = (r | x) if read else x
        return info.st_mode & bits == bits

    resolved = path.resolve()
    return allows(resolved, read=True) and all(allows(parent, read=False) for parent in resolved.parents)


def _write_private(path: Path, payload: dict[str, Any]) -> None:
    """Atomic and owner-only: a half-written record must not confuse the next start."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


# -- one supervised instance ----------------------------------------------------------------------


class _Instance:
    """A child process plus the thread that keeps it running; all mutable state is under ``_cond``."""

    def __init__(self, runtime: ProcessRuntime, spec: InstanceSpec) -> None:
        self.runtime = runtime
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

    def begin_stop(self) -> None:
        """Phase one of a stop (SIGTERM), split out so ``close`` can signal every child at once."""
        with self._cond:
            self._stopping = True
            if self._popen is not None and self._popen.poll() is None:
                _signal_group(self._popen.pid, signal.SIGTERM)
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
                    _signal_group(pid, signal.SIGKILL)
                thread.join(STOP_TIMEOUT)
        with self._cond:
            if self.state != "failed":
                self.state = "exited"

    # supervision

    def _spawn(self) -> str | None:
        """Start one run of the child; returns an error message if it cannot be started at all."""
        spec = self.spec
        argv = list(spec.command or [])
        if not argv:
            return "the process runtime needs a command"
        user = self.runtime.run_as
        # Without a workdir a service under another user starts in "/", never in our private folder.
        cwd = Path(spec.workdir) if spec.workdir else (Path("/") if user else self.runtime.state_dir)
        if not cwd.is_dir():
            return f"working directory '{cwd}' does not exist"
        if user is not None and not _may_enter(cwd, user):
            return (
                f"working directory '{cwd}' is not readable by the service user '{user.name}' "
                f"(uid {user.uid}): permission denied; make it readable and searchable by that user"
            )
        log_path = self.runtime.log_path(self.project, self.service)
        with contextlib.suppress(FileNotFoundError):
            if log_path.stat().st_size > MAX_LOG_BYTES:
                os.replace(log_path, log_path.with_suffix(".log.1"))
        try:
            # Opened here and handed over as stdout: the child never opens anything in our folder.
            logfile = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        except OSError as exc:
            return f"cannot open the log file '{log_path}': {exc.strerror or exc}"
        drop: dict[str, Any] = {}
        if user is not None:
            drop = {"user": user.uid, "group": user.gid, "extra_groups": [], "umask": 0o077}
        try:
            popen = subprocess.Popen(
                argv,
                env=_child_env(spec.env, user),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                **drop,
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
        self.runtime.save_record(self)
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

    def _supervise_loop(self) -> None:
        rt = self.runtime
        backoff = rt.backoff_initial
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
                    rt.save_record(self)
                    self._cond.notify_all()
                    return
                self.state = "starting"
                self._cond.notify_all()
                popen = self._popen
            assert popen is not None
            started = time.monotonic()
            try:
                returncode = popen.wait(timeout=rt.startup_grace)
            except subprocess.TimeoutExpired:
                with self._cond:
                    if self.state == "starting":
                        self.state = "running"
                        self._cond.notify_all()
                returncode = popen.wait()
            ran_for = time.monotonic() - started
            # Like a container's pid namespace: when the main process is gone, its helpers go too,
            # so a restarted child never finds its port held by an orphaned grandchild.
            _signal_group(popen.pid, signal.SIGKILL)
            with self._cond:
                self.exit_code = _exit_code(returncode)
                if self._stopping:
                    break
                if ran_for >= rt.healthy_after:
                    backoff = rt.backoff_initial
                delay = backoff
                backoff = min(backoff * 2, rt.backoff_max)
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
            status.log_tail = self.runtime.logs(self.project, self.service, LOG_TAIL_LINES)
        return status

    def record(self) -> dict[str, Any]:
        """What the next oct-ctl needs to find this child; env *values* stay out of it (secrets)."""
        spec = self.spec.model_dump(exclude={"env"})
        spec["env_keys"] = sorted(self.spec.env)
        return {
            LABEL_MANAGED: "true",
            LABEL_PROJECT: self.project,
            LABEL_SERVICE: self.service,
            LABEL_DEPLOYMENT: self.spec.deployment,
            LABEL_SPEC_HASH: self.spec.spec_hash,
            LABEL_NODE: self.spec.node or self.runtime.node,
            "pid": self.pid,
            "start_time": self.start_time,
            "state": self.state,
            "error": self.error,
            "restarts": self.restarts,
            "spec": spec,
        }


# -- the runtime ----------------------------------------------------------------------------------


class ProcessRuntime(Runtime):
    """Children of this daemon, one per (project, service); see the module docstring for restarts."""

    name = "process"

    def __init__(
        self,
        state_dir: Path,
        node: str = "",
        *,
        startup_grace: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        healthy_after: float = 30.0,
        run_as: ServiceUser | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.run_as = run_as
        self.node = node
        self.startup_grace = startup_grace
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.healthy_after = healthy_after
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)  # logs and records: the daemon's, never the services'
        self._lock = threading.Lock()
        self._service_locks: dict[tuple[str, str], threading.Lock] = {}
        self._instances: dict[tuple[str, str], _Instance] = {}
        self._closed = False
        self._recover()

    # paths and records

    def _stem(self, project: str, service: str) -> str:
        """``<project>-<service>``: the names are checked, so the files stay inside ``state_dir``."""
        return f"{check_name('project', project)}-{check_name('service', service)}"

    def log_path(self, project: str, service: str) -> Path:
        return self.state_dir / f"{self._stem(project, service)}.log"

    def _record_path(self, project: str, service: str) -> Path:
        return self.state_dir / f"{self._stem(project, service)}{RECORD_SUFFIX}"

    def save_record(self, instance: _Instance) -> None:
        try:
            _write_private(self._record_path(instance.project, instance.service), instance.record())
        except OSError as exc:  # a full disk must not take the supervised child down with it
            log.warning("%s: cannot write its record: %s", instance.label, exc)

    def _recover(self) -> None:
        """Kill children a previous oct-ctl left behind and remember them as ``exited`` (no adoption)."""
        recovered: list[tuple[_Instance, dict[str, Any]]] = []
        for path in sorted(self.state_dir.glob(f"*{RECORD_SUFFIX}")):
            try:
                data = json.loads(path.read_text())
                spec_data = dict(data["spec"])
                spec_data.pop("env_keys", None)
                spec = InstanceSpec.model_validate(spec_data)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable record %s: %s", path.name, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".corrupt"))
                continue
            pid, start_time = data.get("pid"), data.get("start_time")
            if isinstance(pid, int) and _is_alive(pid, start_time):
                log.info("%s/%s: stopping pid %d left by a previous oct-ctl", spec.project, spec.service, pid)
                _signal_group(pid, signal.SIGTERM)
            recovered.append((_Instance(self, spec), data))
        deadline = time.monotonic() + STOP_TIMEOUT
        for instance, data in recovered:
            pid, start_time = data.get("pid"), data.get("start_time")
            if isinstance(pid, int):
                while _is_alive(pid, start_time) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _is_alive(pid, start_time):
                    _signal_group(pid, signal.SIGKILL)
            instance.restarts = int(data.get("restarts") or 0)
            if data.get("state") == "failed":  # e.g. command not found: still true, keep saying it
                instance.state, instance.error = "failed", data.get("error")
            else:
                instance.state, instance.error = "exited", RECOVERED_ERROR
            self._instances[(instance.project, instance.service)] = instance
            self.save_record(instance)

    def _service_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._service_locks.setdefault(key, threading.Lock())

    # contract

    def apply(self, spec: InstanceSpec) -> InstanceStatus:
        key = (spec.project, spec.service)
        self._stem(*key)  # a spec made with model_construct skipped the model's name check
        with self._service_lock(key):
            with self._lock:
                if self._closed:
                    raise RuntimeFailure("the process runtime is shut down")
                current = self._instances.get(key)
            if current is not None:
                if current.spec.spec_hash == spec.spec_hash and current.alive():
                    return current.status()
                current.begin_stop()
                current.finish_stop(time.monotonic() + STOP_TIMEOUT)
            instance = _Instance(self, spec)
            with self._lock:
                self._instances[key] = instance
            instance.start()
            instance.wait_settled(self.startup_grace)
            return instance.status()

    def remove(self, project: str, service: str) -> None:
        key = (project, service)
        self._stem(project, service)
        with self._service_lock(key):
            with self._lock:
                instance = self._instances.pop(key, None)
            if instance is not None:
                instance.begin_stop()
                instance.finish_stop(time.monotonic() + STOP_TIMEOUT)
            with contextlib.suppress(FileNotFoundError):
                self._record_path(project, service).unlink()

    def list(self, project: str | None = None) -> list[InstanceStatus]:
        if project is not None:
            check_name("project", project)
        with self._lock:
            instances = [i for i in self._instances.values() if project is None or i.project == project]
        return [instance.status() for instance in instances]

    def logs(self, project: str, service: str, tail: int = 50) -> builtins.list[str]:
        return _tail_lines(self.log_path(project, service), tail)

    def pid(self, project: str, service: str) -> int | None:
        """The current child's pid (None if not running); for diagnostics and tests."""
        with self._lock:
            instance = self._instances.get((project, service))
        if instance is None:
            return None
        with instance._cond:
            return instance.pid if instance.state in ("starting", "running") else None

    def close(self) -> None:
        """Stop supervising and terminate every child: unlike docker, nothing outlives oct-ctl here.

        Records stay, so the next oct-ctl on this state_dir reports the instances as ``exited``
        until the leader re-applies them.
        """
        with self._lock:
            self._closed = True
            instances = list(self._instances.values())
        for instance in instances:
            instance.begin_stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for instance in instances:
            instance.finish_stop(deadline)
            self.save_record(instance)
