"""Afterlife on AWS: everything of the project's cluster removed, and what that will be, said first.

Teardown works from the record's ledger and from tags, so it finishes with the leader gone, after
a crash mid-genesis, or with no record at all (then every cluster tagged with the project goes).
Each step records what remains, so a re-run after a failure finishes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from octcli.errors import OctError
from octcli.provider import DestroySummary
from octcli.providers.aws.ledger import KIND, aws_settings, connect, ledger_of, with_ledger
from octctl.providers.aws.resources import AwsResources

if TYPE_CHECKING:
    from octcli.state import ClusterRecord, StateStore
    from octctl.config import Config

__all__ = ["destroy_summary", "teardown_aws"]

Phase = Callable[[str], None]


def destroy_summary(config: Config, store: StateStore, record: ClusterRecord | None) -> DestroySummary:
    """What :func:`teardown_aws` would remove, for a person to approve."""
    ledger = ledger_of(record)
    region = ledger.region if ledger is not None else aws_settings(config).region
    project = config.project.name
    if ledger is None:
        removes = [
            f"every cluster tagged oct:project={project} in {region}: its instances, VPC, subnets, "
            "internet gateway, route table, security group, IAM role and instance profile",
            f"the project's ECR repositories in {region}",
        ]
    else:
        instances = ledger.instance_ids()
        removes = [
            f"{len(instances)} EC2 instance{'' if len(instances) == 1 else 's'}"
            + (f" ({', '.join(instances)})" if instances else "")
            + " and any other instance tagged with the cluster",
            f"the VPC {ledger.vpc_id or '(tagged with the cluster)'} with its subnets, internet gateway, "
            "route table and security group",
            f"the IAM role {ledger.role_name or '(tagged with the cluster)'} and its instance profile",
            f"the secrets parameter /oct/{ledger.cluster}/secrets",
            "the cluster's ECR repositories",
        ]
        if ledger.hosted_zone_id:
            zone = ledger.hosted_zone_id
            removes.append(f"the Route53 zone {zone} oct created (if only oct's records are left in it)")
    if record is not None:
        removes.append(f"the state record {store.where}")
    return DestroySummary(
        project=project,
        provider=KIND,
        cluster=record.cluster if record is not None else None,
        region=region,
        nodes=list(record.nodes) if record is not None else [],
        state=store.where,
        removes=removes,
    )


def teardown_aws(
    record: ClusterRecord | None, config: Config, *, on_phase: Phase, save: Callable[[ClusterRecord], None]
) -> None:
    """Remove everything of the project's cluster from AWS: instances, base, secrets, images, zone.

    Works from the record's ledger and from tags; with no record at all, every cluster of the
    project is swept. Each step records what remains, so a re-run after a failure finishes.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from octctl.providers.aws import ecr, infra, route53
    from octctl.providers.aws.secrets_store import SecretsStoreError, delete_secrets
    from octctl.providers.aws.session import AwsError

    aws = aws_settings(config)
    ledger = ledger_of(record)
    region = ledger.region if ledger is not None else aws.region
    clients = connect(region)
    whole_project = ledger is None
    ledger = ledger or AwsResources(region=region, project=config.project.name, cluster="-")

    def keep(updated: AwsResources) -> None:
        if record is not None:
            save(with_ledger(record, updated))

    try:
        on_phase("terminating the instances, then the network and roles")
        ledger = infra.destroy_base(clients, ledger, record=keep, whole_project=whole_project)
        if ledger.hosted_zone_id:
            route53.delete_zone(ledger.hosted_zone_id, route53=clients.client("route53"))
            keep(ledger := ledger.model_copy(update={"hosted_zone_id": None}))
        ecr.delete_repositories(
            config.project.name,
            client=clients.client("ecr"),
            cluster=None if whole_project else ledger.cluster,
        )
        if not whole_project:
            delete_secrets(clients.session, ledger.cluster)
    except (AwsError, BotoCoreError, ClientError, SecretsStoreError, route53.ZoneInUse) as e:
        raise OctError(f"{e}; what remains is in the state, run `oct destroy` again to finish") from None
