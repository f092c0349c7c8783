"""Answers from the cluster zone, built synchronously on the event loop and kept packed.

A question inside the zone (or anywhere under the cluster's domain) is answered here from the
:class:`Zone` the caller passes in (the node caches it per state version); any other question is
not ours, and the server forwards it or refuses it (:mod:`octctl.dns.forwarding`). These answers
are the same for every client and transport, so they are cached as packed bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnslib import RCODE, DNSHeader, DNSRecord

from octctl.dns.stats import Stats
from octctl.dns.wire import under
from octctl.dns.zone import Answer, Zone

CACHE_LIMIT = 4096  # packed answers kept per zone version; a flood of random names cannot grow it further


@dataclass
class ZoneAnswers:
    """The replies for names under ``domain``, and a cache of them packed, per zone version."""

    domain: str
    stats: Stats
    _cache_zone: Zone | None = None
    _cache: dict[tuple[bool, bytes], bytes] = field(default_factory=dict)

    def cached(self, zone: Zone | None, data: bytes, tcp: bool) -> bytes | None:
        """A packed answer for an identical query (same bytes after the id) to the same zone.

        Parsing and packing with dnslib costs ~50 us a query; the zone changes rarely and clients
        ask the same few names, so most answers are a dict lookup and a new id. The question is part
        of the key byte for byte, so its case (0x20 randomisation) comes back as it was sent. Only
        zone answers are cached: they are the same for every client.
        """
        if zone is not self._cache_zone:
            self._cache_zone = zone
            self._cache.clear()
            return None
        packed = self._cache.get((tcp, data[2:]))
        if packed is None:
            return None
        self.stats.queries += 1
        self.stats.answered += 1
        return data[:2] + packed

    def remember(self, data: bytes, tcp: bool, packed: bytes) -> None:
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[(tcp, data[2:])] = packed[2:]

    def answer(self, zone: Zone | None, request: DNSRecord) -> DNSRecord | None:
        """The reply when the question is ours to answer, else None (forward it)."""
        question = request.q
        if zone is None or not zone.contains(question.qname):
            if not under(question.qname, self.domain):
                return None
            found = Answer(authoritative=True)  # our domain, another (or no) project: NXDOMAIN
        else:
            found = zone.lookup(question.qname, question.qtype)
        reply = DNSRecord(DNSHeader(id=request.header.id, qr=1, aa=1, ra=1, rd=request.header.rd), q=question)
        for rr in found.answers:
            reply.add_answer(rr)
        for rr in found.authority:
            reply.add_auth(rr)
        for rr in found.additional:
            reply.add_ar(rr)
        if not found.exists:
            reply.header.rcode = RCODE.NXDOMAIN
            self.stats.nxdomain += 1
        self.stats.answered += 1
        return reply
