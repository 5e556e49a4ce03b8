"""The SQL guard's analysis: what a PostgreSQL text would do, read as PostgreSQL reads it,
and every statement outside the allow-list refused with a stable reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.sqlguard import accesses, reason, refused
from tether.enforcement.sdk.sqlguard import (
    DEFAULT_RULES,
    Access,
    Rules,
    Statement,
    analyse,
)
from tether.errors import StatementDenied

# -- what is allowed, and what it touches -------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "kind", "expected"),
    [
        ("select * from orders", "select", {("select", "public.orders")}),
        ("SELECT id FROM shop.orders WHERE id = $1", "select", {("select", "shop.orders")}),
        ("select 1 union select id from orders", "select", {("select", "public.orders")}),
        ("values (1), (2)", "select", set()),
        ("insert into orders (id) values ($1)", "insert", {("insert", "public.orders")}),
        ("update orders set total = 0 where id = 1", "update", {("update", "public.orders")}),
        ("delete from orders where id = 1", "delete", {("delete", "public.orders")}),
    ],
)
def test_allowed_statement_kinds_and_their_tables(
    sql: str, kind: str, expected: set[tuple[str, str]]
) -> None:
    (statement,) = analyse(sql)
    assert statement.kind == kind
    assert {(a.action, a.table) for a in statement.accesses} == expected


def test_statement_without_a_table_touches_none() -> None:
    (statement,) = analyse("select now(), 1 + 1")
    assert statement == Statement(kind="select", sql="select now(), 1 + 1", accesses=())
    assert statement.tables == ()


def test_single_statement_keeps_its_own_text() -> None:
    (statement,) = analyse("  select id from orders -- the latest\n")
    assert statement.sql == "select id from orders -- the latest"


def test_tables_in_joins_subqueries_and_cte_bodies_are_read() -> None:
    sql = """
        with recent as (select * from orders where created > now() - interval '1 day')
        select r.id, (select max(total) from archive.orders)
        from recent r join customers c on c.id = r.customer_id
        where exists (select 1 from blocked b where b.customer_id = c.id)
    """
    assert accesses(sql) == {
        ("select", "public.orders"),
        ("select", "archive.orders"),
        ("select", "public.customers"),
        ("select", "public.blocked"),
    }


def test_insert_select_writes_the_target_and_reads_the_sources() -> None:
    assert accesses("insert into orders select * from cart join items using (id)") == {
        ("insert", "public.orders"),
        ("select", "public.cart"),
        ("select", "public.items"),
    }


def test_update_from_and_delete_using_read_their_other_tables() -> None:
    assert accesses("update orders o set total = p.total from prices p where o.id = p.id") == {
        ("update", "public.orders"),
        ("select", "public.prices"),
    }
    assert accesses("delete from orders using blocked b where orders.customer = b.id") == {
        ("delete", "public.orders"),
        ("select", "public.blocked"),
    }


def test_returning_reads_the_target() -> None:
    assert accesses("delete from payroll returning *") == {
        ("delete", "public.payroll"),
        ("select", "public.payroll"),
    }


def test_insert_on_conflict_do_update_also_updates() -> None:
    assert accesses("insert into t (a) values (1) on conflict (a) do update set a = 2") == {
        ("insert", "public.t"),
        ("update", "public.t"),
    }
    assert accesses("insert into t (a) values (1) on conflict do nothing") == {
        ("insert", "public.t")
    }


def test_merge_takes_the_actions_of_its_when_clauses() -> None:
    sql = """merge into orders o using incoming i on o.id = i.id
             when matched and i.gone then delete
             when matched then update set total = i.total
             when not matched then insert (id, total) values (i.id, i.total)"""
    (statement,) = analyse(sql)
    assert statement.kind == "merge"
    assert {(a.action, a.table) for a in statement.accesses} == {
        ("delete", "public.orders"),
        ("update", "public.orders"),
        ("insert", "public.orders"),
        ("select", "public.incoming"),
    }


def test_data_modifying_cte_is_seen_as_a_delete() -> None:
    sql = "with gone as (delete from payroll returning *) select * from gone"
    assert ("delete", "public.payroll") in accesses(sql)


def test_select_for_update_also_updates_its_tables() -> None:
    assert accesses("select * from orders o where id = 1 for update of o") == {
        ("select", "public.orders"),
        ("update", "public.orders"),
    }


def test_table_syntax_reads_the_table() -> None:
    assert accesses("TABLE payroll") == {("select", "public.payroll")}


def test_values_with_a_subquery_reads_its_table() -> None:
    assert accesses("values ((select salary from payroll limit 1))") == {
        ("select", "public.payroll")
    }


def test_accesses_are_sorted_and_unique() -> None:
    (statement,) = analyse("select * from b, a, b as again")
    assert statement.accesses == (
        Access(action="select", table="public.a"),
        Access(action="select", table="public.b"),
    )


# -- names, as PostgreSQL resolves them -----------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "table"),
    [
        ("select * from payroll", "public.payroll"),
        ("select * from PayRoll", "public.payroll"),
        ('select * from "payroll"', "public.payroll"),
        ('select * from "PaYroll"', 'public."PaYroll"'),
        ('select * from Public."Pay Roll"', 'public."Pay Roll"'),
        ('select * from "a.b".c', '"a.b".c'),
        ('select * from a."b.c"', 'a."b.c"'),
        ('select * from "pay""roll"', 'public."pay""roll"'),
        ("select * from HR.Payroll", "hr.payroll"),
    ],
)
def test_identifiers_fold_like_postgres(sql: str, table: str) -> None:
    assert accesses(sql) == {("select", table)}


def test_a_dot_inside_a_quoted_name_cannot_pose_as_a_schema() -> None:
    assert accesses('select * from "public.payroll"') == {("select", 'public."public.payroll"')}


def test_default_schema_is_configurable() -> None:
    assert accesses("select * from orders", Rules(default_schema="shop")) == {
        ("select", "shop.orders")
    }


def test_unqualified_catalog_name_is_checked_in_pg_catalog_too() -> None:
    assert accesses("select * from pg_authid") == {
        ("select", "pg_catalog.pg_authid"),
        ("select", "public.pg_authid"),
    }


@pytest.mark.parametrize(
    ("sql", "table"),
    [
        ("select * from pg_catalog.pg_authid", "pg_catalog.pg_authid"),
        ("select * from information_schema.tables", "information_schema.tables"),
    ],
)
def test_catalog_reads_are_tables_the_policy_decides_on(sql: str, table: str) -> None:
    assert accesses(sql) == {("select", table)}


def test_database_qualified_names_are_refused() -> None:
    assert reason("select * from otherdb.public.payroll") == "catalog_qualified"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # the CTE shadows the table in its own query only
        ("with payroll as (select 1) select * from payroll", set()),
        (
            "select * from (with payroll as (select 1) select * from payroll) a, payroll",
            {("select", "public.payroll")},
        ),
        # a CTE cannot see a later one (not recursive): that name is the table
        (
            "with a as (select * from b), b as (select 1) select * from a",
            {("select", "public.b")},
        ),
        ("with a as (select 1), b as (select * from a) select * from b", set()),
        # a CTE sees itself only under WITH RECURSIVE
        ("with recursive r(n) as (select 1 union all select n + 1 from r) select * from r", set()),
        ("with r as (select * from r) select * from r", {("select", "public.r")}),
        # a qualified name is never a CTE
        ("with payroll as (select 1) select * from public.payroll", {("select", "public.payroll")}),
        # CTE names fold like any identifier
        ('with "Pay" as (select 1) select * from pay', {("select", "public.pay")}),
        ("with Pay as (select 1) select * from PAY", set()),
    ],
)
def test_cte_names_are_scoped_like_postgres(sql: str, expected: set[tuple[str, str]]) -> None:
    assert accesses(sql) == expected


def test_functions_in_from_are_not_tables() -> None:
    assert accesses("select * from generate_series(1, 3) as g(n)") == set()
    assert accesses("select * from orders, lateral unnest(orders.tags) t") == {
        ("select", "public.orders")
    }
    assert accesses("select * from rows from (generate_series(1, 2))") == set()


# -- stacked statements, comments and quoting ------------------------------------------------------


def test_stacked_statements_are_each_analysed() -> None:
    first, second = analyse("select * from orders; delete from orders where id = 1")
    assert (first.kind, second.kind) == ("select", "delete")
    assert (first.sql, second.sql) == ("select * from orders", "delete from orders where id = 1")


@pytest.mark.parametrize(
    "sql",
    [
        "select 1; drop table orders",
        "select 1;drop table orders;",
        "select 1 -- comment\n; drop table orders",
        "select 1 /* comment */; drop table orders",
        "select $$;$$; drop table orders",
    ],
)
def test_a_stacked_refused_statement_refuses_the_whole_text(sql: str) -> None:
    denied = refused(sql)
    assert denied.details == {"reason": "not_allowed", "statement": "drop"}


@pytest.mark.parametrize(
    "sql",
    [
        "select 1 /* ; drop table orders */",
        "select 1 -- ; drop table orders",
        "select '; drop table orders'",
        "select $$; drop table orders$$",
        "select $x$ $$; drop table orders $x$",
        "select 1 /* nested /* ; drop */ table orders; */",
    ],
)
def test_keywords_in_comments_and_strings_are_inert(sql: str) -> None:
    (statement,) = analyse(sql)
    assert statement.accesses == ()


@pytest.mark.parametrize(
    "sql",
    [
        # standard_conforming_strings: a backslash does not escape the quote
        r"select '\', (select salary from payroll) --'",
        # in an escape string it does
        r"select E'\'', (select salary from payroll) --'",
        "select $$x$$, (select salary from payroll)",
        "select 1 /* /* */ */, (select salary from payroll)",
        "select 1 --\r\n, (select salary from payroll)",
        r"select U&'\0027', (select salary from payroll) --'",
    ],
)
def test_a_table_after_a_tricky_literal_is_still_seen(sql: str) -> None:
    assert accesses(sql) == {("select", "public.payroll")}


def test_unicode_escaped_identifiers_are_refused_not_guessed() -> None:
    assert reason(r'select * from U&"p\0061yroll"') == "parse_error"


@pytest.mark.parametrize("sql", ["0?", "select 1 ?"])
def test_sql_the_parser_itself_fails_on_is_refused_as_a_parse_error(sql: str) -> None:
    # Found by the fuzz test below: sqlglot's compiled parser raises TypeError on "0?".
    assert reason(sql) == "parse_error"


# -- placeholders ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "select * from orders where id = $1",
        "select * from orders where id = %s",
        "select * from orders where id = %(id)s",
    ],
)
def test_placeholders_parse(sql: str) -> None:
    assert accesses(sql) == {("select", "public.orders")}


REASONS = {"empty", "parse_error", "opaque_command", "not_allowed", "select_into",
           "forbidden_function", "catalog_qualified", "copy_program"}  # fmt: skip


@given(st.text(max_size=200))
def test_analysis_never_fails_other_than_by_a_denial(sql: str) -> None:
    denial: StatementDenied | None = None
    try:
        statements = analyse(sql)
    except StatementDenied as denied:
        denial = denied
        statements = ()
    assert denial is None or denial.details["reason"] in REASONS
    assert all(s.kind in DEFAULT_RULES.kinds for s in statements)
