"""The DNS attacks themselves, as real packets: how each is sent and what bounds it is judged by.

Queries over UDP from a chosen source address and over TCP, a flood of forwards that samples
descriptors meanwhile, and a run of malformed packets (those with a readable header must get
FORMERR, the rest nothing) that reports what went wrong per kind. The in-process server and the
real ``oct-ctl`` node face the same ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable

from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

LOG_LINES_PER_KIND = 10  # the server's bound: this many lines a minute per kind, then one "suppressed" line


FD_SLACK = 64  # descriptors the server (and this process) may open besides the capped forwards


MAX_FORWARDS = 256


def query(name: str, qtype: str = "A", edns: int | None = None, ident: int | None = None) -> bytes:
    record = DNSRecord.question(name, qtype)
    if ident is not None:
        record.header.id = ident
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns))
    return bytes(record.pack())


async def udp_exchange(
    host: str, port: int, payload: bytes, source: str = "127.0.0.1", timeout: float = 3.0
) -> bytes | None:
    """One query from ``source``; the raw reply, or None when none came within ``timeout``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        await loop.sock_sendto(sock, payload, (host, port))
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
    except TimeoutError:
        return None
    finally:
        sock.close()


async def tcp_exchange(host: str, port: int, payload: bytes, source: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    try:
        writer.write(struct.pack("!H", len(payload)) + payload)
        await writer.drain()
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
        return await asyncio.wait_for(reader.readexactly(size), 5)
    finally:
        writer.close()


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def flood(
    host: str, port: int, count: int, sample: Callable[[], int], name: str = "q{i}.example.com"
) -> int:
    """``count`` queries for distinct outside names from 127.0.0.1; the peak of ``sample()`` meanwhile."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    peak = sample()
    try:
        for i in range(count):
            await loop.sock_sendto(sock, query(name.format(i=i)), (host, port))
            if i % 100 == 99:
                await asyncio.sleep(0.01)
                peak = max(peak, sample())
        for _ in range(20):
            await asyncio.sleep(0.01)
            peak = max(peak, sample())
    finally:
        sock.close()
    return peak


def header(ident: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def wire(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def in_a(name: bytes) -> bytes:
    return name + struct.pack("!HH", QTYPE.A, 1)


def pointer_chain(ident: int, links: int = 1500) -> bytes:
    """A question, then an RR whose rdata is a chain of compression pointers (each to the one before,
    the first to the question's name) and an RR whose name points at the chain's end: following it
    recurses ``links`` deep."""
    question = in_a(wire(b"web", b"shop", b"oct"))
    start = 12 + len(question) + 1 + 10  # the rdata of the first RR: after its root name and fixed fields
    chain = struct.pack("!H", 0xC000 | 12) + b"".join(
        struct.pack("!H", 0xC000 | (start + 2 * k)) for k in range(links - 1)
    )
    first = b"\0" + struct.pack("!HHIH", 65280, 1, 0, len(chain)) + chain
    last = struct.pack("!H", 0xC000 | (start + 2 * (links - 1))) + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4)
    return header(ident, ar=2) + question + first + last


#: Packets with a readable header: each must get FORMERR (or NOTIMP), with its id, and nothing else.
MALFORMED: dict[str, Callable[[int], bytes]] = {
    "a label over 63 bytes": lambda i: header(i) + in_a(b"\x40" + b"a" * 64 + wire(b"shop", b"oct")),
    "a name over 255 bytes, in the zone": lambda i: header(i) + in_a(wire(*[b"a" * 63] * 4, b"shop", b"oct")),
    "a name over 255 bytes, outside": lambda i: header(i) + in_a(wire(*[b"b" * 63] * 5)),
    "control bytes in a label": lambda i: header(i) + in_a(wire(b"we\x00b\x07", b"shop", b"oct")),
    "a dot inside a label": lambda i: header(i) + in_a(wire(b"web.shop", b"oct")),
    "bytes that are no UTF-8": lambda i: header(i) + in_a(wire(b"\xff\xfe", b"shop", b"oct")),
    "a compression loop": lambda i: header(i) + b"\xc0\x0c" + struct.pack("!HH", 1, 1),
    "a pointer forward": lambda i: header(i) + b"\xc0\xff" + struct.pack("!HH", 1, 1),
    "a deep pointer chain": pointer_chain,
    "a name cut short": lambda i: header(i) + b"\x05ab",
    "a question cut short": lambda i: header(i) + wire(b"web", b"shop", b"oct") + b"\x00",
    "no question": lambda i: header(i, qd=0),
    "two questions": lambda i: header(i, qd=2) + in_a(wire(b"web", b"shop", b"oct")) * 2,
    "answers in a query": lambda i: header(i, an=3) + in_a(wire(b"web", b"shop", b"oct")),
}


#: Packets to drop without a word: no header to answer, or a response (answering those could loop).
SILENT: dict[str, Callable[[int], bytes]] = {
    "shorter than a header": lambda i: struct.pack("!H", i) + b"\x01",
    "a response": lambda i: header(i, flags=0x8180) + b"\xc0\x0c" + struct.pack("!HH", 1, 1),
}


#: The id of the good query that follows each kind of packet to drop (the attack's are 1000 on).
PROBE_ID = 7


async def malformed_attack(host: str, port: int, per_kind: int = 30) -> dict[str, str]:
    """Send ``per_kind`` packets of every kind; what went wrong with the replies, by kind.

    A kind that must be dropped is followed by a good query from the same socket. The server reads
    a socket's packets in order and deals with each (reply, log line) before reading the next, so
    that query's answer proves every packet before it was handled: a reply to one would have come
    first. After the attack, every packet sent has been dealt with.
    """
    loop = asyncio.get_running_loop()
    problems: dict[str, str] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    try:
        for kinds, expect_reply in ((MALFORMED, True), (SILENT, False)):
            for kind, make in kinds.items():
                ids = {1000 + n for n in range(per_kind)}
                for ident in ids:
                    await loop.sock_sendto(sock, make(ident), (host, port))
                if not expect_reply:
                    await loop.sock_sendto(sock, query("probe.oct", ident=PROBE_ID), (host, port))
                    unwanted = await replies_until_probe(sock)
                    if unwanted is None:
                        problems[kind] = "no answer to a good query sent after them"
                    elif unwanted:
                        problems[kind] = f"{len(unwanted)} replies to packets that must be dropped"
                    continue
                replies: list[bytes] = []
                deadline = loop.time() + 1.0
                while len(replies) < len(ids) and loop.time() < deadline:
                    with contextlib.suppress(TimeoutError):
                        left = deadline - loop.time()
                        replies.append(await asyncio.wait_for(loop.sock_recv(sock, 65535), left))
                got = {struct.unpack("!H", r[:2])[0]: r for r in replies}
                rcodes = {r[3] & 0x0F for r in replies}
                if set(got) != ids:
                    problems[kind] = f"{len(ids - set(got))} of {len(ids)} got no reply"
                elif not rcodes <= {RCODE.FORMERR, RCODE.NOTIMP} or any(not r[2] & 0x80 for r in replies):
                    problems[kind] = f"rcodes {sorted(rcodes)}, not FORMERR"
                elif any(len(r) > 512 for r in replies):
                    problems[kind] = "a reply longer than the query deserves"
    finally:
        sock.close()
    return problems


async def replies_until_probe(sock: socket.socket, timeout: float = 5.0) -> list[bytes] | None:
    """The replies ``sock`` got before the answer to the query with :data:`PROBE_ID`, or None
    when that answer did not come within ``timeout``."""
    loop = asyncio.get_running_loop()
    probe = struct.pack("!H", PROBE_ID)
    replies: list[bytes] = []
    try:
        while True:
            reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
            if reply[:2] == probe:
                return replies
            replies.append(reply)
    except TimeoutError:
        return None
