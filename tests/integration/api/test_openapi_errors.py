"""``/openapi.json`` declares the errors Tether sends (``tether.api.openapi``), not FastAPI's 422.

Which operations need a caller is taken from the hand-written table of the hostile suite
(``hostile_routes.ROUTES``), not from the rule that generates the declarations.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tether.api.openapi import OAUTH_ERROR, TETHER_ERROR

from .hostile_routes import CALLERS, ROUTES

_OPEN = frozenset(CALLERS)
#: The sign-in pages: a person with a browser, who is not yet anybody.
_SIGN_IN = "/oauth2/authorize"
Operation = tuple[str, dict[str, Any]]


@pytest.fixture
async def spec(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/openapi.json")
    assert answer.status_code == 200
    served: dict[str, Any] = answer.json()
    return served


def _operations(spec: dict[str, Any]) -> Iterator[Operation]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def _path(key: str) -> str:
    return key.split(" ", 1)[1]


def _schema_of(operation: dict[str, Any], status: int) -> str | None:
    content = operation["responses"][str(status)].get("content", {})
    ref: str | None = content.get("application/json", {}).get("schema", {}).get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def _declares_its_own_errors(operation: dict[str, Any]) -> bool:
    """A route that declared its errors itself (``responses=``, without a body schema)."""
    invalid = operation["responses"].get("400")
    return invalid is not None and "content" not in invalid


def test_no_operation_declares_fastapis_422_validation_error(spec: dict[str, Any]) -> None:
    declaring = [key for key, op in _operations(spec) if "422" in op["responses"]]
    assert declaring == []
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_every_operation_declares_invalid_input_and_unavailable(spec: dict[str, Any]) -> None:
    missing = [
        f"{key} {status}"
        for key, op in _operations(spec)
        for status in ("400", "503")
        if status not in op["responses"]
    ]
    assert missing == []


def test_error_answers_name_the_error_body_of_their_endpoint(spec: dict[str, Any]) -> None:
    wrong: list[str] = []
    checked = 0
    for key, op in _operations(spec):
        if _declares_its_own_errors(op):
            continue
        checked += 1
        expected = OAUTH_ERROR if _path(key).startswith("/oauth2/") else TETHER_ERROR
        for status in (s for s in op["responses"] if s.startswith(("4", "5"))):
            if _schema_of(op, int(status)) != expected:
                wrong.append(f"{key} {status}: {_schema_of(op, int(status))}")
    assert wrong == []
    assert checked > 100
    schemas = spec["components"]["schemas"]
    assert schemas[TETHER_ERROR]["properties"]["error"]["required"] == [
        "code",
        "message",
        "details",
    ]
    assert set(schemas[OAUTH_ERROR]["properties"]) == {"error", "error_description"}


def test_guarded_operations_declare_unauthenticated_and_forbidden(spec: dict[str, Any]) -> None:
    undeclared = [
        f"{key} {status}"
        for key, op in _operations(spec)
        if ROUTES[key].also != _OPEN and not _path(key).startswith(_SIGN_IN)
        for status in ("401", "403")
        if status not in op["responses"]
    ]
    assert undeclared == []


def test_open_operations_do_not_declare_unauthenticated(spec: dict[str, Any]) -> None:
    invented = [
        key
        for key, op in _operations(spec)
        if ROUTES[key].also == _OPEN and ({"401", "403"} & set(op["responses"]))
    ]
    assert invented == []


def test_operations_naming_an_object_in_their_path_declare_not_found(spec: dict[str, Any]) -> None:
    undeclared = [
        key
        for key, op in _operations(spec)
        if "{" in key and not _declares_its_own_errors(op) and "404" not in op["responses"]
    ]
    assert undeclared == []


def test_operations_with_a_body_declare_body_too_large(spec: dict[str, Any]) -> None:
    undeclared = [
        key
        for key, op in _operations(spec)
        if key.startswith(("POST ", "PUT ", "PATCH ")) and "413" not in op["responses"]
    ]
    assert undeclared == []


def test_a_route_declaring_its_own_errors_keeps_them(spec: dict[str, Any]) -> None:
    ext_authz = spec["paths"]["/v1/ext_authz/{service}/{path}"]["get"]["responses"]
    assert ext_authz["403"]["description"].startswith("Denied, approval required")
    assert "404" not in ext_authz


async def test_a_validation_error_is_the_declared_400_with_the_error_body(
    client: httpx.AsyncClient, spec: dict[str, Any]
) -> None:
    answer = await client.post("/v1/agents", json={"name": 7})
    assert answer.status_code == 400
    assert "400" in spec["paths"]["/v1/agents"]["post"]["responses"]
    assert set(answer.json()["error"]) == {"code", "message", "details"}
    assert answer.json()["error"]["code"] == "invalid_input"
