"""``oct-ctl bootstrap``: turn a fresh VM's public facts into the node files ``oct-ctl`` starts from.

cloud-init writes ``/etc/oct/bootstrap.json`` (a :class:`BootstrapConfig`: nothing secret, since
user data is readable by anyone who can describe the instance) and runs this once. It learns who
the VM is from the instance metadata service (IMDSv2), fetches the cluster's secrets from SSM
Parameter Store with the instance role, and writes ``node.json`` and ``secrets.json``. Running it
again leaves the files alone unless the settings they would hold changed, so a re-run of
cloud-init (or of ``genesis.sh`` by hand) cannot disturb a node that has been running.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

import httpx
from pydantic import ConfigDict, Field, ValidationError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

from octctl.node_settings import NodeSettings, NodeTemplate, Secrets, read_node_files, write_node_files
from octctl.providers.aws.settings import AwsNodeSettings

DEFAULT_CONFIG = Path("/etc/oct/bootstrap.json")
DEFAULT_DATA_DIR = Path("/var/lib/oct")
#: botocore's variable for the same purpose; the default is the link-local IMDS address.
IMDS_ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
IMDS_DEFAULT = "http://169.254.169.254"


class BootstrapError(Exception):
    """One line for the operator (what failed, where, what to check); never a secret value."""


class BootstrapConfig(NodeTemplate):
    """What every node of a cluster is told in its user data: the node template (no secret here,
    by design) with the AWS section it needs to lead, completed at boot by who and where it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Stricter than on other nodes: the id also names the SSM parameter of the secrets.
    cluster: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="also names the SSM parameter")
    provider: AwsNodeSettings
    node: str | None = Field(
        default=None, description="the id the leader reserved for this node; None: the instance id"
    )
    #: A VM is its own host: its containers must not reach any node's control ports.
    guard_containers: bool = True

    def node_settings(self, node: str, address: str, public_address: str | None = None) -> NodeSettings:
        shared = {name: getattr(self, name) for name in NodeTemplate.model_fields}
        return NodeSettings(**shared, node=node, address=address, public_address=public_address)


def _problems(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}" for err in e.errors())


def load_config(path: Path) -> BootstrapConfig:
    try:
        text = path.read_text()
    except OSError as e:
        raise BootstrapError(f"cannot read the bootstrap config {path}: {e.strerror}") from None
    try:
        return BootstrapConfig.model_validate_json(text)
    except ValidationError as e:
        raise BootstrapError(f"invalid bootstrap config {path}: {_problems(e)}") from None


def imds_identity(
    endpoint: str | None = None, timeout: float = 2.0, attempts: int = 3
) -> tuple[str, str, str | None]:
    """``(instance id, private IPv4, public IPv4 or None)`` from IMDSv2; a few short tries, since off
    EC2 nothing answers. The public address (none in a private subnet) goes into the node's TLS
    certificate, beside the private one."""
    base = (endpoint or os.environ.get(IMDS_ENDPOINT_ENV) or IMDS_DEFAULT).rstrip("/")

    def fetch() -> tuple[str, str, str | None]:
        with httpx.Client(base_url=base, timeout=timeout, trust_env=False) as http:
            token = http.put("/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
            token.raise_for_status()
            headers = {"X-aws-ec2-metadata-token": token.text}
            answers = []
            for key in ("instance-id", "local-ipv4"):
                r = http.get(f"/latest/meta-data/{key}", headers=headers)
                r.raise_for_status()
                answers.append(r.text.strip())
            public = http.get("/latest/meta-data/public-ipv4", headers=headers)
            return answers[0], answers[1], public.text.strip() if public.status_code == 200 else None

    try:
        for attempt in Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.2, max=1),
            retry=retry_if_exception(lambda e: isinstance(e, httpx.HTTPError)),
            reraise=True,
        ):
            with attempt:
                return fetch()
    except httpx.HTTPError as e:
        raise BootstrapError(
            f"cannot read the instance id and address from the instance metadata service at {base} "
            f"({type(e).__name__}: {e}); off EC2, pass --node and --address"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises


def fetch_secrets(config: BootstrapConfig, wait: float) -> Secrets:
    """The cluster's secrets from SSM, retrying transient failures for up to ``wait`` seconds.

    A just-created instance role can take a while to be accepted (IAM is eventually consistent); a
    missing parameter is final.
    """
    import boto3

    from octctl.providers.aws.secrets_store import SecretsStoreError, get_secrets

    session = boto3.Session(region_name=config.provider.resources.region)
    try:
        for attempt in Retrying(
            stop=stop_after_delay(wait),
            wait=wait_exponential(multiplier=0.5, max=10),
            retry=retry_if_exception(lambda e: isinstance(e, SecretsStoreError) and e.transient),
            before_sleep=lambda state: print(
                f"oct-ctl bootstrap: {state.outcome.exception() if state.outcome else ''}; retrying",
                file=sys.stderr,
            ),
            reraise=True,
        ):
            with attempt:
                return get_secrets(session, config.cluster)
    except SecretsStoreError as e:
        raise BootstrapError(str(e)) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _current(data_dir: Path) -> NodeSettings | None:
    """The settings already in ``data_dir`` if both node files are there and readable."""
    try:
        settings, _ = read_node_files(data_dir)
    except (OSError, ValueError):  # missing, not JSON, or invalid (ValidationError is a ValueError)
        return None
    return settings


def bootstrap(
    config_path: Path, data_dir: Path, address: str | None = None, node: str | None = None, wait: float = 120
) -> str:
    """Write the node files unless identical ones are there; returns what happened, for the log."""
    config = load_config(config_path)
    node = node or config.node
    public: str | None = None
    if address is None or node is None:
        found_node, found_address, found_public = imds_identity()
        node = node or found_node
        public = found_public if address is None else None
        address = address or found_address
    if public is not None:
        try:
            ipaddress.IPv4Address(public)
        except ValueError:
            public = None  # not an address: leave it out of the certificate
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise BootstrapError(f"the node address {address!r} is not an IPv4 address") from None
    if not node:
        raise BootstrapError("the node id is empty")
    settings = config.node_settings(node, address, public)
    if _current(data_dir) == settings:
        return f"node {node} of cluster {config.cluster}: the files in {data_dir} are up to date, kept"
    secrets = fetch_secrets(config, wait)
    try:
        write_node_files(data_dir, settings, secrets)
    except OSError as e:
        raise BootstrapError(f"cannot write the node files in {data_dir}: {e}") from None
    return (
        f"node {node} of cluster {config.cluster} ({address}): wrote node.json and secrets.json in {data_dir}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="oct-ctl bootstrap",
        description="Write node.json and secrets.json for this VM from the bootstrap config, IMDSv2 and SSM.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the BootstrapConfig JSON file")
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where oct-ctl keeps its files"
    )
    parser.add_argument("--address", help="this node's IPv4 address (default: local-ipv4 from IMDSv2)")
    parser.add_argument("--node", help="this node's id (default: instance-id from IMDSv2)")
    parser.add_argument(
        "--wait",
        type=float,
        default=120.0,
        help="seconds to keep retrying SSM while the instance role is not usable yet (default 120)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        print(
            f"oct-ctl bootstrap: {bootstrap(args.config, args.data_dir, args.address, args.node, args.wait)}"
        )
    except BootstrapError as e:
        sys.exit(f"oct-ctl bootstrap: {e}")


if __name__ == "__main__":  # pragma: no cover
    main()
