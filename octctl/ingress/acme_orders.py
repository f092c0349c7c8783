"""Certificates over ACME (RFC 8555) with HTTP-01 challenges, through certbot's ``acme`` library.

Only the protocol lives here: an order is begun (the CA hands out challenges), the caller makes
every node serve the challenges' answers, and the order is finished (the CA checks them and signs).
Where the account, the answers and the certificates are kept is the caller's business: the leader
keeps them in the replicated state, so any node answers a challenge and a new leader reuses the
account instead of registering again.

Every call blocks on the network (``acme`` is built on ``requests``): run them in a thread. The
library is imported when an order starts, so a node without a domain never loads it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

if TYPE_CHECKING:
    from acme import client as acme_client
    from acme import messages

__all__ = ["AcmeEndpoint", "AcmeError", "Challenge", "Issued", "Order", "new_key_pem"]

#: Token and key authorization are base64url (RFC 8555 §8.1, §8.3): nothing else is ever
#: written into the proxy's configuration, whatever a CA sends.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]{16,128}")
_KEY_AUTHORIZATION = re.compile(r"[A-Za-z0-9_-]{16,128}\.[A-Za-z0-9_-]{16,128}")


class AcmeError(Exception):
    """An order that did not produce a certificate: the CA's words, for the log and the status."""


@dataclass(frozen=True)
class AcmeEndpoint:
    """Which CA, as whom. ``ca_pem`` is a CA bundle for the directory's own TLS (a private CA
    such as step-ca or a test's Caddy); None trusts the system's CAs."""

    directory: str
    email: str | None = None
    ca_pem: str | None = None


@dataclass(frozen=True)
class Challenge:
    """One HTTP-01 challenge: ``GET /.well-known/acme-challenge/<token>`` must answer ``validation``."""

    token: str
    validation: str

    def __post_init__(self) -> None:
        if not _BASE64URL.fullmatch(self.token) or not _KEY_AUTHORIZATION.fullmatch(self.validation):
            raise AcmeError("the CA sent a challenge token that is not base64url")


@dataclass(frozen=True)
class Issued:
    """A signed certificate with the chain the CA sent, and its key, both PEM."""

    names: tuple[str, ...]
    fullchain: str
    key: str
    not_before: float
    not_after: float


def new_key_pem() -> str:
    """A fresh P-256 key (PKCS#8 PEM), for the account and for each certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class Order:
    """One certificate for ``names``, from ``begin`` (challenges to serve) to ``finish`` (signed).

    ``account_key`` is the account's PEM key; ``account_uri`` its URL at the CA when it was
    registered before (None registers it, or finds it again: the CA knows accounts by key).
    Use it as a context manager: it holds a temporary file while it runs (the CA bundle, for
    ``requests``, which only reads bundles from files).
    """

    def __init__(
        self, endpoint: AcmeEndpoint, account_key: str, account_uri: str | None, names: list[str]
    ) -> None:
        self.endpoint = endpoint
        self.account_key = account_key
        self.account_uri = account_uri
        self.names = tuple(names)
        self.key = new_key_pem()
        self._client: acme_client.ClientV2 | None = None
        self._order: messages.OrderResource | None = None
        self._answers: list[tuple[Any, Any]] = []
        self._trust: str | None = None

    def __enter__(self) -> Self:
        if self.endpoint.ca_pem:
            with tempfile.NamedTemporaryFile("w", prefix="oct-acme-ca-", suffix=".pem", delete=False) as out:
                out.write(self.endpoint.ca_pem)
            self._trust = out.name
        return self

    def __exit__(self, *_: object) -> None:
        if self._trust:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._trust)

    def begin(self) -> list[Challenge]:
        """Register (or find) the account, place the order, and return its HTTP-01 challenges."""
        from acme import challenges, crypto_util, errors

        try:
            client = self._connect()
            csr = crypto_util.make_csr(self.key.encode(), list(self.names))
            order = client.new_order(csr)
            found = []
            for authorization in order.authorizations:
                http01 = [c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)]
                if not http01:
                    raise AcmeError(
                        f"the CA offers no HTTP-01 challenge for {authorization.body.identifier.value}"
                    )
                response, validation = http01[0].response_and_validation(client.net.key)
                self._answers.append((http01[0], response))
                found.append(Challenge(http01[0].chall.encode("token"), validation))
        except (errors.Error, OSError, ValueError) as e:
            raise AcmeError(f"ordering a certificate for {', '.join(self.names)}: {e}") from e
        self._client, self._order = client, order
        return found

    def finish(self, timeout: float = 90.0) -> Issued:
        """Tell the CA the challenges are served, wait for it to check them and sign."""
        from acme import errors

        assert self._client is not None and self._order is not None, "begin() first"
        try:
            for challenge, response in self._answers:
                self._client.answer_challenge(challenge, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
            done = self._client.poll_and_finalize(self._order, deadline)
        except (errors.Error, OSError, ValueError) as e:
            raise AcmeError(f"certificate for {', '.join(self.names)} not issued: {e}") from e
        fullchain = done.fullchain_pem
        leaf = x509.load_pem_x509_certificate(fullchain.encode())
        valid = (leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp())
        return Issued(self.names, fullchain, self.key, *valid)

    def _connect(self) -> acme_client.ClientV2:
        import josepy
        from acme import client, errors, messages

        key = serialization.load_pem_private_key(self.account_key.encode(), password=None)
        jwk = josepy.JWKEC(key=key)
        # requests takes a bundle's path where acme's signature says bool
        verify: Any = self._trust or True
        net = client.ClientNetwork(jwk, alg=josepy.ES256, user_agent="oct", verify_ssl=verify)
        directory = client.ClientV2.get_directory(self.endpoint.directory, net)
        acme = client.ClientV2(directory, net)
        if self.account_uri:
            net.account = messages.RegistrationResource(body=messages.Registration(), uri=self.account_uri)
            return acme
        try:
            registration = messages.NewRegistration.from_data(
                email=self.endpoint.email, terms_of_service_agreed=True
            )
            account = acme.new_account(registration)
            self.account_uri = account.uri
        except errors.ConflictError as e:  # registered before under this key
            self.account_uri = e.location
            net.account = messages.RegistrationResource(body=messages.Registration(), uri=e.location)
        return acme
