"""Names and SPIFFE IDs (SPIFFE-ID specification, §2 "SPIFFE Identity").

An agent is ``spiffe://<trust-domain>/agent/<name>``; one running copy of it is
``spiffe://<trust-domain>/agent/<name>/i/<instance-id>``. Every check raises with the rule
that was broken, so a person can fix the input.

Example::

    >>> agent_spiffe_id("acme.org", "faq-bot")
    'spiffe://acme.org/agent/faq-bot'
    >>> parse_agent_spiffe_id("spiffe://acme.org/agent/faq-bot/i/pod-7", trust_domain="acme.org")
    AgentRef(name='faq-bot', instance_id='pod-7')
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from tether.errors import InvalidDeclaration, InvalidName, InvalidSpiffeId

__all__ = [
    "AgentRef",
    "SpiffeId",
    "agent_spiffe_id",
    "check_agent_name",
    "check_instance_id",
    "check_owner",
    "gateway_resource",
    "instance_spiffe_id",
    "is_gateway_resource",
    "parse_agent_spiffe_id",
    "parse_spiffe_id",
]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_MAX_SPIFFE_ID = 2048
NAME_RULE = (
    "2 to 63 characters: lowercase letters, digits and '-', starting with a letter and not "
    "ending with '-'"
)
INSTANCE_RULE = (
    "1 to 64 characters: letters, digits, '.', '_' and '-', starting with a letter or digit"
)


@dataclass(frozen=True)
class SpiffeId:
    trust_domain: str
    path: str

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}{self.path}"


@dataclass(frozen=True)
class AgentRef:
    name: str
    instance_id: str | None


def check_agent_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or "--" in name:
        raise InvalidName(
            f"agent name must be {NAME_RULE}, with no '--'", details={"rule": NAME_RULE}
        )
    return name


def check_instance_id(instance_id: str) -> str:
    if not isinstance(instance_id, str) or not _INSTANCE.fullmatch(instance_id):
        raise InvalidName(f"instance id must be {INSTANCE_RULE}", details={"rule": INSTANCE_RULE})
    return instance_id


def check_owner(owner: str) -> str:
    rule = "an owner is 1 to 254 printable characters without spaces (a user name or e-mail)"
    if (
        not isinstance(owner, str)
        or not 1 <= len(owner) <= 254
        or not owner.isprintable()
        or any(c.isspace() for c in owner)
    ):
        raise InvalidDeclaration(rule, details={"rule": rule, "field": "owners"})
    return owner


def agent_spiffe_id(trust_domain: str, name: str) -> str:
    return f"spiffe://{trust_domain}/agent/{check_agent_name(name)}"


def instance_spiffe_id(trust_domain: str, name: str, instance_id: str) -> str:
    return f"{agent_spiffe_id(trust_domain, name)}/i/{check_instance_id(instance_id)}"


def gateway_resource(issuer: str, server: str) -> str:
    """The resource identifier (RFC 8707, RFC 9728) of the MCP server ``server`` behind
    Tether's gateway: the ``aud`` of a token the gateway takes for it."""
    return f"{issuer}/mcp/{server}"


def is_gateway_resource(issuer: str, value: str) -> bool:
    """Whether ``value`` is :func:`gateway_resource` of some well-named server."""
    prefix = f"{issuer}/mcp/"
    name = value[len(prefix) :]
    return value.startswith(prefix) and bool(_NAME.fullmatch(name)) and "--" not in name


def _bad(rule: str) -> InvalidSpiffeId:
    return InvalidSpiffeId(f"not a valid SPIFFE ID: {rule}", details={"rule": rule})


def parse_spiffe_id(value: str) -> SpiffeId:
    """Parse strictly by the SPIFFE-ID spec: no upper case in the trust domain, no port,
    user info, query or fragment, no empty, '.' or '..' segments, no trailing '/'."""
    if not isinstance(value, str) or len(value.encode("utf-8", "surrogatepass")) > _MAX_SPIFFE_ID:
        raise _bad("at most 2048 bytes")
    if not value.startswith("spiffe://"):
        raise _bad("the scheme must be 'spiffe://' in lower case")
    rest = value[len("spiffe://") :]
    trust_domain, sep, path = rest.partition("/")
    if not trust_domain or not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise _bad("the trust domain holds only lowercase letters, digits, '.', '-' and '_'")
    if not sep:
        return SpiffeId(trust_domain=trust_domain, path="")
    for segment in path.split("/"):
        if not segment:
            raise _bad("path segments may not be empty (no '//' and no trailing '/')")
        if segment in {".", ".."}:
            raise _bad("path segments may not be '.' or '..'")
        if not _SEGMENT.fullmatch(segment):
            raise _bad("path segments hold only letters, digits, '.', '-' and '_'")
    return SpiffeId(trust_domain=trust_domain, path="/" + path)


def parse_agent_spiffe_id(value: str, *, trust_domain: str) -> AgentRef:
    """An agent's or an instance's SPIFFE ID in ``trust_domain``, else ``InvalidSpiffeId``.
    The answers for the last :data:`_PARSED` strings are kept (every token an agent presents
    names it); a refusal is not kept, it is worked out again."""
    try:
        return _parse_agent(value, trust_domain)
    except TypeError:  # not a string, and unhashable: refused without the cache
        return _parse_agent.__wrapped__(value, trust_domain)


#: How many parsed agent SPIFFE IDs are kept.
_PARSED = 1024


@functools.lru_cache(maxsize=_PARSED)
def _parse_agent(value: str, trust_domain: str) -> AgentRef:
    sid = parse_spiffe_id(value)
    if sid.trust_domain != trust_domain:
        raise _bad(f"the trust domain must be {trust_domain!r}")
    parts = sid.path.split("/")[1:]
    if len(parts) == 2 and parts[0] == "agent":
        return AgentRef(name=_agent_name(parts[1]), instance_id=None)
    if len(parts) == 4 and parts[0] == "agent" and parts[2] == "i":
        return AgentRef(name=_agent_name(parts[1]), instance_id=_instance(parts[3]))
    raise _bad("an agent is /agent/<name>, an instance /agent/<name>/i/<instance-id>")


def _agent_name(name: str) -> str:
    try:
        return check_agent_name(name)
    except InvalidName as exc:
        raise _bad(f"agent name must be {NAME_RULE}") from exc


def _instance(instance_id: str) -> str:
    try:
        return check_instance_id(instance_id)
    except InvalidName as exc:
        raise _bad(f"instance id must be {INSTANCE_RULE}") from exc
