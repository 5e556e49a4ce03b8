"""The SQL guard's refusals: every statement class outside the allow-list, and every function
that reaches outside the table model, refused with a stable reason."""

from __future__ import annotations

import pytest

from tests.support.sqlguard import accesses, reason, refused
from tether.enforcement.sdk.sqlguard import (
    DEFAULT_RULES,
    FORBIDDEN_FUNCTIONS,
    Rules,
    analyse,
)

# -- refused statements ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "statement"),
    [
        ("create table x (a int)", "create"),
        ("create temp table x (a int)", "create"),
        ("drop table orders", "drop"),
        ("alter table orders add column x int", "alter"),
        ("truncate orders", "truncatetable"),
        ("grant select on payroll to public", "grant"),
        ("set search_path = evil", "set"),
        ("copy orders to stdout", "copy"),
        ("copy orders from stdin", "copy"),
        ("copy (select * from payroll) to '/tmp/x'", "copy"),
        ("begin", "transaction"),
        ("commit", "commit"),
        ("rollback", "rollback"),
        ("comment on table orders is 'x'", "comment"),
        ("analyze orders", "analyze"),
        ("create function f() returns int as $$ select 1 $$ language sql", "create"),
    ],
)
def test_statements_outside_the_allow_list_are_refused(sql: str, statement: str) -> None:
    assert refused(sql).details == {"reason": "not_allowed", "statement": statement}


@pytest.mark.parametrize(
    ("sql", "statement"),
    [
        ("do $$ begin perform 1; end $$", "do"),
        ("call refresh_all()", "call"),
        ("explain analyze delete from orders", "explain"),
        ("explain select 1", "explain"),
        ("prepare p as delete from orders", "prepare"),
        ("execute p", "execute"),
        ("set role postgres", "set"),
        ("reset all", "reset"),
        ("lock table orders", "lock"),
        ("vacuum", "vacuum"),
        ("show all", "show"),
        ("declare c cursor for select * from payroll", "declare"),
        ("fetch all from c", "fetch"),
        ("refresh materialized view v", "refresh"),
        ("alter system set wal_level = minimal", "alter"),
        ("load 'plpgsql'", "load"),
    ],
)
def test_opaque_commands_are_refused(sql: str, statement: str) -> None:
    assert refused(sql).details == {"reason": "opaque_command", "statement": statement}


@pytest.mark.parametrize(
    "sql",
    ["listen jobs", "notify jobs", "savepoint a", "start transaction", "deallocate all",
     "discard all", "checkpoint", "unlisten jobs", "close c"],
)  # fmt: skip
def test_statements_sqlglot_reads_as_expressions_are_refused(sql: str) -> None:
    assert refused(sql).details == {"reason": "not_allowed", "statement": "unrecognised"}


def test_copy_program_is_refused_by_name() -> None:
    denied = refused("COPY orders TO PROGRAM 'curl -d @- http://127.0.0.1:9'")
    assert denied.details == {"reason": "copy_program", "statement": "copy"}
    assert reason("copy orders from program 'cat /etc/passwd'") == "copy_program"


@pytest.mark.parametrize(
    "sql",
    [
        "select * into backup from payroll",
        "select * into temp backup from payroll",
        "select * into unlogged table backup from orders",
    ],
)
def test_select_into_is_refused(sql: str) -> None:
    assert reason(sql) == "select_into"


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "   ",
        ";",
        ";;",
        "-- only a comment",
        "/* only a comment */",
    ],
)
def test_empty_input_is_refused(sql: str) -> None:
    assert reason(sql) == "empty"


@pytest.mark.parametrize(
    "sql",
    [
        "selec * from orders",
        "select * from",
        "select 'unterminated",
        "select 1 /* unterminated",
        "select * from orders where",
        "select (" * 2000,
        "\x00",
    ],
)
def test_unparseable_sql_is_refused(sql: str) -> None:
    denied = refused(sql)
    assert denied.details["reason"] == "parse_error"


@pytest.mark.parametrize(
    "sql",
    [
        "select 1\x00; drop table payroll",
        "select\xa0* from payroll",
        "select 1 --x\u2028, (select 1 from payroll)",
        "select 1\x0b, (select 1 from payroll)",
        "select 1 --x\x85; select * from payroll",
    ],
)
def test_characters_postgres_and_sqlglot_read_differently_are_refused(sql: str) -> None:
    assert reason(sql) == "parse_error"


def test_a_parse_error_does_not_repeat_the_sql() -> None:
    denied = refused("select * from orders where name = 'alice@example.org' and and")
    assert "alice" not in denied.message
    assert "alice" not in str(denied.details)


def test_too_long_sql_is_refused_before_parsing() -> None:
    sql = "select 1 " + " " * 100
    assert reason(sql, Rules(max_chars=50)) == "too_long"


def test_kinds_can_be_narrowed_to_read_only() -> None:
    read_only = Rules(kinds=frozenset({"select"}))
    assert accesses("select * from orders", read_only) == {("select", "public.orders")}
    assert refused("delete from orders", read_only).details == {
        "reason": "not_allowed",
        "statement": "delete",
    }
    # a delete hidden in a CTE is a delete all the same
    sql = "with d as (delete from orders returning *) select * from d"
    assert refused(sql, read_only).details["statement"] == "delete"


# -- forbidden functions -------------------------------------------------------------------------


def _example(pattern: str) -> str:
    return pattern.replace("*", "x")


@pytest.mark.parametrize("pattern", sorted(FORBIDDEN_FUNCTIONS))
@pytest.mark.parametrize(
    "template",
    [
        "select {f}('a')",
        "select pg_catalog.{f}('a')",
        "select {F}('a')",
        "select \"{f}\"('a')",
        "select * from {f}('a') as t(x text)",
        "select * from orders where id in (select {f}('a'))",
        "with c as (select {f}('a')) select * from c",
        "insert into log (v) select {f}('a')",
        "update orders set note = {f}('a')",
    ],
)
def test_forbidden_functions_are_refused_in_every_form(pattern: str, template: str) -> None:
    name = _example(pattern)
    denied = refused(template.format(f=name, F=name.upper()))
    assert denied.details == {"reason": "forbidden_function", "function": name}


@pytest.mark.parametrize(
    "sql",
    [
        "select query_to_xml('select * from payroll', true, true, '')",
        "select table_to_xml('payroll', true, true, '')",
        "select schema_to_xml('hr', true, true, '')",
        "select * from ts_stat('select vector from payroll')",
        "select * from dblink('dbname=other', 'select * from payroll') as t(a int)",
        "select dblink_exec('dbname=other', 'drop table payroll')",
        "select pg_read_file('/etc/passwd')",
        "select lo_import('/etc/passwd')",
        "select lo_get(1234)",
        "select pg_sleep(3600)",
        "select pg_sleep_for('1 hour')",
        "select set_config('search_path', 'evil', false)",
        "select pg_terminate_backend(pid) from pg_stat_activity",
        "select pg_ls_dir('.')",
        "select * from pg_logical_slot_get_changes('s', null, null)",
    ],
)
def test_functions_that_escape_the_table_model_are_refused(sql: str) -> None:
    assert reason(sql) == "forbidden_function"


@pytest.mark.parametrize(
    "function",
    ["lo_import", "lo_export", "lo_get", "lo_put", "lo_from_bytea", "lo_unlink", "loread",
     "dblink", "dblink_connect", "dblink_exec", "pg_ls_waldir", "pg_ls_logdir", "pg_stat_file",
     "pg_read_binary_file", "pg_backup_start", "pg_create_logical_replication_slot",
     "pg_create_physical_replication_slot", "pg_drop_replication_slot", "pg_promote",
     "pg_reload_conf", "pg_rotate_logfile", "pg_cancel_backend", "pg_notify",
     "query_to_xml_and_xmlschema", "table_to_xmlschema", "cursor_to_xml", "database_to_xml",
     "pg_sleep_until", "pg_file_write", "postgres_fdw_disconnect_all", "pg_stat_reset"],
)  # fmt: skip
def test_real_members_of_each_forbidden_family_are_refused(function: str) -> None:
    assert refused(f"select {function}('a')").details["function"] == function


@pytest.mark.parametrize(
    "sql",
    [
        "select exists(table payroll)",
        "select array(select salary from payroll)",
        "select * from orders where id = any(select id from payroll)",
        "select * from orders o join lateral (select * from payroll where id = o.id) x on true",
        "select * from orders natural join payroll",
        "select row_to_json(p) from only payroll p",
        "update orders set total = (select max(salary) from payroll)",
        "select * from orders union all select * from payroll",
    ],
)
def test_payroll_is_seen_wherever_it_hides(sql: str) -> None:
    assert ("select", "public.payroll") in accesses(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "select current_setting('search_path')",
        "select xpath('/a', '<a/>'::xml)",
        "select count(*), max(total), coalesce(note, '') from orders group by note",
        "select pg_size_pretty(pg_relation_size('orders'))",
    ],
)
def test_ordinary_functions_are_allowed(sql: str) -> None:
    assert analyse(sql)


def test_the_deny_list_can_be_extended_not_only_replaced() -> None:
    rules = DEFAULT_RULES.forbid("wipe_everything", "export_*")
    assert reason("select wipe_everything()", rules) == "forbidden_function"
    assert reason("select export_csv()", rules) == "forbidden_function"
    assert reason("select pg_read_file('x')", rules) == "forbidden_function"
    assert analyse("select wipe_everything()")  # the default rules are untouched


@pytest.mark.parametrize(
    ("pattern", "name", "forbidden"),
    [
        ("lo_*", "lo_import", True),
        ("lo_*", "lower", False),
        ("pg_create_*_replication_slot", "pg_create_logical_replication_slot", True),
        ("pg_create_*_replication_slot", "pg_create_restore_point", False),
        ("dblink*", "dblink", True),
    ],
)
def test_a_star_is_a_prefix_or_an_infix(pattern: str, name: str, forbidden: bool) -> None:
    assert Rules(forbidden_functions=frozenset({pattern})).forbids(name) is forbidden
