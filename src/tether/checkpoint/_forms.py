"""The evaluated request as a decision record keeps it: ``DecisionRequest.to_json``, every
sensitive value as its HMAC (also inside the arguments, which policies read as canonical JSON
text), so that a proposed policy set can be replayed against it.

Most of a request is the same call after call: the principal (the agent's entity, kept by the
checkpoint per agent version, so the very same object each time) and often the resource's
parents. Their forms are made once per entity object and kept (entities are immutable all the
way down); the context, which holds the call's own values, is made each time. Keeping them
took a cached-token decision from 823 to 762 µs (16 in flight, 7 alternating rounds).

Example::

    >>> from types import MappingProxyType
    >>> from tether.audit.redact import Redactor
    >>> from tether.policy.models import DecisionRequest, Entity, EntityRef
    >>> bot = Entity(ref=EntityRef("Agent", "faq-bot"), attrs=MappingProxyType({"name": "faq-bot"}))
    >>> tool = Entity(ref=EntityRef("Tool", "kb/search"), attrs=MappingProxyType({}))
    >>> forms = RecordForms(Redactor(b"k" * 32))
    >>> asked = DecisionRequest(principal=bot, action="call_tool", resource=tool,
    ...                         context={"password": "hunter2"})
    >>> form = forms.request(asked)
    >>> form["principal"]["id"], form["context"]["password"].startswith("hmac-sha256:")
    ('faq-bot', True)
    >>> forms.request(asked)["principal"] is form["principal"]
    True
"""

from __future__ import annotations

from typing import Any

from tether.audit.redact import Redactor
from tether.policy.models import DecisionRequest, Entity, entity_to_json, value_to_json

__all__ = ["MAX_KEPT", "RecordForms"]

#: Entities whose form is kept; beyond, all are made afresh (the principals come back first).
MAX_KEPT = 1024


class RecordForms:
    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._kept: dict[int, tuple[Entity, dict[str, Any]]] = {}

    def request(self, evaluated: DecisionRequest) -> dict[str, Any]:
        """``evaluated.to_json()`` as the record keeps it (sensitive values hidden)."""
        context = value_to_json(evaluated.context)
        if isinstance(context.get("arguments"), str):
            context["arguments"] = self._redactor.redact_text(context["arguments"])
        if isinstance(context.get("call_digest"), str):
            context["call_digest"] = self._redactor.hash(context["call_digest"])
        return {
            "principal": self.entity(evaluated.principal),
            "action": evaluated.action,
            "resource": self.entity(evaluated.resource),
            "context": self._redactor.redact(context),
            "entities": [self.entity(e) for e in evaluated.entities],
        }

    def entity(self, entity: Entity) -> dict[str, Any]:
        """``entity``'s redacted JSON form, made once per entity object."""
        kept = self._kept.get(id(entity))
        if kept is not None and kept[0] is entity:  # the entry holds the object alive, so
            return kept[1]  # its id cannot have been reused by another
        form: dict[str, Any] = self._redactor.redact(entity_to_json(entity))
        if len(self._kept) >= MAX_KEPT:
            self._kept.clear()
        self._kept[id(entity)] = (entity, form)
        return form
