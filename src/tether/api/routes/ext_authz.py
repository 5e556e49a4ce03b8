"""``/v1/ext_authz/<service>/<path>``: Envoy's HTTP ext_authz service, and nginx ``auth_request``.

A proxy in front of an API asks, for each request, whether it may pass: Envoy's
``envoy.filters.http.ext_authz`` (``http_service`` with ``path_prefix:
/v1/ext_authz/<service>``) sends the request's method, its path after the prefix and its
headers; nginx sends a subrequest (``proxy_pass
http://tether/v1/ext_authz/<service>$request_uri``). The service's route map
(:mod:`tether.enforcement.http.routes`, ``TETHER_EXT_AUTHZ_ROUTES``) turns the method and path
into an action and a resource, and the checkpoint decides with the agent's token (the
``Authorization`` header), for the service's audience, and records the decision.

What is asked:

* **the method** — ``X-Original-Method`` when present, else the method of the request itself.
  An nginx auth subrequest is always a ``GET``, so an nginx config must set it
  (``proxy_set_header X-Original-Method $request_method``, which also overwrites any the
  client sent); Envoy sends the original method and forwards no ``X-Original-*`` header a
  client sent unless its ``allowed_headers`` names it (it must not);
* **the path and query** — what follows ``/v1/ext_authz/<service>`` (it starts with ``/``).
  Only when nothing follows is ``X-Original-URI`` read instead; when both are given they must
  agree, else 400 (a client's forged ``X-Original-URI`` passed through by a proxy cannot
  change what is decided).

The answers:

* **allow** — 200, no body, with ``x-tether-decision-id``, ``x-tether-agent`` (the agent's
  name), ``x-tether-instance`` (the calling instance's SPIFFE ID) and ``x-tether-user`` (the
  user a delegated token acts for; empty when the agent acts for itself). The proxy hands them
  upstream (Envoy ``allowed_upstream_headers``, nginx ``auth_request_set``), replacing any the
  client sent — the value is set even when empty for that reason;
* **no token** — 401 with ``WWW-Authenticate: Bearer``, not recorded; **a token that does not
  verify** — 401 (``error="invalid_token"``), recorded;
* **deny**, **approval required**, **no such service or route** — 403 with a JSON body
  ``{"decision_id", "effect", "reason"}`` (``call_digest`` and ``obligations`` too when an
  approval is required) and ``x-tether-reason`` (``denied``, ``approval_required``,
  ``no_route``); an authenticated caller's request for a route that does not exist is recorded
  as the enforcement point's refusal;
* **malformed** — 400 ``malformed_header`` (two ``Authorization`` headers, a scheme other
  than Bearer, an oversized or ill-formed token or header) or ``unsafe_path`` (see
  :mod:`tether.enforcement.http.paths`);
* **the decision could not be recorded** — 503 (``audit_unavailable``): never an allow.

Any answer but a 2xx is a denial for both proxies (configured with ``failure_mode_allow:
false`` for Envoy; nginx denies on anything but 2xx, 401 and 403 with a 500).

The endpoint is answered by :mod:`tether.api.fastpath` (any method, by prefix); the routes
below only describe it in the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tether.api.services import Services
from tether.checkpoint import CheckRequest, Verdict
from tether.config import Settings
from tether.enforcement.http.models import SERVICE_NAME
from tether.enforcement.http.paths import MAX_TARGET, Target, parse_target
from tether.enforcement.http.routes import RouteMap
from tether.errors import InvalidRouteMap, MalformedHeader, UnsafePath
from tether.policy.models import Effect, Entity, EntityRef

__all__ = ["PREFIX", "ext_authz", "load_route_map", "router"]

router = APIRouter(tags=["decisions"])

PREFIX = "/v1/ext_authz/"
#: The longest ``Authorization`` header read (a JWT-SVID is well under 2 KiB).
MAX_AUTHORIZATION = 8192
#: RFC 6750 §2.1 ``b64token``.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,19}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ONCE = {
    b"authorization": "Authorization",
    b"x-original-method": "X-Original-Method",
    b"x-original-uri": "X-Original-URI",
}
_CORRELATION = frozenset({b"x-request-id", b"traceparent"})


def load_route_map(settings: Settings) -> RouteMap:
    """The route map ``TETHER_EXT_AUTHZ_ROUTES`` names (none: an empty one), checked at start:
    a service's audience must be one agents can get a token for (Tether's issuer or one of
    ``TETHER_ALLOWED_AUDIENCES``), or no request to it could ever be allowed."""
    if settings.ext_authz_routes is None:
        return RouteMap.empty()
    routes = RouteMap.from_file(settings.ext_authz_routes)
    for name, service in routes.services.items():
        if service.audience is not None and service.audience not in settings.audiences:
            where = f"services.{name}.audience"
            rule = "Tether's issuer or one of TETHER_ALLOWED_AUDIENCES"
            raise InvalidRouteMap(
                f"{where}: {service.audience!r} is not an audience agents can get a token for: "
                f"add it to TETHER_ALLOWED_AUDIENCES",
                details={"where": where, "rule": rule},
            )
    return routes


@dataclass(frozen=True)
class _Presented:
    """What the proxy's request says, read once from its headers."""

    token: str | None
    method: str | None
    uri: str | None
    correlation_id: str | None


def _presented(headers: Iterable[tuple[bytes, bytes]]) -> _Presented:
    once: dict[bytes, bytes] = {}
    correlation: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in _ONCE:
            if name in once:
                raise MalformedHeader(
                    f"{_ONCE[name]} is sent more than once", details={"header": _ONCE[name]}
                )
            once[name] = value
        elif name in _CORRELATION:
            correlation.setdefault(name, value)
    method = once.get(b"x-original-method")
    if method is not None and not _METHOD.fullmatch(method.decode("latin-1")):
        raise MalformedHeader(
            "X-Original-Method is an upper-case HTTP method",
            details={"header": "X-Original-Method"},
        )
    uri = once.get(b"x-original-uri")
    if uri is not None and (len(uri) > MAX_TARGET or not uri.isascii()):
        raise MalformedHeader(
            f"X-Original-URI is an ASCII request target of at most {MAX_TARGET} characters",
            details={"header": "X-Original-URI"},
        )
    return _Presented(
        token=_token(once.get(b"authorization")),
        method=method.decode("ascii") if method is not None else None,
        uri=uri.decode("ascii") if uri is not None else None,
        correlation_id=_correlation(correlation),
    )


def _token(value: bytes | None) -> str | None:
    """The bearer token of an ``Authorization`` header (RFC 6750 §2.1), None without one."""
    if value is None:
        return None
    if len(value) > MAX_AUTHORIZATION:
        raise MalformedHeader(
            f"Authorization is longer than {MAX_AUTHORIZATION} bytes",
            details={"header": "Authorization"},
        )
    scheme, _, token = value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer":
        raise MalformedHeader(
            "Authorization: Bearer <token> is the only scheme taken here",
            details={"header": "Authorization"},
        )
    if not _B64TOKEN.fullmatch(token):
        raise MalformedHeader(
            "the bearer token holds characters a token may not hold (RFC 6750 §2.1)",
            details={"header": "Authorization"},
        )
    return token


def _correlation(found: dict[bytes, bytes]) -> str | None:
    """``x-request-id`` if well formed, else the trace id of a W3C ``traceparent``; an
    ill-formed one is not an error (it decides nothing), just not used."""
    request_id = found.get(b"x-request-id", b"").decode("latin-1")
    if _REQUEST_ID.fullmatch(request_id):
        return request_id
    trace = _TRACEPARENT.fullmatch(found.get(b"traceparent", b"").decode("latin-1"))
    return trace.group(1) if trace else None


def _asked(scope: Mapping[str, Any], uri: str | None) -> tuple[str, str]:
    """The service named and the request target asked about (see the module's docstring)."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    # ASGI's raw_path excludes the query; some servers' (and test transports') include it.
    raw_path = raw_path.partition(b"?")[0]
    if not raw_path.isascii() or not raw_path.startswith(PREFIX.encode()):
        raise UnsafePath("the path holds characters a URL may not hold raw")
    service, slash, tail = raw_path.decode("ascii")[len(PREFIX) :].partition("/")
    if not SERVICE_NAME.fullmatch(service) or "--" in service:
        raise UnsafePath("what follows /v1/ext_authz/ is a service name")
    if not slash:
        if uri is None:
            raise MalformedHeader(
                "name the request: /v1/ext_authz/<service><path>, or X-Original-URI",
                details={"header": "X-Original-URI"},
            )
        return service, uri
    query = scope.get("query_string", b"").decode("latin-1")
    target = f"/{tail}?{query}" if query else f"/{tail}"
    if uri is not None and uri.removesuffix("?") != target:
        raise MalformedHeader(
            "X-Original-URI differs from the path asked about",
            details={"header": "X-Original-URI"},
        )
    return service, target


def _check_request(
    routes: RouteMap, service: str, method: str, target: Target, presented: _Presented
) -> tuple[CheckRequest, bool]:
    """The checkpoint's question, and whether it is a refusal (no such service or route)."""
    assert presented.token is not None
    known = routes.service(service)
    match = routes.match(service, method, target)
    common: dict[str, Any] = {
        "token": presented.token,
        "enforcement_point": "ext_authz",
        "audience": known.audience if known is not None else None,
        "correlation_id": presented.correlation_id,
    }
    if match is not None:
        asked = CheckRequest(action=match.action, resource=match.resource,
                             arguments=match.arguments, **common)  # fmt: skip
        return asked, False
    shown = target.path if len(target.path) <= 200 else target.path[:200] + "…"
    why = (
        f"no route of service {service!r} takes {method} {shown}"
        if known is not None
        else f"no service named {service!r}"
    )
    resource = Entity(ref=EntityRef("Api", service), attrs={"name": service,
                      "data_class": "internal"})  # fmt: skip
    arguments = {"method": method, "path": target.path, "query": target.query}
    asked = CheckRequest(action="http_request", resource=resource, arguments=arguments,
                         refusal=why, **common)  # fmt: skip
    return asked, True


async def ext_authz(request: Request) -> Response:
    """One ext_authz / auth_request check (any method; see the module's docstring)."""
    scope = request.scope
    presented = _presented(scope["headers"])
    service, asked = _asked(scope, presented.uri)
    method = presented.method or scope["method"]
    target = parse_target(asked)
    if presented.token is None:
        return _refused(401, "unauthenticated", None, {"WWW-Authenticate": 'Bearer realm="tether"'})
    routes: RouteMap = request.app.state.ext_authz_routes
    services: Services = request.app.state.services
    check, unrouted = _check_request(routes, service, method, target, presented)
    verdict = await services.checkpoint.check(check)
    return _answer(verdict, unrouted=unrouted)


def _answer(verdict: Verdict, *, unrouted: bool) -> Response:
    decision = verdict.decision
    if verdict.audit_failed:
        return _refused(503, "audit_unavailable", verdict)
    if verdict.caller is None:
        challenge = 'Bearer realm="tether", error="invalid_token"'
        return _refused(401, "unauthenticated", verdict, {"WWW-Authenticate": challenge})
    if verdict.allowed:
        delegation = verdict.delegation
        headers = {
            "x-tether-decision-id": verdict.decision_id,
            "x-tether-agent": verdict.caller.agent.name,
            "x-tether-instance": verdict.caller.spiffe_id,
            "x-tether-user": delegation.user if delegation is not None else "",
        }
        return Response(status_code=200, headers=headers)
    if decision.effect is Effect.APPROVAL_REQUIRED:
        extra = {"call_digest": verdict.call_digest, "obligations": list(decision.obligations)}
        return _refused(403, "approval_required", verdict, body=extra)
    return _refused(403, "no_route" if unrouted else "denied", verdict)


def _refused(
    status: int,
    reason: str,
    verdict: Verdict | None,
    headers: dict[str, str] | None = None,
    *,
    body: dict[str, Any] | None = None,
) -> Response:
    content: dict[str, Any] = {"reason": reason}
    answer = {"x-tether-reason": reason, **(headers or {})}
    if verdict is not None:
        content |= {"decision_id": verdict.decision_id, "effect": str(verdict.decision.effect)}
        answer["x-tether-decision-id"] = verdict.decision_id
    return JSONResponse(content | (body or {}), status_code=status, headers=answer)


_DOC_PARAMETERS: list[dict[str, Any]] = [
    {"name": "service", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "The service of the route map (TETHER_EXT_AUTHZ_ROUTES)"},
    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "The original request's path (and query)"},
    {"name": "Authorization", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "Bearer <the agent's JWT-SVID or delegated token>"},
    {"name": "X-Original-Method", "in": "header", "required": False,
     "schema": {"type": "string"}, "description": "The original method (nginx sets it)"},
    {"name": "X-Original-URI", "in": "header", "required": False,
     "schema": {"type": "string"}, "description": "The original target, if not in the path"},
]  # fmt: skip
_DOC_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Allowed; x-tether-decision-id, -agent, -instance, -user for upstream"},
    400: {"description": "malformed_header or unsafe_path"},
    401: {"description": "No valid token (WWW-Authenticate: Bearer)"},
    403: {"description": "Denied, approval required, or no such route (x-tether-reason)"},
    503: {"description": "The decision could not be recorded: denied"},
}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
for _method in METHODS:
    router.add_api_route(
        f"{PREFIX}{{service}}/{{path:path}}",
        ext_authz,
        methods=[_method],
        operation_id=f"ext_authz_{_method.lower()}",
        summary="May this HTTP request pass? (Envoy ext_authz, nginx auth_request)",
        responses=_DOC_RESPONSES,
        openapi_extra={"parameters": _DOC_PARAMETERS},
    )
