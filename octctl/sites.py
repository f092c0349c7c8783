"""A project's HTTPS sites: the names each public service is served at over TLS, on 443 of every node.

One rule for the three that need it: the leader (which certificates to order), every node's
ingress (what to route on 443 and redirect on 80), and ``oct status`` (the URLs it shows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from octctl.config import Config

__all__ = ["Site", "sites"]

#: A host name label a certificate may hold (RFC 1123): oct's service names also allow ``_``
#: (the reference uses ``app_1``), which no CA signs.
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Site:
    """``service`` answers at ``https://<name>`` for each of ``names`` (the first is its own)."""

    service: str
    names: tuple[str, ...]


def sites(config: Config | None) -> list[Site]:
    """Every public service's site when the project is served over HTTPS (see
    ``Project.https``): ``<service>.<domain>``, and the bare domain for the ``apex`` service.
    A service whose name is no host name label (``app_1``) has no site: it keeps its
    ``external_port`` only."""
    if config is None or config.project.https is None or not config.project.domain:
        return []
    base = config.project.domain.strip().lower().rstrip(".")
    found = []
    for service in config.project.services:
        if service.public_port is None or not _LABEL.fullmatch(service.name.lower()):
            continue
        names = (f"{service.name.lower()}.{base}",) + ((base,) if service.apex else ())
        found.append(Site(service.name, names))
    return found
