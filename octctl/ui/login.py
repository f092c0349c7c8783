"""The dashboard's login: a link that works once, for a minute, then a cookie for the browser.

The API token must never sit in a browser's history, cookie jar or address bar: ``oct ui`` asks
the API (with the token) for a link, and the link carries a code that proves a token holder
asked for it without containing the token. Redeeming the code sets a session cookie that opens
only the read-only pages under ``/ui``, never the API (which wants the bearer token).

Both are HMACs under a key derived from the cluster token, so a node checks them with no Raft
write and no shared table, and rotating the token ends every session. A code names the node that
made it (the link points there) and that node remembers the codes it has redeemed until they
expire, so a copied link is refused once used, on every node.

Codes and cookies come from browsers, so they are read as untrusted input: bounded in length
and checked against a strict pattern before any part of them is parsed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time

__all__ = ["COOKIE", "LINK_SECONDS", "SESSION_SECONDS", "Logins"]

#: How long a login link works: enough to click it, too short to matter in a shell history.
LINK_SECONDS = 60
#: How long a dashboard session lasts (a working day); then ``oct ui`` again.
SESSION_SECONDS = 8 * 3600
#: The session cookie's name.
COOKIE = "oct_ui"
#: ``<expiry>.<nonce>.<mac>``: digits, then URL-safe base64 of 16 and 32 bytes.
_SHAPE = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})")
_MAX = 100


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Logins:
    """Login codes and session cookies for one node of a cluster."""

    def __init__(self, token: str, node: str) -> None:
        self._key = hmac.new(token.encode(), b"oct-ui-v1", hashlib.sha256).digest()
        self._node = node
        self._redeemed: dict[str, int] = {}  # nonce -> expiry, until it passes

    def _mac(self, purpose: str, expiry: int, nonce: str) -> str:
        message = f"{purpose}|{expiry}|{nonce}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def _make(self, purpose: str, lifetime: int, now: float) -> str:
        expiry, nonce = int(now) + lifetime, _b64(secrets.token_bytes(16))
        return f"{expiry}.{nonce}.{self._mac(purpose, expiry, nonce)}"

    def _check(self, purpose: str, value: str | None, now: float) -> tuple[int, str] | None:
        """(expiry, nonce) of a genuine, unexpired value of ``purpose``; None for anything else."""
        if value is None or len(value) > _MAX or (found := _SHAPE.fullmatch(value)) is None:
            return None
        expiry, nonce, mac = int(found[1]), found[2], found[3]
        if not hmac.compare_digest(mac, self._mac(purpose, expiry, nonce)) or expiry <= now:
            return None
        return expiry, nonce

    def link_code(self, now: float | None = None) -> str:
        """A new login code for this node, good for :data:`LINK_SECONDS`."""
        return self._make(f"link|{self._node}", LINK_SECONDS, time.time() if now is None else now)

    def redeem(self, code: str | None, now: float | None = None) -> str | None:
        """A session cookie's value for a genuine code seen here for the first time, else None."""
        now = time.time() if now is None else now
        checked = self._check(f"link|{self._node}", code, now)
        self._redeemed = {n: e for n, e in self._redeemed.items() if e > now}
        if checked is None or checked[1] in self._redeemed:
            return None
        self._redeemed[checked[1]] = checked[0]
        return self._make("session", SESSION_SECONDS, now)

    def session_ok(self, cookie: str | None, now: float | None = None) -> bool:
        return self._check("session", cookie, time.time() if now is None else now) is not None
