"""The record in one S3 object (``[project.state_backend.s3]``), so a team shares one cluster.

Choices, and why:

- **Lock**: an object ``<key>.lock`` created with ``If-None-Match: *``. S3 conditional writes make
  the creation atomic, so no DynamoDB table is needed (Terraform's S3 backend ``use_lockfile`` does
  the same). It holds who took it, from where and since when, so a refusal can name the holder.
- **No expiry**: ``oct deploy`` may rightly hold the lock for its whole ``--timeout``, and the
  clocks of teammates differ. A lock left by a killed command is removed by hand with ``oct unlock``.
  Release deletes the lock only while its ETag is still the one we wrote, so a command whose lock
  was broken never removes the lock of the command that took it next.
- **Record writes are conditional** on the ETag this store last read or wrote (``If-None-Match: *``
  when there was none), so a write made behind our back is reported, never silently overwritten.
- **Bucket**: created only when ``HeadBucket`` says it does not exist, then every kind of public
  access is blocked. It is never deleted: it may hold other projects' keys, and a deleted name can
  be taken by anyone. ``BucketAlreadyExists`` means another account owns the name: an error, never
  "fine" (the Rust original wrote its state into whatever bucket had the name).
- **Ownership**: every request carries ``ExpectedBucketOwner`` (our account, from STS), so a bucket
  of that name owned by someone else is refused by S3 even if its policy would let us write our
  API token into it.
- Objects are written with ``ServerSideEncryption=AES256``; the body is never logged or quoted.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from octcli.errors import InvalidConfig, OctError
from octcli.state.base import StateStore
from octcli.state.record import ClusterRecord, parse_record

if TYPE_CHECKING:
    from octctl.config.models import S3Backend

__all__ = ["S3Store"]

log = logging.getLogger(__name__)

_BOTO = BotoConfig(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=30)
_CHANGED = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_NO_OBJECT = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
_LOCK_ATTEMPTS = 3
_PUBLIC_ACCESS_BLOCKED = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


class S3Store(StateStore):
    """Creating it contacts nothing: AWS is first asked on ``load``, ``save``, ``lock``."""

    def __init__(self, backend: S3Backend, config_path: Path) -> None:
        self.bucket = backend.bucket
        self.key = backend.key
        self.region = backend.region
        self.lock_key = f"{backend.key}.lock"
        self.where = f"s3://{self.bucket}/{self.key}"
        self._config_path = config_path
        try:
            # The region comes from oct.toml; endpoint (AWS_ENDPOINT_URL) and credentials from boto3's chain.
            session = boto3.session.Session(region_name=backend.region)
            self.client: Any = session.client("s3", config=_BOTO)
            self._sts: Any = session.client("sts", config=_BOTO)
        except BotoCoreError as e:
            raise OctError(f"cannot use S3 for the state at {self.where}: {e}") from None
        self._account: str | None = None
        self._bucket_ready = False
        self._read = False  # whether _etag is known: conditional writes need a read first
        self._etag: str | None = None  # of the record as last read or written; None: there is none

    def __repr__(self) -> str:
        return f"S3Store({self.where!r})"

    # -- record ----------------------------------------------------------------------------------------

    def load(self) -> ClusterRecord | None:
        try:
            got = self._object("get_object", Key=self.key)
            body = got["Body"].read()
        except ClientError as e:
            if _code(e) not in _NO_OBJECT:
                self._fail("read the state", e)
            self._read, self._etag = True, None
            return None
        except BotoCoreError as e:
            self._fail("read the state", e)
        record = parse_record(body, f"state {self.where}", "delete the object to start over")
        self._read, self._etag = True, str(got["ETag"])
        return record

    def save(self, record: ClusterRecord) -> None:
        self._ensure_bucket()
        condition = {} if not self._read else {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
        try:
            put = self._object(
                "put_object",
                Key=self.key,
                Body=(record.model_dump_json(indent=2) + "\n").encode(),
                ContentType="application/json",
                ServerSideEncryption="AES256",
                **condition,
            )
        except ClientError as e:
            if _code(e) in _CHANGED or (condition and _code(e) in _NO_OBJECT):
                self._changed_behind_us()
            self._fail("write the state", e)
        except BotoCoreError as e:
            self._fail("write the state", e)
        self._read, self._etag = True, str(put["ETag"])

    def remove(self) -> None:
        condition = {"IfMatch": self._etag} if self._read and self._etag else {}
        try:
            self._object("delete_object", Key=self.key, **condition)
        except ClientError as e:
            if _code(e) in _CHANGED:
                self._changed_behind_us()
            if _code(e) not in _NO_OBJECT:
                self._fail("remove the state", e)
        except BotoCoreError as e:
            self._fail("remove the state", e)
        self._read, self._etag = True, None

    def _changed_behind_us(self) -> NoReturn:
        raise OctError(
            f"the state at {self.where} was changed by someone else while this command ran "
            "(a command that did not take the lock, or an edit by hand); it was left as it is: "
            "check `oct status` and run the command again"
        )

    # -- lock ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        etag = self._acquire()
        try:
            yield
        finally:
            self._release(etag)

    def _acquire(self) -> str:
        self._ensure_bucket()
        body = json.dumps(
            {
                "holder": f"{_user()}@{socket.gethostname()}",
                "pid": os.getpid(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
                "id": uuid.uuid4().hex,  # makes our ETag ours alone, even for the same holder and second
            }
        ).encode()
        for _ in range(_LOCK_ATTEMPTS):
            try:
                put = self._object(
                    "put_object",
                    Key=self.lock_key,
                    Body=body,
                    IfNoneMatch="*",
                    ContentType="application/json",
                    ServerSideEncryption="AES256",
                )
                return str(put["ETag"])
            except ClientError as e:
                if _code(e) not in _CHANGED:
                    self._fail("take the lock", e)
            except BotoCoreError as e:
                self._fail("take the lock", e)
            held = self._holder()
            if held is not None:
                raise OctError(
                    f"another oct command is running for this project (lock s3://{self.bucket}/"
                    f"{self.lock_key}, held by {held[0]}); if that command is no longer running, "
                    f"remove the lock with `oct unlock -c {self._config_path}`"
                )
            # Released between our write and our read: try again.
        raise OctError(
            f"could not take the lock s3://{self.bucket}/{self.lock_key}: it kept changing; try again"
        )

    def _release(self, etag: str) -> None:
        """Best effort, and never raises: it runs while an exception from the command may be unwinding."""
        lock = f"s3://{self.bucket}/{self.lock_key}"
        try:
            self._object("delete_object", Key=self.lock_key, IfMatch=etag)
        except ClientError as e:
            if _code(e) in _CHANGED:
                log.warning("lock %s is no longer ours (it was removed and taken again); left in place", lock)
            elif _code(e) not in _NO_OBJECT:
                log.warning("could not release lock %s (%s): remove it with `oct unlock`", lock, _code(e))
        except (BotoCoreError, OctError) as e:
            log.warning("could not release lock %s (%s): remove it with `oct unlock`", lock, e)

    def _holder(self) -> tuple[str, str] | None:
        """Who holds the lock and the lock's ETag, or None when there is no lock."""
        try:
            got = self._object("get_object", Key=self.lock_key)
            raw = got["Body"].read()
        except ClientError as e:
            if _code(e) in _NO_OBJECT:
                return None
            self._fail("read the lock", e)
        except BotoCoreError as e:
            self._fail("read the lock", e)
        try:
            info = json.loads(raw)
            who = f"{info['holder']} (pid {info['pid']}) since {info['since']}"
        except (ValueError, TypeError, KeyError):
            modified = got.get("LastModified")
            since = modified.isoformat(timespec="seconds") if isinstance(modified, datetime) else "unknown"
            who = f"an unknown holder (unreadable lock) since {since}"
        return who, str(got["ETag"])

    def break_lock(self) -> str | None:
        held = self._holder()
        if held is None:
            return None
        who, etag = held
        try:
            # Only the lock we just looked at: one taken since by a new command stays.
            self._object("delete_object", Key=self.lock_key, IfMatch=etag)
        except ClientError as e:
            if _code(e) in _CHANGED:
                raise OctError(
                    f"the lock s3://{self.bucket}/{self.lock_key} changed while removing it "
                    "(another command took it): nothing was removed"
                ) from None
            if _code(e) not in _NO_OBJECT:
                self._fail("remove the lock", e)
        except BotoCoreError as e:
            self._fail("remove the lock", e)
        return f"s3://{self.bucket}/{self.lock_key}, held by {who}"

    # -- bucket ----------------------------------------------------------------------------------------

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket, ExpectedBucketOwner=self._owner())
        except ClientError as e:
            code = _code(e)
            if code in ("404", "NoSuchBucket", "NotFound"):
                self._create_bucket()
            elif code in ("403", "AccessDenied", "Forbidden"):
                raise OctError(
                    f"S3 bucket {self.bucket} exists but is not owned by your AWS account "
                    f"({self._owner()}), or your credentials may not use it; bucket names are global, so "
                    f"set another bucket in [project.state_backend.s3] of {self._config_path}"
                ) from None
            else:
                self._fail("check the bucket", e)
        except BotoCoreError as e:
            self._fail("check the bucket", e)
        self._bucket_ready = True

    def _create_bucket(self) -> None:
        # us-east-1 is the one region that refuses a LocationConstraint naming itself.
        placement: dict[str, Any] = {}
        if self.region != "us-east-1":
            placement["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(Bucket=self.bucket, **placement)
        except ClientError as e:
            if _code(e) == "BucketAlreadyOwnedByYou":
                return  # a teammate's oct created it a moment ago
            if _code(e) == "BucketAlreadyExists":
                raise InvalidConfig(
                    f"{self._config_path}: [project.state_backend.s3] bucket {self.bucket!r} belongs to "
                    "another AWS account (S3 bucket names are global): choose another name"
                ) from None
            self._fail(f"create bucket {self.bucket}", e)
        except BotoCoreError as e:
            self._fail(f"create bucket {self.bucket}", e)
        log.info("created S3 bucket %s in %s", self.bucket, self.region)
        try:
            self.client.put_public_access_block(
                Bucket=self.bucket,
                ExpectedBucketOwner=self._owner(),
                PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCKED,
            )
        except (ClientError, BotoCoreError) as e:
            self._fail(f"block public access to the new bucket {self.bucket}", e)

    # -- plumbing --------------------------------------------------------------------------------------

    def _owner(self) -> str:
        """Our AWS account id, which every bucket request names as the owner it expects."""
        if self._account is None:
            try:
                self._account = str(self._sts.get_caller_identity()["Account"])
            except (ClientError, BotoCoreError) as e:
                self._fail("find the AWS account of your credentials", e)
        return self._account

    def _object(self, operation: str, **kwargs: Any) -> Any:
        call = getattr(self.client, operation)
        return call(Bucket=self.bucket, ExpectedBucketOwner=self._owner(), **kwargs)

    def _fail(self, action: str, e: ClientError | BotoCoreError) -> NoReturn:
        """Report an AWS failure by its code and S3's own message, which never echo the object's body."""
        if isinstance(e, ClientError):
            error = e.response.get("Error", {})
            code = error.get("Code", "error")
            detail = f"{code}: {error.get('Message') or 'no message'}"
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                detail += " (check your AWS credentials and their S3 permissions)"
        else:
            detail = str(e)
        raise OctError(f"cannot {action} at {self.where}: {detail}") from None
