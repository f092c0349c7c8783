"""HAProxy as one node's ingress: started, reconfigured and stopped by oct-ctl.

Why HAProxy and not Caddy (see docs/ingress.md): it forwards plain TCP (Postgres, Redis) as well as
HTTP, it speaks mutual TLS at layer 4 (the service mesh needs it; Debian's Caddy has no layer-4
module), and it is small and fast. Certificates come from the leader's ACME client, shared
through Raft, instead of each node's proxy asking the CA on its own.

Why whole-file reloads rather than the runtime API: in master-worker mode a reload re-executes the
master with the new file and hands the listening sockets to the new worker, so no connection is
refused; the old worker finishes what it carries (an idle keep-alive connection is closed after
its next answer, ``option idle-close-on-response``), so a reload loses no request; and the file
stays the one truth, where a change made through the runtime API would be lost on the next reload.
A configuration is checked (``haproxy -c``) before it replaces the served one, so a bad one never
takes the ingress down.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import logging
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from octctl import procfs
from octctl.ingress.access_log import AccessLog
from octctl.ingress.routes import IngressRoutes

log = logging.getLogger(__name__)

#: How long an old worker may finish what it carries after a reload or a stop.
DRAIN_SECONDS = 30
#: How long HAProxy may take to start a worker (parse, bind) before oct-ctl gives up on it.
START_TIMEOUT = 10.0


def runtime_dir() -> str:
    """Where the masters' control sockets go: ``/run/oct`` as root (a tmpfs, emptied at boot), else
    the temporary folder. Each master gets a fresh 0700 folder there (``tempfile.mkdtemp``)."""
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.makedirs("/run/oct", mode=0o700, exist_ok=True)
            return "/run/oct"
    return tempfile.gettempdir()


def haproxy_binary() -> str:
    """Debian installs HAProxy in /usr/sbin, which an ordinary user's PATH leaves out."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin") or "haproxy"


def master_socket_in(argv: list[str]) -> Path | None:
    """The control socket a master was started with (``-S <path>,mode,600``)."""
    with contextlib.suppress(ValueError, IndexError):
        return Path(argv[argv.index("-S") + 1].split(",", 1)[0])
    return None


def remove_socket_folder(socket: Path | None) -> None:
    """Remove the folder :meth:`Haproxy._start` made for a control socket, and nothing else."""
    if socket is not None and socket.parent.name.startswith("oct-ingress-"):
        shutil.rmtree(socket.parent, ignore_errors=True)


class IngressError(Exception):
    """HAProxy refused a configuration, or did not start or reload."""


#: Access log lines: the backend (it names the service) and the time first, as
#: ``access_log.parse`` reads them; the path without its query string (``%HPO``: queries carry
#: tokens); no header, no body.
HTTP_LOG = "%b %Ts.%ms %ci %HM %HPO %ST %B %Ta %s"
TCP_LOG = "%b %Ts.%ms %ci tcp %B %Tt %s %ts"


#: The mesh's inbound hops: the instance's backend, the caller node (its certificate's name).
MESH_LOG = "%b %Ts.%ms %ci mesh %[ssl_c_s_dn(CN)] %B %Tt %ts"


@dataclass(frozen=True)
class MeshFiles:
    """Where the node's mesh certificate (with its key) and the cluster CA are, for HAProxy."""

    credentials: Path
    ca: Path


def render(
    routes: IngressRoutes,
    drain_seconds: int = DRAIN_SECONDS,
    certificates: Path | None = None,
    access_log: bool = True,
    mesh_files: MeshFiles | None = None,
) -> str:
    """The configuration; ``certificates`` is the folder of the sites' PEM files (see
    :func:`write_certificates`), ``mesh_files`` the mesh's (:func:`write_mesh_files`)."""
    import jinja2  # only nodes that serve a public port render

    template = files("octctl.ingress").joinpath("haproxy.cfg.j2").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(template).render(
        address=routes.address,
        addresses=routes.addresses,
        routes=routes.routes,
        web=routes.web,
        mesh=routes.mesh,
        mesh_files=mesh_files,
        certificates=certificates,
        drain_seconds=drain_seconds,
        access_log=access_log,
        http_log=HTTP_LOG,
        tcp_log=TCP_LOG,
        mesh_log=MESH_LOG,
    )


def _content_folder(directory: Path, prefix: str, contents: dict[str, str]) -> Path:
    """``contents`` as 0600 files in a folder named after them: the served one is never
    rewritten under a running worker, and a configuration HAProxy refuses leaves it in place."""
    digest = hashlib.sha256()
    for name, text in sorted(contents.items()):
        digest.update(f"{name}\0{text}\0".encode())
    folder = directory / f"{prefix}-{digest.hexdigest()[:16]}"
    if not folder.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=directory))
        for name, text in contents.items():
            path = staging / name
            path.touch(mode=0o600)
            path.write_text(text)
        os.replace(staging, folder)
    return folder


def write_certificates(directory: Path, routes: IngressRoutes) -> Path | None:
    """Each site's certificate and key as one PEM file (what HAProxy's ``crt <folder>`` loads), in
    the private folder (see :func:`_content_folder`)."""
    secure = routes.web.secure if routes.web is not None else ()
    if not secure:
        return None
    return _content_folder(
        directory, "certificates", {f"{site.service}.pem": site.certificate or "" for site in secure}
    )


def write_mesh_files(directory: Path, routes: IngressRoutes) -> MeshFiles | None:
    """The node's mesh certificate and the cluster CA, when the node takes part in the mesh."""
    mesh = routes.mesh
    if mesh is None or not mesh.credentials:
        return None
    folder = _content_folder(directory, "mesh", {"node.pem": mesh.credentials, "ca.pem": mesh.ca})
    return MeshFiles(folder / "node.pem", folder / "ca.pem")


def remove_other_certificates(directory: Path, keep: set[Path]) -> None:
    """Folders of certificates no configuration names any more (keys should not linger)."""
    for folder in (*directory.glob("certificates-*"), *directory.glob("mesh-*")):
        if folder not in keep:
            shutil.rmtree(folder, ignore_errors=True)


class Haproxy:
    """The HAProxy master of one node, in ``directory`` (private: its control socket is there).

    Contract: :meth:`apply` makes the proxy serve exactly the given routes (starting it, reloading
    it, or stopping it when there is nothing to serve: HAProxy will not run without a listener);
    it returns without change when the routes are the ones served. :meth:`stop` stops it and is
    safe to repeat. A master left by an oct-ctl that was killed is found by its pid file and
    replaced, so two never compete for the same ports.
    """

    def __init__(
        self, directory: Path, binary: str | None = None, drain_seconds: int = DRAIN_SECONDS
    ) -> None:
        self.directory = directory
        self.binary = binary or haproxy_binary()
        self.drain_seconds = drain_seconds
        self.config_path = directory / "haproxy.cfg"
        #: Made at start in a short private folder: HAProxy refuses socket paths over 97 bytes, and a
        #: project's folder can be deeper than that.
        self.master_socket = Path("/nonexistent/master.sock")
        self.pid_file = directory / "haproxy.pid"
        self.log_path = directory / "haproxy.log"
        self._process: asyncio.subprocess.Process | None = None
        self._served: IngressRoutes | None = None
        #: Where HAProxy's standard output, its access log, goes (see :mod:`access_log`).
        self.access = AccessLog(directory / "access.log")
        self._sockets: Path | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def served(self) -> IngressRoutes | None:
        """The routes the proxy serves, as HAProxy confirmed them (None: unknown or stopped)."""
        return self._served

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    async def apply(self, routes: IngressRoutes) -> bool:
        """Serve ``routes``; True if the proxy changed."""
        if routes.empty:
            was_running = self.running
            await self.stop()
            self._served = routes
            return was_running
        if routes == self._served and self.running:
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        candidate = self.config_path.with_name(self.config_path.name + ".new")
        certificates = write_certificates(self.directory, routes)
        mesh_files = write_mesh_files(self.directory, routes)
        self._socket_folder()
        candidate.write_text(render(routes, self.drain_seconds, certificates, mesh_files=mesh_files))
        await self._check(candidate)
        os.replace(candidate, self.config_path)
        self._served = None  # until HAProxy confirms: a failed reload leaves the old worker serving
        if self.running:
            await self._reload()
        else:
            await self._start()
        self._served = routes
        kept = {certificates} if certificates else set()
        kept |= {mesh_files.credentials.parent} if mesh_files else set()
        remove_other_certificates(self.directory, kept)
        return True

    async def stop(self) -> None:
        process, self._process = self._process, None
        self._served = None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), START_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()
        await self._stop_leftover()
        remove_socket_folder(self.master_socket)
        self._sockets = None
        remove_other_certificates(self.directory, set())

    def _socket_folder(self) -> None:
        """The private short folder of the master's control socket, made once per run of the
        proxy (HAProxy refuses socket paths over 97 bytes; a project's folder can be deeper)."""
        if self._sockets is None:
            self._sockets = Path(tempfile.mkdtemp(prefix="oct-ingress-", dir=runtime_dir()))
            self.master_socket = self._sockets / "master.sock"

    def rotate_access_log(self) -> None:
        self.access.rotate_if_full()

    async def _check(self, config: Path) -> None:
        checker = await asyncio.create_subprocess_exec(
            self.binary, "-c", "-q", "-f", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await checker.communicate()
        if checker.returncode != 0:
            raise IngressError(f"haproxy refused {config}: {output.decode(errors='replace').strip()}")

    async def _start(self) -> None:
        await self._stop_leftover()
        access = self.access.open()
        try:
            with open(self.log_path, "ab") as out:
                self._process = await asyncio.create_subprocess_exec(
                    self.binary, "-W", "-S", f"{self.master_socket},mode,600",
                    "-f", str(self.config_path), "-p", str(self.pid_file),
                    stdin=asyncio.subprocess.DEVNULL, stdout=access, stderr=out,
                    start_new_session=True,  # a Ctrl-C meant for a foreground oct-ctl is not the proxy's
                )  # fmt: skip
        finally:
            os.close(access)
        await self._wait_for_worker(reloads=0)
        log.info("ingress: haproxy %d serving %s", self._process.pid, self.config_path)

    async def _reload(self) -> None:
        assert self._process is not None
        reloads, failed = await self._counts_before_reload()
        self._process.send_signal(signal.SIGUSR2)
        now_failed = await self._wait_for_worker(reloads=reloads + 1)
        if now_failed > failed:
            raise IngressError(f"haproxy failed to reload {self.config_path}: see {self.log_path}")

    async def _wait_for_worker(self, reloads: int) -> int:
        """Wait until the master has done ``reloads`` reloads and runs a worker; its failed count."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            if not self.running:
                raise IngressError(f"haproxy exited (code {self._returncode()}): see {self.log_path}")
            with contextlib.suppress(OSError, ValueError):
                done, failed = await self._reload_counts()
                if done >= reloads and await self._has_worker():
                    return failed
            if loop.time() > deadline:
                raise IngressError(f"haproxy did not start a worker within {START_TIMEOUT:.0f}s")
            await asyncio.sleep(0.05)

    def _returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    async def _counts_before_reload(self) -> tuple[int, int]:
        """The master's counts, asked a few times: an answer can come back cut while the master is
        still busy with a previous reload, and that is no reason to give up on this one."""
        for _ in range(10):
            with contextlib.suppress(ValueError, OSError):
                return await self._reload_counts()
            await asyncio.sleep(0.1)
        raise IngressError(f"haproxy's master does not say how many reloads it did: see {self.log_path}")

    async def _reload_counts(self) -> tuple[int, int]:
        """The master's ``<reloads> [failed: <n>]`` from ``show proc``."""
        for line in (await self._ask("show proc")).splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[1] == "master":
                return int(fields[2]), int(fields[4].rstrip("]"))
        raise ValueError("no master line in show proc")

    async def stats(self) -> list[dict[str, str]]:
        """HAProxy's own counters (``show stat``: one row per frontend, server and backend) from
        the current worker; none while the proxy is stopped or does not answer. A reload starts a
        new worker, whose counters start from zero (Prometheus reads that as a counter reset)."""
        if not self.running:
            return []
        try:
            answer = await self._ask("@1 show stat")
        except (OSError, TimeoutError):
            return []
        header, _, rows = answer.lstrip("# ").partition("\n")
        return list(csv.DictReader(io.StringIO(rows), fieldnames=header.split(",")))

    async def _has_worker(self) -> bool:
        answer = await self._ask("show proc")
        workers = answer.partition("# workers")[2].partition("# programs")[0]
        return any(line.split()[1:2] == ["worker"] for line in workers.splitlines() if line.strip())

    async def _ask(self, command: str) -> str:
        """One command on the master's control socket (a Unix socket in the node's private folder)."""
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.master_socket), 2.0)
        try:
            # The master keeps a connection open after answering; "quit" makes it close, so EOF ends it.
            writer.write(command.encode() + b";quit\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.read(), 2.0)).decode(errors="replace")
        except RuntimeError as e:
            # uvloop's word for a socket the master closed under us (it re-executes on a reload):
            # a connection error like any other, which the callers retry.
            raise ConnectionResetError(f"haproxy's master closed its socket: {e}") from e
        finally:
            writer.close()

    async def _stop_leftover(self) -> None:
        """Stop a master an earlier oct-ctl started with this folder's configuration, if it is alive."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        argv = procfs.cmdline(pid) or []
        if str(self.config_path) in argv and (self._process is None or self._process.pid != pid):
            remove_socket_folder(master_socket_in(argv))
            log.info("ingress: stopping haproxy %d left by an earlier oct-ctl", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + START_TIMEOUT
            while procfs.pid_alive(pid) and loop.time() < deadline:  # its ports are free once it is gone
                await asyncio.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
