"""boto3 clients for one region, and the one-line :class:`AwsError` every AWS failure becomes.

Credentials come from boto3's standard chain (environment, shared config and credentials files,
``AWS_PROFILE``, SSO, the instance role on a VM). The endpoint too: boto3 ≥ 1.28 honours
``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``) by itself, which is how the whole flow
runs against ``moto_server``; nothing here special-cases it.

This module imports boto3, so the daemon imports it only where AWS calls are made (the leader);
the package's ``__init__`` stays import-free.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    SSOError,
    TokenRetrievalError,
    UnauthorizedSSOTokenError,
)

from octctl import __version__

__all__ = ["DEFAULT_REGION", "AwsClients", "AwsError", "call", "error_code", "wait_for"]

#: The reference's hard-coded region, kept as the default when oct.toml names none.
DEFAULT_REGION = "us-west-2"

_CREDENTIALS_HINT = (
    "configure AWS credentials (AWS_PROFILE, `aws sso login`, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
)
_CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
_PERMISSION_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


class AwsError(Exception):
    """One line: which call failed, AWS's error code and message, and what to do about it.

    ``code`` is AWS's error code (or the botocore failure's class name) so callers can tell "already
    gone" from a real failure without parsing the message.
    """

    def __init__(self, call: str, code: str, message: str, hint: str = "") -> None:
        self.call = call
        self.code = code
        self.detail = message
        self.hint = hint
        text = f"AWS {call} failed: {code}: {message}".rstrip(": ")
        super().__init__(f"{text} ({hint})" if hint else text)


def error_code(exc: BaseException) -> str:
    """AWS's error code of a botocore failure, or its class name when AWS never answered."""
    if isinstance(exc, AwsError):
        return exc.code
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "") or "ClientError")
    return type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def translate(call: str, exc: BotoCoreError | ClientError, endpoint: str | None = None) -> AwsError:
    """Turn a botocore failure into an :class:`AwsError` that says what the user can do."""
    code = error_code(exc)
    if isinstance(exc, ClientError):
        message = _one_line(str(exc.response.get("Error", {}).get("Message", "")))
        if code in _CREDENTIAL_CODES:
            return AwsError(call, code, message, _CREDENTIALS_HINT)
        if code in _PERMISSION_CODES:
            return AwsError(call, code, message, f"the credentials in use may not call {call}")
        if code.endswith("LimitExceeded") or code.endswith("QuotaExceeded"):
            return AwsError(
                call, code, message, "free some of these resources or raise the quota in the console"
            )
        if code in ("Throttling", "ThrottlingException", "RequestLimitExceeded"):
            return AwsError(call, code, message, "AWS is throttling this account: retry in a minute")
        return AwsError(call, code, message)
    message = _one_line(str(exc))
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, ProfileNotFound)):
        return AwsError(call, code, message, _CREDENTIALS_HINT)
    if isinstance(exc, (SSOError, TokenRetrievalError, UnauthorizedSSOTokenError)):
        return AwsError(call, code, message, "the SSO session has expired: run `aws sso login`")
    if isinstance(exc, NoRegionError):
        return AwsError(call, code, message, "set [project.provider.aws] region in oct.toml or AWS_REGION")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        where = f" {endpoint}" if endpoint else ""
        return AwsError(
            call,
            code,
            message,
            f"cannot reach the AWS endpoint{where}: check the network and AWS_ENDPOINT_URL",
        )
    return AwsError(call, code, message)


def call(client: Any, operation: str, /, **params: Any) -> dict[str, Any]:
    """Run ``client.<operation>(**params)``; any botocore failure becomes an :class:`AwsError`.

    The error names the call the way IAM policies and CloudTrail do (``ec2:CreateVpc``), so a user
    can match it to a permission.
    """
    api_name = client.meta.method_to_api_mapping.get(operation, operation)
    name = f"{client.meta.service_model.signing_name}:{api_name}"
    try:
        answer: dict[str, Any] = getattr(client, operation)(**params)
    except (BotoCoreError, ClientError) as exc:
        raise translate(name, exc, client.meta.endpoint_url) from exc
    return answer


def wait_for(client: Any, waiter: str, /, *, delay: float, attempts: int, **params: Any) -> None:
    """Run one of boto3's waiters for at most ``delay * attempts`` seconds.

    A waiter that gives up raises botocore's ``WaiterError``, which ``call`` never sees; it becomes
    an :class:`AwsError` like every other failure so the CLI shows one line, not a traceback.
    """
    try:
        client.get_waiter(waiter).wait(**params, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
    except (BotoCoreError, ClientError) as exc:
        name = f"{client.meta.service_model.signing_name}:wait {waiter}"
        raise translate(name, exc, client.meta.endpoint_url) from exc


class AwsClients:
    """The boto3 clients of one region, made on first use and shared.

    boto3 sessions are not thread-safe but clients are, so the clients are created under a lock
    and then used from any thread (the leader calls AWS from a thread pool).
    """

    def __init__(self, session: boto3.Session, *, config: Config | None = None) -> None:
        if not session.region_name:
            raise AwsError("session", "NoRegionError", "no AWS region configured", "set a region in oct.toml")
        self.session = session
        self.config = config or client_config()
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def connect(
        cls, region: str = DEFAULT_REGION, *, profile: str | None = None, max_attempts: int = 5
    ) -> AwsClients:
        """Clients for ``region`` with credentials from the standard chain (``profile`` overrides it)."""
        try:
            session = boto3.Session(region_name=region, profile_name=profile)
        except BotoCoreError as exc:
            raise translate("session", exc) from exc
        return cls(session, config=client_config(max_attempts=max_attempts))

    @property
    def region(self) -> str:
        return str(self.session.region_name)

    def client(self, service: str) -> Any:
        with self._lock:
            found = self._clients.get(service)
            if found is None:
                try:
                    found = self.session.client(service, config=self.config)
                except BotoCoreError as exc:
                    raise translate(f"{service}:client", exc) from exc
                self._clients[service] = found
            return found

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def ssm(self) -> Any:
        return self.client("ssm")

    @property
    def sts(self) -> Any:
        return self.client("sts")

    def account(self) -> str:
        """The account id behind the credentials; a cheap call that fails early with a clear message."""
        return str(call(self.sts, "get_caller_identity")["Account"])


def client_config(*, max_attempts: int = 5) -> Config:
    """Standard retries (throttling, 5xx, connection errors) with bounded timeouts.

    "standard" mode retries with exponential backoff and a retry quota, so a throttled genesis slows
    down instead of failing, and a dead endpoint still fails within a bounded time.
    """
    return Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        user_agent_extra=f"oct/{__version__}",
    )
