"""``oct-ctl``: run one node until SIGTERM (systemd, the local provider) or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web
from pydantic import ValidationError

from octctl import __version__
from octctl.node_settings import read_node_files
from octctl.runtime.firewall import FirewallError
from octctl.state.machine import RaftUnavailable
from octctl.state.raft_files import CorruptRaftFiles, reset_raft_files

log = logging.getLogger("octctl")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="oct-ctl",
        description="The oct node daemon. One-shot commands: `oct-ctl bootstrap --help` (write a new "
        "VM's node files), `oct-ctl reset-raft --data-dir DIR` (set damaged Raft files aside to rejoin "
        "from the peers).",
    )
    parser.add_argument(
        "--data-dir", required=True, type=Path, help="holds node.json, secrets.json and Raft files"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--log-file",
        type=Path,
        help="log to this file, with stdout and stderr, rotated at 10 MB keeping 3 old files "
        "(FILE.1 to FILE.3); default: stderr",
    )
    parser.add_argument("--version", action="version", version=f"oct-ctl {__version__}")
    return parser.parse_args(argv)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3


class _RotatingLog(logging.handlers.RotatingFileHandler):
    """A rotated log file that also takes the process's stdout and stderr (fds 1 and 2).

    They are pointed at the current file again after every rotation, so what bypasses logging (the
    last words of a crash, a library's print) lands in the same bounded file, never in a renamed or
    deleted one.
    """

    def doRollover(self) -> None:
        super().doRollover()
        self.capture_std()

    def capture_std(self) -> None:
        if self.stream is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.stream.fileno(), 1)
        os.dup2(self.stream.fileno(), 2)


def setup_logging(
    level: str, log_file: Path | None = None, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS
) -> None:
    """Log to stderr, or (``--log-file``) to a file rotated at ``max_bytes`` keeping ``backups`` old ones."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        rotating = _RotatingLog(log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        rotating.capture_std()
        handler = rotating
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def trim_memory(every: float = 30.0) -> None:
    """Hand freed heap back to the OS now and then.

    Start-up (imports, the first deploy) leaves a lot of freed-but-mapped heap behind; an idle node
    should not keep it resident. glibc only: elsewhere this is a no-op.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    while True:
        await asyncio.sleep(every)
        gc.collect()
        libc.malloc_trim(0)


#: Allocations between young-generation collections (CPython's default: 700). An API request
#: allocates a few hundred short-lived containers, so the default collected every few requests
#: (what this and the freeze below gained: docs/operations.md#benchmarks).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Keep the cyclic collector off the write path.

    Everything alive after start-up (modules, the app, the Raft replica) is moved out of the
    collector's reach with ``gc.freeze()``: a full collection over those tens of thousands of
    objects is a stall of milliseconds for every request in flight. Young collections are made
    rarer for the same reason.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def serve(data_dir: Path, log_file: Path | None = None) -> None:
    from octctl.node import Node
    from octctl.server.app import build_app
    from octctl.server.limits import limit_connections
    from octctl.server.site import TlsSite

    settings, secrets = read_node_files(data_dir)
    node = Node(settings, secrets, data_dir, log_file=log_file)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stopping.set)
    await node.start()
    tune_gc()
    runner = web.AppRunner(build_app(node), access_log=None, keepalive_timeout=settings.api_idle_timeout)
    trimmer = asyncio.create_task(trim_memory())
    try:
        await runner.setup()
        assert runner.server is not None
        limit_connections(runner.server)
        # HTTPS only: the node's certificate from the cluster CA; nodes present theirs (mutual TLS).
        site = TlsSite(
            runner,
            settings.address,
            settings.api_port,
            ssl_context=node.identity.server_context(),
            reuse_address=True,
        )
        await site.start()
        log.info(
            "oct-ctl %s: node %s serving on %s (raft %s)",
            __version__,
            settings.node,
            settings.api_address,
            settings.raft_address,
        )
        await node.stopping.wait()
    finally:
        # Also on a failed start (port taken): leave no Raft socket or half-open session behind.
        trimmer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trimmer
        log.info("stopping node %s", settings.node)
        await runner.cleanup()
        await node.stop()


def main(argv: list[str] | None = None) -> None:
    given = sys.argv[1:] if argv is None else argv
    # One-shot subcommands; the daemon's own arguments stay as they were.
    if given[:1] == ["bootstrap"]:
        from octctl.providers.aws.bootstrap import main as bootstrap

        bootstrap(given[1:])
        return
    if given[:1] == ["reset-raft"]:
        reset_raft(given[1:])
        return
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_file)
    try:
        uvloop.run(serve(args.data_dir, args.log_file))
    except FileNotFoundError as e:
        sys.exit(f"oct-ctl: {e}")
    except ValidationError as e:
        # Field paths and reasons only: the input may be secrets.json, whose values must not be printed.
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        sys.exit(f"oct-ctl: invalid {e.title} file in {args.data_dir}: {problems}")
    except (CorruptRaftFiles, RaftUnavailable, FirewallError) as e:  # damaged files; port taken; no iptables
        sys.exit(f"oct-ctl: {e}")
    except ValueError as e:  # not JSON at all (json.JSONDecodeError)
        sys.exit(f"oct-ctl: cannot read the node files in {args.data_dir}: {e}")


def reset_raft(argv: list[str]) -> None:
    """Set this node's Raft files aside so it starts empty and copies the state from the leader.

    Only for a node whose files are damaged (oct-ctl refuses to start and says so) and whose
    cluster still has a live majority; the old files are kept beside, never deleted.
    """
    parser = argparse.ArgumentParser(prog="oct-ctl reset-raft", description=reset_raft.__doc__)
    parser.add_argument("--data-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    if not (args.data_dir / "node.json").exists():
        sys.exit(f"oct-ctl reset-raft: {args.data_dir} is not a node's data directory (no node.json)")
    aside = reset_raft_files(args.data_dir)
    if aside is None:
        print(f"no Raft files in {args.data_dir}; nothing to do")
    else:
        print(f"moved the Raft files to {aside}; start oct-ctl again to rejoin from the peers")
