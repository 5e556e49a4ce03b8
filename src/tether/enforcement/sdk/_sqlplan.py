"""What the SQL guard asks the checkpoint, decided without I/O: one :class:`Check` per
statement and table (:class:`Guard`), the error a deny or a refusal becomes, and the text the
server will read once psycopg has turned its placeholders into ``$n``.

A table is ``Table::"<database>/<schema>.<table>"`` with the attributes the Cedar schema
requires (``name``, ``data_class``) and its parent ``Database::"<database>"``, which travels
in the evaluation's ``context.entities``; a statement without a table is decided on the
``Database``. A text refused by the analysis is recorded as a ``query`` on the ``Database``
with the refusal (AuthZEN ``context.refusal``). Only the statement's text goes along as the
call's arguments, never parameter values (often personal data).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tether.enforcement.sdk._flows import Decision
from tether.enforcement.sdk.sqlguard import DEFAULT_RULES, Rules, Statement
from tether.errors import StatementDenied

__all__ = [
    "Check",
    "Guard",
    "converted",
    "denial",
    "refusal_reason",
    "refused",
    "unreadable",
]

#: A psycopg placeholder (``%s``, ``%b``, ``%t``, ``%(name)s``) or an escaped ``%%``: the
#: grammar psycopg documents (and parses with this very expression).
_PLACEHOLDER = re.compile(r"%(?:\(([^)]+)\).|.)")


@dataclass(frozen=True, kw_only=True)
class Check:
    """One decision to ask for: ``action`` on ``resource``, with its parents."""

    action: str
    resource: Mapping[str, Any]
    entities: tuple[Mapping[str, Any], ...]
    arguments: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Guard:
    """What a guarded connection asks, decided once: the database's name in policies, the
    rules of the analysis, the data class of each table and the context sent along."""

    database: str
    rules: Rules = DEFAULT_RULES
    #: ``"<schema>.<table>"`` → data class; other tables have ``default_class``.
    data_classes: Mapping[str, str] | None = None
    default_class: str = "internal"
    context: Mapping[str, Any] | None = None

    def checks(self, statements: Iterable[Statement]) -> Iterator[Check]:
        """One check per (statement, action, table); a statement without a table is one
        check of its kind on the database."""
        database = self.database_entity()
        for statement in statements:
            arguments = {"sql": statement.sql}
            if not statement.accesses:
                yield Check(action=statement.kind, resource=database, entities=(),
                            arguments=arguments)  # fmt: skip
            for access in statement.accesses:
                yield Check(action=access.action, resource=self.table(access.table),
                            entities=(database,), arguments=arguments)  # fmt: skip

    def database_entity(self) -> dict[str, Any]:
        properties = {"name": self.database, "data_class": self.default_class}
        return {"type": "Database", "id": self.database, "properties": properties}

    def table(self, name: str) -> dict[str, Any]:
        data_class = (self.data_classes or {}).get(name, self.default_class)
        parents = [{"type": "Database", "id": self.database}]
        properties = {"name": name, "data_class": data_class, "parents": parents}
        return {"type": "Table", "id": f"{self.database}/{name}", "properties": properties}

    def refusal(self, sql: str) -> Check:
        """The record of a text refused before any policy: ``query`` on the database."""
        database = self.database_entity()
        fits = len(sql) <= self.rules.max_chars
        arguments = {"sql": sql} if fits else {"sql_chars": len(sql)}
        return Check(action="query", resource=database, entities=(), arguments=arguments)

    def send_context(self, refusal: str | None = None) -> dict[str, Any]:
        context = dict(self.context or {})
        if refusal is not None:
            context["refusal"] = refusal
        return context


def denial(check: Check, decision: Decision) -> StatementDenied:
    """The error for a statement the checkpoint did not allow."""
    why = "; ".join(decision.reasons) or "no policy permits it"
    return StatementDenied(
        f"{check.action} on {check.resource['id']} denied: {why}",
        details={
            "reason": "checkpoint", "decision_id": decision.decision_id,
            "effect": decision.effect, "action": check.action,
            "resource": check.resource["id"], "reasons": list(decision.reasons),
            "policy_ids": list(decision.policy_ids),
        },
    )  # fmt: skip


def refused(denied: StatementDenied, decision_id: str | None) -> StatementDenied:
    """The analysis's refusal, naming the record the checkpoint wrote of it (if it could)."""
    details = {**denied.details, "decision_id": decision_id, "audited": decision_id is not None}
    return StatementDenied(denied.message, details=details)


def refusal_reason(denied: StatementDenied) -> str:
    return f"sql guard: {denied.details.get('reason')}: {denied.message}"[:500]


def converted(text: str) -> str:
    """``text`` with psycopg's placeholders as the ``$n`` the server receives."""
    names: dict[str, int] = {}
    out: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(text):
        out.append(text[last : match.start()])
        last = match.end()
        token = match.group(0)
        if token == "%%":
            out.append("%")
            continue
        if token[-1] not in "sbt":
            raise unreadable("a malformed placeholder (write % as %%)")
        name = match.group(1) or f"#{len(names)}"
        out.append(f"${names.setdefault(name, len(names) + 1)}")
    out.append(text[last:])
    return "".join(out)


def unreadable(message: str) -> StatementDenied:
    return StatementDenied(message, details={"reason": "parse_error"})
