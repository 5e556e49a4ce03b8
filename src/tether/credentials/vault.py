"""The secrets vault engine: static third-party secrets, used only under a lease.

Some credentials cannot be minted per lease: an API key of a SaaS, a user's OAuth refresh token
for an external service. Tether keeps them and lets an agent use one only while it holds a
lease on a role that names it, so that every use is decided by policy and recorded.

Why it is built this way:

* The engine's sealed admin secret *is* the map ``{secret name: value}`` (JSON), so the values
  are sealed with the key-encryption key like every engine secret, with the engine's name as
  associated data, and no new table holds secrets. :meth:`Engines.put_secret
  <tether.credentials.engines.Engines.put_secret>` and ``delete_secret`` change one entry by
  read-modify-write of that map, compare-and-set on the engine's version.
* A role template names its secret in ``options["secret"]`` and how it is handed out in
  ``options["handout"]``: ``"inject"`` (the default) never lets the value leave Tether over the
  API — the lease says which secret it covers and an enforcement point in this process asks
  :meth:`VaultEngine.reveal` for the value while the lease is in force, so the agent never sees
  it; ``"lease"`` returns the value in the one response that issues the lease.
* A static secret cannot be recalled: revoking a lease ends the lease (enforcement points stop
  injecting), and a value handed out with ``"lease"`` stays valid at the third party until it
  is rotated there. That is why ``"inject"`` is the default. ``managed()`` is empty: there is
  nothing in a third-party system to sweep.
* Bounded input: at most :data:`MAX_SECRETS` secrets of at most :data:`MAX_VALUE_BYTES` each,
  the whole map at most :data:`MAX_MAP_BYTES`; names follow the rule of engine names. No error
  message holds a value.

Example::

    >>> secrets = with_secret({}, "crm-api-key", "k-123")
    >>> sorted(parse_secrets(dump_secrets(secrets)))
    ['crm-api-key']
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType

from tether.credentials.engine import UnmanagedLogin
from tether.credentials.models import EngineConfig, IssuedCredential, Lease, RoleTemplate
from tether.errors import Forbidden, InvalidInput, NotFound

__all__ = [
    "HANDOUTS",
    "MAX_MAP_BYTES",
    "MAX_SECRETS",
    "MAX_VALUE_BYTES",
    "VAULT_KIND",
    "VaultEngine",
    "dump_secrets",
    "open_vault_engine",
    "parse_secrets",
    "validate_vault_settings",
    "with_secret",
    "without_secret",
]

VAULT_KIND = "vault"
MAX_SECRETS = 1000
MAX_VALUE_BYTES = 16 * 1024
#: The whole sealed map (a bound the per-value limits alone would put at 16 MiB: every change
#: rewrites it and every opening unseals it).
MAX_MAP_BYTES = 1024 * 1024
#: How a role hands its secret out; the first is the default.
HANDOUTS = ("inject", "lease")
#: The rule of engine and role names (:mod:`tether.credentials.engines`).
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
_NAME_RULE = "2 to 63 characters: lowercase letters, digits and '-', starting with a letter"
_OPTIONS = frozenset({"secret", "handout"})


# -- the map of secrets -------------------------------------------------------------------


def _check_name(name: object) -> str:
    # Not quoted: a value put where a name goes must not end up in a message.
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(f"invalid secret name: {_NAME_RULE}", details={"rule": _NAME_RULE})
    return name


def _check_value(name: str, value: object) -> str:
    """``value`` if it may be stored; the message names the secret, never the value."""
    if not isinstance(value, str) or not 1 <= len(value.encode("utf-8")) <= MAX_VALUE_BYTES:
        raise InvalidInput(
            f"secret {name!r}: a value is a string of 1 to {MAX_VALUE_BYTES} bytes",
            details={"secret": name, "rule": f"1 to {MAX_VALUE_BYTES} bytes"},
        )
    return value


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise InvalidInput(
                "a secret name appears twice in the map", details={"rule": "unique names"}
            )
        found[key] = value
    return found


def parse_secrets(text: str | None) -> dict[str, str]:
    """The map an engine's unsealed secret holds (``None``: no secret yet, an empty map), or
    ``InvalidInput`` — never quoting the text, which holds the values."""
    if text is None:
        return {}
    if len(text.encode("utf-8")) > MAX_MAP_BYTES:
        raise InvalidInput(
            f"a vault engine holds at most {MAX_MAP_BYTES} bytes of secrets",
            details={"rule": f"at most {MAX_MAP_BYTES} bytes"},
        )
    try:
        data = json.loads(text, object_pairs_hook=_unique)
    except ValueError:
        raise InvalidInput(
            'a vault engine\'s secret is a JSON object {"name": "value", ...}',
            details={"rule": "JSON object of names to values"},
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput(
            'a vault engine\'s secret is a JSON object {"name": "value", ...}',
            details={"rule": "JSON object of names to values"},
        )
    return _checked({_check_name(k): _check_value(k, v) for k, v in data.items()})


def _checked(secrets: dict[str, str]) -> dict[str, str]:
    if len(secrets) > MAX_SECRETS:
        raise InvalidInput(
            f"a vault engine holds at most {MAX_SECRETS} secrets",
            details={"rule": f"at most {MAX_SECRETS} secrets"},
        )
    return secrets


def dump_secrets(secrets: Mapping[str, str]) -> str:
    """The map as it is sealed: JSON, names sorted (``InvalidInput`` past the bounds)."""
    text = json.dumps(dict(sorted(secrets.items())), ensure_ascii=False, separators=(",", ":"))
    if len(text.encode("utf-8")) > MAX_MAP_BYTES:
        raise InvalidInput(
            f"a vault engine holds at most {MAX_MAP_BYTES} bytes of secrets",
            details={"rule": f"at most {MAX_MAP_BYTES} bytes"},
        )
    return text


def with_secret(secrets: Mapping[str, str], name: str, value: str) -> dict[str, str]:
    """``secrets`` with ``name`` set to ``value`` (added or replaced)."""
    checked = _check_name(name)
    return _checked(dict(secrets) | {checked: _check_value(checked, value)})


def without_secret(secrets: Mapping[str, str], name: str) -> dict[str, str]:
    """``secrets`` without ``name`` (``NotFound`` if it holds none by that name)."""
    if _check_name(name) not in secrets:
        raise NotFound(f"the engine holds no secret {name!r}", details={"secret": name})
    return {k: v for k, v in secrets.items() if k != name}


# -- settings and roles -------------------------------------------------------------------


def validate_vault_settings(settings: Mapping[str, object]) -> dict[str, object]:
    """A vault engine has no settings: ``{}``, or ``InvalidInput`` for any key."""
    if unknown := sorted(settings):
        raise InvalidInput(
            f"unknown vault settings: {', '.join(unknown)} (a vault engine takes none)",
            details={"unknown": unknown},
        )
    return {}


def _role_options(role: RoleTemplate) -> tuple[str, str]:
    """The secret a role hands out and how (``InvalidInput`` for anything else)."""
    if unknown := sorted(set(role.options) - _OPTIONS):
        raise InvalidInput(
            f"role {role.name!r}: unknown options {', '.join(unknown)} (secret, handout)",
            details={"role": role.name, "unknown": unknown},
        )
    if role.group is not None:
        raise InvalidInput(
            f"role {role.name!r}: a vault role takes no group", details={"role": role.name}
        )
    handout = role.options.get("handout", HANDOUTS[0])
    if handout not in HANDOUTS:
        raise InvalidInput(
            f"role {role.name!r}: handout is one of {', '.join(HANDOUTS)}",
            details={"role": role.name, "rule": "handout"},
        )
    secret = role.options.get("secret")
    if not isinstance(secret, str):
        raise InvalidInput(
            f"role {role.name!r} names no secret (options.secret)", details={"role": role.name}
        )
    return _check_name(secret), str(handout)


# -- the engine ---------------------------------------------------------------------------


class VaultEngine:
    """Hands out, or keeps for injection, the secrets of one vault engine; see the module."""

    def __init__(
        self, *, name: str, secrets: Mapping[str, str], roles: Iterable[RoleTemplate] = ()
    ) -> None:
        """``InvalidInput`` if one of ``roles`` names a secret that ``secrets`` lacks."""
        self._name = name
        self._secrets = MappingProxyType(dict(secrets))
        for role in roles:
            self._value(role)

    def __repr__(self) -> str:
        return f"VaultEngine(name={self._name!r}, secrets={len(self._secrets)})"

    @property
    def kind(self) -> str:
        return VAULT_KIND

    def credential_name(self, lease_id: str) -> str:
        """The lease id: a lease creates nothing in another system."""
        if not isinstance(lease_id, str) or not lease_id:
            raise InvalidInput("a lease id is a non-empty string", details={"rule": "id"})
        return lease_id

    def _value(self, role: RoleTemplate) -> tuple[str, str, str]:
        secret, handout = _role_options(role)
        value = self._secrets.get(secret)
        if value is None:
            raise InvalidInput(
                f"role {role.name!r} hands out secret {secret!r}, which engine "
                f"{self._name!r} does not hold",
                details={"role": role.name, "secret": secret},
            )
        return secret, handout, value

    async def create(
        self,
        *,
        credential: str,
        role: RoleTemplate,
        expires_at: datetime,
        holder: str,
        user: str | None = None,
    ) -> IssuedCredential:
        """The value with ``handout`` ``lease``; with ``inject``, only which secret the lease
        covers (the value stays here, for :meth:`reveal`)."""
        secret, handout, value = self._value(role)
        details = MappingProxyType({"secret_name": secret, "handout": handout})
        shown = value if handout == "lease" else None
        return IssuedCredential(credential=credential, secret=shown, details=details)

    async def extend(self, *, credential: str, role: RoleTemplate, expires_at: datetime) -> None:
        """Nothing to move: the lease's own expiry bounds the use of the secret."""

    async def revoke(self, *, credential: str, role: RoleTemplate) -> None:
        """Nothing to remove: a static secret cannot be recalled (see the module)."""

    def reveal(self, *, lease: Lease, role: RoleTemplate, now: datetime) -> str:
        """The value an enforcement point injects for ``lease`` (a lease of this engine on
        ``role``, active and not expired at ``now``); ``Forbidden`` otherwise. In process only:
        no route returns it, and the caller records the use."""
        if lease.engine != self._name or lease.role != role.name:
            raise Forbidden(
                "the lease is not one of this engine's role", details={"lease_id": lease.id}
            )
        if not lease.usable(now):
            raise Forbidden("the lease is not in force", details={"lease_id": lease.id})
        return self._value(role)[2]

    async def managed(self) -> set[str]:
        return set()

    async def unmanaged_logins(self) -> list[UnmanagedLogin]:
        return []

    async def close(self) -> None:
        """Nothing is held open."""


async def open_vault_engine(config: EngineConfig, secret: str | None) -> VaultEngine:
    """The engine of ``config`` (an :data:`~tether.credentials.engine.EngineFactory`), its
    ``secret`` being the map of secrets: ``InvalidInput`` for unknown settings or options, a
    map out of bounds, or a role naming a secret the map does not hold."""
    if config.kind != VAULT_KIND:
        raise InvalidInput(f"engine {config.name!r} is not a vault engine")
    validate_vault_settings(config.settings)
    return VaultEngine(name=config.name, secrets=parse_secrets(secret), roles=config.roles.values())
