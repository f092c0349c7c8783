"""The cluster's private bucket for the oct wheel its nodes install.

Every node installs exactly the wheel the deploying CLI was running (``octcli.artifact``): the CLI
uploads it here at genesis, content-addressed (``artifacts/<sha256>/<file>``), and each node's user
data carries a short-lived presigned URL and the sha256 that ``install-oct.sh`` checks. The CLI
signs the leader's URL; the leader signs its followers' with its instance role, which may read
``artifacts/*`` of this bucket and nothing else of S3.

The bucket is private (public access blocked), encrypted at rest (SSE-S3), tagged with the
project and cluster, and every request names the account that must own it, so a bucket of the
same name in another account is never used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from botocore.config import Config

from octctl.providers.aws.resources import CLUSTER_TAG, PROJECT_TAG, AwsResources, NodeArtifact
from octctl.providers.aws.session import AwsClients, AwsError, call

__all__ = ["bucket_name", "delete_buckets", "ensure_bucket", "presigned_url", "upload"]

log = logging.getLogger(__name__)

PREFIX = "artifacts"
#: How long a node's download link lives: a VM fetches it within minutes of booting.
URL_LIFETIME = 2 * 3600
_PUBLIC_ACCESS_BLOCKED = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def bucket_name(cluster: str, account: str) -> str:
    """Globally unique and unguessable before genesis: the cluster id is random."""
    return f"oct-{cluster}-{account}".lower()


def _s3(clients: AwsClients) -> Any:
    """An S3 client that signs with SigV4, which presigned URLs need in every region."""
    return clients.session.client("s3", config=clients.config.merge(Config(signature_version="s3v4")))


def ensure_bucket(clients: AwsClients, resources: AwsResources) -> str:
    """The cluster's bucket, created private, encrypted and tagged if it does not exist yet."""
    account = clients.account()
    name = resources.artifact_bucket or bucket_name(resources.cluster, account)
    s3 = _s3(clients)
    try:
        call(s3, "head_bucket", Bucket=name, ExpectedBucketOwner=account)
        return name
    except AwsError as e:
        if e.code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    placement = (
        {}
        if clients.region == "us-east-1"
        else {"CreateBucketConfiguration": {"LocationConstraint": clients.region}}
    )
    try:
        call(s3, "create_bucket", Bucket=name, **placement)
    except AwsError as e:
        if e.code != "BucketAlreadyOwnedByYou":
            raise
    call(s3, "put_public_access_block", Bucket=name, ExpectedBucketOwner=account,
         PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCKED)  # fmt: skip
    call(
        s3,
        "put_bucket_encryption",
        Bucket=name,
        ExpectedBucketOwner=account,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    tagging = {"TagSet": [{"Key": k, "Value": v} for k, v in _tags(resources).items()]}
    call(s3, "put_bucket_tagging", Bucket=name, ExpectedBucketOwner=account, Tagging=tagging)
    log.info("created bucket %s for the cluster's oct wheel", name)
    return name


def _tags(resources: AwsResources) -> dict[str, str]:
    return {PROJECT_TAG: resources.project, CLUSTER_TAG: resources.cluster}


def upload(clients: AwsClients, bucket: str, wheel: Path, sha256: str, version: str) -> NodeArtifact:
    """Put one wheel into the bucket (once: the key names its content) and describe it for nodes."""
    key = f"{PREFIX}/{sha256}/{wheel.name}"
    s3 = _s3(clients)
    account = clients.account()
    try:
        call(s3, "head_object", Bucket=bucket, Key=key, ExpectedBucketOwner=account)
    except AwsError as e:
        if e.code not in ("404", "NoSuchKey", "NotFound"):
            raise
        call(s3, "put_object", Bucket=bucket, Key=key, Body=wheel.read_bytes(), ExpectedBucketOwner=account,
             ServerSideEncryption="AES256", ContentType="application/zip")  # fmt: skip
    return NodeArtifact(bucket=bucket, key=key, sha256=sha256, version=version)


def presigned_url(clients: AwsClients, artifact: NodeArtifact, lifetime: int = URL_LIFETIME) -> str:
    """A GET link to the wheel that works without credentials for ``lifetime`` seconds."""
    try:
        url = _s3(clients).generate_presigned_url(
            "get_object", Params={"Bucket": artifact.bucket, "Key": artifact.key}, ExpiresIn=lifetime
        )
    except Exception as e:  # botocore raises its own types for missing credentials
        raise AwsError(
            "s3:GetObject", type(e).__name__, f"cannot sign a link to the oct wheel: {e}"
        ) from None
    return str(url)


def delete_buckets(clients: AwsClients, resources: AwsResources, *, whole_project: bool = False) -> None:
    """Empty and delete the cluster's bucket (with ``whole_project``, every oct bucket of the project).

    Found by the ledger's name and by tags, so a lost ledger still leads to it; gone is success.
    """
    s3 = _s3(clients)
    names = {resources.artifact_bucket} if resources.artifact_bucket else set()
    for bucket in call(s3, "list_buckets").get("Buckets", []):
        name = str(bucket["Name"])
        if name.startswith("oct-") and name not in names and _is_ours(s3, name, resources, whole_project):
            names.add(name)
    for name in sorted(names):
        _empty_and_delete(s3, name)


def _is_ours(s3: Any, name: str, resources: AwsResources, whole_project: bool) -> bool:
    try:
        tags = {t["Key"]: t["Value"] for t in call(s3, "get_bucket_tagging", Bucket=name).get("TagSet", [])}
    except AwsError:
        return False  # no tags, not ours to read, or gone
    if tags.get(PROJECT_TAG) != resources.project:
        return False
    return whole_project or tags.get(CLUSTER_TAG) == resources.cluster


def _empty_and_delete(s3: Any, name: str) -> None:
    try:
        while True:
            listing = call(s3, "list_objects_v2", Bucket=name)
            keys = [{"Key": o["Key"]} for o in listing.get("Contents", [])]
            if not keys:
                break
            call(s3, "delete_objects", Bucket=name, Delete={"Objects": keys, "Quiet": True})
        call(s3, "delete_bucket", Bucket=name)
    except AwsError as e:
        if e.code not in ("404", "NoSuchBucket", "NotFound"):
            raise
        return
    log.info("deleted bucket %s", name)
