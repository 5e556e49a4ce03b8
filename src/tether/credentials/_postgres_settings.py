"""The PostgreSQL credential engine's settings: checked, normalised, frozen.

Pure (no driver import), so that the API can validate an engine's configuration before any
connection is made, and so that the rules are tested without a database. The engine itself
lives in :mod:`tether.credentials._postgres`.

Names are PostgreSQL identifiers: at most ``NAMEDATALEN - 1`` = 63 bytes (PostgreSQL
documentation, "Identifiers and Key Words", §4.1.1); the server truncates longer ones silently,
so they are refused here.

Example::

    >>> settings = parse_postgres_settings({"host": "db", "port": 5432, "database": "app",
    ...                                     "admin_user": "tether"})
    >>> settings.databases, settings.role_prefix
    (('app',), 'tether_')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from tether.errors import InvalidInput

__all__ = [
    "MAX_IDENTIFIER",
    "PostgresSettings",
    "parse_postgres_settings",
    "validate_postgres_settings",
]

#: PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
MAX_IDENTIFIER = 63
_PREFIX = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True, kw_only=True)
class PostgresSettings:
    host: str
    port: int
    database: str
    databases: tuple[str, ...]
    admin_user: str
    role_prefix: str = "tether_"
    connect_timeout: float = 5.0
    pool_size: int = 4
    known_logins: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        lists = {"databases": list(self.databases), "known_logins": list(self.known_logins)}
        return asdict(self) | lists


_SETTINGS = frozenset(f.name for f in fields(PostgresSettings))


def _invalid(key: str, rule: str) -> InvalidInput:
    return InvalidInput(f"postgres setting {key!r}: {rule}", details={"setting": key, "rule": rule})


def _name(value: object, key: str) -> str:
    """A PostgreSQL object name: 1 to 63 bytes, no NUL."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _invalid(key, "a non-empty name")
    if len(value.encode("utf-8")) > MAX_IDENTIFIER:
        raise _invalid(key, f"at most {MAX_IDENTIFIER} bytes")
    return value


def _names(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > 100:
        raise _invalid(key, "a list of at most 100 names")
    names = tuple(_name(v, key) for v in value)
    if len(set(names)) != len(names):
        raise _invalid(key, "names appear once")
    return names


def _number(settings: Mapping[str, object], key: str, default: float | None, high: int) -> float:
    """A positive number up to ``high`` (a whole one where ``default`` is whole)."""
    value = settings.get(key, default)
    kinds = (int,) if isinstance(default, int | None) else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not 0 < value <= high:
        raise _invalid(key, f"a {'whole ' if kinds == (int,) else ''}number in (0, {high}]")
    return value


def _prefix(value: object) -> str:
    if not isinstance(value, str) or not _PREFIX.fullmatch(value) or len(value) > 32:
        raise _invalid("role_prefix", "1 to 32 of a-z, 0-9 and '_', not starting with a digit")
    if value.startswith("pg_"):
        raise _invalid("role_prefix", "'pg_' is reserved by PostgreSQL")
    return value


def parse_postgres_settings(settings: Mapping[str, object]) -> PostgresSettings:
    """``settings`` as a frozen value, or ``InvalidInput`` naming the setting and its rule."""
    if unknown := sorted(set(settings) - _SETTINGS):
        raise InvalidInput(
            f"unknown postgres settings: {', '.join(unknown)}", details={"unknown": unknown}
        )
    host = settings.get("host")
    if not isinstance(host, str) or not host or len(host) > 255 or "\x00" in host:
        raise _invalid("host", "a host name, address or socket directory")
    database = _name(settings.get("database"), "database")
    databases = _names(settings.get("databases", [database]), "databases")
    if not databases:
        raise _invalid("databases", "at least one database")
    prefix = _prefix(settings.get("role_prefix", "tether_"))
    admin = _name(settings.get("admin_user"), "admin_user")
    known = tuple(sorted(_names(settings.get("known_logins", []), "known_logins")))
    if any(name.startswith(prefix) for name in (admin, *known)):
        raise _invalid("role_prefix", "a prefix no admin or known login starts with")
    return PostgresSettings(
        host=host,
        port=int(_number(settings, "port", None, 65535)),
        database=database,
        databases=databases,
        admin_user=admin,
        role_prefix=prefix,
        connect_timeout=float(_number(settings, "connect_timeout", 5.0, 60)),
        pool_size=int(_number(settings, "pool_size", 4, 64)),
        known_logins=known,
    )


def validate_postgres_settings(settings: Mapping[str, object]) -> dict[str, object]:
    """``settings`` checked and normalised (defaults filled in), or ``InvalidInput``."""
    return parse_postgres_settings(settings).to_dict()
