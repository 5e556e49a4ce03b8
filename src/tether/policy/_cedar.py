"""The rule engine on Cedar (``cedarpy``): the only module that imports the binding.

Policies and the schema are parsed once into handles (``PolicySet``, ``Schema``): per the
measurements in the project notes, a decision with handles costs 176–215 µs against 1.2–1.6 ms
re-parsed. Policy ids inside Cedar are positional (``policy0``…); the ``@id`` annotations,
read once at compile time with ``policies_to_json_str``, are what decisions report.

Cedar's two quiet outcomes are made loud here: ``NoDecision`` (a request that does not fit the
schema) and evaluation errors (Cedar skips an erroring policy — possibly a forbid) both become
``deny`` with the reason, as :mod:`tether.policy.engine` requires.

Example::

    engine = CedarEngine()
    compiled = engine.compile(open("policies.cedar").read(), version=3)
    decision = engine.decide(compiled, request)   # Decision(effect=allow, policy_ids=(...))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import cedarpy
import orjson

from tether._internal.kept import Kept, KeptFor
from tether.errors import InvalidPolicySet
from tether.policy.engine import (
    APPROVAL,
    OBLIGATIONS,
    RESERVED_PREFIX,
    CompiledPolicies,
)
from tether.policy.models import Decision, DecisionRequest, Effect, Entity, EntityRef

__all__ = [
    "NAMESPACE",
    "CedarEngine",
    "CedarOutcome",
    "CedarPolicies",
    "conformance_evaluate",
    "default_policies",
    "schema_text",
]

NAMESPACE = "Tether"
MAX_POLICY_SET_BYTES = 1024 * 1024
#: A misspelt annotation (``@obligations``) would silently drop an obligation: refused.
KNOWN_ANNOTATIONS = frozenset({"id", "reason", "obligation"})


def schema_text() -> str:
    """The shipped Cedar schema (``tether.cedarschema``)."""
    return resources.files("tether.policy").joinpath("tether.cedarschema").read_text("utf-8")


def default_policies() -> str:
    """The shipped policies that are always in force (``defaults.cedar``)."""
    return resources.files("tether.policy").joinpath("defaults.cedar").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class _PolicyInfo:
    id: str
    effect: str
    obligations: tuple[str, ...]
    reason: str | None


#: Slices kept per compiled set (one per agent that asked); beyond this they are rebuilt.
MAX_SLICES = 10_000
#: Parsed entity graphs kept by :meth:`CedarEngine._entities` (cleared when full).
MAX_PARSED_ENTITIES = 4_096
#: Only entity graphs up to this many characters of JSON are kept (so at most ~32 MiB of keys).
MAX_CACHED_ENTITY_TEXT = 8_192


@dataclass(frozen=True)
class CedarPolicies:
    """Defaults plus one operators' version, parsed and validated.

    Cedar evaluates every policy of a set, so a set of 1,000 costs about 5× one of 10. Most
    policies name their principal (``principal == Tether::Agent::"faq-bot"``), and such a
    policy can only ever match that agent; so each agent is decided against a *slice*: the
    policies naming it plus every policy that does not name a single agent. A slice is built
    on the agent's first decision and kept; it decides exactly as the whole set would.
    """

    version: int | None
    policy_set: cedarpy.PolicySet
    infos: Mapping[str, _PolicyInfo]  # Cedar's positional id → what the annotations say
    #: Positional id → the policy's JSON (Cedar's JSON policy format).
    policies_json: Mapping[str, Any] = field(default_factory=dict)
    #: Positional ids of the policies that name one agent as principal, by agent id.
    by_agent: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Positional ids of the policies that apply to any agent.
    shared: tuple[str, ...] = ()
    _slices: Kept[str, cedarpy.PolicySet] = field(
        default_factory=lambda: Kept(limit=MAX_SLICES), compare=False
    )

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return tuple(info.id for info in self.infos.values())

    def with_version(self, version: int | None) -> CedarPolicies:
        return replace(self, version=version)

    def for_principal(self, ref: EntityRef) -> cedarpy.PolicySet:
        """The policies that can apply to ``ref`` (the whole set for anything but an agent)."""
        if ref.type != "Agent" or not self.policies_json:
            return self.policy_set
        found = self._slices.get(ref.id)
        if found is None:
            chosen = (*self.by_agent.get(ref.id, ()), *self.shared)
            document = {
                "staticPolicies": {p: self.policies_json[p] for p in chosen},
                "templates": {},
                "templateLinks": [],
            }
            found = self._slices.put(ref.id, cedarpy.PolicySet.from_json_str(json.dumps(document)))
        return found


def _uid(ref: EntityRef) -> dict[str, str]:
    return {"type": f"{NAMESPACE}::{ref.type}", "id": ref.id}


#: Values Cedar's JSON takes as they are (checked first: most context values are these).
_PLAIN = frozenset({str, int, bool, float})


def _value(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, EntityRef):
        return {"__entity": _uid(value)}
    if isinstance(value, Mapping):
        return {k: _value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_value(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    return value


def _json(value: Any) -> str:
    """Compact JSON for Cedar, by orjson (a fifth of ``json.dumps``' time). What orjson does
    not write — an integer beyond 64 bits — ``json.dumps`` does, for Cedar to refuse. Cedar
    refuses a non-finite float either way (orjson writes ``null``, ``json.dumps`` ``NaN``):
    no decision, so a denial."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def _entity_json(entity: Entity) -> dict[str, Any]:
    return {
        "uid": _uid(entity.ref),
        "attrs": {k: _value(v) for k, v in entity.attrs.items()},
        "parents": [_uid(p) for p in entity.parents],
    }


class CedarEngine:
    def __init__(self, *, schema: str | None = None, defaults: str | None = None) -> None:
        self._schema_text = schema if schema is not None else schema_text()
        self._schema = cedarpy.Schema.from_str(self._schema_text)
        self._defaults = defaults if defaults is not None else default_policies()
        self._parsed: Kept[str, cedarpy.Entities] = Kept(limit=MAX_PARSED_ENTITIES)
        self._principals: KeptFor[str, Entity, dict[str, Any]] = KeptFor(limit=MAX_PARSED_ENTITIES)
        problems, self._default_ids = self._problems(self._defaults, reserved_ok=True)
        if problems:
            raise InvalidPolicySet("the shipped policies are invalid", details={"errors": problems})

    # -- checking and compiling ---------------------------------------------------------

    def check(self, text: str) -> list[str]:
        if len(text.encode()) > MAX_POLICY_SET_BYTES:
            return [f"a policy set is at most {MAX_POLICY_SET_BYTES} bytes"]
        own, ids = self._problems(text, reserved_ok=False)
        if own:
            return own
        clashes = sorted(self._default_ids & ids)
        return [f"policy id {i!r} is already used by a shipped policy" for i in clashes]

    def compile(self, text: str, *, version: int | None) -> CedarPolicies:
        problems = self.check(text)
        if problems:
            raise InvalidPolicySet(
                f"the policy set is invalid: {problems[0]}", details={"errors": problems}
            )
        combined = f"{self._defaults}\n{text}"
        document = json.loads(cedarpy.policies_to_json_str(combined))
        policies = document.get("staticPolicies", {})
        by_agent: dict[str, list[str]] = {}
        shared: list[str] = []
        for position, policy in policies.items():
            agent = _single_agent(policy.get("principal", {}))
            if agent is None:
                shared.append(position)
            else:
                by_agent.setdefault(agent, []).append(position)
        return CedarPolicies(
            version=version,
            policy_set=cedarpy.PolicySet.from_str(combined),
            infos=_infos(policies),
            policies_json=policies,
            by_agent={agent: tuple(ids) for agent, ids in by_agent.items()},
            shared=tuple(shared),
        )

    def _problems(self, text: str, *, reserved_ok: bool) -> tuple[list[str], set[str]]:
        """Everything wrong with ``text``, and the policy ids it declares."""
        try:
            parsed = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            return [f"parse error: {str(exc).strip()}"], set()
        if parsed.get("templates"):
            return ["templates are not supported in a policy set yet"], set()
        problems: list[str] = []
        seen: set[str] = set()
        for position, policy in parsed.get("staticPolicies", {}).items():
            annotations = policy.get("annotations") or {}
            policy_id = annotations.get("id")
            if not policy_id:
                problems.append(f'{position}: every policy needs an @id("...") annotation')
                continue
            if policy_id in seen:
                problems.append(f"policy id {policy_id!r} is used twice")
            seen.add(policy_id)
            if not reserved_ok and policy_id.startswith(RESERVED_PREFIX):
                problems.append(
                    f"policy id {policy_id!r}: ids starting with 'tether.' are reserved"
                )
            problems += _annotation_problems(policy_id, policy, annotations)
        if problems:
            return problems, seen
        result = cedarpy.validate_policies(text, self._schema)
        return ([] if result.validation_passed else [str(e) for e in result.errors]), seen

    # -- deciding ------------------------------------------------------------------------

    def _principal_json(self, principal: Entity) -> dict[str, Any]:
        """The principal's Cedar JSON, kept per entity *object*: the checkpoint hands the same
        object for an agent until its registry record changes. Entities are immutable values;
        the kept object stays referenced, so its identity cannot be reused by another."""
        return self._principals.derived(principal.ref.id, principal, _entity_json)

    def _entities(self, document: str) -> cedarpy.Entities:
        """The parsed, schema-checked entity graph for ``document``. The same agent calling
        the same tool sends the same graph again and again, so parsed graphs are kept, keyed
        by their exact JSON text (a hit is the same input, so the same graph)."""
        if len(document) > MAX_CACHED_ENTITY_TEXT:
            # Large graphs are parsed each time: a caller must not be able to fill memory
            # with thousands of big, unique documents.
            return cedarpy.Entities.from_json_str(document, schema=self._schema)
        found = self._parsed.get(document)
        if found is None:
            found = self._parsed.put(
                document, cedarpy.Entities.from_json_str(document, schema=self._schema)
            )
        return found

    def decide(self, compiled: CompiledPolicies, request: DecisionRequest) -> Decision:
        if not isinstance(compiled, CedarPolicies):
            raise TypeError("compile the policies with this engine first")
        version = compiled.version
        try:
            principal = self._principal_json(request.principal)
            entities = self._entities(
                _json(
                    [principal, *(_entity_json(e) for e in (request.resource, *request.entities))]
                )
            )
        except ValueError as exc:
            return Decision.deny(f"entities do not fit the schema: {exc}", policy_version=version)
        cedar_request = {
            "principal": _uid(request.principal.ref),
            "action": {"type": f"{NAMESPACE}::Action", "id": request.action},
            "resource": _uid(request.resource.ref),
            # As text: cedarpy would write a dict with json.dumps.
            "context": _json({k: _value(v) for k, v in request.context.items()}),
        }
        policy_set = compiled.for_principal(request.principal.ref)
        outcome = _authorize(cedar_request, policy_set, entities, self._schema)
        errors = list(outcome.errors)
        if outcome.decision == "no_decision" or errors:
            # NoDecision: the request does not fit the schema. Errors: Cedar skipped a policy
            # that failed to evaluate, perhaps a forbid. Either way, fail closed.
            return Decision(
                effect=Effect.DENY,
                reasons=tuple(errors) or ("the engine reached no decision",),
                policy_version=version,
            )
        determining = [compiled.infos[p] for p in outcome.reasons if p in compiled.infos]
        ids = tuple(info.id for info in determining)
        if outcome.decision != "allow":
            reasons = tuple(info.reason or f"forbidden by {info.id}" for info in determining)
            return Decision(
                effect=Effect.DENY,
                policy_ids=ids,
                reasons=reasons or ("no policy permits this",),
                policy_version=version,
            )
        obligations = tuple(sorted({o for info in determining for o in info.obligations}))
        if APPROVAL in obligations and not _approved(request.context):
            return Decision(
                effect=Effect.APPROVAL_REQUIRED,
                policy_ids=ids,
                reasons=("a person must approve this exact call",),
                obligations=obligations,
                policy_version=version,
            )
        return Decision(
            effect=Effect.ALLOW, policy_ids=ids, obligations=obligations, policy_version=version
        )


@dataclass(frozen=True, slots=True)
class CedarOutcome:
    """Cedar's own answer, before Tether's rules: ``allow``, ``deny`` or ``no_decision``, the
    positional ids of the determining policies, and the evaluation errors."""

    decision: str
    reasons: tuple[str, ...]
    errors: tuple[str, ...]


_DECISIONS = {
    cedarpy.Decision.Allow: "allow",
    cedarpy.Decision.Deny: "deny",
    cedarpy.Decision.NoDecision: "no_decision",
}


def _authorize(
    request: Mapping[str, Any],
    policy_set: cedarpy.PolicySet,
    entities: cedarpy.Entities,
    schema: cedarpy.Schema | None,
) -> CedarOutcome:
    """The one call into the binding; :meth:`CedarEngine.decide` and the conformance seam
    both go through it."""
    result = cedarpy.is_authorized(dict(request), policy_set, entities, schema)
    return CedarOutcome(
        decision=_DECISIONS[result.decision],
        reasons=tuple(result.diagnostics.reasons),
        errors=tuple(str(e) for e in result.diagnostics.errors),
    )


def conformance_evaluate(
    *,
    policies: str,
    schema: str | None,
    entities: list[dict[str, Any]],
    request: Mapping[str, Any],
) -> tuple[CedarOutcome, Decision]:
    """**Test-only seam** for external Cedar corpora: evaluate arbitrary (policies, schema,
    entities, request) through the same binding call the engine uses, outside Tether's schema
    and ``@id`` rules. Returns Cedar's own outcome and the :class:`Decision` Tether derives
    from it (allow only when Cedar allows with no errors). Not for production use."""
    schema_handle = cedarpy.Schema.from_str(schema) if schema else None
    entities_handle = cedarpy.Entities.from_json_str(json.dumps(entities), schema=schema_handle)
    outcome = _authorize(
        request, cedarpy.PolicySet.from_str(policies), entities_handle, schema_handle
    )
    if outcome.decision == "allow" and not outcome.errors:
        return outcome, Decision(effect=Effect.ALLOW, policy_ids=outcome.reasons)
    reasons = outcome.errors or ("no policy permits this",)
    return outcome, Decision(effect=Effect.DENY, policy_ids=outcome.reasons, reasons=reasons)


def _infos(policies: Mapping[str, Any]) -> dict[str, _PolicyInfo]:
    """What each policy's annotations say, by Cedar's positional id."""
    infos = {}
    for position, policy in policies.items():
        annotations = policy.get("annotations") or {}
        obligation = annotations.get("obligation")
        infos[position] = _PolicyInfo(
            id=annotations["id"],
            effect=policy["effect"],
            obligations=(obligation,) if obligation else (),
            reason=annotations.get("reason"),
        )
    return infos


def _annotation_problems(
    policy_id: str, policy: Mapping[str, Any], annotations: Mapping[str, Any]
) -> list[str]:
    problems = []
    unknown = sorted(set(annotations) - KNOWN_ANNOTATIONS)
    if unknown:
        problems.append(
            f"policy {policy_id!r}: unknown annotation {', '.join(unknown)} "
            f"(known: {', '.join(sorted(KNOWN_ANNOTATIONS))})"
        )
    obligation = annotations.get("obligation")
    if obligation is not None and obligation not in OBLIGATIONS:
        problems.append(f"policy {policy_id!r}: unknown obligation {obligation!r}")
    if obligation is not None and policy.get("effect") != "permit":
        problems.append(f"policy {policy_id!r}: only a permit can carry an obligation")
    return problems


def _single_agent(scope: Mapping[str, Any]) -> str | None:
    """The agent id a principal scope names with ``==``; ``None`` when it may match others."""
    entity = scope.get("entity") if scope.get("op") == "==" else None
    if isinstance(entity, Mapping) and entity.get("type") == f"{NAMESPACE}::Agent":
        agent = entity.get("id")
        return agent if isinstance(agent, str) else None
    return None


def _approved(context: Mapping[str, Any]) -> bool:
    approval = context.get("approval")
    digest = context.get("call_digest")
    if not isinstance(approval, Mapping) or not isinstance(digest, str) or not digest:
        return False
    return approval.get("call_digest") == digest
