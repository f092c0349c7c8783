"""The OpenAPI document describes exactly the routes the app registers, and is well-formed."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from octctl.server.app import build_app
from octctl.server.openapi import PUBLIC_PATHS, ROUTES, openapi_document


def registered_routes() -> set[tuple[str, str]]:
    node: Any = SimpleNamespace(secrets=SimpleNamespace(token="t", scrape_token="s"), logins=None)
    app = build_app(node)
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and not route.resource.canonical.startswith("/ui")  # the dashboard: HTML pages, not the API
    }


def test_the_route_table_is_the_apps() -> None:
    assert {(r.method, r.openapi_path) for r in ROUTES} == registered_routes()


def test_every_operation_has_its_auth_and_documented_answers() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    for route in ROUTES:
        op = document["paths"][route.openapi_path][route.method.lower()]
        responses = op["responses"]
        assert str(route.status) in responses
        assert "500" in responses
        if route.path in PUBLIC_PATHS:
            assert op["security"] == [] and "401" not in responses
        else:
            assert "security" not in op and "401" in responses  # the document's default: bearer
        for status, answer in responses.items():
            if route.stream_answer and status == str(route.status):  # lines, not one document
                assert answer["content"] == {route.stream_answer: {"schema": {"type": "string"}}}
                continue
            if route.archive_answer and status == str(route.status):  # a tarball, not JSON
                assert answer["content"] == {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                }
                continue
            ref = answer["content"]["application/json"]["schema"]["$ref"]
            assert ref.removeprefix("#/components/schemas/") in schemas, (route, status)
    assert document["security"] == [{"bearer": []}]


def test_every_reference_resolves() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    text = json.dumps(document)
    assert "$defs" not in text
    for part in text.split('"$ref": "')[1:]:
        ref = part.split('"', 1)[0]
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
