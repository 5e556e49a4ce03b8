"""The PostgreSQL engine's settings rules: pure, table-driven, no database needed."""

from __future__ import annotations

import pytest

from tether.credentials._postgres_settings import (
    parse_postgres_settings,
    validate_postgres_settings,
)
from tether.errors import InvalidInput

_GOOD = {"host": "db.internal", "port": 5432, "database": "app", "admin_user": "tether"}


def test_settings_get_their_defaults() -> None:
    assert validate_postgres_settings(_GOOD) == _GOOD | {
        "databases": ["app"],
        "role_prefix": "tether_",
        "connect_timeout": 5.0,
        "pool_size": 4,
        "known_logins": [],
    }


def test_settings_normalise_to_a_frozen_value_with_known_logins_sorted() -> None:
    settings = parse_postgres_settings(_GOOD | {"known_logins": ["zed", "amy"]})
    assert settings.known_logins == ("amy", "zed")
    assert settings.databases == ("app",)
    with pytest.raises(AttributeError):
        settings.host = "elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"password": "x"}, "unknown postgres settings: password"),
        ({"host": ""}, "'host'"),
        ({"host": "db\x00"}, "'host'"),
        ({"port": True}, "'port'"),
        ({"port": 0}, "'port'"),
        ({"port": "5432"}, "'port'"),
        ({"database": "x" * 64}, "at most 63 bytes"),
        ({"database": "é" * 32}, "at most 63 bytes"),  # 64 bytes in UTF-8
        ({"databases": []}, "at least one database"),
        ({"databases": ["a", "a"]}, "names appear once"),
        ({"admin_user": None}, "'admin_user'"),
        ({"role_prefix": "pg_"}, "reserved"),
        ({"role_prefix": "Tether-"}, "'role_prefix'"),
        ({"role_prefix": "t" * 33}, "'role_prefix'"),
        ({"connect_timeout": 0}, "'connect_timeout'"),
        ({"connect_timeout": 61}, "'connect_timeout'"),
        ({"pool_size": 1.5}, "'pool_size'"),
        ({"known_logins": "root"}, "'known_logins'"),
    ],
)
def test_settings_that_break_a_rule_are_invalid_input(
    change: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        validate_postgres_settings(_GOOD | change)


@pytest.mark.parametrize(
    "change",
    [
        {"admin_user": "tether_admin"},
        {"known_logins": ["app", "tether_monitor"]},
        {"role_prefix": "app_", "admin_user": "app_owner"},
    ],
)
def test_a_role_the_engine_would_sweep_cannot_be_its_admin_or_a_known_login(
    change: dict[str, object],
) -> None:
    """A name under the managed prefix is one the engine may drop: never the admin's."""
    with pytest.raises(InvalidInput, match="role_prefix"):
        validate_postgres_settings(_GOOD | change)
