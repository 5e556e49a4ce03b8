"""The ``Store`` contract for credential engines (``EngineStore``), on every implementation
(the ``store`` fixture in ``tests/conftest.py``)."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from tether.errors import Conflict, EngineExists, EngineNotFound, VersionConflict
from tether.store.interfaces import Store

from .test_store_contract_leases import ENGINE, active, at, make_engine, put, revoked


async def test_created_engine_reads_back_equal_and_read_only(store: Store) -> None:
    engine = make_engine()
    await store.create_engine(engine)
    stored = await store.get_engine(ENGINE)
    assert stored == engine
    assert stored is not None
    assert isinstance(stored.settings, MappingProxyType)
    assert isinstance(stored.roles, MappingProxyType)
    assert isinstance(stored.roles["rw"].options, MappingProxyType)
    assert await store.get_engine("unknown") is None


async def test_engine_settings_read_back_as_after_a_json_round_trip(store: Store) -> None:
    engine = replace(make_engine(), settings={"databases": ("app", "audit"), "port": 5432})
    await store.create_engine(engine)
    stored = await store.get_engine(ENGINE)
    assert stored is not None
    assert dict(stored.settings) == {"databases": ["app", "audit"], "port": 5432}


async def test_taken_engine_name_is_engine_exists(store: Store) -> None:
    await store.create_engine(make_engine())
    with pytest.raises(EngineExists, match=ENGINE):
        await store.create_engine(make_engine(host="elsewhere"))
    assert await store.get_engine(ENGINE) == make_engine()


async def test_engines_are_listed_by_name(store: Store) -> None:
    for name in ("pg-b", "pg-c", "pg-a"):
        await store.create_engine(make_engine(name))
    assert [e.name for e in await store.list_engines()] == ["pg-a", "pg-b", "pg-c"]


async def test_update_engine_is_compare_and_set_on_version(store: Store) -> None:
    await store.create_engine(make_engine())
    moved = make_engine(version=2, host="db2.internal")
    await store.update_engine(moved, expected_version=1)
    assert await store.get_engine(ENGINE) == moved
    with pytest.raises(VersionConflict, match="version 1"):
        await store.update_engine(make_engine(version=2, host="db3"), expected_version=1)
    assert await store.get_engine(ENGINE) == moved
    with pytest.raises(EngineNotFound):
        await store.update_engine(make_engine("unknown", version=2), expected_version=1)
    assert [e.name for e in await store.list_engines()] == [ENGINE]


async def test_engine_is_deleted_only_once_its_leases_have_ended(store: Store) -> None:
    await store.create_engine(make_engine())
    lease = active(1)
    await put(store, lease, revoked(active(2), now=at(1)), active(3, engine="other"))
    with pytest.raises(Conflict, match="live leases"):
        await store.delete_engine(ENGINE)
    assert await store.get_engine(ENGINE) == make_engine()
    await store.save_lease(revoked(lease, now=at(5)), expected_version=lease.version)
    await store.delete_engine(ENGINE)
    assert await store.get_engine(ENGINE) is None
    with pytest.raises(EngineNotFound):
        await store.delete_engine(ENGINE)
