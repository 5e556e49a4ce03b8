"""Sensitive values become their HMAC; everything else stays; the key is the deployment's."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from tether.audit.redact import Redactor
from tether.crypto.kek import KeyEncryptionKey

KEY = bytes(range(32))


@pytest.mark.parametrize(
    "key",
    [
        "password", "DB_PASSWORD", "pwd", "X-Api-Key", "apiKey", "client_secret",
        "Authorization", "id_token", "privateKey", "signingKey", "accessKey", "auth",
    ],
)  # fmt: skip
def test_a_value_under_a_sensitive_key_is_replaced_by_its_hmac(key: str) -> None:
    redacted = Redactor(KEY).redact({key: "hunter2", "query": "hours"})
    expected = hmac.new(KEY, b"hunter2", hashlib.sha256).hexdigest()
    assert redacted == {key: f"hmac-sha256:{expected}", "query": "hours"}


def test_nested_objects_and_lists_are_searched_and_non_text_values_hashed_as_json() -> None:
    redactor = Redactor(KEY)
    redacted = redactor.redact({"calls": [{"headers": {"cookie": {"a": 1}}}], "n": 3})
    assert redacted["calls"][0]["headers"]["cookie"] == redactor.hash('{"a":1}')
    assert redacted["n"] == 3


def test_the_hmac_depends_on_the_deployment_key() -> None:
    assert Redactor(KEY).hash("v") != Redactor(bytes(32)).hash("v")


def test_a_short_key_is_refused_and_the_key_never_shows() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Redactor(b"short")
    assert "0001" not in repr(Redactor(KEY))


def test_the_kek_derives_one_stable_key_per_purpose() -> None:
    kek = KeyEncryptionKey(KEY)
    assert kek.derive(b"a") == KeyEncryptionKey(KEY).derive(b"a")
    assert kek.derive(b"a") != kek.derive(b"b")
    assert KEY not in (kek.derive(b"a"), kek.derive(b"b"))


@pytest.mark.parametrize("key", ["author", "authorization_details", "session", "q", "tokens_left"])
def test_keys_that_only_look_alike_are_kept(key: str) -> None:
    redactor = Redactor(KEY)
    sensitive = key == "tokens_left"  # "token" is a part: a count of tokens is hashed, safely
    assert redactor.is_sensitive(key) is sensitive


def test_arguments_kept_as_json_text_are_redacted_inside_and_left_alone_otherwise() -> None:
    redactor = Redactor(KEY)
    plain = '{"q":"hours"}'
    assert redactor.redact_text(plain) is plain
    hidden = redactor.redact_text('{"db":{"Password":"x"},"q":"hours"}')
    assert hidden == '{{"db":{{"Password":"{}"}},"q":"hours"}}'.format(redactor.hash("x"))
