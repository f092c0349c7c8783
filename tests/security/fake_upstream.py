"""A fake resolver behind the DNS server under attack, counting every packet that reaches it.

It listens on 127.0.0.53 (UDP and TCP, one port) in a thread and answers each query with ~3.8 KB
of TXT records, or (``silent``) never answers: what an open forwarder or an amplifier would relay,
and a resolver that holds a forward's socket for as long as it can.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading

from dnslib import QTYPE, RR, TXT, DNSRecord

UPSTREAM_HOST = "127.0.0.53"


UPSTREAM_RECORDS = 60  # TXT records of 50 bytes: a 3.8 KB answer


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class FakeUpstream:
    """A resolver on 127.0.0.53, UDP and TCP, in a thread: counts every query that reaches it and
    answers it with ``UPSTREAM_RECORDS`` TXT records, or (``silent``) never answers."""

    def __init__(self, host: str = UPSTREAM_HOST) -> None:
        for _ in range(5):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((host, 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(udp.getsockname())
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:
            raise AssertionError("no port free for UDP and TCP on the fake upstream")
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        tcp.listen(64)
        self.udp, self.tcp = udp, tcp
        self.address: tuple[str, int] = udp.getsockname()
        self.received = 0
        self.silent = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()

    def answer(self, data: bytes) -> bytes | None:
        if self.silent:
            return None
        try:
            request = DNSRecord.parse(data)
            reply = request.reply()
            for _ in range(UPSTREAM_RECORDS):
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT("x" * 50), ttl=60))
            return bytes(reply.pack())
        except Exception:  # whatever reached us unparsed is counted, not answered
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.05)
            for sock in ready:
                if sock is self.udp:
                    data, peer = self.udp.recvfrom(65535)
                    self.received += 1
                    answer = self.answer(data)
                    if answer is not None:
                        self.udp.sendto(answer, peer)
                    continue
                conn, _ = self.tcp.accept()
                with conn, contextlib.suppress(OSError, struct.error):
                    conn.settimeout(2)
                    size = struct.unpack("!H", _recv_exactly(conn, 2))[0]
                    data = _recv_exactly(conn, size)
                    self.received += 1
                    answer = self.answer(data)
                    if answer is not None:
                        conn.sendall(struct.pack("!H", len(answer)) + answer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.udp.close()
        self.tcp.close()
