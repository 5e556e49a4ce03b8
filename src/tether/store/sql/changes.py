"""Change notes between replicas: PostgreSQL ``LISTEN``/``NOTIFY``.

Every replica keeps hot-path state in memory (revoked agent tokens, the compiled policy set,
agents), so a change made on one replica must reach the others. A write that changes such
state also runs ``pg_notify('tether_changes', topic)`` in its own transaction — PostgreSQL
delivers the note on commit and only then, so a replica that hears it reads the committed
change. Each replica listens on a connection of its own (:class:`ChangeListener`) and refreshes
what the note names at once.

Notes are a fast path, not the only one: a note sent while a listener is reconnecting is lost,
and SQLite has no notifications. The periodic refresh (``hot_state_refresh_seconds``) stays the
safety net, and a listener that (re)connects asks for a full refresh (topic :data:`ALL`).

Topics (the payload, space-separated when one write changes several): ``revocations``,
``policies``, ``agent:<name>``, ``user:<name>``, ``grant:<id>``, and ``grants`` for a bulk
revocation of more grants than one note names (any grant may have changed).

Example::

    listener = ChangeListener(store.url)
    await listener.run(on_change)        # until cancelled; on_change("policies"), …
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import psycopg
import sqlalchemy as sa
import structlog
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL, Connection

__all__ = [
    "ALL",
    "CHANNEL",
    "CONNECTION_OPTIONS",
    "GRANTS",
    "GRANT_PREFIX",
    "MAX_GRANT_TOPICS",
    "POLICIES",
    "REVOCATIONS",
    "USER_PREFIX",
    "ChangeListener",
    "agent_topic",
    "both",
    "grant_topic",
    "grant_topics",
    "notify",
    "notifying",
    "topics",
    "user_topic",
]

log = structlog.get_logger("tether.changes")

CHANNEL = "tether_changes"
REVOCATIONS = "revocations"
POLICIES = "policies"
#: Some grants changed, too many to name one by one.
GRANTS = "grants"
#: Not sent by writers: what a listener reports when it (re)connects, since notes sent while
#: it was away are lost.
ALL = "*"
_AGENT = "agent:"
USER_PREFIX = "user:"
GRANT_PREFIX = "grant:"
#: The most grants one note names; beyond, it says :data:`GRANTS`. PostgreSQL refuses a
#: payload of 8000 bytes or more, and 50 topics of 64-character ids stay well below.
MAX_GRANT_TOPICS = 50
#: Waits between reconnection attempts (seconds), growing to the last.
RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
#: The listening connection only ever waits, so TCP keepalives notice a peer that vanished (a
#: half-open connection) in about 25 s instead of never; a connection attempt gives up in 10 s.
CONNECTION_OPTIONS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "connect_timeout": 10,
}

_T = TypeVar("_T")


def agent_topic(name: str) -> str:
    return f"{_AGENT}{name}"


def user_topic(name: str) -> str:
    return f"{USER_PREFIX}{name}"


def grant_topic(grant_id: str) -> str:
    return f"{GRANT_PREFIX}{grant_id}"


def grant_topics(grant_ids: Sequence[str]) -> str:
    """The note for a write of these grants: each one's topic, or :data:`GRANTS` if there are
    more than :data:`MAX_GRANT_TOPICS`."""
    if len(grant_ids) > MAX_GRANT_TOPICS:
        return GRANTS
    return both(*(grant_topic(i) for i in grant_ids))


def both(*parts: str) -> str:
    """One payload for a write that changes several things."""
    return " ".join(parts)


def topics(payload: str) -> tuple[list[str], list[str]]:
    """The topics of a payload: (every other topic, agent names). Users' and grants'
    topics come back in the first list, whole (``user:<name>``, ``grant:<id>``, ``grants``)."""
    plain: list[str] = []
    agents: list[str] = []
    for topic in payload.split():
        if topic.startswith(_AGENT):
            agents.append(topic.removeprefix(_AGENT))
        else:
            plain.append(topic)
    return plain, agents


def notifying(unit: Callable[[Connection], _T], topic: str) -> Callable[[Connection], _T]:
    """``unit``, then the note ``topic`` in the same transaction."""

    def run(conn: Connection) -> _T:
        result = unit(conn)
        notify(conn, topic)
        return result

    return run


def notify(conn: Connection, topic: str) -> None:
    """Send the note ``topic`` in ``conn``'s transaction (PostgreSQL only), for a unit whose
    topic is known only once it has run (a bulk revocation names what it revoked)."""
    conn.execute(sa.select(sa.func.pg_notify(CHANNEL, topic)))


class ChangeListener:
    """Listens for change notes on a connection of its own, reconnecting when it drops."""

    def __init__(self, url: URL) -> None:
        # libpq takes the same URL without SQLAlchemy's driver suffix.
        self.conninfo = make_conninfo(
            url.set(drivername="postgresql").render_as_string(hide_password=False),
            **CONNECTION_OPTIONS,
        )

    async def run(self, on_change: Callable[[str], Awaitable[None]]) -> None:
        """Call ``on_change(payload)`` for every note until cancelled; ``on_change(ALL)`` on
        every (re)connection. A failing ``on_change`` is logged and the next note handled."""
        attempt = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    attempt = 0
                    await _handle(on_change, ALL)
                    async for note in conn.notifies():
                        await _handle(on_change, note.payload)
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.warning(
                    "change_listener_reconnecting",
                    error=type(exc).__name__,
                    detail=str(exc)[:200] if isinstance(exc, psycopg.Error) else None,
                    wait=delay,
                )
                await asyncio.sleep(delay)


async def _handle(on_change: Callable[[str], Awaitable[None]], payload: str) -> None:
    try:
        await on_change(payload)
    except Exception as exc:  # one failed refresh must not stop the listener
        log.warning(
            "change_refresh_failed", payload=payload, error=type(exc).__name__, exc_info=exc
        )
