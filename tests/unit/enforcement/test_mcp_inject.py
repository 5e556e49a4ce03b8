"""What the gateway sends upstream for a lease: the secret itself, or — for a database login —
one connection URI that a driver parses back to exactly that role and password."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from tether.enforcement.mcp._inject import _sendable

LOGIN = {"username": "tether_lea_1", "host": "127.0.0.1", "port": 5432, "database": "shop"}


@given(password=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                        min_size=1, max_size=40))  # fmt: skip
def test_a_database_login_is_sent_as_one_uri_naming_exactly_that_role_and_password(
    password: str,
) -> None:
    uri = _sendable(password, LOGIN)
    assert uri is not None
    expected = {"user": "tether_lea_1", "password": password, "host": "127.0.0.1",
                "port": "5432", "dbname": "shop"}  # fmt: skip
    assert conninfo_to_dict(uri) == expected


def test_an_ipv6_database_host_is_bracketed() -> None:
    uri = _sendable("pw", LOGIN | {"host": "::1"})
    assert uri is not None
    assert conninfo_to_dict(uri)["host"] == "::1"


def test_a_token_or_vault_secret_is_sent_as_it_is() -> None:
    assert _sendable("eyJ.token", {"token_type": "Bearer", "audience": "urn:x"}) == "eyJ.token"
    assert _sendable(None, LOGIN) is None  # nothing handed out: nothing to send
