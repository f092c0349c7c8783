"""The DNS packet rules that need no server state: which packets are queries we read, the
header-only replies to those we will not, and how large a UDP answer may be.

Each rule is a pure function over bytes (dnslib for the wire format), the same for the UDP and TCP
transports and for answers from the zone or from an upstream; the server counts and logs.

- **Malformed packets** get FORMERR (NOTIMP for an opcode other than QUERY) when their header can be
  read, and nothing otherwise (nor does a response: answering those could start a loop between two
  servers).
- **No amplification.** A UDP answer larger than the client's limit (512 bytes, or its EDNS0 size
  up to :data:`EDNS_LIMIT`) goes back as the question alone with TC, so the client retries on TCP.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dnslib import QTYPE, RCODE, DNSHeader, DNSLabel, DNSRecord

UDP_LIMIT = 512  # without EDNS0 (RFC 1035)
#: The most we ever answer over UDP, whatever a client advertises (DNS Flag Day 2020: no IP
#: fragmentation, and at most ~40x a minimal query).
EDNS_LIMIT = 1232
#: The largest query we parse: a question, an OPT record and a signature fit many times over; a
#: bigger "query" is FORMERR unread (it would only buy CPU, e.g. long compression-pointer chains).
QUERY_LIMIT = 1232
#: Bytes no label of a query may hold: control characters, DEL, and "." (a label is not a dotted name).
BAD_LABEL_BYTES = bytes(range(0x20)) + b"\x7f."

_QR, _OPCODE, _RD, _RA = 0x8000, 0x7800, 0x0100, 0x0080


@dataclass(frozen=True)
class Malformed:
    """A packet that is no query we answer: why (for the log), and what to send back (None: nothing)."""

    why: str
    reply: bytes | None
    rcode: int


def read_query(data: bytes) -> DNSRecord | Malformed:
    """The query in ``data``, or why it is none and what goes back instead."""
    if len(data) < 12:
        return Malformed("no DNS header", None, RCODE.FORMERR)
    if data[2] & 0x80:
        return Malformed("a response, not a query", None, RCODE.FORMERR)
    opcode = (data[2] >> 3) & 0x0F
    if opcode != 0:
        return _malformed(f"opcode {opcode}", data, RCODE.NOTIMP)
    qd, an, ns, ar = struct.unpack_from("!4H", data, 4)
    if qd != 1 or an or ns or ar > 2:
        return _malformed(f"section counts {qd}/{an}/{ns}/{ar}", data)
    if len(data) > QUERY_LIMIT:
        return _malformed(f"{len(data)} bytes", data)
    try:
        request = DNSRecord.parse(data)
    except Exception as e:  # dnslib raises DNSError, BufferError, ValueError, struct.error, ...
        return _malformed(type(e).__name__, data)
    problem = name_problem(request.q.qname)
    if problem is not None:
        return _malformed(problem, data)
    return request


def _malformed(why: str, data: bytes, rcode: int = RCODE.FORMERR) -> Malformed:
    return Malformed(why, error_reply(data, rcode), rcode)


def error_reply(data: bytes, rcode: int) -> bytes:
    """A header-only reply to the query whose header starts ``data``: its id, opcode and RD kept."""
    flags = (data[2] << 8) | data[3]
    return data[:2] + struct.pack("!5H", _QR | (flags & (_OPCODE | _RD)) | _RA | rcode, 0, 0, 0, 0)


def failure_reply(request: DNSRecord, rcode: int) -> bytes:
    """``rcode`` (SERVFAIL, REFUSED) for a parsed query, its question repeated."""
    reply = DNSRecord(DNSHeader(id=request.header.id, qr=1, ra=1, rd=request.header.rd, rcode=rcode))
    reply.add_question(request.q)
    return bytes(reply.pack())


def name_problem(name: DNSLabel) -> str | None:
    """Why ``name`` cannot be a question (RFC 1035 sizes, no control bytes or dots in a label), or None."""
    size = 1
    for label in name.label:
        if len(label) > 63:
            return "a label over 63 bytes"
        if len(label.translate(None, BAD_LABEL_BYTES)) != len(label):
            return "a control byte or dot in a label"
        size += 1 + len(label)
    return "a name over 255 bytes" if size > 255 else None


def under(name: object, domain: str) -> bool:
    """Whether ``name`` is ``domain`` or a name below it (case-insensitive)."""
    text = str(name).lower().rstrip(".")
    return text == domain or text.endswith("." + domain)


def udp_limit(request: DNSRecord) -> int:
    """The largest UDP answer ``request``'s client takes: 512, or its EDNS0 size up to EDNS_LIMIT."""
    limit = UDP_LIMIT
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            limit = max(UDP_LIMIT, min(int(rr.rclass), EDNS_LIMIT))
    return limit


def truncated(request: DNSRecord, packed: bytes) -> bytes:
    """The question alone with TC and the flags of the answer ``packed``: retry on TCP."""
    header = DNSHeader(id=request.header.id, bitmap=(packed[2] << 8) | packed[3], tc=1)
    return bytes(DNSRecord(header, q=request.q).pack())
