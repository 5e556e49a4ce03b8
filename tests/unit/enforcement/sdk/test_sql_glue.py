"""The SQL guard's glue, without a database: the text the server will read, and the
decisions asked for each statement."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg._queries import PostgresQuery
from psycopg.adapt import Transformer

from tether.enforcement.sdk._flows import Lease
from tether.enforcement.sdk._sqlplan import Guard, converted
from tether.enforcement.sdk.sql import connection_kwargs
from tether.enforcement.sdk.sqlguard import Rules, analyse
from tether.errors import InvalidInput, StatementDenied


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("select * from orders where id = %s", [1]),
        ("select %s, %b, %t", [1, 2, 3]),
        ("select %(a)s, %(b)s, %(a)s", {"a": 1, "b": 2}),
        ("select 5 %% 3, %s", [1]),
        ("select '%%s', %s", [1]),
        ("select $a%s$, 'x' /* $a$, (select 1) -- */", ["x"]),
        ("select '100%%' -- %s\n, %s", [1, 2]),
        ("select %s\n%%\n", [1]),
    ],
)
def test_placeholders_convert_exactly_as_psycopg_sends_them(query: str, params: Any) -> None:
    sent = PostgresQuery(Transformer())
    sent.convert(query, params)
    assert converted(query) == sent.query.decode()


@pytest.mark.parametrize("query", ["select 5 % 3 where a = %s", "select %(a", "select %x"])
def test_a_malformed_placeholder_is_refused(query: str) -> None:
    with pytest.raises(StatementDenied) as caught:
        converted(query)
    assert caught.value.details["reason"] == "parse_error"


GUARD = Guard(database="shop-db", data_classes={"public.payroll": "restricted"})


def test_each_table_of_each_statement_is_one_check_with_its_database_parent() -> None:
    checks = list(GUARD.checks(analyse("insert into orders select * from payroll")))
    assert [(c.action, c.resource["id"]) for c in checks] == [
        ("insert", "shop-db/public.orders"),
        ("select", "shop-db/public.payroll"),
    ]
    payroll = checks[1]
    assert payroll.resource["properties"] == {
        "name": "public.payroll",
        "data_class": "restricted",
        "parents": [{"type": "Database", "id": "shop-db"}],
    }
    assert payroll.entities == (
        {"type": "Database", "id": "shop-db",
         "properties": {"name": "shop-db", "data_class": "internal"}},
    )  # fmt: skip
    assert payroll.arguments == {"sql": "insert into orders select * from payroll"}


def test_a_statement_without_a_table_is_decided_on_the_database() -> None:
    (check,) = GUARD.checks(analyse("select now()"))
    assert (check.action, check.resource["type"], check.resource["id"]) == (
        "select",
        "Database",
        "shop-db",
    )


def test_a_refusal_is_a_query_on_the_database_with_the_reason_in_the_context() -> None:
    check = GUARD.refusal("select pg_read_file('x')")
    assert (check.action, check.resource["id"]) == ("query", "shop-db")
    assert GUARD.send_context("sql guard: x") == {"refusal": "sql guard: x"}
    too_long = Guard(database="d", rules=Rules(max_chars=4)).refusal("select 1")
    assert too_long.arguments == {"sql_chars": 8}


def _lease(**credential: Any) -> Lease:
    return Lease(id="lea_1", engine="shop-db", role="reader", expires_at=None,
                 max_expires_at=None, credential=credential)  # fmt: skip


def test_a_lease_gives_the_connection_and_pins_the_search_path() -> None:
    lease = _lease(name="tether_ab", secret="pw", host="127.0.0.1", port=5432,
                   database="shop", username="tether_ab")  # fmt: skip
    assert connection_kwargs(lease) == {
        "host": "127.0.0.1", "port": 5432, "dbname": "shop", "user": "tether_ab",
        "password": "pw",
        "options": "-c search_path=public -c standard_conforming_strings=on",
    }  # fmt: skip


def test_a_lease_of_another_engine_is_refused() -> None:
    with pytest.raises(InvalidInput, match="host, port, database"):
        connection_kwargs(_lease(name="n", secret="s"))
    lease = _lease(name="n", secret="s", host="h", port=1, database="d")
    with pytest.raises(InvalidInput, match="schema"):
        connection_kwargs(lease, rules=Rules(default_schema="Odd Schema"))
