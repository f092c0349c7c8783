"""A real ACME CA on loopback for the HTTPS tests: Caddy's ``acme_server`` (Debian's caddy) with its
internal CA.

The CA is a real one: it places orders, fetches ``http://<name>/.well-known/acme-challenge/<token>``
on port 80 of the address the name resolves to, and signs with a root that the tests then trust,
and only them. Names resolve through a hosts file of Caddy's own, bind-mounted over /etc/hosts in a
mount namespace made for it (``unshare``, as root): Caddy 2.6's ``resolvers`` option only serves
DNS-01, and the machine's /etc/hosts stays untouched. Nothing leaves the machine.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.wait import wait_until

CADDYFILE = """\
{{
    admin off
    skip_install_trust
    auto_https disable_redirects
    http_port {http_port}
    storage file_system {storage}
}}
https://127.0.0.1:{port} {{
    tls internal
    acme_server {{
        lifetime 12h
    }}
}}
"""

#: Runs Caddy with ``$0`` (our hosts file) mounted over /etc/hosts, in a mount namespace of its own.
_WITH_HOSTS = 'mount --bind "$0" /etc/hosts && exec "$@"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AcmeCa:
    """The CA's directory URL, its root certificate, and where it resolves names."""

    directory: str
    root: Path
    hosts: Path

    def point(self, name: str, address: str) -> None:
        """Make the CA find ``name`` at ``address`` (the file is rewritten in place: same inode,
        so the bind mount sees it)."""
        with open(self.hosts, "a") as out:
            out.write(f"{address} {name}\n")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA's root and nothing else."""
        return ssl.create_default_context(cafile=str(self.root))


@contextmanager
def acme_ca(folder: Path) -> Iterator[AcmeCa]:
    """Caddy as an ACME CA on 127.0.0.1, until the block ends."""
    caddy = shutil.which("caddy")
    assert caddy, "caddy is not installed (apt-get install caddy): the HTTPS tests need its ACME CA"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = folder / "Caddyfile"
    config.write_text(CADDYFILE.format(storage=folder / "data", port=port, http_port=free_port()))
    hosts = folder / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    command = [caddy, "run", "--config", str(config), "--adapter", "caddyfile"]
    log = open(folder / "caddy.log", "wb")  # noqa: SIM115 (open until the CA stops, below)
    process = subprocess.Popen(
        ["unshare", "--mount", "--", "sh", "-c", _WITH_HOSTS, str(hosts), *command],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"), "PATH": "/usr/bin:/bin"},
    )
    root = folder / "data" / "pki" / "authorities" / "local" / "root.crt"
    directory = f"https://127.0.0.1:{port}/acme/local/directory"
    try:
        wait_until(root.exists, timeout=20, message=f"caddy to create its root certificate (see {log.name})")
        context = ssl.create_default_context(cafile=str(root))

        def answers() -> bool:
            try:
                with urllib.request.urlopen(directory, context=context, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_until(answers, timeout=20, message=f"caddy's ACME directory at {directory} (see {log.name})")
        yield AcmeCa(directory, root, hosts)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
