"""What the rule engine takes and gives: requests, decisions, policy-set versions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tether.errors import InvalidInput

__all__ = [
    "Decision",
    "DecisionRequest",
    "Effect",
    "Entity",
    "EntityRef",
    "PolicySetVersion",
    "entity_to_json",
    "parse_entity",
    "value_to_json",
]


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    APPROVAL_REQUIRED = "approval_required"


@dataclass(frozen=True, slots=True)
class EntityRef:
    """A Cedar entity UID: ``Tether::Agent::"faq-bot"`` is ``EntityRef("Agent", "faq-bot")``.
    ``type`` is given without the ``Tether::`` namespace."""

    type: str
    id: str


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, kw_only=True)
class Entity:
    """An entity with the attributes policies read (see ``tether.cedarschema``) and its parents
    (a ``Tool`` is in its ``McpServer``, a ``Table`` in its ``Database``). An attribute that is
    itself an entity is given as an :class:`EntityRef`."""

    ref: EntityRef
    attrs: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    parents: tuple[EntityRef, ...] = ()


def parse_entity(value: Mapping[str, Any], *, what: str) -> Entity:
    """An entity from its wire shape ``{"type", "id", "properties"?, "parents"?}``; parents
    (a list of ``{"type", "id"}``) may also sit in ``properties.parents``, as AuthZEN
    callers put them. ``InvalidInput`` naming ``what`` for anything else."""
    kind, ident = value.get("type"), value.get("id")
    if not isinstance(kind, str) or not isinstance(ident, str) or not kind or not ident:
        raise InvalidInput(f"{what} needs a string type and id")
    properties, parents = value.get("properties") or {}, value.get("parents") or []
    if not isinstance(properties, Mapping):
        raise InvalidInput(f"{what}: properties is an object")
    properties = dict(properties)
    inner = properties.pop("parents", None) or []
    if not isinstance(parents, list) or not isinstance(inner, list):
        raise InvalidInput(f"{what}: parents is a list of {{type, id}}")
    parents = [*parents, *inner]
    refs = []
    for parent in parents:
        if not isinstance(parent, Mapping):
            raise InvalidInput(f"{what}: parents is a list of {{type, id}}")
        refs.append(EntityRef(str(parent.get("type", "")), str(parent.get("id", ""))))
    return Entity(ref=EntityRef(kind, ident), attrs=properties, parents=tuple(refs))


@dataclass(frozen=True, kw_only=True)
class DecisionRequest:
    """Can ``principal`` do ``action`` on ``resource``, in this ``context``?

    ``action`` is the bare action name (``call_tool``). ``context`` follows the schema's
    ``Context`` type; entity-valued entries (``user``) are :class:`EntityRef`. ``entities``
    are the other entities policies may read (the user, a resource's parents)."""

    principal: Entity
    action: str
    resource: Entity
    context: Mapping[str, Any]
    entities: tuple[Entity, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON form that :meth:`from_json` turns back into an equal request (sets become
        sorted lists, which Cedar reads as sets): decision records keep it for replay."""
        return {
            "principal": entity_to_json(self.principal),
            "action": self.action,
            "resource": entity_to_json(self.resource),
            "context": value_to_json(self.context),
            "entities": [entity_to_json(e) for e in self.entities],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DecisionRequest:
        return cls(
            principal=_entity_from_json(data["principal"]),
            action=str(data["action"]),
            resource=_entity_from_json(data["resource"]),
            context=_decode(data.get("context", {})),
            entities=tuple(_entity_from_json(e) for e in data.get("entities", [])),
        )


def value_to_json(value: Any) -> Any:
    """A context value (or attribute) in the JSON form :meth:`DecisionRequest.to_json` keeps:
    entity references as ``{"__entity": …}``, sets as sorted lists."""
    if isinstance(value, EntityRef):
        return {"__entity": {"type": value.type, "id": value.id}}
    if isinstance(value, Mapping):
        return {k: value_to_json(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((value_to_json(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [value_to_json(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"__entity"}:
            ref = value["__entity"]
            return EntityRef(str(ref["type"]), str(ref["id"]))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def entity_to_json(entity: Entity) -> dict[str, Any]:
    """An entity in the JSON form :meth:`DecisionRequest.to_json` keeps."""
    return {
        "type": entity.ref.type,
        "id": entity.ref.id,
        "attrs": value_to_json(entity.attrs),
        "parents": [{"type": p.type, "id": p.id} for p in entity.parents],
    }


def _entity_from_json(data: Mapping[str, Any]) -> Entity:
    return Entity(
        ref=EntityRef(str(data["type"]), str(data["id"])),
        attrs=_decode(data.get("attrs", {})),
        parents=tuple(EntityRef(str(p["type"]), str(p["id"])) for p in data.get("parents", [])),
    )


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The engine's answer. Anything but ``allow`` means the call does not run.

    ``policy_ids`` are the ``@id`` annotations of the determining policies; ``reasons`` say
    why in words (errors and refusals included, never secrets); ``obligations`` are what an
    allow is conditional on (``approval``).
    """

    effect: Effect
    policy_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    obligations: tuple[str, ...] = ()
    policy_version: int | None = None
    details: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    @classmethod
    def deny(cls, reason: str, *, policy_version: int | None = None) -> Decision:
        return cls(effect=Effect.DENY, reasons=(reason,), policy_version=policy_version)


@dataclass(frozen=True, kw_only=True)
class PolicySetVersion:
    """One stored version of the operators' policy set (the shipped defaults are not in it)."""

    version: int
    text: str
    sha256: str
    created_at: datetime
    created_by: str
    comment: str | None = None
