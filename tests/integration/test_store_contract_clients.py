"""The ``Store`` contract for OAuth clients of the built-in provider (``ClientStore``).

Run against every implementation (memory, SQLite, PostgreSQL) by the ``store`` fixture
(``tests/conftest.py``). A client's redirect URIs come back as the tuple they were given (in
its order), its datetimes in UTC; clients are created and deleted, never updated.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tether.delegation.models import OAuthClient
from tether.errors import ClientNotFound, Conflict, NotFound
from tether.store.interfaces import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_client(
    client_id: str = "grafana",
    *,
    agent: str | None = "faq-bot",
    redirect_uris: tuple[str, ...] = (
        "https://grafana.acme.org/login/generic_oauth",
        "http://127.0.0.1/callback",
    ),
) -> OAuthClient:
    return OAuthClient(
        id=client_id,
        name=f"{client_id.title()} at Acme",
        redirect_uris=redirect_uris,
        agent=agent,
        created_at=T0,
        created_by="operator:sam",
    )


async def ids(store: Store) -> list[str]:
    return [client.id for client in await store.list_clients()]


# -- one client ------------------------------------------------------------------------------


async def test_created_client_reads_back_equal_in_utc(store: Store) -> None:
    east = timezone(timedelta(hours=2))
    grafana = replace(make_client("grafana"), version=3)
    await store.create_client(replace(grafana, created_at=T0.astimezone(east)))
    stored = await store.get_client("grafana")
    assert stored == grafana
    assert stored is not None
    assert stored.created_at.utcoffset() == timedelta(0)


async def test_redirect_uris_come_back_as_the_tuple_given_in_its_order(store: Store) -> None:
    uris = ("https://b.acme.org/cb", "https://a.acme.org/cb", "com.acme.app:/oauth2redirect")
    await store.create_client(make_client("app", redirect_uris=uris))
    await store.create_client(make_client("none", redirect_uris=()))
    app, none = await store.get_client("app"), await store.get_client("none")
    assert app is not None
    assert none is not None
    assert type(app.redirect_uris) is tuple
    assert app.redirect_uris == uris
    assert none.redirect_uris == ()


async def test_a_client_may_front_no_agent(store: Store) -> None:
    portal = make_client("portal", agent=None)
    await store.create_client(portal)
    assert await store.get_client("portal") == portal


async def test_get_of_an_unknown_client_is_none(store: Store) -> None:
    assert await store.get_client("grafana") is None
    await store.create_client(make_client("grafana"))
    assert await store.get_client("Grafana") is None


async def test_a_taken_client_id_is_conflict_and_keeps_the_first(store: Store) -> None:
    first = make_client("grafana")
    await store.create_client(first)
    with pytest.raises(Conflict, match="grafana"):
        await store.create_client(replace(first, name="Another", agent=None))
    assert await store.list_clients() == [first]


async def test_naive_datetimes_are_value_error_and_write_nothing(store: Store) -> None:
    naive = T0.replace(tzinfo=None)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.create_client(replace(make_client("grafana"), created_at=naive))
    assert await store.get_client("grafana") is None
    assert await store.list_clients() == []


# -- listing ---------------------------------------------------------------------------------


async def test_list_clients_is_every_client_by_id_byte_by_byte(store: Store) -> None:
    assert await store.list_clients() == []
    for client_id in ("grafana", "Zed", "argo", "émile", "Argo", "backstage"):
        await store.create_client(make_client(client_id))
    assert await ids(store) == ["Argo", "Zed", "argo", "backstage", "grafana", "émile"]
    assert await store.list_clients() == [
        make_client(i) for i in ("Argo", "Zed", "argo", "backstage", "grafana", "émile")
    ]


# -- deletion --------------------------------------------------------------------------------


async def test_delete_client_removes_that_client_only(store: Store) -> None:
    await store.create_client(make_client("argo"))
    await store.create_client(make_client("grafana"))
    await store.delete_client("grafana")
    assert await store.get_client("grafana") is None
    assert await ids(store) == ["argo"]


async def test_delete_of_an_unknown_client_is_client_not_found(store: Store) -> None:
    with pytest.raises(ClientNotFound, match="grafana") as caught:
        await store.delete_client("grafana")
    assert isinstance(caught.value, NotFound)
    assert caught.value.code == "client_not_found"
    await store.create_client(make_client("argo"))
    await store.delete_client("argo")
    with pytest.raises(ClientNotFound):  # deleted once, gone
        await store.delete_client("argo")
    assert await store.list_clients() == []


async def test_a_deleted_clients_id_may_be_registered_again(store: Store) -> None:
    await store.create_client(make_client("grafana"))
    await store.delete_client("grafana")
    again = make_client("grafana", agent=None, redirect_uris=("https://new.acme.org/cb",))
    await store.create_client(again)
    assert await store.get_client("grafana") == again
