"""What the two DNS servers of bench/dns.py must answer, and the checks that they do.

The records come from oct's deploy status; every query is asked with dnslib and its RCODE, A
addresses and SRV port/target compared, so a server that answers fast but wrongly never counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import BenchError, check_loopback_host

QUERY_TIMEOUT = 2.0


@dataclass(frozen=True)
class Query:
    name: str  # without the trailing dot
    qtype: str  # "A" or "SRV"


@dataclass
class Records:
    """What both servers must answer, derived from oct's deploy status and oct.toml."""

    a: dict[str, str] = field(default_factory=dict)  # name -> address
    srv: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (port, target)
    nxdomain: str = ""

    def queries(self) -> list[Query]:
        return [
            *(Query(name, "A") for name in self.a if ".node." not in name),
            *(Query(name, "SRV") for name in self.srv),
            Query(self.nxdomain, "A"),
        ]


@dataclass(frozen=True)
class Server:
    label: str  # "oct" or "dnsmasq"
    address: str
    port: int
    pid: int


def ask(host: str, port: int, query: Query) -> dict[str, Any]:
    """One query with dnslib; the parts both servers must agree on."""
    from dnslib import QTYPE, RCODE, DNSRecord

    check_loopback_host(host)
    raw = DNSRecord.question(query.name, query.qtype).send(host, port, timeout=QUERY_TIMEOUT)
    reply = DNSRecord.parse(raw)
    a = sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A)
    srv = sorted(
        (int(rr.rdata.port), str(rr.rdata.target).rstrip(".").lower())
        for rr in reply.rr
        if rr.rtype == QTYPE.SRV
    )
    return {"rcode": RCODE.get(reply.header.rcode), "a": a, "srv": srv}


def want(records: Records, query: Query) -> dict[str, Any]:
    if query.name == records.nxdomain:
        return {"rcode": "NXDOMAIN", "a": [], "srv": []}
    if query.qtype == "A":
        return {"rcode": "NOERROR", "a": [records.a[query.name]], "srv": []}
    port, target = records.srv[query.name]
    return {"rcode": "NOERROR", "a": [], "srv": [(port, target.lower())]}


def mismatches(server: Server, records: Records) -> list[str]:
    """Every query whose answer differs from the records (empty: the server answers them all)."""
    found = []
    for query in records.queries():
        try:
            got = ask(server.address, server.port, query)
        except Exception as e:  # timeouts, and whatever dnslib raises on a bad packet
            found.append(f"{query.name} {query.qtype}: no answer ({type(e).__name__}: {e})")
            continue
        if got != want(records, query):
            found.append(f"{query.name} {query.qtype}: got {got}, want {want(records, query)}")
    return found


def wait_answers(server: Server, records: Records, timeout: float) -> None:
    """Poll (bounded) until the server gives the expected answer to every query."""
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    for _ in range(int(timeout / 0.2) + 5):
        problems = mismatches(server, records)
        if not problems or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if problems:
        raise BenchError(f"{server.label} at {server.address}:{server.port} answers wrongly: {problems}")


def write_query_file(path: Path, records: Records) -> None:
    path.write_text("".join(f"{q.name} {q.qtype}\n" for q in records.queries()))
