"""The SDK's pure parts: what a decision answer means (anything but a well-formed 200 is a
deny, never an allow), what an evaluation asks, the renewal schedule, and which arguments of
a guarded call reach the checkpoint."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import tether
from tether.crypto.assertion import generate_agent_key
from tether.delegation.flows import HttpRequest, HttpResponse
from tether.enforcement.sdk._base import FINAL, failure_code
from tether.enforcement.sdk._flows import (
    AgentKey,
    Lease,
    check_flow,
    decision_of,
    evaluation_body,
    lease_flow,
    renew_flow,
    svid_flow,
)
from tether.enforcement.sdk._keeper import RETRY_SECONDS, Schedule, renew_time
from tether.enforcement.sdk.guard import _jsonable
from tether.errors import (
    ApprovalRequired,
    CheckUnavailable,
    Denied,
    Error,
    InvalidInput,
    TokenInvalid,
)

TOOL = {"type": "Tool", "id": "kb/search"}


def _answer(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status=status, headers={}, body=body)


def _allow(effect: str = "allow", decision: bool = True, **context: Any) -> dict[str, Any]:
    return {"decision": decision, "context": {"id": "dec_1", "effect": effect, **context}}


def test_an_allow_is_an_allow_with_its_decision_id() -> None:
    decision = decision_of(_answer(200, _allow(reasons=["permit kb"], policy_ids=["p1"])))
    assert decision.allowed
    assert decision.decision_id == "dec_1"
    assert decision.reasons == ("permit kb",)
    decision.raise_if_denied()  # does not raise


@pytest.mark.parametrize("status", [500, 502, 503, 504, 404, 400])
def test_a_server_that_cannot_answer_is_a_deny(status: int) -> None:
    with pytest.raises(CheckUnavailable):
        decision_of(_answer(status, _allow()))


@pytest.mark.parametrize(
    "body",
    [None, "allow", {"decision": "true", "context": {}}, {"decision": True}, {"context": {}},
     {"decision": 1, "context": {"id": "x"}}],
)  # fmt: skip
def test_a_malformed_answer_is_a_deny_never_an_allow(body: Any) -> None:
    with pytest.raises(CheckUnavailable):
        decision_of(_answer(200, body))


def test_no_answer_at_all_is_a_deny() -> None:
    with pytest.raises(CheckUnavailable):
        decision_of(None)


def test_a_refused_token_is_an_authentication_error() -> None:
    body = {"error": {"code": "token_invalid", "message": "expired"}}
    with pytest.raises(TokenInvalid) as refused:
        decision_of(_answer(401, body))
    assert refused.value.details["error"] == "token_invalid"


def test_a_deny_raises_denied_with_the_decision_and_reasons() -> None:
    decision = decision_of(_answer(200, _allow("deny", False, reasons=["forbid wipe"])))
    with pytest.raises(Denied) as denied:
        decision.raise_if_denied()
    assert type(denied.value) is Denied
    assert denied.value.details["decision_id"] == "dec_1"
    assert denied.value.details["reasons"] == ["forbid wipe"]


def test_approval_required_raises_its_own_error_with_the_digest_and_request() -> None:
    pending = {"auth_req_id": "req_1", "expires_in": 120, "interval": 2}
    answer = _allow("approval_required", False, call_digest="sha256:ab", approval_pending=pending)
    with pytest.raises(ApprovalRequired) as needed:
        decision_of(_answer(200, answer)).raise_if_denied()
    assert needed.value.details["call_digest"] == "sha256:ab"
    assert needed.value.details["auth_req_id"] == "req_1"


def test_an_evaluation_carries_the_call_its_entities_and_the_approval_token() -> None:
    body = evaluation_body(
        action="call_tool", resource=TOOL, arguments={"q": "x"}, context={"purpose": "faq"},
        entities=[{"type": "McpServer", "id": "kb"}], approval_token="apt_1",
    )  # fmt: skip
    assert body["action"] == {"name": "call_tool", "properties": {"arguments": {"q": "x"}}}
    assert body["resource"] == TOOL
    assert body["context"] == {"purpose": "faq", "entities": [{"type": "McpServer", "id": "kb"}],
                               "approval_token": "apt_1"}  # fmt: skip


@pytest.mark.parametrize("resource", [{}, {"type": "Tool"}, {"id": "x"}, {"type": 1, "id": "x"}])
def test_a_resource_without_type_and_id_is_refused_before_anything_is_sent(
    resource: dict[str, Any],
) -> None:
    with pytest.raises(InvalidInput):
        evaluation_body(action="read", resource=resource)


def test_a_check_presents_the_token_as_bearer_and_asks_for_the_reasons() -> None:
    flow = check_flow(addr="http://127.0.0.1:1", token="tok", body=evaluation_body(
        action="read", resource=TOOL))  # fmt: skip
    request = next(flow)
    assert isinstance(request, HttpRequest)
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.url.endswith("/access/v1/evaluation?explain=true")
    with pytest.raises(StopIteration) as done:
        flow.send(_answer(200, _allow()))
    assert done.value.value.allowed


def _key() -> AgentKey:
    pem = generate_agent_key().private_pem
    return AgentKey(spiffe_id="spiffe://acme.org/agent/kb-bot", private_key_pem=pem,
                    instance_id="pod-1")  # fmt: skip


def test_the_agent_authenticates_with_a_fresh_single_use_assertion_each_time() -> None:
    key = _key()
    first = key.authentication(audience="http://127.0.0.1:1/oauth2/token", now=1_800_000_000)
    second = key.authentication(audience="http://127.0.0.1:1/oauth2/token", now=1_800_000_000)
    assert first["client_assertion"] != second["client_assertion"]  # a new jti each time
    assert first["instance_id"] == "pod-1"
    assert "PRIVATE" not in repr(key)


def test_a_refused_authentication_raises_with_the_oauth_error() -> None:
    flow = svid_flow(token_endpoint="http://127.0.0.1:1/oauth2/token", key=_key(), now=1)
    request = next(flow)
    assert isinstance(request, HttpRequest)
    assert request.form is not None
    assert request.form["grant_type"] == "client_credentials"
    with pytest.raises(TokenInvalid) as refused:
        flow.send(_answer(401, {"error": "invalid_client"}))
    assert refused.value.details["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("status", "error"), [(403, Denied), (401, TokenInvalid), (409, Error), (503, Error)]
)
def test_a_refused_lease_raises_the_servers_error(status: int, error: type[Error]) -> None:
    flow = lease_flow(addr="http://127.0.0.1:1", token="tok", engine="pg", role="reader")
    next(flow)
    body = {"error": {"code": "some_code", "message": "no"}}
    with pytest.raises(error) as refused:
        flow.send(_answer(status, body))
    assert refused.value.details["error"] == "some_code"


def test_renewal_comes_at_two_thirds_of_a_credentials_life() -> None:
    assert renew_time(issued=100.0, expires=130.0) == pytest.approx(120.0)


def test_the_schedule_hands_out_what_is_due_soonest_first_and_waits_for_the_next() -> None:
    schedule = Schedule()
    schedule.keep("lease-b", issued=0.0, expires=30.0)  # due at 20
    schedule.keep("token", issued=0.0, expires=15.0)  # due at 10
    assert schedule.due(5.0) == []
    assert schedule.next_wake(5.0) == pytest.approx(5.0)
    assert schedule.due(25.0) == ["token", "lease-b"]
    schedule.drop("token")
    assert "token" not in schedule
    assert len(schedule) == 1


def test_a_failed_renewal_is_retried_while_the_credential_lasts_then_given_up() -> None:
    schedule = Schedule()
    schedule.keep("lease", issued=0.0, expires=30.0)
    schedule.failed("lease", now=20.0)
    assert schedule.due(20.0 + RETRY_SECONDS) == ["lease"]
    schedule.failed("lease", now=29.5)  # no time left for another try
    assert "lease" not in schedule


def test_a_final_refusal_is_not_retried() -> None:
    schedule = Schedule()
    schedule.keep("lease", issued=0.0, expires=30.0)
    schedule.failed("lease", now=20.0, final=True)
    assert "lease" not in schedule


def test_arguments_that_are_not_json_are_named_by_their_type_only() -> None:
    class Connection:
        password = "hunter2"

    sent = _jsonable({"query": "x", "limit": 3, "db": Connection(), "tags": ("a", 1),
                      "filters": {"k": [None, True]}})  # fmt: skip
    assert sent == {"query": "x", "limit": 3, "db": {"$type": Connection.__qualname__},
                    "tags": ["a", 1], "filters": {"k": [None, True]}}  # fmt: skip


def test_a_guarded_function_keeps_what_agent_frameworks_read_of_it() -> None:
    """LangChain's ``@tool``, the OpenAI Agents SDK's ``@function_tool`` and others build the
    tool's schema from the name, docstring and signature, and await coroutine functions."""

    @tether.guard(action="call_tool", resource={"type": "Tool", "id": "kb/search"})
    def search(query: str, limit: int = 3) -> list[str]:
        """Search the knowledge base."""
        return []

    @tether.guard(action="call_tool", resource={"type": "Tool", "id": "kb/search"})
    async def asearch(query: str) -> list[str]:
        """Search, asynchronously."""
        return []

    assert search.__name__ == "search"
    assert search.__doc__ == "Search the knowledge base."
    assert (
        str(inspect.signature(search, eval_str=True)) == "(query: str, limit: int = 3) -> list[str]"
    )
    assert inspect.iscoroutinefunction(asearch)
    assert not inspect.iscoroutinefunction(search)


def test_a_lease_at_its_max_ttl_is_a_final_refusal_not_retried_every_second() -> None:
    lease = Lease(id="lea_1", engine="pg", role="reader", expires_at=None, max_expires_at=None)
    flow = renew_flow(addr="http://127.0.0.1:1", token="tok", lease=lease)
    next(flow)
    body = {"error": {"code": "lease_max_ttl_reached", "message": "at its max TTL"}}
    with pytest.raises(Error) as refused:
        flow.send(_answer(409, body))
    assert failure_code(refused.value) in FINAL
    assert failure_code(CheckUnavailable("no answer")) not in FINAL  # retried while it lasts
