"""The quick version of the overload test (``bench/loadtest.py overload`` is the full one): a
real ``tether serve`` with a small in-flight limit (``TETHER_MAX_IN_FLIGHT``) and bursts of
requests sent all at once, far beyond it — directly, and through real nginx and Envoy.

Behaviour only, never time: the excess is shed (503 ``overloaded`` with ``Retry-After``), no
other error; nothing the policy denies is ever allowed; a shed request never reaches the API
behind a proxy; health and metrics answer throughout; afterwards the same traffic is answered
rightly again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.integration.ext_authz.proxies import (
    EXAMPLES,
    Upstream,
    envoy,
    nginx,
    order_bot_token,
    upstream,
)
from tests.integration.live.conftest import ServerProcess, free_port

LIMIT = 2
BURST = 48
#: Bursts sent before concluding that none was shed (each is far beyond the limit).
MAX_BURSTS = 5


def _server(tmp: Path) -> ServerProcess:
    env = {"TETHER_EXT_AUTHZ_ROUTES": str(EXAMPLES / "routes.toml"),
           "TETHER_MAX_IN_FLIGHT": str(LIMIT)}  # fmt: skip
    return ServerProcess(tmp / "data", log=tmp / "tether.log", env=env)


def _shed_total(tether: ServerProcess) -> float:
    text = httpx.get(f"{tether.addr}/metrics", timeout=30).text
    [line] = [x for x in text.splitlines() if x.startswith("tether_requests_shed_total ")]
    return float(line.split()[1])


@pytest.fixture
def tether(tmp_path: Path) -> Iterator[ServerProcess]:
    server = _server(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _judge(method: str, answer: httpx.Response) -> str:
    """What an answer of the ext_authz endpoint is: allow, deny, shed — or wrong."""
    if answer.status_code == 503:
        shed = answer.json()["error"]["code"] == "overloaded" and "retry-after" in answer.headers
        return "shed" if shed else "wrong: 503 not overloaded"
    if method == "GET" and answer.status_code == 200 and answer.headers.get("x-tether-decision-id"):
        return "allow"
    if method == "DELETE" and answer.status_code == 403:
        return "deny"
    return f"wrong: {method} answered {answer.status_code}"


async def _burst(addr: str, token: str) -> tuple[list[str], list[int]]:
    """``BURST`` ext_authz requests at once (one in four a DELETE the policy denies), and
    health and metrics asked in the middle of them: the judgements and those statuses."""
    auth = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=BURST + 4)
    async with httpx.AsyncClient(base_url=addr, limits=limits, timeout=30) as client:
        methods = ["DELETE" if i % 4 == 3 else "GET" for i in range(BURST)]
        asks = [client.request(m, f"/v1/ext_authz/orders/orders/{i}", headers=auth)
                for i, m in enumerate(methods)]  # fmt: skip
        operator = [client.get("/healthz"), client.get("/readyz"), client.get("/metrics")]
        answers = await asyncio.gather(*asks[: BURST // 2], *operator, *asks[BURST // 2 :])
    operator_answers = answers[BURST // 2 : BURST // 2 + 3]
    decision_answers = answers[: BURST // 2] + answers[BURST // 2 + 3 :]
    verdicts = [_judge(m, a) for m, a in zip(methods, decision_answers, strict=True)]
    return verdicts, [a.status_code for a in operator_answers]


def test_overload_sheds_with_503_never_allows_a_denied_request_and_recovers(
    tether: ServerProcess,
) -> None:
    token = order_bot_token(tether)
    seen: list[str] = []
    for _ in range(MAX_BURSTS):
        verdicts, operator = asyncio.run(_burst(tether.addr, token))
        seen += verdicts
        assert operator == [200, 200, 200], "health, readiness and metrics answer under load"
        if "shed" in verdicts:
            break
    wrong = [v for v in seen if v not in {"allow", "deny", "shed"}]
    assert wrong == []
    assert "shed" in seen, f"{MAX_BURSTS} bursts of {BURST} over a limit of {LIMIT}, none shed"
    assert _shed_total(tether) == seen.count("shed")
    # Recovery: the same traffic, one at a time, is answered rightly again.
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=tether.addr, headers=auth, timeout=30) as client:
        again = [_judge(m, client.request(m, f"/v1/ext_authz/orders/orders/{i}"))
                 for i, m in enumerate(["GET", "GET", "DELETE"] * 4)]  # fmt: skip
    assert again == ["allow", "allow", "deny"] * 4


# -- through real proxies ---------------------------------------------------------------------


async def _through(url: str, token: str, tag: str) -> list[tuple[str, int]]:
    """``BURST`` reads of distinct orders through a proxy at once: each path and status."""
    auth = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=BURST)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        paths = [f"/orders/{tag}-{i}" for i in range(BURST)]
        answers = await asyncio.gather(*(client.get(p, headers=auth) for p in paths))
    return [(p, a.status_code) for p, a in zip(paths, answers, strict=True)]


def _check_proxy(api: Upstream, answers: list[tuple[str, int]]) -> int:
    """Every 2xx reached the API, nothing else did; how many were refused."""
    for path, status in answers:
        reached = api.requests_to(path)
        if 200 <= status < 300:
            assert len(reached) == 1, path
        else:
            assert reached == [], f"{path} answered {status} yet reached the API"
    return sum(not 200 <= s < 300 for _, s in answers)


def test_a_shed_ext_authz_request_is_a_denial_through_nginx_and_envoy(tmp_path: Path) -> None:
    tether = _server(tmp_path)
    ports = {"tether": tether.port, "api": free_port(), "nginx": free_port(),
             "envoy": free_port()}  # fmt: skip
    with ExitStack() as stack:
        tether.start()
        stack.callback(tether.stop)
        api = stack.enter_context(upstream(ports["api"]))
        stack.enter_context(nginx(tmp_path / "nginx", ports))
        stack.enter_context(envoy(tmp_path / "envoy", ports))
        token = order_bot_token(tether)
        for proxy in ("nginx", "envoy"):
            url = f"http://127.0.0.1:{ports[proxy]}"
            before, refused = _shed_total(tether), 0
            for _ in range(MAX_BURSTS):
                refused += _check_proxy(api, asyncio.run(_through(url, token, uuid.uuid4().hex)))
                if _shed_total(tether) > before:
                    break
            assert _shed_total(tether) > before, f"nothing was shed behind {proxy}"
            assert refused >= _shed_total(tether) - before, proxy  # every shed one refused
            answer = httpx.get(f"{url}/orders/after", headers={"Authorization": f"Bearer {token}"})
            assert (answer.status_code, answer.text) == (200, "upstream"), proxy
