"""Settings: built once from the environment, validated, with safe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.config import ClientSettings, Settings
from tether.errors import ConfigError


def test_defaults_are_bounded_and_safe(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.jwt_svid_ttl_seconds == 300
    assert s.x509_svid_ttl_seconds == 3600
    assert s.database_url == f"sqlite:///{tmp_path / 'tether.db'}"
    assert s.audiences == frozenset({"http://127.0.0.1:8200"})
    assert s.forwarded_client_cert_header is None
    assert not s.is_trusted_proxy("127.0.0.1"), "no proxy is trusted unless configured"
    assert s.max_delegation_depth == 4, "a delegation chain is at most four actors deep"
    assert s.delegated_token_max_ttl_seconds == 600, "a delegated token lives ten minutes at most"


def test_forwarded_certificates_are_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    s = Settings.from_environ(
        {"TETHER_DATA_DIR": str(tmp_path), "TETHER_TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8"}
    )
    assert s.is_trusted_proxy("10.1.2.3")
    assert s.is_trusted_proxy("fd00::1")
    assert not s.is_trusted_proxy("127.0.0.1")
    assert not s.is_trusted_proxy("not-an-address")
    assert not s.is_trusted_proxy(None)


def test_forwarded_certificate_header_without_trusted_proxies_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(data_dir=tmp_path, forwarded_client_cert_header="x-ssl-client-cert")
    assert caught.value.details["setting"] == "trusted_proxies"


def test_bad_trusted_proxy_list_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(data_dir=tmp_path, trusted_proxies=("10.0.0.0/33",))
    assert caught.value.details["setting"] == "trusted_proxies"


def test_environment_is_read_once_and_overrides_win(tmp_path: Path) -> None:
    env = {
        "TETHER_DATA_DIR": str(tmp_path),
        "TETHER_TRUST_DOMAIN": "acme.org",
        "TETHER_ALLOWED_AUDIENCES": "https://a.example, https://b.example",
        "TETHER_JWT_SVID_TTL": "120",
        "TETHER_DATABASE_URL": "postgresql+psycopg://u@h/db",
    }
    s = Settings.from_environ(env, trust_domain="override.org")
    assert s.trust_domain == "override.org"
    assert s.jwt_svid_ttl_seconds == 120
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.audiences == {"http://127.0.0.1:8200", "https://a.example", "https://b.example"}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"trust_domain": "ACME.org"}, "trust domain"),
        ({"trust_domain": "acme.org\n"}, "trust domain"),
        ({"issuer": "ftp://x"}, "issuer"),
        ({"jwt_svid_ttl_seconds": 5}, "jwt_svid_ttl"),
        ({"jwt_svid_ttl_seconds": 10**6}, "jwt_svid_ttl"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
    ],
)
def test_invalid_settings_are_refused(
    tmp_path: Path, changes: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings(data_dir=tmp_path, **changes)  # type: ignore[arg-type]


def test_non_numeric_ttl_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="whole number"):
        Settings.from_environ({"TETHER_DATA_DIR": str(tmp_path), "TETHER_JWT_SVID_TTL": "5m"})


def test_client_settings_like_vault() -> None:
    c = ClientSettings.from_environ({"TETHER_ADDR": "https://t.example/", "TETHER_TOKEN": "x"})
    assert (c.addr, c.token, c.ca_cert) == ("https://t.example", "x", None)


def test_hot_path_state_is_refreshed_every_second_by_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert (settings.hot_state_refresh_seconds, settings.agent_cache_seconds) == (1.0, 1.0)


@pytest.mark.parametrize("setting", ["hot_state_refresh_seconds", "agent_cache_seconds"])
@pytest.mark.parametrize("seconds", [0.0, 0.01, 61.0])
def test_hot_path_refresh_out_of_bounds_is_refused(
    tmp_path: Path, setting: str, seconds: float
) -> None:
    with pytest.raises(ConfigError, match=setting):
        Settings(data_dir=tmp_path, **{setting: seconds})  # type: ignore[arg-type]
