"""What-if replay: recorded decisions re-evaluated against a proposed set, nothing applied."""

from __future__ import annotations

import httpx

from tether.api.services import Services

from .decisions import POLICIES, evaluation
from .test_management_api import as_, operator_token

PROPOSED = """
@id("faq-bot-drops-tables")
permit (
  principal == Tether::Agent::"faq-bot",
  action == Tether::Action::"call_tool",
  resource == Tether::Tool::"drop_tables"
);
"""


async def _ask(client: httpx.AsyncClient, token: str, tool: str) -> bool:
    answer = await client.post("/access/v1/evaluation", json=evaluation(tool), headers=as_(token))
    result: bool = answer.json()["decision"]
    return result


async def test_replay_lists_every_decision_that_would_flip(
    client: httpx.AsyncClient,
    services: Services,
    agent_token: str,
) -> None:
    assert await _ask(client, agent_token, "search_faq") is True
    assert await _ask(client, agent_token, "search_faq") is True
    assert await _ask(client, agent_token, "drop_tables") is False
    assert await _ask(client, "not-a-token", "search_faq") is False
    report = (await client.post("/v1/policies/replay", json={"text": PROPOSED})).json()
    assert (report["evaluated"], report["skipped"]) == (3, 1)
    flips = {(f["resource"], f["before"], f["after"]) for f in report["flips"]}
    assert flips == {
        ('Tool::"search_faq"', "allow", "deny"),
        ('Tool::"drop_tables"', "deny", "allow"),
    }
    assert len(report["flips"]) == 3
    assert services.policies.current.version == 1, "a replay applies nothing"


async def test_replaying_the_set_in_force_flips_nothing(
    client: httpx.AsyncClient,
    agent_token: str,
) -> None:
    await _ask(client, agent_token, "search_faq")
    await _ask(client, agent_token, "transfer")
    report = (await client.post("/v1/policies/replay", json={"text": POLICIES})).json()
    assert (report["evaluated"], report["flips"]) == (2, [])


async def test_replay_needs_audit_read(
    client: httpx.AsyncClient,
    agent_token: str,
) -> None:
    developer = await operator_token(client, "developer", "dev")
    refused = await client.post(
        "/v1/policies/replay", json={"text": PROPOSED}, headers=as_(developer)
    )
    assert refused.status_code == 403
    auditor = await operator_token(client, "auditor", "audrey")
    allowed = await client.post(
        "/v1/policies/replay", json={"text": PROPOSED}, headers=as_(auditor)
    )
    assert allowed.status_code == 200
    invalid = await client.post("/v1/policies/replay", json={"text": "permit (principal,"})
    assert invalid.json()["error"]["code"] == "invalid_policy_set"
