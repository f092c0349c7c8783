"""Fuzz a real node with schemathesis, driven by the OpenAPI document the node itself serves.

Every operation gets a fixed number of generated requests (deterministic: ``derandomize``); each
answer must not be a 5xx, must have a status the document lists for that operation, and must match
the schema documented for that status.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from octctl.server.openapi import OPENAPI_PATH, ROUTES
from octctl.tls import issue_node_certificate
from tests.e2e.test_api import Cluster, cluster

__all__ = ["cluster"]  # the real single-node cluster fixture of the API tests

pytestmark = [pytest.mark.security, pytest.mark.e2e]

#: Requests per operation and kind of data (valid, invalid). 15 got, on every operation and kind,
#: every answer status that 25 got (compared when it was lowered), in 60% of the time.
EXAMPLES = 15
#: The agent's fence answers 503 to a term newer than its Raft replica's ("retry": a real leader's
#: term arrives with its first heartbeat); the fuzzer sends such terms on purpose.
FENCED = {"PUT /v1/agent/instances/{service}", "DELETE /v1/agent/instances/{service}"}


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """``not_a_server_error``, but for the fence's documented 503 to a term not seen yet."""
    if (
        response.status_code == 503
        and case.operation.label in FENCED
        and response.json()["error"].startswith("unknown term ")
    ):
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [no_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
NO_SUCH_COMMAND = "oct-fuzz-no-such-command"


def harmless(case: Any) -> Any:
    """A generated InstanceSpec is run by the node: never let it name a program that exists here.
    Nor follow a log (an answer that lasts until the client hangs up)."""
    if isinstance(case.query, dict) and "follow" in case.query:
        case.query["follow"] = "false"
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("command"), list) and body["command"]:
        first = body["command"][0]
        if isinstance(first, str) and ("/" in first or shutil.which(first) is not None):
            body["command"][0] = NO_SUCH_COMMAND
    return case


def test_the_openapi_document_is_public(cluster: Cluster) -> None:
    answer = cluster.http.get(f"{cluster.base}{OPENAPI_PATH}", timeout=5)
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"].startswith("3.1")
    assert document["paths"]["/v1/health"]["get"]["security"] == []
    assert cluster.http.get(f"{cluster.base}/v1/status", timeout=5).status_code == 401


def fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    base: str,
    session: requests.Session,
    token: str,
    tls: dict[str, Any],
) -> Counter[int]:
    """Send ``EXAMPLES`` generated requests (a fixed, derandomized set) and check every answer;
    the statuses seen, by count. Raises what schemathesis found."""
    statuses: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {token}"}

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode).map(harmless))
    def fuzz(case: Any) -> None:
        response = case.call_and_validate(
            base_url=base, session=session, headers=headers, checks=CHECKS, timeout=10, **tls
        )
        statuses[response.status_code] += 1

    fuzz()
    return statuses


@pytest.mark.timeout(150)
def test_schemathesis_finds_no_server_error_or_schema_mismatch(cluster: Cluster, tmp_path: Path) -> None:
    started = time.monotonic()
    # Fetched here and loaded as a dict: from_url would leave the document's own route unfuzzed.
    document = cluster.http.get(f"{cluster.base}{OPENAPI_PATH}", timeout=10).raise_for_status().json()
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    # HTTPS that trusts the cluster CA only, presenting a node certificate as the leader does, so
    # the agent routes are fuzzed past their mutual-TLS check.
    key, cert = issue_node_certificate(
        cluster.secrets.ca_key, cluster.secrets.ca_cert, "fuzzer", [cluster.settings.address]
    )
    for name, text in (("ca.pem", cluster.secrets.ca_cert), ("node.pem", cert), ("node.key", key)):
        (tmp_path / name).write_text(text)
    tls = {
        "verify": str(tmp_path / "ca.pem"),
        "cert": (str(tmp_path / "node.pem"), str(tmp_path / "node.key")),
    }
    failures: list[str] = []
    labels: list[str] = []
    seen: dict[str, dict[int, int]] = {}
    for result, mode in itertools.product(
        schema.get_all_operations(), (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ):
        operation = result.ok()
        if mode is GenerationMode.POSITIVE:
            labels.append(operation.label)
        elif not {"parameters", "requestBody"} & set(operation.definition.raw):
            continue  # nothing to get wrong: no negative data exists
        try:
            statuses = fuzz_operation(operation, mode, cluster.base, session, cluster.secrets.token, tls)
            seen[f"{operation.label} ({mode.value})"] = dict(statuses)
        except (Exception, BaseExceptionGroup) as e:  # one operation's failure must not hide another's
            failures.append(f"{operation.label} ({mode.value} data): {e}")
    elapsed = time.monotonic() - started
    print(seen, f"{elapsed:.1f}s")  # with -s: which statuses each operation got
    assert sorted(labels) == sorted(f"{r.method} {r.openapi_path}" for r in ROUTES)  # skipping nothing
    assert not failures, "\n\n".join(failures)
    assert elapsed < 100, f"fuzzing took {elapsed:.0f}s"
    assert cluster.http.get(f"{cluster.base}/v1/health", timeout=5).json()["ok"] is True
    assert "Traceback" not in cluster.log()


def test_a_kv_key_with_a_newline_is_a_400_not_an_unknown_route(cluster: Cluster) -> None:
    """Found by the fuzzer: the routes' ``{key:.+}`` did not match a newline, so such a key got 404."""
    for method in ("GET", "PUT", "DELETE"):
        answer = cluster.client.request(method, "/v1/kv/a%0Ab", json={"value": "x"})
        assert answer.status_code == 400, (method, answer.text)
        assert "a key is" in answer.json()["error"]
