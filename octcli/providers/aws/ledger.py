"""What the CLI keeps of an AWS cluster, and the AWS clients to act on it.

The state record's ``aws`` field is the ledger (:class:`~octctl.providers.aws.resources.AwsResources`):
every resource id from the moment it exists, which is what lets genesis and teardown pick up after
an interrupted run. With no ledger, ``[project.provider.aws]`` says where a cluster would be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeGuard

from octcli.errors import OctError
from octcli.state import ClusterRecord
from octctl.config.models import AwsProvider
from octctl.providers.aws.resources import AwsResources

if TYPE_CHECKING:
    from octctl.config import Config
    from octctl.providers.aws.session import AwsClients

#: The kind as ``Project.provider_kind`` and ``ClusterRecord.provider`` name it.
KIND: Final = "aws"


def is_aws(record: ClusterRecord | None) -> TypeGuard[ClusterRecord]:
    """Whether ``record`` is of an AWS cluster (a deploy that switched provider starts anew)."""
    return record is not None and record.provider == KIND


def ledger_of(record: ClusterRecord | None) -> AwsResources | None:
    raw = getattr(record, "aws", None) if record is not None else None
    return AwsResources.model_validate(raw) if raw else None


def with_ledger(record: ClusterRecord, ledger: AwsResources) -> ClusterRecord:
    """``record`` holding ``ledger`` as its AWS resources."""
    return record.model_copy(update={"aws": ledger.model_dump(mode="json")})


def aws_settings(config: Config) -> AwsProvider:
    provider = config.project.provider
    return provider.aws if provider is not None and provider.aws is not None else AwsProvider()


def connect(region: str) -> AwsClients:
    from octctl.providers.aws.session import AwsClients, AwsError

    try:
        clients = AwsClients.connect(region)
        clients.account()  # fails early, in one line, without credentials
    except AwsError as e:
        raise OctError(str(e)) from None
    return clients
