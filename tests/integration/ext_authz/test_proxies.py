"""Through real proxies: nginx ``auth_request`` and Envoy ext_authz in front of an API, asking a
real ``tether serve`` — allow, deny, and fail closed when Tether is slow or down.

One stack per module (Tether, the API, nginx, Envoy, each on its own loopback port), configured
by the files of ``examples/ext_authz/``. The fault tests come last and leave Tether running.
"""

from __future__ import annotations

import http.client
import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.live.conftest import ServerProcess, free_port

from .proxies import EXAMPLES, Upstream, envoy, nginx, order_bot_token, upstream

PROXIES = ("nginx", "envoy")


@dataclass
class Stack:
    tether: ServerProcess
    api: Upstream
    ports: dict[str, int]
    token: str

    def url(self, proxy: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[proxy]}{path}"

    def decisions(self, correlation_id: str) -> list[dict[str, Any]]:
        with self.tether.ops() as ops:
            found = ops.get("/v1/audit", params={"type_prefix": "decision",
                                                 "correlation_id": correlation_id})  # fmt: skip
        assert found.status_code == 200, found.text
        return [r["details"] for r in found.json()["records"]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("ext-authz")
    routes = {"TETHER_EXT_AUTHZ_ROUTES": str(EXAMPLES / "routes.toml")}
    tether = ServerProcess(tmp / "data", log=tmp / "tether.log", env=routes)
    ports = {"tether": tether.port, "api": free_port(), "nginx": free_port(),
             "envoy": free_port()}  # fmt: skip
    with ExitStack() as running:
        tether.start()
        running.callback(tether.stop)
        api = running.enter_context(upstream(ports["api"]))
        running.enter_context(nginx(tmp / "nginx", ports))
        running.enter_context(envoy(tmp / "envoy", ports))
        yield Stack(tether=tether, api=api, ports=ports, token=order_bot_token(tether))


def _call(stack: Stack, proxy: str, method: str, path: str, **headers: str) -> httpx.Response:
    return httpx.request(method, stack.url(proxy, path), headers=headers, timeout=30)


def _as_agent(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.token}", "x-request-id": uuid.uuid4().hex}


@pytest.mark.parametrize("proxy", PROXIES)
def test_an_allowed_request_reaches_upstream_with_its_decision_id(stack: Stack, proxy: str) -> None:
    headers = _as_agent(stack) | {"x-tether-user": "mallory", "x-tether-agent": "root"}
    answer = _call(stack, proxy, "GET", "/orders/42?full=1", **headers)
    assert (answer.status_code, answer.text) == (200, "upstream")
    [seen] = [s for s in stack.api.requests_to("/orders/42?full=1")
              if s.headers.get("x-request-id") == headers["x-request-id"]]  # fmt: skip
    [record] = stack.decisions(headers["x-request-id"])
    assert seen.headers["x-tether-decision-id"] == record["decision_id"]
    assert (record["effect"], record["resource"]) == ("allow", 'Table::"orders/42"')
    # What the client claimed in Tether's name never reaches the API; the agent's token
    # stays at the proxy.
    assert seen.headers["x-tether-agent"] == "order-bot"
    assert seen.headers.get("x-tether-user", "") == ""
    assert "authorization" not in seen.headers


@pytest.mark.parametrize("proxy", PROXIES)
def test_a_denied_request_is_403_and_never_reaches_upstream(stack: Stack, proxy: str) -> None:
    headers = _as_agent(stack)
    answer = _call(stack, proxy, "DELETE", "/orders/7", **headers)
    assert answer.status_code == 403
    assert answer.headers["x-tether-reason"] == "denied"
    assert stack.api.requests_to("/orders/7") == []
    [record] = stack.decisions(headers["x-request-id"])
    assert (record["effect"], record["action"]) == ("deny", "delete")


@pytest.mark.parametrize("proxy", PROXIES)
def test_a_forged_x_original_method_cannot_turn_a_delete_into_a_read(
    stack: Stack, proxy: str
) -> None:
    headers = _as_agent(stack) | {"X-Original-Method": "GET", "X-Original-URI": "/orders/1"}
    answer = _call(stack, proxy, "DELETE", "/orders/8", **headers)
    assert answer.status_code in {400, 403, 500}
    assert stack.api.requests_to("/orders/8") == []


@pytest.mark.parametrize("proxy", PROXIES)
def test_no_token_is_401_and_never_reaches_upstream(stack: Stack, proxy: str) -> None:
    answer = _call(stack, proxy, "GET", "/orders/9")
    assert answer.status_code == 401
    assert answer.headers.get_list("www-authenticate") == ['Bearer realm="tether"']
    assert stack.api.requests_to("/orders/9") == []


@pytest.mark.parametrize("proxy", PROXIES)
def test_an_unknown_route_is_denied_and_recorded(stack: Stack, proxy: str) -> None:
    headers = _as_agent(stack)
    answer = _call(stack, proxy, "GET", "/admin/users", **headers)
    assert (answer.status_code, answer.headers["x-tether-reason"]) == (403, "no_route")
    assert stack.api.requests_to("/admin/users") == []
    [record] = stack.decisions(headers["x-request-id"])
    assert record["reasons"] == ["no route of service 'orders' takes GET /admin/users"]


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize(
    "target", ["/orders/%2e%2e/admin/users", "/orders/42/..%2F..%2Fadmin", "/files/..;/admin"]
)
def test_path_tricks_never_reach_upstream_unchecked(stack: Stack, proxy: str, target: str) -> None:
    """Sent as raw bytes (no client library normalises them first)."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.ports[proxy], timeout=30)
    try:
        connection.request("GET", target, headers=_as_agent(stack))
        status = connection.getresponse().status
    finally:
        connection.close()
    assert status in {400, 403, 500}
    assert not any("admin" in s.path for s in stack.api.seen)


def _denied_without_reaching_upstream(stack: Stack, path: str) -> None:
    for proxy in PROXIES:
        answer = _call(stack, proxy, "GET", path, **_as_agent(stack))
        assert not answer.is_success, proxy
        assert answer.status_code in {403, 500, 502, 503, 504}, proxy
    assert stack.api.requests_to(path) == []


def test_tether_slow_is_a_denial_never_an_allow(stack: Stack) -> None:
    """The process stopped (SIGSTOP): each proxy's timeout elapses, and it denies a request
    Tether would have allowed."""
    assert stack.tether.proc is not None
    os.kill(stack.tether.proc.pid, signal.SIGSTOP)
    try:
        _denied_without_reaching_upstream(stack, "/orders/100")
    finally:
        os.kill(stack.tether.proc.pid, signal.SIGCONT)
    assert _call(stack, "nginx", "GET", "/orders/101", **_as_agent(stack)).status_code == 200


def test_tether_down_is_a_denial_never_an_allow(stack: Stack) -> None:
    stack.tether.stop()
    try:
        _denied_without_reaching_upstream(stack, "/orders/200")
    finally:
        stack.tether.start()
    for proxy in PROXIES:
        assert _call(stack, proxy, "GET", "/orders/201", **_as_agent(stack)).status_code == 200
