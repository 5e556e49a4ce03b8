"""Least privilege from observed use: what an agent may do, or declared, but did not do — and
the narrower Cedar policy that allows exactly what it did.

Standing, broad permissions are one of the gaps Tether closes. The evidence is the use the
checkpoint recorded (:class:`~tether.monitor.models.Usage`: one row per agent, action and
resource it was *allowed*), compared over a window of ``days`` with:

* what the agent **declared** at registration (its tools and resources): an entry no use
  matches is an *unused declaration*;
* what the policy set in force **allows** it (the caller evaluates candidate pairs with the
  real engine and passes the allowed ones in): an allowed pair not used is an *unused
  permission*.

The recommendation is a policy that permits exactly the pairs used in the window (one permit
per action and resource type; ``resource ==`` for one resource, else ``resource is T`` with
``[...].contains(resource)`` — never ``resource in``, which would also allow a database's
tables or a server's tools). This module is pure: no engine, no store, an injected time.

Example::

    >>> text = suggested_policy("crm-bot", [Capability("call_tool", 'Tool::"crm/search"')],
    ...                         days=30)
    >>> print(text.split("\\n", 3)[3], end="")
    @id("least-privilege.crm-bot.1")
    @reason("crm-bot was seen to do this")
    permit (
      principal == Tether::Agent::"crm-bot",
      action == Tether::Action::"call_tool",
      resource == Tether::Tool::"crm/search"
    );
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from itertools import groupby

from tether.identity.models import Agent, Declarations
from tether.monitor.models import Usage

__all__ = [
    "Capability",
    "Recommendation",
    "UnusedDeclaration",
    "UsedCapability",
    "cedar_string",
    "covers",
    "declaration_used",
    "parse_uid",
    "recommend",
    "suggested_policy",
    "uid",
]

#: The Cedar namespace of Tether's schema (``tether.cedarschema``).
NAMESPACE = "Tether"
_UID = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)::"(.*)"$', re.DOTALL)
_ACTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Declared resources name their kind first (``postgres:faq``, ``api:crm``).
_KIND_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*:(?!//)")


@dataclass(frozen=True, order=True, slots=True)
class Capability:
    """One thing an agent may do: an action on a resource, the resource as its Cedar uid
    without the namespace (``Tool::"crm/search"``, as usage rows name it)."""

    action: str
    resource: str


@dataclass(frozen=True, kw_only=True, slots=True)
class UsedCapability:
    action: str
    resource: str
    count: int
    last_used: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class UnusedDeclaration:
    """A declared ``tools`` or ``resources`` entry that no use in the window matches."""

    field: str
    entry: str


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    agent: str
    used: tuple[UsedCapability, ...]
    unused_declarations: tuple[UnusedDeclaration, ...]
    unused_permissions: tuple[Capability, ...]
    #: Cedar text allowing exactly ``used`` (with a comment header).
    policy: str


def uid(type_: str, id_: str) -> str:
    """A resource as usage rows name it: ``Type::"id"`` (the id as is, not escaped)."""
    return f'{type_}::"{id_}"'


def parse_uid(text: str) -> tuple[str, str] | None:
    """``(type, id)`` of ``Type::"id"``, or None when ``text`` is not one."""
    found = _UID.match(text)
    return (found.group(1), found.group(2)) if found else None


def _tool_matches(entry: str, resource_id: str) -> bool:
    """A declared tool names the gateway's ``server/tool`` id, or the tool alone."""
    return (
        resource_id == entry or resource_id.endswith("/" + entry) or fnmatchcase(resource_id, entry)
    )


def _resource_matches(entry: str, resource_id: str) -> bool:
    """A declared resource (``postgres:faq``, ``api:crm``, ``pg-main``, ``faq/*``) names the
    resource, or the database a table is in (``faq`` covers ``faq.public.t``)."""
    name = _KIND_PREFIX.sub("", entry, count=1)
    return (
        resource_id == name
        or fnmatchcase(resource_id, name)
        or resource_id.startswith((name + ".", name + "/"))
    )


def covers(declared: Declarations, resource: str) -> bool:
    """Whether an agent's ``declared`` tools or resources name ``resource`` (a ``Type::"id"``
    uid): a tool by its ``server/tool`` id or the tool alone, anything else by its name (kind
    prefix allowed), the database or server it is in, or its whole uid. The out-of-declaration
    detector and the unused declarations both read declarations by this one rule."""
    return any(_names("tools", t, resource) for t in declared.tools) or any(
        _names("resources", r, resource) for r in declared.resources
    )


def _names(field: str, entry: str, resource: str) -> bool:
    """Whether the declared ``tools`` or ``resources`` ``entry`` names ``resource``."""
    parsed = parse_uid(resource)
    if parsed is None:
        return False
    kind, ident = parsed
    if field == "tools":
        return kind == "Tool" and _tool_matches(entry, ident)
    return kind != "Tool" and (entry == resource or _resource_matches(entry, ident))


def declaration_used(field: str, entry: str, used: Iterable[Capability]) -> bool:
    """Whether some use matches the declared ``tools`` or ``resources`` entry."""
    return any(_names(field, entry, capability.resource) for capability in used)


def recommend(
    *,
    agent: Agent,
    allowed: Iterable[Capability],
    usage: Iterable[Usage],
    since: datetime,
    days: int,
) -> Recommendation:
    """What ``agent`` used since ``since`` (``days`` before now), what it declared or is
    ``allowed`` but did not use, and the policy allowing exactly what it used."""
    recent = sorted(
        (u for u in usage if u.agent == agent.name and u.last_used >= since),
        key=lambda u: (u.action, u.resource),
    )
    used = tuple(
        UsedCapability(action=u.action, resource=u.resource, count=u.count, last_used=u.last_used)
        for u in recent
    )
    pairs = {Capability(u.action, u.resource) for u in recent}
    declared = (
        *(("tools", t) for t in agent.declarations.tools),
        *(("resources", r) for r in agent.declarations.resources),
    )
    unused_declarations = tuple(
        UnusedDeclaration(field=f, entry=e)
        for f, e in sorted(set(declared))
        if not declaration_used(f, e, pairs)
    )
    return Recommendation(
        agent=agent.name,
        used=used,
        unused_declarations=unused_declarations,
        unused_permissions=tuple(sorted(set(allowed) - pairs)),
        policy=suggested_policy(agent.name, pairs, days=days),
    )


def cedar_string(text: str) -> str:
    """``text`` as a Cedar string literal: quotes and backslashes escaped, anything not
    printable ASCII as ``\\u{hex}`` (so no line break or control character gets through)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isascii() and char.isprintable():
            out.append(char)
        else:
            out.append(f"\\u{{{ord(char):x}}}")
    return '"' + "".join(out) + '"'


def _entity(type_: str, id_: str) -> str:
    return f"{NAMESPACE}::{type_}::{cedar_string(id_)}"


def _permit(agent: str, number: int, action: str, type_: str, ids: Sequence[str]) -> str:
    head = [
        f"@id({cedar_string(f'least-privilege.{agent}.{number}')})",
        f"@reason({cedar_string(f'{agent} was seen to do this')})",
        "permit (",
        f"  principal == {_entity('Agent', agent)},",
        f"  action == {NAMESPACE}::Action::{cedar_string(action)},",
    ]
    if len(ids) == 1:
        return "\n".join([*head, f"  resource == {_entity(type_, ids[0])}", ");"])
    listed = ", ".join(_entity(type_, i) for i in ids)
    return "\n".join(
        [
            *head,
            f"  resource is {NAMESPACE}::{type_}",
            f") when {{ [{listed}].contains(resource) }};",
        ]
    )


def suggested_policy(agent: str, used: Iterable[Capability], *, days: int) -> str:
    """Cedar text permitting ``agent`` exactly the ``used`` pairs; pairs whose resource is
    not a ``Type::"id"`` uid or whose action is not a name are left out (and said so)."""
    shown = cedar_string(agent)
    header = [
        f"// Least privilege for agent {shown}, suggested by `tether posture` from what it was",
        f"// seen to do in the last {days} days: it permits exactly that. Review it, then let",
        "// it replace the agent's broader permits (`tether policy apply`).",
    ]
    keyed: list[tuple[str, str, str]] = []
    skipped = 0
    for capability in sorted(set(used)):
        parsed = parse_uid(capability.resource)
        if parsed is None or not _ACTION.match(capability.action):
            skipped += 1
            continue
        keyed.append((capability.action, parsed[0], parsed[1]))
    if skipped:
        header.append(f"// {skipped} observed use(s) left out: not a Cedar action and resource.")
    if not keyed:
        header.append(f"// Nothing was used in {days} days: the agent needs no permit.")
        return "\n".join(header) + "\n"
    permits = [
        _permit(agent, number, action, type_, [ident for _, _, ident in group])
        for number, ((action, type_), group) in enumerate(
            groupby(keyed, key=lambda k: (k[0], k[1])), start=1
        )
    ]
    return "\n".join(header) + "\n" + "\n\n".join(permits) + "\n"
