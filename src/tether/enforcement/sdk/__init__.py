"""The Python SDK: an agent's client of Tether (:class:`Client`, :class:`AsyncClient`), the
``@guard`` decorator for tool functions, and the SQL guard (:mod:`tether.sql`). It needs only
the base install (httpx, cryptography, joserfc), not the server extras; the SQL guard needs
the ``sql`` extra (psycopg, sqlglot)."""

from tether.enforcement.sdk._flows import Decision, Lease
from tether.enforcement.sdk.aio import AsyncClient, current_async_client
from tether.enforcement.sdk.client import Client, current_client
from tether.enforcement.sdk.guard import guard

__all__ = [
    "AsyncClient",
    "Client",
    "Decision",
    "Lease",
    "current_async_client",
    "current_client",
    "guard",
]
