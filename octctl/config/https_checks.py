"""Checks of what HTTPS needs: a domain for ``apex`` and ``[project.acme]``, one apex service, an
https directory, and port 443 left to the ingress when the project is served over HTTPS."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .locate import KeyPath
from .models import AcmeSettings, Provider, Service

Finding = tuple[KeyPath, str]


def check_https(
    domain: str | None,
    acme: AcmeSettings | None,
    provider: Provider | None,
    services: Sequence[tuple[int, Service]],
) -> Iterator[Finding]:
    if acme is not None and not domain:
        yield ("project", "acme"), "certificates are for project.domain: set it, or remove [project.acme]"
    if acme is not None and not acme.directory.startswith("https://"):
        yield (
            ("project", "acme", "directory"),
            f"'{acme.directory}' is not an ACME directory URL: expected https://...",
        )
    local = provider is not None and provider.local is not None
    served = bool(domain) and (acme is not None or not local)
    apex_owner: str | None = None
    for i, service in services:
        if service.apex:
            if not domain:
                yield (
                    ("project", "services", i, "apex"),
                    "apex serves the service at the bare domain: set project.domain",
                )
            elif service.public_port is None:
                yield (
                    ("project", "services", i, "apex"),
                    "apex needs a public service: give it an external_port",
                )
            elif apex_owner is not None:
                yield (
                    ("project", "services", i, "apex"),
                    f"only one service can have the bare domain: '{apex_owner}' has it",
                )
            else:
                apex_owner = service.name
        if served and service.public_port == 443:
            yield (
                ("project", "services", i, "external_port"),
                "port 443 is the ingress's HTTPS port when the project's domain is served over HTTPS: "
                "pick another",
            )
