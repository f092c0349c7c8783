"""EC2 instances of a cluster: launch one (leader or follower), find them by tags, terminate them.

``launch`` is safe to repeat with the same client token: the leader writes its intent (with the
token) into Raft before calling AWS, so a new leader after a failover calls ``launch`` again with
the same token and gets the same instance instead of a second one. AWS itself deduplicates
``RunInstances`` by ``ClientToken``; oct also tags the instance with the token and looks for it
first, which covers the same case where the ``ClientToken`` guarantee does not reach (moto ignores
it; AWS honours it only for a limited time).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from octctl.providers.aws.resources import CLUSTER_TAG, PROJECT_TAG, ROLE_TAG, AwsResources
from octctl.providers.aws.session import AwsClients, AwsError, call, wait_for

__all__ = [
    "AMAZON_LINUX_2023",
    "DEBIAN_12",
    "NOT_TERMINATED",
    "Instance",
    "find_instances",
    "get_instance",
    "launch",
    "resolve_ami",
    "terminate",
]

NodeRole = Literal["leader", "follower"]

#: Public SSM parameters holding the current AMI id, per CPU architecture. Debian 12 is what the
#: node's cloud-init expects (apt, docker.io); Amazon Linux 2023 is what moto serves.
DEBIAN_12: Mapping[str, str] = {
    "x86_64": "/aws/service/debian/release/12/latest/amd64",
    "arm64": "/aws/service/debian/release/12/latest/arm64",
}
AMAZON_LINUX_2023: Mapping[str, str] = {
    "x86_64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    "arm64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
}
#: Debian's own AWS account publishes the same images; used when the SSM parameter is missing.
DEBIAN_OWNER = "136693071363"
_DEBIAN_NAME = {"x86_64": "debian-12-amd64-*", "arm64": "debian-12-arm64-*"}

TOKEN_TAG = "oct:client-token"
NOT_TERMINATED = ("pending", "running", "stopping", "stopped", "shutting-down")
#: EC2's limit on raw user data (before base64).
USER_DATA_LIMIT = 16 * 1024


@dataclass(frozen=True)
class Instance:
    id: str
    state: str
    role: str | None
    instance_type: str
    private_ip: str | None
    public_ip: str | None
    subnet_id: str | None
    node: str | None = None  # the oct node id it was launched for (its client token)
    image_id: str | None = None
    zone: str | None = None  # its availability zone
    devices: tuple[str, ...] = ()  # the device names of its attached volumes

    @classmethod
    def from_aws(cls, raw: Mapping[str, Any]) -> Instance:
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        return cls(
            id=raw["InstanceId"],
            state=raw.get("State", {}).get("Name", "unknown"),
            role=tags.get(ROLE_TAG),
            instance_type=raw.get("InstanceType", ""),
            private_ip=raw.get("PrivateIpAddress"),
            public_ip=raw.get("PublicIpAddress"),
            subnet_id=raw.get("SubnetId"),
            node=tags.get(TOKEN_TAG),
            image_id=raw.get("ImageId"),
            zone=raw.get("Placement", {}).get("AvailabilityZone"),
            devices=tuple(m["DeviceName"] for m in raw.get("BlockDeviceMappings", []) if "DeviceName" in m),
        )


def architecture(clients: AwsClients, instance_type: str) -> str:
    """``arm64`` or ``x86_64``: the AMI must match the instance type's CPU (t4g is arm64)."""
    answer = call(clients.ec2, "describe_instance_types", InstanceTypes=[instance_type])
    found = answer.get("InstanceTypes", [])
    if not found:
        raise AwsError(
            "ec2:DescribeInstanceTypes",
            "InvalidInstanceType",
            f"{instance_type} is not offered in {clients.region}",
        )
    supported = found[0].get("ProcessorInfo", {}).get("SupportedArchitectures", [])
    return "arm64" if "arm64" in supported else "x86_64"


def resolve_ami(
    clients: AwsClients,
    instance_type: str,
    *,
    ami: str | None = None,
    parameters: Mapping[str, str] = DEBIAN_12,
) -> str:
    """The AMI to boot: ``ami`` if given, else the public SSM parameter for the type's architecture.

    Public parameters always name the current patched image, unlike a hard-coded id (the reference
    pinned one Ubuntu AMI of one region). When the parameter does not exist (some regions, moto),
    Debian 12 is looked up among the images of Debian's account.
    """
    if ami:
        return ami
    arch = architecture(clients, instance_type)
    name = parameters.get(arch)
    if name is None:
        raise ValueError(f"no AMI parameter for {arch} (instance type {instance_type}); give an AMI id")
    try:
        return str(call(clients.ssm, "get_parameter", Name=name)["Parameter"]["Value"])
    except AwsError as e:
        if e.code != "ParameterNotFound":
            raise
    if parameters is DEBIAN_12:
        images = call(
            clients.ec2,
            "describe_images",
            Owners=[DEBIAN_OWNER],
            Filters=[
                {"Name": "name", "Values": [_DEBIAN_NAME[arch]]},
                {"Name": "architecture", "Values": [arch]},
                {"Name": "state", "Values": ["available"]},
            ],
        ).get("Images", [])
        if images:
            return str(max(images, key=lambda image: image.get("CreationDate", ""))["ImageId"])
    raise AwsError(
        "ssm:GetParameter",
        "ParameterNotFound",
        f"no image for {arch} under {name} in {clients.region}",
        "give the AMI id explicitly",
    )


def _root_device(clients: AwsClients, ami: str) -> str:
    images = call(clients.ec2, "describe_images", ImageIds=[ami]).get("Images", [])
    if not images:
        raise AwsError("ec2:DescribeImages", "InvalidAMIID.NotFound", f"{ami} not found in {clients.region}")
    return str(images[0].get("RootDeviceName") or "/dev/xvda")


def find_instances(
    clients: AwsClients,
    cluster: str | None,
    *,
    project: str | None = None,
    role: NodeRole | None = None,
    states: Sequence[str] = NOT_TERMINATED,
    extra_filters: Iterable[Mapping[str, Any]] = (),
) -> list[Instance]:
    """Instances tagged with ``cluster`` (or, with ``cluster=None``, with ``project``), oldest id first."""
    if cluster is None and project is None:
        raise ValueError("find_instances needs a cluster or a project")
    filters: list[Mapping[str, Any]] = [{"Name": "instance-state-name", "Values": list(states)}]
    if cluster is not None:
        filters.append({"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster]})
    if project is not None:
        filters.append({"Name": f"tag:{PROJECT_TAG}", "Values": [project]})
    if role is not None:
        filters.append({"Name": f"tag:{ROLE_TAG}", "Values": [role]})
    filters.extend(extra_filters)
    return _describe(clients, filters)


def _describe(clients: AwsClients, filters: Sequence[Mapping[str, Any]]) -> list[Instance]:
    found: list[Instance] = []
    token: str | None = None
    for _ in range(1000):  # pages of up to 1000 instances: bounded, far above any cluster
        page = call(
            clients.ec2,
            "describe_instances",
            Filters=list(filters),
            **({"NextToken": token} if token else {}),
        )
        found.extend(
            Instance.from_aws(i) for r in page.get("Reservations", []) for i in r.get("Instances", [])
        )
        token = page.get("NextToken")
        if not token:
            break
    return sorted(found, key=lambda i: i.id)


def get_instance(clients: AwsClients, instance_id: str) -> Instance | None:
    """The instance now (``None`` once it is gone): ``RunInstances`` answers before the public
    address is assigned, so the CLI asks again until the leader has one."""
    found = _describe(clients, [{"Name": "instance-id", "Values": [instance_id]}])
    return found[0] if found else None


def _is_profile_not_ready(exc: BaseException) -> bool:
    """A new instance profile takes seconds to be usable by EC2 (IAM is eventually consistent)."""
    if not isinstance(exc, AwsError):
        return False
    text = exc.detail.lower()
    return exc.code in ("InvalidParameterValue", "InvalidParameterCombination") and "profile" in text


def launch(
    clients: AwsClients,
    resources: AwsResources,
    *,
    role: NodeRole,
    instance_type: str,
    user_data: str,
    client_token: str,
    ami: str | None = None,
    ami_parameters: Mapping[str, str] = DEBIAN_12,
    subnet_id: str | None = None,
    public_ip: bool = True,
    volume_gb: int = 20,
    profile_wait: float = 60.0,
) -> Instance:
    """Run one instance of the cluster, or return the one an earlier call with ``client_token`` made.

    ``public_ip`` defaults to on for followers too: without a NAT gateway (≈ $32/month) an instance
    reaches the internet (image pulls) only with its own public address, and a service's
    ``external_port`` is served from whichever node runs it. The metadata service requires IMDSv2
    with a hop limit of 1, so containers on the node cannot read the instance role's credentials.
    """
    _check_launch(resources, client_token=client_token, user_data=user_data, volume_gb=volume_gb)
    existing = _launched_with(clients, resources, client_token)
    if existing is not None:
        return existing
    image = resolve_ami(clients, instance_type, ami=ami, parameters=ami_parameters)
    request = _run_request(
        clients,
        resources,
        role=role,
        instance_type=instance_type,
        image=image,
        user_data=user_data,
        client_token=client_token,
        subnet_id=subnet_id if subnet_id is not None else _spread(resources, client_token),
        public_ip=public_ip,
        volume_gb=volume_gb,
    )
    retrying = Retrying(
        retry=retry_if_exception(_is_profile_not_ready),
        stop=stop_after_delay(profile_wait),
        wait=wait_fixed(3),
        reraise=True,
    )
    answer = retrying(call, clients.ec2, "run_instances", **request)
    return Instance.from_aws(answer["Instances"][0])


def _check_launch(resources: AwsResources, *, client_token: str, user_data: str, volume_gb: int) -> None:
    """Refuse, before any AWS call, a launch that could not succeed or would not be repeatable."""
    missing = [
        what
        for what, value in (
            ("security group", resources.security_group_id),
            ("subnet", resources.subnet_ids),
            ("instance profile", resources.instance_profile_name),
        )
        if not value
    ]
    if missing:
        raise ValueError(
            f"the base infrastructure is not ready (no {', '.join(missing)}): run ensure_base first"
        )
    if not client_token or len(client_token) > 64 or not client_token.isascii():
        raise ValueError(f"client_token must be 1-64 ASCII characters, got {client_token!r}")
    if len(user_data.encode()) > USER_DATA_LIMIT:
        raise ValueError(
            f"user data is {len(user_data.encode())} bytes; EC2 accepts at most {USER_DATA_LIMIT}"
        )
    if not 8 <= volume_gb <= 16384:
        raise ValueError(f"volume_gb must be between 8 and 16384, got {volume_gb}")


def _launched_with(clients: AwsClients, resources: AwsResources, client_token: str) -> Instance | None:
    """The instance an earlier launch with ``client_token`` made, found by its token tag."""
    existing = find_instances(
        clients,
        resources.cluster,
        extra_filters=[{"Name": f"tag:{TOKEN_TAG}", "Values": [client_token]}],
    )
    return existing[0] if existing else None


def _spread(resources: AwsResources, client_token: str) -> str:
    """Spread nodes over the zones, the same zone for the same token."""
    return resources.subnet_ids[zlib.crc32(client_token.encode()) % len(resources.subnet_ids)]


def _run_request(
    clients: AwsClients,
    resources: AwsResources,
    *,
    role: NodeRole,
    instance_type: str,
    image: str,
    user_data: str,
    client_token: str,
    subnet_id: str,
    public_ip: bool,
    volume_gb: int,
) -> dict[str, Any]:
    """The ``RunInstances`` parameters: one tagged instance, IMDSv2 only, a gp3 root volume."""
    name = resources.name(role if role == "leader" else f"follower-{client_token[-8:]}")
    tags = resources.tags(name, **{ROLE_TAG: role, TOKEN_TAG: client_token})
    return {
        "ImageId": image,
        "InstanceType": instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": client_token,
        "UserData": user_data,  # botocore base64-encodes it
        "IamInstanceProfile": {"Name": resources.instance_profile_name},
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": subnet_id,
                "Groups": [resources.security_group_id],
                "AssociatePublicIpAddress": public_ip,
                "DeleteOnTermination": True,
            }
        ],
        "BlockDeviceMappings": [
            {
                "DeviceName": _root_device(clients, image),
                "Ebs": {"VolumeSize": volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True},
            }
        ],
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 1,
        },
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tags} for kind in ("instance", "volume", "network-interface")
        ],
    }


def terminate(
    clients: AwsClients,
    ids: Iterable[str],
    *,
    wait: bool = True,
    timeout: float = 600.0,
    poll_interval: float = 5.0,
) -> list[str]:
    """Terminate the instances among ``ids`` that still exist; with ``wait``, until they are gone.

    Unknown or already terminated ids are skipped rather than failing the whole call (EC2 rejects a
    ``TerminateInstances`` naming one unknown id), so ``oct destroy`` can repeat it. Returns the ids
    that were still alive.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return []
    alive = _alive(clients, wanted)
    if not alive:
        return []
    call(clients.ec2, "terminate_instances", InstanceIds=alive)
    if wait:
        attempts = max(1, math.ceil(timeout / poll_interval))
        try:
            wait_for(
                clients.ec2, "instance_terminated", delay=poll_interval, attempts=attempts, InstanceIds=alive
            )
        except AwsError as e:
            raise AwsError(
                "ec2:TerminateInstances",
                e.code,
                f"{', '.join(alive)} not terminated after {timeout:.0f} s: {e.detail}",
                "run the command again; oct keeps their ids",
            ) from e
    return alive


def _alive(clients: AwsClients, ids: Sequence[str]) -> list[str]:
    """Which of ``ids`` exist and are not terminated; a filter, unlike ``InstanceIds=``, does not fail
    on ids that no longer exist."""
    alive: list[str] = []
    for start in range(0, len(ids), 200):  # EC2 takes at most 200 values per filter
        filters = [
            {"Name": "instance-id", "Values": list(ids[start : start + 200])},
            {"Name": "instance-state-name", "Values": list(NOT_TERMINATED)},
        ]
        alive.extend(i.id for i in _describe(clients, filters))
    return sorted(alive)
