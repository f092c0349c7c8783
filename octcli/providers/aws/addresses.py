"""Where the CLI reaches an AWS cluster's nodes, and whether its leader answers there.

The cluster knows its nodes by private addresses the CLI cannot reach, so the CLI asks EC2 for
the public ones (or, under a test harness that plays the hypervisor, an address book), and waits
on them while a fresh leader instance boots.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from octcli.client import OctClient
from octcli.errors import OctError, Timeout
from octcli.providers.aws.ledger import connect, ledger_of
from octcli.state import ClusterRecord
from octctl.addresses import DEFAULT_API_PORT

if TYPE_CHECKING:
    from octctl.providers.aws.instances import Instance
    from octctl.providers.aws.session import AwsClients

__all__ = [
    "ADDRESS_BOOK_ENV",
    "answers",
    "api_address",
    "cluster_addresses",
    "wait_for_address",
    "wait_for_leader",
]

Phase = Callable[[str], None]
#: A JSON file mapping instance id -> the address its API is reached at. For a test harness that
#: plays the hypervisor (every "instance" is a local process on 127.0.0.N); unset, the CLI uses the
#: instance's public IP as AWS reports it.
ADDRESS_BOOK_ENV = "OCT_AWS_ADDRESS_BOOK"


def api_address(instance: Instance) -> str | None:
    book = os.environ.get(ADDRESS_BOOK_ENV)
    if book:
        with contextlib.suppress(OSError, ValueError):
            host = json.loads(Path(book).read_text()).get(instance.id)
            return f"{host}:{DEFAULT_API_PORT}" if host else None
        return None
    return f"{instance.public_ip}:{DEFAULT_API_PORT}" if instance.public_ip else None


def cluster_addresses(record: ClusterRecord) -> list[str]:
    """The API addresses of the cluster's running instances, from EC2 (the recorded ones may be gone:
    the leader the CLI first met can have been replaced since)."""
    from octctl.providers.aws.instances import find_instances
    from octctl.providers.aws.session import AwsError

    ledger = ledger_of(record)
    if ledger is None:
        return record.nodes
    try:
        running = find_instances(connect(ledger.region), ledger.cluster, states=("running",))
    except AwsError as e:
        raise OctError(str(e)) from None
    found = [address for instance in running if (address := api_address(instance)) is not None]
    return found or record.nodes


def wait_for_address(clients: AwsClients, instance_id: str, say: Phase, timeout: float = 300.0) -> str:
    from octctl.providers.aws.instances import get_instance

    deadline = time.monotonic() + timeout
    while True:
        instance = get_instance(clients, instance_id)
        if instance is None or instance.state in ("shutting-down", "terminated"):
            raise OctError(f"the leader instance {instance_id} is gone; run `oct deploy` again")
        address = api_address(instance) if instance.state == "running" else None
        if address is not None:
            say(f"leader instance {instance_id} is running at {address.rsplit(':', 1)[0]}")
            return address
        if time.monotonic() > deadline:
            raise Timeout(f"instance {instance_id} got no address within {timeout:.0f} s")
        time.sleep(1.0)


def answers(record: ClusterRecord) -> bool:
    """Whether a recorded node answers as the leader."""
    if not record.nodes:  # genesis stopped before the leader had an address
        return False
    with OctClient(record.nodes, record.token, record.ca_cert, timeout=3.0, retry_for=0) as client:
        for node in record.nodes:
            with contextlib.suppress(OctError):
                if client.status(node).leader:
                    return True
    return False


def wait_for_leader(record: ClusterRecord, say: Phase, timeout: float) -> None:
    say(f"waiting for oct-ctl on {record.nodes[0]} (installing on a fresh VM takes a few minutes)")
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 30
    while not answers(record):
        if time.monotonic() > deadline:
            raise Timeout(
                f"the leader at {record.nodes[0]} did not answer within {timeout:.0f} s; its boot log is "
                "in the EC2 console (Get system log); run `oct deploy` again to keep waiting"
            )
        if time.monotonic() > next_note:
            say(f"still waiting for {record.nodes[0]}")
            next_note += 30
        time.sleep(1.0)
