"""The base infrastructure of a cluster: network, firewall, the nodes' IAM role and wheel bucket.

Genesis (:func:`ensure_base`) and teardown (:func:`destroy_base`) are both written to be run again
after any failure. Each genesis step first looks for its resource (by the id in the ledger, then by
tags, which are applied in the same call that creates the resource) and creates it only when
neither finds it; the caller's ``record`` callback saves the ledger right after each creation, so a
crash leaves every created id in the state. Teardown works from the ledger *and* from tags, treats
"already gone" as done, and records what remains after every deletion, so a partial failure is
finished by the next run. The reference wrote its state once at the end of genesis and stopped at
the first failure of destroy, orphaning resources both ways.

This module holds the order of the steps; each kind of resource has its own room with its genesis
and teardown side by side: :mod:`.network` (VPC, gateway, subnets, route table), :mod:`.firewall`
(security group and its rules), :mod:`.node_role` (IAM role, its policy, instance profile), all
built on :mod:`.steps` (the ledger, tags, "already gone").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from octctl.providers.aws import artifacts, instances
from octctl.providers.aws.infra import firewall, network, node_role
from octctl.providers.aws.infra.firewall import DNS_PORT, Rule, current_rules, desired_rules
from octctl.providers.aws.infra.network import DEFAULT_VPC_CIDR
from octctl.providers.aws.infra.node_role import POLICY_NAME, node_policy
from octctl.providers.aws.infra.steps import Genesis, Record, Teardown, ignore
from octctl.providers.aws.resources import AwsResources
from octctl.providers.aws.session import AwsClients

__all__ = [
    "DEFAULT_VPC_CIDR",
    "DNS_PORT",
    "POLICY_NAME",
    "Rule",
    "current_rules",
    "desired_rules",
    "destroy_base",
    "ensure_base",
    "node_policy",
]


def _ensure_artifact_bucket(step: Genesis) -> str:
    led = step.ledger
    name = artifacts.ensure_bucket(step.clients, led)
    if led.artifact_bucket != name:
        led.artifact_bucket = name
        step.record()
    return name


def ensure_base(
    clients: AwsClients,
    resources: AwsResources,
    *,
    api_cidrs: Sequence[str],
    external_ports: Iterable[int] = (),
    record: Record = ignore,
    subnet_count: int = 2,
    vpc_cidr: str = DEFAULT_VPC_CIDR,
) -> AwsResources:
    """Make the cluster's base infrastructure exist, creating only what is missing; return the ledger.

    Order: VPC, internet gateway, one public subnet per availability zone (up to
    ``subnet_count``), route table with the default route, security group and its rules, the
    bucket for the oct wheel, IAM role with its inline policy, instance profile. ``record`` gets a
    copy of the ledger after every change, before the next AWS call. Running it again converges:
    the security group's rules follow ``api_cidrs`` and ``external_ports``, the role's policy
    follows the ledger.
    """
    if clients.region != resources.region:
        raise ValueError(f"the ledger is for region {resources.region}, the AWS clients for {clients.region}")
    network.check_layout(vpc_cidr, subnet_count)
    ports = list(external_ports)
    desired_rules("sg-00000000", api_cidrs, ports)  # bad input fails before anything is created

    step = Genesis(clients, resources.model_copy(deep=True), record)
    vpc_id = network.ensure_vpc(step, vpc_cidr)
    igw = network.ensure_internet_gateway(step, vpc_id)
    subnets = network.ensure_subnets(step, vpc_id, vpc_cidr, subnet_count)
    network.ensure_route_table(step, vpc_id, igw, subnets)
    firewall.ensure_security_group(step, vpc_id, api_cidrs, ports)
    _ensure_artifact_bucket(step)  # before the role: its policy names the bucket
    role = node_role.ensure_role(step)
    node_role.ensure_instance_profile(step, role)
    return step.ledger


def _terminate_instances(step: Teardown, timeout: float, poll_interval: float) -> None:
    led = step.ledger
    found = instances.find_instances(
        step.clients, None if step.whole_project else led.cluster, project=led.project
    )
    ids = sorted({*led.instance_ids(), *(i.id for i in found)})
    instances.terminate(step.clients, ids, timeout=timeout, poll_interval=poll_interval)
    if led.instance_ids():
        led.leader_instance_id, led.follower_instance_ids = None, []
        step.record()


def _delete_artifact_buckets(step: Teardown) -> None:
    artifacts.delete_buckets(step.clients, step.ledger, whole_project=step.whole_project)
    if step.ledger.artifact_bucket:
        step.ledger.artifact_bucket = None
        step.record()


def destroy_base(
    clients: AwsClients,
    resources: AwsResources,
    *,
    record: Record = ignore,
    whole_project: bool = False,
    terminate_timeout: float = 600.0,
    poll_interval: float = 5.0,
    dependency_timeout: float = 120.0,
) -> AwsResources:
    """Remove the cluster's instances and base infrastructure; return the (emptied) ledger.

    Instances go first (nothing else can be deleted while they use it), then the base in reverse
    order of genesis. Resources are found from the ledger *and* by tags, so a lost or partial
    ledger still leads to everything; with ``whole_project`` the tags of every cluster of the
    project match (for a state file that is gone altogether). Anything already gone counts as
    done; ``record`` gets the ledger after every deletion, so a failure part-way leaves exactly
    what remains and a re-run finishes. The hosted zone is not touched (it is not base).
    """
    if clients.region != resources.region:
        raise ValueError(f"the ledger is for region {resources.region}, the AWS clients for {clients.region}")
    step = Teardown(clients, resources.model_copy(deep=True), record, whole_project, dependency_timeout)
    _terminate_instances(step, terminate_timeout, poll_interval)
    network.delete_internet_gateways(step)
    network.delete_route_tables(step)
    firewall.delete_security_groups(step)
    network.delete_subnets(step)
    network.delete_vpcs(step)
    node_role.delete_instance_profiles(step)
    node_role.delete_roles(step)
    _delete_artifact_buckets(step)
    return step.ledger
