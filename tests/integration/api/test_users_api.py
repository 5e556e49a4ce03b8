"""``/v1/users``: a person's console role over HTTP (given, shown, taken away, refused)."""

from __future__ import annotations

import httpx
import pytest

from .test_management_api import as_, operator_token


async def test_a_security_admin_gives_a_person_a_console_role(client: httpx.AsyncClient) -> None:
    sam = await operator_token(client, "security-admin", "sam")
    added = await client.post("/v1/users", json={"name": "alice"}, headers=as_(sam))
    assert added.status_code == 201, added.text
    assert added.json()["role"] is None  # an end user
    given = await client.put("/v1/users/alice/role", json={"role": "developer"}, headers=as_(sam))
    assert given.status_code == 200, given.text
    assert (given.json()["role"], given.json()["version"]) == ("developer", 2)
    assert (await client.get("/v1/users/alice")).json()["role"] == "developer"
    listed = (await client.get("/v1/users")).json()["users"]
    assert [(u["name"], u["role"]) for u in listed] == [("alice", "developer")]
    taken = await client.put("/v1/users/alice/role", json={"role": None}, headers=as_(sam))
    assert (taken.status_code, taken.json()["role"]) == (200, None)


async def test_a_person_is_added_with_a_console_role(client: httpx.AsyncClient) -> None:
    added = await client.post("/v1/users", json={"name": "alice", "role": "auditor"})
    assert added.status_code == 201, added.text
    assert added.json()["role"] == "auditor"


@pytest.mark.parametrize("role", ["root", "enforcement-point", "wizard"])
async def test_a_person_cannot_be_given_the_root_role(client: httpx.AsyncClient, role: str) -> None:
    for refused in (
        await client.post("/v1/users", json={"name": "mallory", "role": role}),
        await client.put("/v1/users/mallory/role", json={"role": role}),
    ):
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["details"]["field"]) == ("invalid_input", "role")
    assert (await client.get("/v1/users/mallory")).status_code == 404


async def test_a_role_change_names_the_role_or_null(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/users", json={"name": "alice"})).status_code == 201
    missing = await client.put("/v1/users/alice/role", json={})
    assert (missing.status_code, missing.json()["error"]["details"]["field"]) == (400, "role")
    extra = await client.put("/v1/users/alice/role", json={"role": None, "admin": True})
    assert extra.status_code == 400
    nobody = await client.put("/v1/users/nobody/role", json={"role": "auditor"})
    assert (nobody.status_code, nobody.json()["error"]["code"]) == (404, "user_not_found")


@pytest.mark.parametrize("role", ["developer", "platform-admin", "auditor"])
async def test_a_developer_cannot_change_roles(client: httpx.AsyncClient, role: str) -> None:
    assert (await client.post("/v1/users", json={"name": "alice"})).status_code == 201
    other = await operator_token(client, role, "op")
    refused = await client.put(
        "/v1/users/alice/role", json={"role": "security-admin"}, headers=as_(other)
    )
    assert refused.status_code == 403, refused.text
    assert (await client.get("/v1/users/alice")).json()["role"] is None


async def test_a_role_change_is_an_audit_record(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/users", json={"name": "alice"})).status_code == 201
    for role in ("developer", None):
        changed = await client.put("/v1/users/alice/role", json={"role": role})
        assert changed.status_code == 200, changed.text
    answer = await client.get("/v1/audit", params={"type_prefix": "user.role_changed"})
    assert answer.status_code == 200, answer.text
    assert [r["details"] for r in answer.json()["records"]] == [
        {"role": "developer", "previous": None},
        {"role": None, "previous": "developer"},
    ]
