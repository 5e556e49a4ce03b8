"""Fuzzing the token endpoint's form: ``parse_exchange_request`` (RFC 8693 §2.1) on any
parameters, and ``POST /oauth2/token`` of a running server on any body.

The rule: the parser returns a request or refuses with an ``OAuthError`` (``invalid_request``,
``invalid_scope``); the endpoint answers every body with a 4xx OAuth error (or a token, for a
valid request) — never a server error, and nothing escapes the app.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus, urlencode

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._profiles import FUZZ
from tests.fuzz._strategies import hostile_text, mutated_bytes
from tests.fuzz._world import World
from tether.delegation.token_exchange import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    JWT_TOKEN_TYPE,
    parse_exchange_request,
)
from tether.errors import OAuthError
from tether.identity.client_auth import ASSERTION_TYPE

_NAMES = ["grant_type", "subject_token", "subject_token_type", "actor_token", "actor_token_type",
          "requested_token_type", "scope", "audience", "resource", "grant_id", "purpose",
          "client_id", "client_assertion", "client_assertion_type", "instance_id"]  # fmt: skip
_VALUES = [GRANT_TYPE, ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, ASSERTION_TYPE, "", "a b", "x" * 9000]
_VALID = {"grant_type": GRANT_TYPE, "subject_token": "eyJ.eyJ.sig",
          "subject_token_type": ACCESS_TOKEN_TYPE, "actor_token": "eyJ.eyJ.sig",
          "actor_token_type": JWT_TOKEN_TYPE, "scope": "orders:read orders:write"}  # fmt: skip
_value = st.one_of(st.sampled_from(_VALUES), hostile_text.filter(lambda t: "\x00" not in t))


@st.composite
def _form(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, list[str]]]:
    """A valid exchange form with members changed, dropped or added, as the route splits it."""
    single = dict(_VALID)
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(_NAMES), hostile_text))
        if draw(st.booleans()):
            single.pop(name, None)
        else:
            single[name] = draw(_value)
    multi = {"audience": draw(st.lists(_value, max_size=3)),
             "resource": draw(st.lists(_value, max_size=3))}  # fmt: skip
    return single, multi


@FUZZ
@given(form=_form())
def test_exchange_form_parser_refuses_any_form_with_an_oauth_error_only(
    form: tuple[dict[str, str], dict[str, list[str]]],
) -> None:
    single, multi = form
    try:
        parsed = parse_exchange_request(single, multi)
    except OAuthError:
        return
    assert parsed.subject_token == single["subject_token"]
    assert len(parsed.subject_token) <= 8192


def _encoded(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs, quote_via=quote_plus, encoding="utf-8", errors="surrogatepass").encode()


@st.composite
def _body(draw: st.DrawFn) -> bytes:
    """A urlencoded body: the valid form changed, its bytes mutated, or any bytes at all."""
    choice = draw(st.integers(0, 2))
    pairs: list[tuple[str, str]] = list(_VALID.items())
    if choice == 0:
        extra = st.tuples(st.sampled_from(_NAMES), _value)
        return _encoded(pairs + draw(st.lists(extra, max_size=4)))
    if choice == 1:
        return draw(mutated_bytes(_encoded(pairs)))
    return draw(st.binary(max_size=512))


_CTYPES = ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
           "multipart/form-data; boundary=x", "application/json", "text/plain"]  # fmt: skip


@FUZZ
@given(body=_body(), ctype=st.sampled_from(_CTYPES))
def test_token_endpoint_answers_any_body_with_an_oauth_error_never_a_server_error(
    world: World, body: bytes, ctype: str
) -> None:
    answer = world.http.post("/oauth2/token", content=body,
                             headers={"Content-Type": ctype, "Authorization": ""})  # fmt: skip
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        error: Any = answer.json().get("error")
        assert isinstance(error, str)
        assert error
    assert world.errors == []
