"""OpenID AuthZEN Authorization API 1.0: ``POST /access/v1/evaluation`` and ``/evaluations``.

Every evaluation goes through the checkpoint, like every other enforcement point. Who asks:

* an **agent** for itself: ``Authorization: Bearer <its JWT-SVID>`` (the subject may be left
  out; if given, it must name the same agent or instance);
* an **enforcement point** for an agent: an operator token with ``decision.evaluate`` as the
  bearer, and the agent's JWT-SVID in ``subject.properties.token``.

The subject's identity is never taken on the caller's word: the token is verified. The action's
``properties.arguments`` are the call's arguments (the approval digest covers them); an answer
``approval_required`` names the call's digest, which a CIBA request binds its approval to, and
``context.approval_token`` carries the approval token it gave (single use). With
``context.refusal`` (a reason), the caller refuses the call itself — the SQL guard, for a
statement it will not run: the agent is authenticated and the refusal recorded as a deny, no
policy asked (a caller can only ever make its own answer a deny). With
``context.approval_request`` (``{"binding_message"?, "login_hint"?}``, one evaluation only), an
``approval_required`` answer also starts that request for the agent — for the user its
delegated token names, or for its own call one of its owners (``login_hint``) — and says
``approval_pending`` (``auth_req_id``, ``expires_in``, ``interval``): the agent polls the token
endpoint for it with its own client authentication. ``explain``
(``?explain=true``) adds the determining policies and reasons to each answer's ``context``.
An evaluation whose record cannot be written is refused with HTTP 503.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from tether.api.deps import ServicesDep, bearer_token, client_certificate
from tether.api.errors import invalid_input
from tether.api.services import Services
from tether.checkpoint import CheckRequest, Verdict
from tether.errors import InvalidInput, UnsupportedMediaType
from tether.identity.access import Permission, require
from tether.identity.operators import TOKEN_PREFIX
from tether.policy.models import Effect, parse_entity

router = APIRouter(tags=["decisions"])

MAX_EVALUATIONS = 100


class _Open(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubjectIn(_Open):
    type: str = Field(max_length=64)
    id: str = Field(max_length=512)
    properties: dict[str, Any] = Field(default_factory=dict)


class ActionIn(_Open):
    name: str = Field(max_length=64)
    properties: dict[str, Any] = Field(default_factory=dict)


class ResourceIn(_Open):
    type: str = Field(max_length=64)
    id: str = Field(max_length=512)
    properties: dict[str, Any] = Field(default_factory=dict)


class EvaluationIn(_Open):
    subject: SubjectIn | None = None
    action: ActionIn
    resource: ResourceIn
    context: dict[str, Any] = Field(default_factory=dict)


class PartialEvaluation(_Open):
    subject: SubjectIn | None = None
    action: ActionIn | None = None
    resource: ResourceIn | None = None
    context: dict[str, Any] | None = None


class Options(BaseModel):
    model_config = ConfigDict(extra="allow")
    evaluations_semantic: Literal["execute_all", "deny_on_first_deny", "permit_on_first_permit"] = (
        "execute_all"
    )


class EvaluationsIn(_Open):
    subject: SubjectIn | None = None
    action: ActionIn | None = None
    resource: ResourceIn | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    evaluations: list[PartialEvaluation] = Field(default_factory=list, max_length=MAX_EVALUATIONS)
    options: Options = Field(default_factory=Options)


@router.get("/.well-known/authzen-configuration", summary="AuthZEN PDP metadata")
async def configuration(services: ServicesDep) -> dict[str, str]:
    base = services.settings.issuer_url
    return {
        "policy_decision_point": base,
        "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{base}/access/v1/evaluations",
    }


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` describing ``model`` as the request body, self-contained: pydantic's
    ``$defs`` references would not resolve inside the OpenAPI document, so they are inlined
    (the AuthZEN models do not nest recursively)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    content = {"application/json": {"schema": inline(schema)}}
    return {
        "requestBody": {"required": True, "content": content},
        "parameters": [
            {
                "name": "explain",
                "in": "query",
                "required": False,
                "description": "Add determining policies and reasons",
                "schema": {"type": "boolean", "default": False},
            }
        ],
    }


_FLAG = TypeAdapter(bool)


def _explain(request: Request) -> bool:
    """``?explain=`` as a boolean, read by pydantic as FastAPI reads a query flag."""
    value = request.query_params.get("explain")
    if value is None:
        return False
    try:
        return _FLAG.validate_python(value)
    except ValidationError:
        raise InvalidInput(
            "explain: a boolean (true or false)", details={"field": "explain"}
        ) from None


_Body = TypeVar("_Body", bound=BaseModel)


async def _parse(request: Request, model: type[_Body]) -> _Body:
    """The body, validated by ``model``. The decision endpoints parse their own bodies and
    query and take no injected dependencies, so that :mod:`tether.api.fastpath` can call
    them without FastAPI's per-request machinery; the schema is still published through
    ``openapi_extra``."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media.lower() != "application/json" and not media.lower().endswith("+json"):
        raise UnsupportedMediaType(
            "the body is JSON: send Content-Type: application/json",
            details={"field": "content-type"},
        )
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise invalid_input(exc.errors()) from None


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.post(
    "/access/v1/evaluation",
    summary="One decision (AuthZEN)",
    openapi_extra=_body_schema(EvaluationIn),
)
async def evaluation(request: Request) -> JSONResponse:
    body = await _parse(request, EvaluationIn)
    explain = _explain(request)
    services = _services(request)
    verdict = await _evaluate(services, request, body, await _asker(services, request))
    answer = _answer(verdict, explain=explain)
    answer["context"] |= await _approval_pending(services, body, verdict)
    return JSONResponse(answer, status_code=503 if verdict.audit_failed else 200)


#: Context fields that ask something of this endpoint, not facts for policies.
_NOT_CONTEXT = frozenset({"entities", "approval_token", "approval_request", "refusal"})
#: The longest ``context.refusal`` (why the enforcement point refuses the call itself).
MAX_REFUSAL = 500


async def _approval_pending(
    services: Services, body: EvaluationIn, verdict: Verdict
) -> dict[str, Any]:
    """``approval_request`` asked and approval required: start it for the agent."""
    wanted = body.context.get("approval_request")
    needed = verdict.decision.effect is Effect.APPROVAL_REQUIRED and not verdict.audit_failed
    if wanted is None or not needed or verdict.caller is None:
        return {}
    if not isinstance(wanted, dict) or not set(wanted) <= {"binding_message", "login_hint"}:
        raise InvalidInput('context.approval_request is {"binding_message"?, "login_hint"?}')
    resource = parse_entity(body.resource.model_dump(), what="resource")
    target = {"type": resource.ref.type, "id": resource.ref.id}
    arguments = body.action.properties.get("arguments")
    call = {"action": body.action.name, "resource": target, "arguments": arguments}
    delegation = verdict.delegation
    started = await services.delegation.approvals.start_for_call(
        caller=verdict.caller, call=call, call_digest=verdict.call_digest,
        user=delegation.user if delegation else str(wanted.get("login_hint") or ""),
        grant_id=delegation.grant.id if delegation else None,
        binding_message=wanted.get("binding_message"),
    )  # fmt: skip
    pending = {"auth_req_id": started.auth_req_id, "expires_in": started.expires_in,
               "interval": started.interval}  # fmt: skip
    return {"approval_pending": pending}


@router.post(
    "/access/v1/evaluations",
    summary="Several decisions, one request (AuthZEN)",
    openapi_extra=_body_schema(EvaluationsIn),
)
async def evaluations(request: Request) -> JSONResponse:
    body = await _parse(request, EvaluationsIn)
    explain = _explain(request)
    services = _services(request)
    items = body.evaluations or [PartialEvaluation()]
    semantic = body.options.evaluations_semantic
    answers: list[dict[str, Any]] = []
    failed = False
    asker = await _asker(services, request)  # once per request, not per evaluation
    for item in items:
        merged = _merge(body, item)
        verdict = await _evaluate(services, request, merged, asker)
        failed = failed or verdict.audit_failed
        answers.append(_answer(verdict, explain=explain))
        if (semantic == "deny_on_first_deny" and not verdict.allowed) or (
            semantic == "permit_on_first_permit" and verdict.allowed
        ):
            break
    return JSONResponse({"evaluations": answers}, status_code=503 if failed else 200)


def _merge(batch: EvaluationsIn, item: PartialEvaluation) -> EvaluationIn:
    action = item.action or batch.action
    resource = item.resource or batch.resource
    if action is None or resource is None:
        raise InvalidInput(
            "each evaluation needs an action and a resource (its own or the batch's)"
        )
    context = batch.context | (item.context or {})
    return EvaluationIn(
        subject=item.subject or batch.subject, action=action, resource=resource, context=context
    )


@dataclass(frozen=True)
class _Asker:
    """Who sent the HTTP request: the agent itself (its token and certificate), or an
    enforcement point allowed to ask on agents' behalf (``token`` None)."""

    token: str | None
    certificate: str | None


async def _asker(services: Services, request: Request) -> _Asker:
    presented = bearer_token(request)
    if presented.startswith(TOKEN_PREFIX):
        actor = await services.operators.authenticate(presented)
        require(actor, Permission.DECISION_EVALUATE)
        return _Asker(token=None, certificate=None)
    cert = client_certificate(request, services)
    return _Asker(token=presented, certificate=cert.thumbprint if cert else None)


async def _evaluate(
    services: Services, request: Request, body: EvaluationIn, asker: _Asker
) -> Verdict:
    subject = body.subject
    token = asker.token
    if token is None:
        # An enforcement point hands over the agent's own token with the subject.
        token = subject.properties.get("token") if subject else None
        if not isinstance(token, str) or not token:
            raise InvalidInput("subject.properties.token must carry the agent's JWT-SVID")
    if subject is not None and subject.type != "agent":
        raise InvalidInput("the subject of a Tether decision is an agent (type 'agent')")
    arguments = body.action.properties.get("arguments")
    resource = parse_entity(body.resource.model_dump(), what="resource")
    raw_entities = body.context.get("entities", [])
    if not isinstance(raw_entities, list) or not all(isinstance(e, dict) for e in raw_entities):
        raise InvalidInput("context.entities is a list of {type, id, properties?}")
    entities = tuple(parse_entity(e, what="context.entities[]") for e in raw_entities)
    context = {k: v for k, v in body.context.items() if k not in _NOT_CONTEXT}
    approval = body.context.get("approval_token")
    if approval is not None and not isinstance(approval, str):
        raise InvalidInput("context.approval_token is the approval token (a string)")
    refusal = body.context.get("refusal")
    if refusal is not None and (
        not isinstance(refusal, str) or not 0 < len(refusal) <= MAX_REFUSAL
    ):
        raise InvalidInput(
            f"context.refusal is why the call is refused (1 to {MAX_REFUSAL} characters)"
        )
    return await services.checkpoint.check(
        CheckRequest(
            token=token,
            action=body.action.name,
            resource=resource,
            enforcement_point="authzen",
            certificate_thumbprint=asker.certificate,
            arguments=arguments,
            entities=entities,
            context=context,
            correlation_id=request.headers.get("x-request-id"),
            subject=subject.id if subject else None,
            approval_token=approval,
            refusal=refusal,
        )
    )


def _answer(verdict: Verdict, *, explain: bool) -> dict[str, Any]:
    decision = verdict.decision
    context: dict[str, Any] = {"id": verdict.decision_id, "effect": str(decision.effect)}
    if decision.effect is Effect.APPROVAL_REQUIRED:
        context["call_digest"] = verdict.call_digest
        context["obligations"] = list(decision.obligations)
    if verdict.audit_failed:
        context["reason"] = "audit_unavailable"
    if explain:
        context["policy_ids"] = list(decision.policy_ids)
        context["reasons"] = list(decision.reasons)
        context["policy_version"] = decision.policy_version
    return {"decision": verdict.allowed, "context": context}


#: The decision endpoints by path, for :mod:`tether.api.fastpath` (POST only).
HOT_PATHS = {
    "/access/v1/evaluation": evaluation,
    "/access/v1/evaluations": evaluations,
}
