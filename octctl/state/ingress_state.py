"""The state commands of what the ingress needs beyond placements: instances being drained before
they stop, and HTTPS (the ACME account, the challenges under way, each site's certificate).
Deterministic like every command (see :mod:`octctl.state.model`)."""

from __future__ import annotations

from typing import Any

from octctl.state.shape import AcmeState, ClusterState, CommandError, acme_of, drain_key

__all__ = ["acme_account", "acme_challenges", "certificate", "drain"]


def _acme(state: ClusterState) -> AcmeState:
    acme = acme_of(state)
    state["acme"] = acme
    return acme


def acme_account(state: ClusterState, key: str, uri: str) -> None:
    _acme(state)["account"] = {"key": key, "uri": uri}


def acme_challenges(state: ClusterState, add: dict[str, str], remove: list[str]) -> None:
    """Challenges to answer from now on, and finished ones no node needs to answer any more."""
    challenges = _acme(state)["challenges"]
    for token in remove:
        challenges.pop(token, None)
    challenges.update(add)


def certificate(state: ClusterState, service: str, certificate: dict[str, Any] | None) -> None:
    """A service's new certificate, or (None) the end of one whose service is no longer served."""
    certificates = _acme(state)["certificates"]
    if certificate is None:
        certificates.pop(service, None)
        return
    if set(certificate) != {"names", "fullchain", "key", "not_before", "not_after"}:
        raise CommandError(f"malformed certificate record: {sorted(certificate)}")
    certificates[service] = certificate


def drain(state: ClusterState, instance: str, node: str, at: float | None) -> None:
    """Take an instance out of rotation (``at``: since when), or (None) put it back."""
    draining = state.setdefault("draining", {})
    if at is None:
        draining.pop(drain_key(instance, node), None)
    else:
        draining.setdefault(drain_key(instance, node), at)
