"""The cluster's secrets in SSM Parameter Store, so they never travel in EC2 user data.

User data is readable by anything that can call ``ec2:DescribeInstanceAttribute`` and by every
process on the VM through the metadata service, and it is kept for the instance's lifetime. The
CLI (genesis) therefore stores ``Secrets`` as one SecureString parameter, ``/oct/<cluster>/secrets``
(encrypted with the account's ``aws/ssm`` key), and a new node reads it with its instance role,
which may read ``/oct/<cluster>/*`` and nothing else (the role's inline policy, ``infra/node_role.py``;
decrypting with the AWS-managed ``aws/ssm`` key needs no KMS permission of its own).

boto3 is imported inside the functions: the daemon imports this module only on AWS nodes, and
only ``oct-ctl bootstrap`` calls it there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from octctl.node_settings import Secrets

if TYPE_CHECKING:
    import boto3

#: AWS error codes worth retrying at first boot: a fresh instance role takes a while to be usable
#: (IAM is eventually consistent), and a busy account gets throttled.
TRANSIENT_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ThrottlingException",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


class SecretsStoreError(Exception):
    """One line naming the parameter and what went wrong; never a secret value.

    ``transient`` tells a caller at first boot whether waiting a little could help.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def parameter_name(cluster: str) -> str:
    return f"/oct/{cluster}/secrets"


def _client(session: boto3.Session) -> Any:
    from botocore.config import Config

    # Short timeouts and a few standard retries: at first boot the caller retries on top of this.
    config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
    return session.client("ssm", config=config)


def _error(action: str, name: str, session: boto3.Session, exc: Exception) -> SecretsStoreError:
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"SSM parameter {name} in {session.region_name}"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ParameterNotFound":
            return SecretsStoreError(
                f"{where} does not exist: the CLI stores it at genesis; was the cluster destroyed?"
            )
        reason = exc.response.get("Error", {}).get("Message", "") or code
        return SecretsStoreError(
            f"cannot {action} {where}: {code}: {reason}", transient=code in TRANSIENT_CODES
        )
    if isinstance(exc, BotoCoreError):
        # No credentials yet, endpoint unreachable, timeouts: all can clear up after boot.
        return SecretsStoreError(f"cannot {action} {where}: {exc}", transient=True)
    raise exc


def put_secrets(session: boto3.Session, cluster: str, secrets: Secrets) -> None:
    """Store (or replace) the cluster's secrets; tagged with the cluster when first created."""
    from botocore.exceptions import BotoCoreError, ClientError

    ssm = _client(session)
    name = parameter_name(cluster)
    value = secrets.model_dump_json()
    try:
        try:
            ssm.put_parameter(
                Name=name,
                Value=value,
                Type="SecureString",
                Description=f"oct cluster {cluster}: API token and Raft password",
                Tags=[{"Key": "oct:cluster", "Value": cluster}],
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ParameterAlreadyExists":
                raise
            # AWS refuses Tags together with Overwrite; the tags from the first put remain.
            ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
    except (BotoCoreError, ClientError) as e:
        raise _error("write", name, session, e) from None


def get_secrets(session: boto3.Session, cluster: str) -> Secrets:
    """The cluster's secrets, decrypted; :class:`SecretsStoreError` if absent, unreadable or malformed."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = parameter_name(cluster)
    try:
        answer = _client(session).get_parameter(Name=name, WithDecryption=True)
    except (BotoCoreError, ClientError) as e:
        raise _error("read", name, session, e) from None
    try:
        return Secrets.model_validate_json(answer["Parameter"]["Value"])
    except ValidationError as e:
        # Field paths and reasons only: the value is the secret.
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}" for err in e.errors()
        )
        raise SecretsStoreError(
            f"SSM parameter {name} in {session.region_name} does not hold oct secrets: {problems}"
        ) from None


def delete_secrets(session: boto3.Session, cluster: str) -> None:
    """Remove the cluster's secrets; already gone is fine, so ``oct destroy`` can run twice."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = parameter_name(cluster)
    try:
        _client(session).delete_parameter(Name=name)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return
        raise _error("delete", name, session, e) from None
    except BotoCoreError as e:
        raise _error("delete", name, session, e) from None
