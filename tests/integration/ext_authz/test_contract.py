"""The ext_authz contract, in process: what a proxy sends, what Tether answers, what it records."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.api.app import create_app
from tether.api.services import Services
from tether.audit.records import AuditReceipt, AuditRecord
from tether.checkpoint import Checkpoint
from tether.config import Settings
from tether.errors import InvalidRouteMap, StoreUnavailable

from .conftest import ISSUER, decisions, register

CHECK = "/v1/ext_authz/orders"


def as_(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "x-request-id": uuid.uuid4().hex, **headers}


async def test_allowed_request_is_200_with_the_decision_headers_for_upstream(
    client: httpx.AsyncClient, token: str
) -> None:
    headers = as_(token)
    answer = await client.get(f"{CHECK}/orders/42?full=1", headers=headers)
    assert (answer.status_code, answer.content) == (200, b"")
    assert answer.headers["x-tether-agent"] == "order-bot"
    assert answer.headers["x-tether-instance"] == "spiffe://acme.org/agent/order-bot/i/pod-1"
    # Present though empty: the proxy overwrites whatever a client sent in its name.
    assert answer.headers["x-tether-user"] == ""
    [record] = await decisions(client, headers["x-request-id"])
    assert record["decision_id"] == answer.headers["x-tether-decision-id"]
    assert (record["effect"], record["enforcement_point"]) == ("allow", "ext_authz")
    assert (record["action"], record["resource"]) == ("read", 'Table::"orders/42"')


async def test_a_request_the_policies_do_not_permit_is_403_denied_and_recorded(
    client: httpx.AsyncClient, token: str
) -> None:
    headers = as_(token)
    answer = await client.delete(f"{CHECK}/orders/42", headers=headers)
    assert answer.status_code == 403
    assert answer.headers["x-tether-reason"] == "denied"
    body = answer.json()
    assert (body["reason"], body["effect"]) == ("denied", "deny")
    [record] = await decisions(client, headers["x-request-id"])
    assert (record["decision_id"], record["action"]) == (body["decision_id"], "delete")
    assert record["outcome"] == "failure"


async def test_approval_required_is_403_naming_the_call_to_approve(
    client: httpx.AsyncClient, token: str
) -> None:
    first = await client.post(f"{CHECK}/orders/42", headers=as_(token))
    other = await client.post(f"{CHECK}/orders/43", headers=as_(token))
    assert first.status_code == other.status_code == 403
    assert first.headers["x-tether-reason"] == "approval_required"
    assert first.json()["obligations"] == ["approval"]
    # The path's parameters are in the call's arguments: an approval binds to this order.
    assert first.json()["call_digest"] != other.json()["call_digest"]


async def test_no_token_is_401_with_a_bearer_challenge_and_no_record(
    client: httpx.AsyncClient, token: str
) -> None:
    request_id = uuid.uuid4().hex
    answer = await client.get(f"{CHECK}/orders/42", headers={"x-request-id": request_id})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.headers["x-tether-reason"] == "unauthenticated"
    assert await decisions(client, request_id) == []


async def test_a_token_that_does_not_verify_is_401_and_recorded(
    client: httpx.AsyncClient, token: str
) -> None:
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    headers = as_(forged)
    answer = await client.get(f"{CHECK}/orders/42", headers=headers)
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    [record] = await decisions(client, headers["x-request-id"])
    assert (record["agent"], record["effect"]) == (None, "deny")


@pytest.mark.parametrize(
    ("method", "path", "why"),
    [
        ("GET", "/v1/ext_authz/orders/admin", "no route of service 'orders' takes GET /admin"),
        ("PUT", "/v1/ext_authz/orders/orders", "no route of service 'orders' takes PUT /orders"),
        ("GET", "/v1/ext_authz/billing/orders/42", "no service named 'billing'"),
    ],
)
async def test_unknown_service_or_route_is_refused_and_recorded_as_the_refusal(
    client: httpx.AsyncClient, token: str, method: str, path: str, why: str
) -> None:
    headers = as_(token)
    answer = await client.request(method, path, headers=headers)
    assert answer.status_code == 403
    assert answer.headers["x-tether-reason"] == "no_route"
    [record] = await decisions(client, headers["x-request-id"])
    assert record["agent"] == "order-bot"  # the caller was authenticated, then refused
    assert (record["effect"], record["reasons"]) == ("deny", [why])


async def test_x_original_method_is_the_method_decided(
    client: httpx.AsyncClient, token: str
) -> None:
    """nginx's auth subrequest is a GET whatever the client sent: the header says which."""
    answer = await client.get(f"{CHECK}/orders/42", headers=as_(token, **{
        "X-Original-Method": "DELETE"}))  # fmt: skip
    assert (answer.status_code, answer.headers["x-tether-reason"]) == (403, "denied")


async def test_x_original_uri_names_the_request_when_the_path_does_not(
    client: httpx.AsyncClient, token: str
) -> None:
    named = await client.get(CHECK, headers=as_(token, **{"X-Original-URI": "/orders/42"}))
    assert named.status_code == 200
    unnamed = await client.get(CHECK, headers=as_(token))
    assert (unnamed.status_code, unnamed.json()["error"]["code"]) == (400, "malformed_header")


async def test_a_forged_x_original_uri_cannot_change_the_path_decided(
    client: httpx.AsyncClient, token: str
) -> None:
    """A proxy that passes the client's own X-Original-URI along: it must agree with the
    path the proxy put in the URL, or the request is refused."""
    agreeing = await client.get(f"{CHECK}/orders/42?a=1", headers=as_(token, **{
        "X-Original-URI": "/orders/42?a=1"}))  # fmt: skip
    assert agreeing.status_code == 200
    forged = await client.delete(f"{CHECK}/orders/42", headers=as_(token, **{
        "X-Original-URI": "/orders"}))  # fmt: skip
    assert (forged.status_code, forged.json()["error"]["code"]) == (400, "malformed_header")


def _malformed(token: str) -> list[tuple[str, list[tuple[str, str]]]]:
    bearer = ("Authorization", f"Bearer {token}")
    return [
        ("two Authorization headers", [bearer, bearer]),
        ("a Basic scheme", [("Authorization", "Basic b3JkZXI6Ym90")]),
        ("an oversized token", [("Authorization", "Bearer " + "a" * 9000)]),
        ("a token with a comma", [("Authorization", f"Bearer {token},{token}")]),
        ("a token with a space", [("Authorization", f"Bearer {token} x")]),
        ("an empty Authorization", [("Authorization", "")]),
        ("a lower-case method", [bearer, ("X-Original-Method", "delete")]),
        ("a method with a space", [bearer, ("X-Original-Method", "GET X")]),
        ("two X-Original-Method", [bearer, ("X-Original-Method", "GET"),
                                   ("X-Original-Method", "DELETE")]),
    ]  # fmt: skip


async def test_malformed_headers_are_400_malformed_header(
    client: httpx.AsyncClient, token: str
) -> None:
    for what, headers in _malformed(token):
        answer = await client.get(f"{CHECK}/orders/42", headers=headers)
        assert answer.status_code == 400, what
        assert answer.json()["error"]["code"] == "malformed_header", what


@pytest.mark.parametrize(
    "target",
    [
        "/orders/%2e%2e/admin",  # encoded dot segment
        "/orders%2F42",  # encoded slash
        "/orders//42",  # empty segment
        "/orders/%252e%252e",  # double encoding
        "/orders/..;/admin",  # a Java server's '..'
        "/orders/%5C..",  # encoded backslash
        "/orders/%zz",  # malformed escape
        "/orders/%ff",  # not UTF-8
    ],
)
async def test_path_tricks_are_400_unsafe_path(
    client: httpx.AsyncClient, token: str, target: str
) -> None:
    answer = await client.get(httpx.URL(f"{ISSUER}{CHECK}{target}"), headers=as_(token))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "unsafe_path"


async def test_an_x_original_uri_with_a_path_trick_is_400(
    client: httpx.AsyncClient, token: str
) -> None:
    answer = await client.get(CHECK, headers=as_(token, **{"X-Original-URI": "/a/%2e%2e/b"}))
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "unsafe_path")


async def test_correlation_id_comes_from_x_request_id_else_traceparent(
    client: httpx.AsyncClient, token: str
) -> None:
    trace = uuid.uuid4().hex
    parent = f"00-{trace}-{'1' * 16}-01"
    headers = {"Authorization": f"Bearer {token}", "traceparent": parent}
    assert (await client.get(f"{CHECK}/orders/1", headers=headers)).status_code == 200
    assert len(await decisions(client, trace)) == 1
    # An ill-formed x-request-id decides nothing: not used, and no error.
    headers["x-request-id"] = "bad id with spaces"
    assert (await client.get(f"{CHECK}/orders/1", headers=headers)).status_code == 200
    assert len(await decisions(client, trace)) == 2


class _FailingSink:
    def __init__(self, inner: Any) -> None:
        self.inner, self.failing = inner, True

    async def append(self, record: AuditRecord) -> AuditReceipt:
        if self.failing:
            raise StoreUnavailable("the audit store is down")
        receipt: AuditReceipt = await self.inner.append(record)
        return receipt


async def test_no_audit_no_access_503_never_allow(
    client: httpx.AsyncClient, services: Services, token: str
) -> None:
    sink = _FailingSink(services.audit)
    services.checkpoint = Checkpoint(
        svids=services.svids, policies=services.policies, engine=services.checkpoint._engine,
        audit=sink, clock=services.clock, directory=services.directory,
    )  # fmt: skip
    refused = await client.get(f"{CHECK}/orders/42", headers=as_(token))
    assert refused.status_code == 503
    assert refused.headers["x-tether-reason"] == "audit_unavailable"
    assert "x-tether-agent" not in refused.headers
    sink.failing = False
    assert (await client.get(f"{CHECK}/orders/42", headers=as_(token))).status_code == 200


async def test_a_service_audience_takes_tokens_for_it_only(
    tmp_path: Path, settings: Settings
) -> None:
    routes = tmp_path / "routes.toml"
    example = (settings.ext_authz_routes or Path()).read_text()
    audience = "https://orders.acme.org"
    routes.write_text(example.replace(f'# audience = "{audience}"', f'audience = "{audience}"'))
    ours = settings.with_(data_dir=tmp_path / "other", ext_authz_routes=routes,
                          allowed_audiences=(audience,))  # fmt: skip
    opened = await Services.open(ours)
    try:
        app = create_app(ours, services=opened)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as c:
            for_tether = await register(c)
            for_orders = await register(c, "order-bot-2", audience=audience)
            denied = await c.get(f"{CHECK}/orders/1", headers=as_(for_orders))
            assert (denied.status_code, denied.headers["x-tether-reason"]) == (403, "denied")
            refused = await c.get(f"{CHECK}/orders/1", headers=as_(for_tether))
            assert refused.status_code == 401
    finally:
        await opened.close()


def test_a_service_audience_no_agent_can_get_a_token_for_is_refused_at_start(
    tmp_path: Path, settings: Settings
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[[services.x-api.routes]]\nmethod = "GET"\npath = "/"\naction = "read"\n'
        'resource = { type = "Api", id = "x" }\n[services.x-api]\naudience = "https://x"\n'
    )
    with pytest.raises(InvalidRouteMap, match="TETHER_ALLOWED_AUDIENCES"):
        create_app(settings.with_(ext_authz_routes=routes))


def test_a_route_file_that_breaks_a_rule_is_refused_at_start(
    tmp_path: Path, settings: Settings
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[[services.x-api.routes]]\nmethod = "GET"\n')
    with pytest.raises(InvalidRouteMap) as refused:
        create_app(settings.with_(ext_authz_routes=routes))
    assert refused.value.code == "route_map_invalid"


async def test_openapi_describes_the_endpoint(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    described = paths["/v1/ext_authz/{service}/{path}"]
    assert {"get", "post", "put", "patch", "delete", "head", "options"} <= set(described)


async def test_concurrent_checks_each_get_their_own_decision(
    client: httpx.AsyncClient, token: str
) -> None:
    answers = await asyncio.gather(
        *(client.get(f"{CHECK}/orders/{i}", headers=as_(token)) for i in range(20))
    )
    ids = {a.headers["x-tether-decision-id"] for a in answers}
    assert [a.status_code for a in answers] == [200] * 20
    assert len(ids) == 20
