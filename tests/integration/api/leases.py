"""Shared by the lease tests: a managed PostgreSQL database, an engine on it, policies."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from psycopg import sql

from tests.conftest import PgCluster

POLICIES = """
@id("faq-bot-reads-the-faq-database")
permit (
  principal == Tether::Agent::"faq-bot",
  action == Tether::Action::"use_credential",
  resource == Tether::Database::"pg-main"
);
"""

_NUMBERS = itertools.count(1)


@dataclass(frozen=True)
class ManagedDb:
    """A database Tether manages roles in: one table (``faq``) and the group role that may
    read it."""

    cluster: PgCluster
    database: str
    group: str
    #: Roles are cluster-wide: each test's engine manages its own prefix.
    prefix: str

    def connect(self, user: str, password: str, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.cluster.host,
            port=self.cluster.port,
            user=user,
            password=password,
            dbname=self.database,
            connect_timeout=5,
            **kwargs,
        )

    def admin(self) -> psycopg.Connection[Any]:
        return self.connect(self.cluster.user, self.cluster.password, autocommit=True)

    def roles(self) -> set[str]:
        """The roles under this test's managed prefix."""
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (self.prefix,)
            ).fetchall()
        return {str(r[0]) for r in rows}

    def engine_body(self, **role: Any) -> dict[str, Any]:
        template = {"name": "readonly", "group": self.group, "default_ttl": 60, "max_ttl": 300}
        return {
            "kind": "postgres",
            "settings": {
                "host": self.cluster.host,
                "port": self.cluster.port,
                "database": self.database,
                "admin_user": self.cluster.user,
                "role_prefix": self.prefix,
            },
            "roles": [template | role],
            "secret": self.cluster.password,
        }


def managed_db(cluster: PgCluster) -> ManagedDb:
    database = cluster.create_database()
    number = next(_NUMBERS)
    group = f"faq_readers_{number}_{database}"
    with cluster.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
    db = ManagedDb(
        cluster=cluster, database=database, group=group, prefix=f"tt{number}_{database}_"
    )
    with db.admin() as conn:
        conn.execute("CREATE TABLE faq (q text, a text)")
        conn.execute("INSERT INTO faq VALUES ('What are your business hours?', '9 to 5')")
        grants = (
            "GRANT CONNECT ON DATABASE {db} TO {g}",
            "GRANT USAGE ON SCHEMA public TO {g}",
            "GRANT SELECT ON faq TO {g}",
        )
        for grant in grants:
            conn.execute(
                sql.SQL(grant).format(db=sql.Identifier(database), g=sql.Identifier(group))
            )
    return db


async def configure(client: httpx.AsyncClient, db: ManagedDb, **role: Any) -> None:
    answer = await client.put("/v1/engines/pg-main", json=db.engine_body(**role))
    assert answer.status_code == 200, answer.text
    applied = await client.post("/v1/policies", json={"text": POLICIES})
    assert applied.status_code == 201, applied.text


async def issue(client: httpx.AsyncClient, token: str, **body: Any) -> httpx.Response:
    return await client.post(
        "/v1/leases",
        json={"engine": "pg-main", "role": "readonly"} | body,
        headers={"Authorization": f"Bearer {token}"},
    )
