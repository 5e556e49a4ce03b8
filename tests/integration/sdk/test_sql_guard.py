"""The SQL guard end to end: a real ``tether serve``, a real PostgreSQL, an agent that takes a
lease and runs statements through :func:`tether.sql.connect`.

The policy lets ``shop-bot`` read and insert into ``orders``, read ``ledger`` (which its
database role may not), read any table of the database whose data class is ``public``, and
run table-less statements — never ``payroll``, which its role *may* read: so a refusal is
the guard's, not the database's. A sequence (``probe``) shows whether anything was sent:
``nextval`` is not undone by a rollback, so a statement that reached the server leaves it
advanced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import tether
import tether.sql
from tests.conftest import PgCluster
from tests.integration.live.conftest import ServerProcess
from tests.support.examples import load_example
from tests.support.records import decision_record
from tether.crypto.assertion import generate_agent_key
from tether.enforcement.sdk._flows import Lease
from tether.errors import CheckUnavailable, InvalidInput, StatementDenied

pytestmark = pytest.mark.postgres

POLICY = """
@id("shop-bot-leases-the-shop-database")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"use_credential",
        resource == Tether::Database::"shop-db");

@id("shop-bot-reads-and-adds-orders")
permit (principal == Tether::Agent::"shop-bot",
        action in [Tether::Action::"select", Tether::Action::"insert"],
        resource == Tether::Table::"shop-db/public.orders");

@id("shop-bot-reads-the-ledger")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"select",
        resource == Tether::Table::"shop-db/public.ledger");

@id("shop-bot-reads-public-tables")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"select",
        resource in Tether::Database::"shop-db")
when { resource has data_class && resource.data_class == "public" };

@id("shop-bot-tells-order-totals")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"shop/order_total");

@id("shop-bot-runs-table-less-selects")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"select",
        resource == Tether::Database::"shop-db");
"""


class PgAdmin:
    """The superuser, in one database of the cluster."""

    def __init__(self, cluster: PgCluster, database: str) -> None:
        self.cluster, self.database = cluster, database

    def connect(self) -> psycopg.Connection[Any]:
        c = self.cluster
        return psycopg.connect(host=c.host, port=c.port, user=c.user, password=c.password,
                               dbname=self.database, autocommit=True)  # fmt: skip


class Shop:
    def __init__(self, server: ServerProcess, cluster: PgCluster, database: str) -> None:
        self.server, self.cluster, self.database = server, cluster, database
        self.spiffe_id = ""
        self.pem = b""

    def client(self) -> tether.Client:
        return tether.Client(self.server.addr, agent=self.spiffe_id, key=self.pem)

    def admin(self) -> psycopg.Connection[Any]:
        return PgAdmin(self.cluster, self.database).connect()

    def probe(self) -> bool:
        """Has ``probe`` been advanced (has a statement calling ``nextval`` run)?"""
        with self.admin() as conn:
            row = conn.execute("SELECT is_called FROM probe").fetchone()
        assert row is not None
        return bool(row[0])

    def reset_probe(self) -> None:
        with self.admin() as conn:
            conn.execute("ALTER SEQUENCE probe RESTART")

    def record(self, decision_id: object) -> dict[str, Any]:
        with self.server.ops() as ops:
            return decision_record(ops, decision_id)


def _prepare_database(cluster: PgCluster) -> tuple[str, str]:
    database = cluster.create_database()
    group = f"shop_readers_{database}"
    with cluster.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
    statements = (
        "CREATE TABLE orders (id int primary key, total int)",
        "INSERT INTO orders VALUES (1, 100), (2, 250)",
        "CREATE TABLE payroll (name text, salary int)",
        "INSERT INTO payroll VALUES ('alice', 9000)",
        "CREATE TABLE ledger (entry text)",
        "CREATE TABLE products (name text)",
        "INSERT INTO products VALUES ('tea')",
        "CREATE SEQUENCE probe",
        "GRANT CONNECT ON DATABASE {db} TO {g}",
        "GRANT USAGE ON SCHEMA public TO {g}",
        "GRANT SELECT, INSERT ON orders, payroll TO {g}",
        "GRANT SELECT ON products TO {g}",
        "GRANT USAGE ON SEQUENCE probe TO {g}",
    )
    with PgAdmin(cluster, database).connect() as conn:
        for statement in statements:
            names = {"db": sql.Identifier(database), "g": sql.Identifier(group)}
            conn.execute(sql.SQL(statement).format(**names))
    return database, group


@pytest.fixture(scope="module")
def shop(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    database, group = _prepare_database(pg_cluster)
    tmp = tmp_path_factory.mktemp("sqlguard")
    server = ServerProcess(Path(tmp) / "data", log=Path(tmp) / "server.log")
    server.start()
    shop = Shop(server, pg_cluster, database)
    key = generate_agent_key()
    engine = {
        "kind": "postgres",
        "settings": {"host": pg_cluster.host, "port": pg_cluster.port, "database": database,
                     "admin_user": pg_cluster.user, "role_prefix": f"sg_{database}_"},
        "roles": [{"name": "reader", "group": group, "default_ttl": 60, "max_ttl": 300}],
        "secret": pg_cluster.password,
    }  # fmt: skip
    try:
        with server.ops() as ops:
            created = ops.post("/v1/agents", json={"name": "shop-bot", "owners": ["alice"]})
            assert created.status_code == 201, created.text
            added = ops.post("/v1/agents/shop-bot/keys", json={"jwk": key.public_jwk})
            assert added.status_code == 201, added.text
            assert ops.put("/v1/engines/shop-db", json=engine).status_code == 200
            applied = ops.post("/v1/policies", json={"text": POLICY})
            assert applied.status_code == 201, applied.text
        shop.spiffe_id, shop.pem = created.json()["spiffe_id"], key.private_pem
        yield shop
    finally:
        server.stop()


@pytest.fixture
def db(shop: Shop) -> Iterator[tether.sql.GuardedConnection[Any]]:
    shop.reset_probe()
    with shop.client() as client, client.lease("shop-db", "reader") as lease:
        classes = {"public.products": "public"}
        with tether.sql.connect(client, lease, data_classes=classes, autocommit=True) as conn:
            yield conn


def _denied(conn: tether.sql.GuardedConnection[Any], query: str) -> StatementDenied:
    with pytest.raises(StatementDenied) as caught:
        conn.execute(query)
    return caught.value


def test_a_permitted_select_runs_and_its_record_shows_the_statement(
    shop: Shop, db: tether.sql.GuardedConnection[Any]
) -> None:
    rows = db.execute("select id, total from orders where total > %s order by id", [150])
    assert rows.fetchall() == [(2, 250)]
    with shop.server.ops() as ops:
        found = ops.get("/v1/audit", params={"type_prefix": "decision", "limit": 1000})
    records = [r["details"] for r in found.json()["records"]]
    mine = [r for r in records if r["resource"] == 'Table::"shop-db/public.orders"']
    assert mine
    assert (mine[-1]["effect"], mine[-1]["action"]) == ("allow", "select")
    arguments = mine[-1]["request"]["context"]["arguments"]
    assert "where total > $1" in arguments  # the statement as sent, not the value
    assert "150" not in arguments


def test_a_select_on_payroll_is_denied_with_its_decision_and_never_sent(
    shop: Shop, db: tether.sql.GuardedConnection[Any]
) -> None:
    denied = _denied(db, "select nextval('probe'), name, salary from payroll")
    assert denied.details["reason"] == "checkpoint"
    assert denied.details["resource"] == "shop-db/public.payroll"
    record = shop.record(denied.details["decision_id"])
    assert record["effect"] == "deny"
    assert record["action"] == "select"
    assert not shop.probe()


def test_a_stacked_drop_refuses_the_whole_text(
    shop: Shop, db: tether.sql.GuardedConnection[Any]
) -> None:
    denied = _denied(db, "select nextval('probe'); drop table orders")
    assert denied.details["reason"] == "not_allowed"
    assert not shop.probe()
    assert db.execute("select count(*) from orders").fetchone() == (2,)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("COPY orders TO PROGRAM 'touch /tmp/owned'", "copy_program"),
        ("select pg_read_file('/etc/passwd')", "forbidden_function"),
        ("select nextval('probe') from ordrs wher id = 1", "parse_error"),
        ("select query_to_xml('select * from payroll', true, true, '')", "forbidden_function"),
        ("with x as (select nextval('probe')) select * into stolen from payroll", "select_into"),
    ],
)
def test_refused_statements_are_never_sent_and_their_refusal_is_recorded(
    shop: Shop, db: tether.sql.GuardedConnection[Any], query: str, reason: str
) -> None:
    denied = _denied(db, query)
    assert denied.details["reason"] == reason
    assert denied.details["audited"] is True
    record = shop.record(denied.details["decision_id"])
    assert record["effect"] == "deny"
    assert record["action"] == "query"
    assert record["resource"] == 'Database::"shop-db"'
    assert record["reasons"][0].startswith(f"sql guard: {reason}:")
    assert not shop.probe()


def test_the_role_privileges_stay_the_boundary(
    shop: Shop, db: tether.sql.GuardedConnection[Any]
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("select * from ledger")  # the policy allows it; the role may not


def test_table_parents_and_data_classes_reach_the_policy(
    db: tether.sql.GuardedConnection[Any],
) -> None:
    assert db.execute("select name from products").fetchall() == [("tea",)]
    assert db.execute("select 1 + 1").fetchone() == (2,)


def test_insert_with_executemany_is_checked_once_and_runs(
    shop: Shop, db: tether.sql.GuardedConnection[Any]
) -> None:
    with db.cursor() as cur:
        cur.executemany("insert into orders values (%s, %s)", [(10, 1), (11, 2)])
    assert db.execute("select count(*) from orders where id >= 10").fetchone() == (2,)
    denied = _denied(db, "delete from orders where id >= 10")
    assert denied.details["action"] == "delete"
    with shop.admin() as conn:
        conn.execute("DELETE FROM orders WHERE id >= 10")


def test_a_data_modifying_cte_is_decided_as_a_delete(db: tether.sql.GuardedConnection[Any]) -> None:
    denied = _denied(db, "with gone as (delete from orders returning *) select * from gone")
    assert denied.details["action"] == "delete"
    assert db.execute("select count(*) from orders").fetchone() == (2,)


def test_a_placeholder_that_would_become_a_dollar_quote_is_read_as_sent(
    db: tether.sql.GuardedConnection[Any],
) -> None:
    # psycopg turns %s into $1: "$a%s$" becomes the dollar-quote tag "$a$1$" on the server,
    # which hides the comment opener and shows the payroll read. The guard reads the converted
    # text (the raw one would not even tokenize), so it is payroll the checkpoint is asked.
    query = "select $a%s$, 'x' /* $a$, (select salary from payroll) -- */"
    with pytest.raises(StatementDenied) as caught:
        db.execute(query, ["x"])
    assert caught.value.details["reason"] == "checkpoint"
    assert caught.value.details["resource"] == "shop-db/public.payroll"


def test_a_refusal_through_authzen_is_a_recorded_deny_without_a_policy(shop: Shop) -> None:
    with shop.client() as client:
        decision = client.check("select", {"type": "Database", "id": "shop-db"},
                                context={"refusal": "sql guard: test"})  # fmt: skip
    assert not decision.allowed
    record = shop.record(decision.decision_id)
    assert record["reasons"] == ["sql guard: test"]
    assert record["policy_ids"] == []
    with shop.client() as client, pytest.raises(CheckUnavailable, match="400"):
        client.check("select", {"type": "Database", "id": "shop-db"},
                     context={"refusal": "x" * 501})  # fmt: skip


def test_a_lease_without_postgres_facts_cannot_connect(shop: Shop) -> None:
    lease = Lease(id="lea_x", engine="vault", role="r", expires_at=None, max_expires_at=None,
                  credential={"name": "n", "secret": "s"})  # fmt: skip
    with shop.client() as client, pytest.raises(InvalidInput, match="host"):
        tether.sql.connect(client, lease)


async def test_the_async_connection_is_guarded_the_same_way(shop: Shop) -> None:
    shop.reset_probe()
    client = tether.AsyncClient(shop.server.addr, agent=shop.spiffe_id, key=shop.pem)
    async with client, client.lease("shop-db", "reader") as lease:
        conn = await tether.sql.connect_async(client, lease, autocommit=True)
        async with conn:
            cursor = await conn.execute("select id from orders where id = %s", [1])
            assert await cursor.fetchall() == [(1,)]
            with pytest.raises(StatementDenied) as denied:
                await conn.execute("select nextval('probe'), salary from payroll")
            assert denied.value.details["reason"] == "checkpoint"
            with pytest.raises(StatementDenied) as refused:
                await conn.execute("select nextval('probe'); drop table orders")
            assert refused.value.details["audited"] is True
    assert not shop.probe()


def test_a_connection_that_reads_backslashes_as_escapes_is_refused(shop: Shop) -> None:
    # With standard_conforming_strings off, '\\' ... opens a string the parser reads as
    # closed: the guard refuses to read rather than misread.
    with shop.admin() as conn, shop.client() as client:
        conn.execute("SET standard_conforming_strings = off")
        guarded = tether.sql.guarded_connection(conn, client=client, database="shop-db")
        with pytest.raises(StatementDenied, match="standard_conforming_strings") as caught:
            guarded.execute("select 1")
    assert caught.value.details["audited"] is True


def test_a_malformed_placeholder_is_refused_and_recorded(
    shop: Shop, db: tether.sql.GuardedConnection[Any]
) -> None:
    with pytest.raises(StatementDenied) as caught:
        db.execute("select nextval('probe') % 3 where 1 = %s", [1])
    assert caught.value.details["reason"] == "parse_error"
    assert shop.record(caught.value.details["decision_id"])["effect"] == "deny"
    assert not shop.probe()


def test_the_plain_agent_example_answers_through_guard_lease_and_sql_guard(shop: Shop) -> None:
    """``examples/plain_agent/plain_agent.py`` as published: its guarded tool runs, reads the order
    through the SQL guard with a lease that ends with the task; the tool no policy permits
    is refused before its body takes a lease."""
    example = load_example("plain_agent/plain_agent.py")
    answered = example.answer(shop.server.addr, agent=shop.spiffe_id, key=shop.pem, order_id=2)
    assert answered == "order 2: 250"
    with shop.server.ops() as ops:
        leases = ops.get("/v1/leases", params={"agent": "shop-bot"}).json()["leases"]
    assert leases
    assert all(lease["state"] != "active" for lease in leases)  # none outlives its task
    with shop.client(), pytest.raises(tether.Denied) as refused:
        example.salaries()
    assert refused.value.code == "denied"
    with shop.server.ops() as ops:
        after = ops.get("/v1/leases", params={"agent": "shop-bot"}).json()["leases"]
    assert len(after) == len(leases)  # refused before the body: no lease taken
