"""What every re-runnable step of genesis and teardown shares, whatever resource it handles.

A genesis step looks for its resource by the ledger's id, then by tags, and records the ledger
right after it creates something; a teardown step finds what remains from the ledger and by tags
(of the cluster, or of every cluster of the project) and records after each deletion. AWS's "already
gone" answers count as done both ways. :class:`Genesis` and :class:`Teardown` carry that per run,
so the resource modules (network, firewall, node role) hold only what is particular to each kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from octctl.providers.aws.resources import CLUSTER_TAG, PROJECT_TAG, AwsResources
from octctl.providers.aws.session import AwsClients, AwsError, call

__all__ = [
    "Genesis",
    "Record",
    "Teardown",
    "gone",
    "has_tags",
    "ignore",
    "tag_filters",
    "tag_spec",
    "unless_gone",
]

#: Saves a copy of the ledger (into the CLI's state) after every change.
Record = Callable[[AwsResources], None]


def ignore(_: AwsResources) -> None:
    pass


def gone(exc: AwsError) -> bool:
    """AWS's ways of saying the thing is already not there (or not attached)."""
    return exc.code.endswith(".NotFound") or exc.code in {"NoSuchEntity", "Gateway.NotAttached"}


def unless_gone(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or None when AWS says the thing is already gone: teardown's success."""
    try:
        return fn(*args, **kwargs)
    except AwsError as e:
        if not gone(e):
            raise
        return None


def tag_filters(resources: AwsResources, whole_project: bool = False) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{PROJECT_TAG}", "Values": [resources.project]}]
    if not whole_project:
        filters.append({"Name": f"tag:{CLUSTER_TAG}", "Values": [resources.cluster]})
    return filters


def has_tags(tags: Iterable[Mapping[str, str]], resources: AwsResources, whole_project: bool) -> bool:
    found = {t["Key"]: t["Value"] for t in tags}
    if found.get(PROJECT_TAG) != resources.project:
        return False
    return whole_project or found.get(CLUSTER_TAG) == resources.cluster


def tag_spec(kind: str, resources: AwsResources, name: str) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": resources.tags(name)}]


class _Run:
    """One run over the ledger: the clients, the ledger being changed, and the way to save it."""

    def __init__(self, clients: AwsClients, ledger: AwsResources, record: Record) -> None:
        self.clients = clients
        self.ec2 = clients.ec2
        self.ledger = ledger
        self._record = record

    def record(self) -> None:
        self._record(self.ledger.model_copy(deep=True))


class Genesis(_Run):
    """A genesis run: find each resource before creating it."""

    def find(self, operation: str, key: str, id_param: str, ledger_id: str | None, filters: list[Any]) -> Any:
        """The resource named in the ledger if it still exists, else the one found by tags.

        Two found by tags (two genesis runs racing) resolve to the lowest id every time, and
        destroy removes both.
        """
        if ledger_id:
            try:
                found = call(self.ec2, operation, **{id_param: [ledger_id]}).get(key, [])
            except AwsError as e:
                if not gone(e):
                    raise
                found = []
            if found:
                return found[0]
        found = call(self.ec2, operation, Filters=filters).get(key, [])
        id_key = id_param.removesuffix("s")  # VpcIds -> VpcId
        return min(found, key=lambda r: str(r.get(id_key, ""))) if found else None

    def named(self, name: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
        """Filters for the cluster's resource with the ``Name`` tag ``name``."""
        return [*tag_filters(self.ledger), {"Name": "tag:Name", "Values": [name]}, *extra]


class Teardown(_Run):
    """A teardown run: ``whole_project`` widens the tags to every cluster of the project."""

    def __init__(
        self, clients: AwsClients, ledger: AwsResources, record: Record, whole_project: bool, patience: float
    ) -> None:
        super().__init__(clients, ledger, record)
        self.whole_project = whole_project
        self.patience = patience

    def tagged(self, operation: str, key: str, id_key: str) -> list[str]:
        """Ids of the EC2 resources of one kind that carry the run's tags."""
        found = call(self.ec2, operation, Filters=tag_filters(self.ledger, self.whole_project)).get(key, [])
        return [str(r[id_key]) for r in found]

    def delete(self, operation: str, **params: Any) -> None:
        """Delete one thing; "already gone" is success, "still in use" is retried for a while.

        After instances terminate, their network interfaces are released a little later, and until
        then AWS refuses to delete the security group, subnet or VPC (``DependencyViolation``).
        """
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, AwsError) and e.code == "DependencyViolation"),
            stop=stop_after_delay(self.patience),
            wait=wait_fixed(5),
            reraise=True,
        )
        unless_gone(retrying, call, self.ec2, operation, **params)
