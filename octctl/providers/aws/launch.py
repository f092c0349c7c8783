"""Starting one node of an AWS cluster: the CLI's genesis leader and the leader's followers alike.

A node is its :class:`BootstrapConfig` rendered into user data, with a fresh link to the cluster's
oct wheel, run as an instance whose ``ClientToken`` is the node id: asking again for the same id
(a re-run genesis, a new leader finishing its predecessor's launch) returns the instance that
exists instead of starting a second.
"""

from __future__ import annotations

from octctl import __version__
from octctl.providers.aws import artifacts, instances
from octctl.providers.aws.bootstrap import BootstrapConfig
from octctl.providers.aws.instances import Instance, NodeRole
from octctl.providers.aws.session import AwsClients
from octctl.providers.aws.user_data import render_user_data


def launch_node(
    clients: AwsClients, config: BootstrapConfig, role: NodeRole, subnet: str | None = None
) -> Instance:
    """Run the node ``config.node`` (or return the instance an earlier call made for it)."""
    aws = config.provider
    if aws.artifact is None:
        raise ValueError("this cluster's node settings name no oct wheel: nodes cannot be installed")
    if config.node is None:
        raise ValueError("a launched node needs the id it will join with (config.node)")
    link = artifacts.presigned_url(clients, aws.artifact)
    return instances.launch(
        clients,
        aws.resources,
        role=role,
        instance_type=aws.instance_type,
        user_data=render_user_data(config, __version__, link),
        client_token=config.node,
        ami=aws.ami,
        subnet_id=subnet,
    )
