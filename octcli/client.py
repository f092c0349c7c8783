"""HTTPS client of the oct-ctl API that survives any single node being down.

It trusts the cluster's own CA (from the state record) and nothing else: no system CAs, no trust on
first use, no plain-HTTP fallback. A node whose certificate does not chain to that CA is not ours.

Every node answers reads from its replica and forwards writes to the leader, so the client needs no
idea of who leads: it walks the known nodes until one answers. Nodes come and go (genesis dies,
followers are replaced), so a dead address is skipped rather than fatal, and the node that answered
last is asked first next time to keep polling cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from octcli.errors import InvalidConfig, OctError, Unreachable
from octctl import tls
from octctl.api.models import (
    API_VERSION,
    DeployRequest,
    DeployResponse,
    DestroyResponse,
    ErrorBody,
    EventsResponse,
    HistoryResponse,
    PlanResponse,
    RollbackRequest,
    RollbackResponse,
    StatusResponse,
    UiLink,
    UsageResponse,
)

__all__ = ["NO_CA", "OctClient"]

#: A record written before the API had TLS has no CA to pin: refuse rather than talk in clear.
NO_CA = (
    "the state record has no cluster CA (ca_cert): it was written by an oct from before the API used "
    "TLS, and oct no longer talks to nodes in clear. Redeploy the cluster: `oct destroy` with the oct "
    "that created it, then `oct deploy`"
)

#: A node packs a whole backup before sending it, and unpacks a whole restore before answering:
#: either may take long on a big volume.
ARCHIVE_TIMEOUT = httpx.Timeout(30.0, connect=3.0, read=3600.0)

#: "This node cannot serve you right now": no leader yet, or the leader it forwards to is away.
RETRY_STATUSES = frozenset({502, 503, 504})
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class _NoAnswer(Exception):
    """Internal: one round over all nodes got no usable answer; tenacity retries on it."""


class _TryNext(Exception):
    """Internal: this node cannot serve the request now (leaderless, or another cluster's)."""


class _Rejected(Exception):
    """Internal: every node answered 401; retrying cannot help."""


class OctClient:
    """Talks to a cluster through any of ``nodes`` (API addresses ``host:port``) over HTTPS, trusting
    only ``ca_cert`` (the cluster CA, PEM; None, from an old record, is refused with :data:`NO_CA`).

    ``retry_for`` bounds how long a call keeps cycling through the nodes while none answers (a leader
    election takes a few seconds); 0 means a single round.
    """

    def __init__(
        self,
        nodes: list[str],
        token: str,
        ca_cert: str | None,
        timeout: float = 10.0,
        retry_for: float = 30.0,
    ) -> None:
        if not ca_cert:
            raise OctError(NO_CA)
        if not nodes:
            raise Unreachable("no node address is known for this cluster")
        self._order = list(dict.fromkeys(nodes))
        self._token = token
        self._retry_for = retry_for
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
            verify=tls.client_context(ca_cert),
            trust_env=False,
        )

    def __repr__(self) -> str:  # the token must not show up in a traceback or a debugger
        return f"OctClient(nodes={self._order!r})"

    @property
    def nodes(self) -> list[str]:
        return list(self._order)

    def learn(self, nodes: list[str]) -> None:
        """Add addresses discovered later (nodes the leader provisioned) as fallbacks."""
        self._order.extend(n for n in nodes if n not in self._order)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- API -------------------------------------------------------------------------------------

    def status(self, node: str | None = None) -> StatusResponse:
        """The first answering node's view, or, with ``node``, that node's alone (one try).

        Asking one node with the token doubles as the check that it is *our* node: local
        addresses are reused by other projects' clusters, and their nodes answer 401.
        """
        node, response = self._call("GET", "/status", only=node)
        return _parse(node, response, StatusResponse)

    def deploy(
        self, config_json: dict[str, Any], source_dir: str | None, public_zone: str | None = None
    ) -> DeployResponse:
        body = DeployRequest(config=config_json, source_dir=source_dir, public_zone=public_zone).model_dump(
            mode="json"
        )
        node, response = self._call("POST", "/deploy", json=body)
        return _parse(node, response, DeployResponse)

    def plan(self, config_json: dict[str, Any], source_dir: str | None) -> PlanResponse:
        body = DeployRequest(config=config_json, source_dir=source_dir).model_dump(mode="json")
        node, response = self._call("POST", "/plan", json=body)
        return _parse(node, response, PlanResponse)

    def history(self) -> HistoryResponse:
        node, response = self._call("GET", "/history")
        return _parse(node, response, HistoryResponse)

    def rollback(self, deployment: str | None = None) -> RollbackResponse:
        body = RollbackRequest(deployment=deployment).model_dump(mode="json")
        node, response = self._call("POST", "/rollback", json=body)
        return _parse(node, response, RollbackResponse)

    def usage(self) -> UsageResponse:
        node, response = self._call("GET", "/usage")
        return _parse(node, response, UsageResponse)

    def ui_link(self) -> str:
        """A one-time dashboard login URL on the node that answered (the link works there only)."""
        node, response = self._call("POST", "/ui/link", json={})
        return f"https://{node}{_parse(node, response, UiLink).path}"

    def destroy(self) -> DestroyResponse:
        node, response = self._call("POST", "/destroy", json={})
        return _parse(node, response, DestroyResponse)

    def logs(self, service: str, tail: int = 50, *, access: bool = False) -> list[str]:
        """A service's own last lines, or (``access``) its ingress access log from every node."""
        kind = "access" if access else "logs"
        node, response = self._call("GET", f"/services/{service}/{kind}", params={"tail": tail})
        try:
            lines = response.json()["lines"]
        except (ValueError, KeyError, TypeError):
            raise OctError(f"node {node} sent an unexpected answer to a logs request") from None
        return [str(line) for line in lines]

    def events(self, after: int = 0, limit: int = 1000) -> EventsResponse:
        node, response = self._call("GET", "/events", params={"after": after, "limit": limit})
        return _parse(node, response, EventsResponse)

    def log_stream(
        self, service: str, tail: int = 50, since: float | None = None, follow: bool = False
    ) -> Iterator[dict[str, str]]:
        """Every instance's lines (``instance``, ``node``, ``text``) as the node asked sends them;
        with ``follow`` until the caller stops iterating (or the node goes away: OctError)."""
        params: dict[str, str] = {"tail": str(tail), "follow": "true" if follow else "false"}
        if since is not None:
            params["since"] = repr(since)
        return self._json_lines(f"/services/{service}/logs/stream", params, follow)

    def node_log(self, node: str, tail: int = 50, follow: bool = False) -> Iterator[dict[str, str]]:
        """A node's own log (``node``, ``text``), from that node through whichever answers."""
        params = {"tail": str(tail), "follow": "true" if follow else "false"}
        return self._json_lines(f"/nodes/{node}/logs", params, follow)

    def _json_lines(self, path: str, params: dict[str, str], follow: bool) -> Iterator[dict[str, str]]:
        timeout = httpx.Timeout(10.0, connect=3.0, read=None if follow else 60.0)

        def read(node: str, headers: dict[str, str]) -> Iterator[dict[str, str]]:
            request = self._http.build_request(
                "GET", _url(node, path), params=params, headers=headers, timeout=timeout
            )
            with contextlib.closing(self._http.send(request, stream=True)) as response:
                if response.status_code in RETRY_STATUSES or response.status_code == 401:
                    response.read()
                    raise _TryNext(f"HTTP {response.status_code}: {_error_of(response).error}")
                if not response.is_success:
                    response.read()
                    _raise_for_status(node, response)
                for line in response.iter_lines():
                    if line:
                        yield dict(json.loads(line))

        return self._on_first_node(read, "log stream")

    def backup(self, service: str, out: Path) -> None:
        """Write the backup of the service's volumes (a gzipped tarball) to ``out``, through the
        first node that answers; ``out`` appears only once the whole archive has arrived."""
        partial = out.with_name(out.name + ".part")

        def fetch(node: str, headers: dict[str, str]) -> None:
            with self._http.stream(
                "GET", _url(node, f"/services/{service}/backup"), headers=headers, timeout=ARCHIVE_TIMEOUT
            ) as response:
                if not response.is_success:
                    response.read()
                    raise OctError(f"{_error_of(response).error} (HTTP {response.status_code} from {node})")
                # (0600: a backup holds the service's data, secrets included)
                with open(partial, "wb", opener=lambda path, flags: os.open(path, flags, 0o600)) as file:
                    for chunk in response.iter_bytes(1 << 16):
                        file.write(chunk)
            partial.replace(out)

        try:
            self._archive_call(fetch)
        finally:
            partial.unlink(missing_ok=True)

    def restore(self, service: str, archive: Path) -> list[str]:
        """Send ``archive`` for the cluster to restore into the service's volumes; the volumes restored."""

        def content() -> Iterator[dict[str, Any]]:
            with archive.open("rb") as body:  # (opened for each node tried: a send reads it)
                yield {"content": body}

        return self._restore(f"/services/{service}/restore", contextlib.contextmanager(content))

    def restore_snapshots(self, service: str, snapshots: dict[str, str]) -> list[str]:
        """Have the cluster fill the service's volumes from EBS snapshots (``{volume: snapshot}``);
        the volumes restored."""
        return self._restore(
            f"/services/{service}/restore-snapshots",
            lambda: contextlib.nullcontext({"json": {"snapshots": snapshots}}),
        )

    def _restore(
        self, path: str, body: Callable[[], contextlib.AbstractContextManager[dict[str, Any]]]
    ) -> list[str]:
        """PUT ``body()`` to ``path`` on the first node reached, waiting as long as a restore may
        take (the node stops the service first); the volumes restored."""
        found: list[str] = []

        def send(node: str, headers: dict[str, str]) -> None:
            with body() as content:
                response = self._http.put(
                    _url(node, path), headers=headers, timeout=ARCHIVE_TIMEOUT, **content
                )
            if not response.is_success:
                raise OctError(f"{_error_of(response).error} (HTTP {response.status_code} from {node})")
            found.extend(str(name) for name in response.json()["restored"])

        self._archive_call(send)
        return found

    def _archive_call(self, call: Callable[[str, dict[str, str]], None]) -> None:
        """``call(node, headers)`` on the first node that can be reached. Not retried after that:
        an archive is too big to send twice on a guess, and a half-read backup is thrown away."""

        def once(node: str, headers: dict[str, str]) -> Iterator[None]:
            call(node, headers)
            yield None

        for _ in self._on_first_node(once, "archive transfer"):
            pass

    def _on_first_node(self, work: Callable[[str, dict[str, str]], Iterator[T]], what: str) -> Iterator[T]:
        """What ``work(node, headers)`` yields on the first node that can be reached (or that does
        not raise :class:`_TryNext`). A stream that breaks off once it flows is not taken up again
        elsewhere: what it sent is the caller's already."""
        headers = {"Authorization": f"Bearer {self._token}"}
        tried: dict[str, str] = {}
        for node in list(self._order):
            try:
                yield from work(node, headers)
                return
            except _TryNext as e:
                tried[node] = str(e)
            except httpx.ConnectError as e:
                tried[node] = _describe(e)
            except httpx.TransportError as e:
                raise OctError(f"the {what} with {node} broke off: {_describe(e)}") from None
        listing = ", ".join(f"{n} ({why})" for n, why in tried.items())
        raise Unreachable(f"no oct-ctl node answered: {listing}")

    # -- transport -------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        only: str | None = None,
    ) -> tuple[str, httpx.Response]:
        """Send to the first node that gives a real answer, cycling with backoff until ``retry_for``.

        A real answer includes most 4xx: those are the cluster's verdict on the request and
        asking another node would only repeat it. A 401 is different: the address now belongs to
        some other cluster (local addresses are reused), so the next node is tried.
        """
        tried: dict[str, str] = {}
        nodes = [only] if only is not None else self._order
        retrying = Retrying(
            stop=stop_after_delay(0 if only is not None else self._retry_for),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type(_NoAnswer),
            reraise=True,
        )
        try:
            node, response = retrying(
                self._one_round, method, path, nodes, tried, json=json, params=params, prefer=only is None
            )
        except _NoAnswer:
            listing = ", ".join(f"{n} ({why})" for n, why in tried.items())
            raise Unreachable(f"no oct-ctl node answered: {listing}") from None
        except _Rejected:
            raise OctError(
                f"every node rejected the API token (HTTP 401) or showed a certificate of another "
                f"cluster at {', '.join(nodes)}: the state file belongs to a cluster that no longer "
                "runs there"
            ) from None
        _raise_for_status(node, response)
        return node, response

    def _one_round(
        self,
        method: str,
        path: str,
        nodes: list[str],
        tried: dict[str, str],
        *,
        json: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        prefer: bool,
    ) -> tuple[str, httpx.Response]:
        """One pass over ``nodes``: the first real answer, noting in ``tried`` why each other failed."""
        headers = {"Authorization": f"Bearer {self._token}"}
        rejected = 0
        for node in list(nodes):
            try:
                response = self._http.request(
                    method, _url(node, path), json=json, params=params, headers=headers
                )
            except httpx.TransportError as e:
                tried[node] = _describe(e)
                if tried[node] == FOREIGN_CERTIFICATE:
                    rejected += 1  # like a 401: that address now runs another cluster
                continue
            if response.status_code == 401:
                tried[node] = "HTTP 401: rejected our API token"
                rejected += 1
                continue
            if response.status_code in RETRY_STATUSES:
                tried[node] = f"HTTP {response.status_code}: {_error_of(response).error}"
                continue
            if prefer:
                self._prefer(node)
            return node, response
        if rejected == len(nodes):
            raise _Rejected
        raise _NoAnswer

    def _prefer(self, node: str) -> None:
        if self._order[0] != node:
            self._order.remove(node)
            self._order.insert(0, node)


def _url(node: str, path: str) -> str:
    return f"https://{node}/{API_VERSION}{path}"


FOREIGN_CERTIFICATE = "TLS: its certificate is not from this cluster's CA"


def _describe(e: httpx.TransportError) -> str:
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    text = str(e)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return FOREIGN_CERTIFICATE
    if "Connection refused" in text:
        return "connection refused"
    return text or type(e).__name__


def _error_of(response: httpx.Response) -> ErrorBody:
    try:
        return ErrorBody.model_validate_json(response.content)
    except ValidationError:
        text = response.text.strip().splitlines()
        return ErrorBody(error=text[0][:200] if text else response.reason_phrase or "no reason given")


def _raise_for_status(node: str, response: httpx.Response) -> None:
    if response.is_success:
        return
    body = _error_of(response)
    if response.status_code == 422:
        raise InvalidConfig(f"the cluster rejected oct.toml: {body.error}", body.details)
    details = "".join(f"\n  {line}" for line in body.details)
    raise OctError(f"{body.error} (HTTP {response.status_code} from {node}){details}")


def _parse(node: str, response: httpx.Response, model: type[M]) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as e:
        raise OctError(
            f"node {node} sent an answer this oct does not understand ({e.error_count()} errors in "
            f"{model.__name__}); are the CLI and oct-ctl the same version?"
        ) from None
