"""Concurrent clients writing and reading through the HTTP API, recording a history to check.

Two kinds of keys:

- a few *register* keys shared by every client (``reg/0``..): contended writes and linearizable
  reads, the material of the linearizability check;
- *write-once* keys (``once/<client>/<n>``), one per write: after healing, every acknowledged one
  must still be there with its value (a lost write is reported as such, not only as a violation).

Every written value is unique (``c<client>-<n>``), which lets a read name the write it saw.

Each operation goes to a node picked by the client's seeded generator. What counts as what:

- 200 (and 404 for a read: the key does not exist) is a completed operation with its result;
- a write answered otherwise, or not at all within the timeout, is *indeterminate*: it may or may not
  have taken effect, so it stays open-ended in the history;
- a request that never left (connection refused: the node is down) had no effect and is dropped,
  as is a read that got no answer (a read without a result constrains nothing).

The seed fixes the sequence of operations and nodes of each client, not the interleaving: that
depends on timing, like the faults' exact effect.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx

from tests.chaos.linearizability import Op

#: answers that mean "could not do it now" (no leader, no quorum, leader unreachable)
UNAVAILABLE = {502, 503, 504}


@dataclass
class Record:
    client: int
    kind: Literal["write", "read"]
    key: str
    value: str | None
    node: str
    start: float
    end: float | None = None  # None: indeterminate (or, for a read, no answer)
    status: int | None = None  # HTTP status, None when there was none
    output: str | None = None
    revision: int | None = None
    error: str | None = None
    sent: bool = True

    @property
    def acknowledged(self) -> bool:
        return self.kind == "write" and self.status == 200

    def to_op(self) -> Op | None:
        """This record as the checker sees it, or None when it has no place in the history."""
        if not self.sent:
            return None
        if self.kind == "read":
            if self.status not in (200, 404):
                return None
            return Op(self.key, "read", None, self.start, self.end, output=self.output, client=self.client)
        end = self.end if self.status == 200 else None
        return Op(self.key, "write", self.value, self.start, end, client=self.client)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class History:
    records: list[Record]
    t0: float

    def ops(self) -> list[Op]:
        return [op for r in self.records if (op := r.to_op()) is not None]

    def acknowledged_once(self) -> dict[str, str]:
        """Write-once key -> value, for every acknowledged write-once write."""
        return {
            r.key: r.value for r in self.records if r.acknowledged and r.key.startswith("once/") and r.value
        }

    def unexpected(self) -> list[Record]:
        """Answers outside the API's contract (200/404/503 family): a 500 or a 4xx is a finding."""
        allowed = {200, *UNAVAILABLE}
        return [
            r
            for r in self.records
            if r.status is not None and r.status not in allowed and not (r.kind == "read" and r.status == 404)
        ]

    def counts(self) -> dict[str, int]:
        writes = [r for r in self.records if r.kind == "write" and r.sent]
        reads = [r for r in self.records if r.kind == "read" and r.sent]
        return {
            "ops": len(writes) + len(reads),
            "writes_ok": sum(r.acknowledged for r in writes),
            "writes_indeterminate": sum(not r.acknowledged for r in writes),
            "reads_ok": sum(r.status in (200, 404) for r in reads),
            "reads_failed": sum(r.status not in (200, 404) for r in reads),
        }


class Client:
    """One sequential client: it waits for each answer before the next operation, like a real one."""

    def __init__(
        self,
        cid: int,
        http: httpx.AsyncClient,
        apis: dict[str, str],
        rng: random.Random,
        register_keys: int,
        records: list[Record],
        op_timeout: float,
    ) -> None:
        self.cid = cid
        self.http = http
        self.apis = apis
        self.rng = rng
        self.register_keys = register_keys
        self.records = records
        self.op_timeout = op_timeout
        self.n = 0

    async def run(self, until: float) -> None:
        names = sorted(self.apis)
        while time.monotonic() < until:
            self.n += 1
            node = self.rng.choice(names)
            roll = self.rng.random()
            if roll < 0.4:
                await self.write(node, f"reg/{self.rng.randrange(self.register_keys)}")
            elif roll < 0.8:
                await self.read(node, f"reg/{self.rng.randrange(self.register_keys)}")
            else:
                await self.write(node, f"once/{self.cid}/{self.n}")
            await asyncio.sleep(self.rng.uniform(0.01, 0.05))

    async def write(self, node: str, key: str) -> None:
        value = f"c{self.cid}-{self.n}"
        rec = Record(self.cid, "write", key, value, node, time.monotonic())
        self.records.append(rec)
        await self._call(rec, "PUT", {"value": value})

    async def read(self, node: str, key: str) -> None:
        rec = Record(self.cid, "read", key, None, node, time.monotonic())
        self.records.append(rec)
        await self._call(rec, "GET", None)

    async def _call(self, rec: Record, method: str, body: dict[str, str] | None) -> None:
        url = f"{self.apis[rec.node]}/v1/kv/{rec.key}"
        try:
            resp = await self.http.request(method, url, json=body, timeout=self.op_timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            rec.sent = False  # nothing reached the node: no effect
            rec.error = type(e).__name__
            return
        except httpx.HTTPError as e:
            rec.error = type(e).__name__  # sent, no answer: indeterminate
            return
        rec.status = resp.status_code
        if resp.status_code == 200:
            rec.end = time.monotonic()
            data = resp.json()
            rec.output = data.get("value") if rec.kind == "read" else None
            rec.revision = data.get("revision")
        elif resp.status_code == 404 and rec.kind == "read":
            rec.end = time.monotonic()
        else:
            rec.error = resp.text[:200]


async def run_clients(
    apis: dict[str, str],
    headers: dict[str, str],
    tls: ssl.SSLContext,
    seed: int,
    duration: float,
    clients: int = 4,
    register_keys: int = 3,
    op_timeout: float = 7.0,
) -> History:
    """Run ``clients`` concurrent clients for ``duration`` seconds (plus the last in-flight op)."""
    records: list[Record] = []
    t0 = time.monotonic()
    until = t0 + duration
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=0)
    async with httpx.AsyncClient(headers=headers, trust_env=False, limits=limits, verify=tls) as http:
        workers = [
            Client(c, http, apis, random.Random(f"{seed}/client/{c}"), register_keys, records, op_timeout)
            for c in range(clients)
        ]
        await asyncio.gather(*(w.run(until) for w in workers))
    return History(records, t0)


async def read_back(
    apis: dict[str, str],
    headers: dict[str, str],
    tls: ssl.SSLContext,
    keys: list[str],
    attempts: int = 20,
    op_timeout: float = 7.0,
) -> list[Record]:
    """Linearizable reads of ``keys`` after healing (client -1), retried while the cluster answers
    503; they join the history, so "an acknowledged write is still there" is checked twice: directly
    and by the linearizability check."""
    out: list[Record] = []
    names = sorted(apis)
    async with httpx.AsyncClient(headers=headers, trust_env=False, verify=tls) as http:
        reader = Client(-1, http, apis, random.Random(0), 1, out, op_timeout)
        for i, key in enumerate(keys):
            for attempt in range(attempts):
                node = names[(i + attempt) % len(names)]
                await reader.read(node, key)
                if out[-1].status in (200, 404):
                    break
                await asyncio.sleep(0.25)
    return out
