"""Reading a route file's document into services: every rule checked at start, every refusal
naming the key path (``services.orders.routes[2].path``) and the rule it broke.

The rules (see :mod:`tether.enforcement.http.routes` for the format): no key the format does
not name; service names as agent names (lowercase letters, digits and ``-``); methods upper
case, or ``*`` alone; path templates made of literal segments (RFC 3986 ``pchar`` without
``%``, never ``.`` or ``..``), ``{name}`` and a final ``{name:path}``, each name once; the
actions and resource types the Cedar schema lets an HTTP request have (``query`` only on a
``Database`` or ``Table``); a resource id whose ``{name}`` places are the template's
parameters; and no two routes of a service that would match the same request equally.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tether.enforcement.http.models import (
    LITERAL,
    PARAM,
    SERVICE_NAME,
    TAIL,
    ResourceTemplate,
    Route,
    Segment,
    Service,
)
from tether.errors import InvalidRouteMap

__all__ = ["load_services"]

MAX_SERVICES = 256
MAX_ROUTES = 1000
MAX_TEMPLATE = 1024
MAX_ID = 512
ACTIONS = frozenset({"read", "write", "delete", "query"})
RESOURCE_TYPES = frozenset({"Api", "Database", "Table", "Secret"})
QUERYABLE = frozenset({"Database", "Table"})
DATA_CLASSES = frozenset({"public", "internal", "confidential", "restricted"})
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,19}")
_PARAM = re.compile(r"\{([a-z_][a-z0-9_]{0,31})(:path)?\}")
_PLACE = re.compile(r"\{([^{}]*)\}")
_LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]+")
_AUDIENCE = re.compile(r"\S{1,512}")
_ROUTE_KEYS = frozenset({"method", "path", "action", "resource"})
_RESOURCE_KEYS = frozenset({"type", "id", "data_class", "parent"})


def _bad(where: str, rule: str) -> InvalidRouteMap:
    return InvalidRouteMap(f"{where}: {rule}", details={"where": where, "rule": rule})


def _table(value: object, where: str, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, "a table")
    unknown = sorted(set(value) - keys)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise _bad(key, f"not a key here (keys: {', '.join(sorted(keys))})")
    return value


def load_services(document: Mapping[str, Any]) -> dict[str, Service]:
    """The services of a route file's parsed document (``InvalidRouteMap`` naming the key path
    and the rule for anything else)."""
    top = _table(document, "", frozenset({"services"}))
    services = top.get("services", {})
    if not isinstance(services, dict):
        raise _bad("services", "a table of services by name")
    if len(services) > MAX_SERVICES:
        raise _bad("services", f"at most {MAX_SERVICES} services")
    found: dict[str, Service] = {}
    for name, body in services.items():
        where = f"services.{name}"
        if not SERVICE_NAME.fullmatch(name) or "--" in name:
            raise _bad(where, "a service name is 2 to 63 lowercase letters, digits and '-'")
        service = _table(body, where, frozenset({"audience", "routes"}))
        audience = service.get("audience")
        if audience is not None and (
            not isinstance(audience, str) or not _AUDIENCE.fullmatch(audience)
        ):
            raise _bad(f"{where}.audience", "a string of 1 to 512 characters without spaces")
        routes = service.get("routes")
        if not isinstance(routes, list) or not 1 <= len(routes) <= MAX_ROUTES:
            raise _bad(f"{where}.routes", f"an array of 1 to {MAX_ROUTES} tables")
        loaded = tuple(_route(r, f"{where}.routes[{i}]") for i, r in enumerate(routes))
        _no_ties(loaded, f"{where}.routes")
        found[name] = Service(name=name, routes=loaded, audience=audience)
    return found


def _route(value: object, where: str) -> Route:
    route = _table(value, where, _ROUTE_KEYS)
    missing = sorted(_ROUTE_KEYS - set(route))
    if missing:
        raise _bad(f"{where}.{missing[0]}", "required")
    template = route["path"]
    segments = _template(template, f"{where}.path")
    action = route["action"]
    if action not in ACTIONS:
        raise _bad(f"{where}.action", f"one of {', '.join(sorted(ACTIONS))}")
    params = frozenset(s.value for s in segments if s.kind != LITERAL)
    resource = _resource(route["resource"], f"{where}.resource", params)
    if action == "query" and resource.type not in QUERYABLE:
        raise _bad(f"{where}.action", "query applies to a Database or a Table only")
    return Route(methods=_methods(route["method"], f"{where}.method"), template=template,
                 segments=segments, action=action, resource=resource)  # fmt: skip


def _methods(value: object, where: str) -> frozenset[str] | None:
    if value == "*":
        return None
    listed = [value] if isinstance(value, str) else value
    if (
        not isinstance(listed, list)
        or not listed
        or not all(isinstance(m, str) and _METHOD.fullmatch(m) for m in listed)
    ):
        raise _bad(where, "an upper-case HTTP method, a list of them, or '*' (any method)")
    return frozenset(listed)


def _template(value: object, where: str) -> tuple[Segment, ...]:
    if not isinstance(value, str) or not value.startswith("/") or len(value) > MAX_TEMPLATE:
        raise _bad(where, f"a path starting with '/', at most {MAX_TEMPLATE} characters")
    parts = value[1:].split("/") if value != "/" else []
    segments: list[Segment] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        param = _PARAM.fullmatch(part)
        if param and param.group(2) and not last:
            raise _bad(where, "{name:path} takes the rest of the path: it comes last")
        if param:
            kind = TAIL if param.group(2) else PARAM
            if any(s.value == param.group(1) and s.kind != LITERAL for s in segments):
                raise _bad(where, f"the parameter {param.group(1)!r} is named twice")
            segments.append(Segment(kind, param.group(1)))
        elif (part == "" and last and i > 0) or (
            _LITERAL.fullmatch(part) and part not in (".", "..")
        ):
            segments.append(Segment(LITERAL, part))
        else:
            raise _bad(
                where,
                "segments are literals (letters, digits, -._~!$&'()*+,;=:@; not '.' or '..'), "
                "{name} or a final {name:path}; no empty segment but a trailing '/'",
            )
    return tuple(segments)


def _resource(value: object, where: str, params: frozenset[str]) -> ResourceTemplate:
    resource = _table(value, where, _RESOURCE_KEYS)
    kind, ident = resource.get("type"), resource.get("id")
    if kind not in RESOURCE_TYPES:
        raise _bad(f"{where}.type", f"one of {', '.join(sorted(RESOURCE_TYPES))}")
    _id_template(ident, f"{where}.id", params)
    data_class = resource.get("data_class", "internal")
    if data_class not in DATA_CLASSES:
        raise _bad(f"{where}.data_class", f"one of {', '.join(sorted(DATA_CLASSES))}")
    parent = resource.get("parent")
    if parent is not None:
        if kind != "Table":
            raise _bad(f"{where}.parent", "only a Table has a parent (its Database)")
        _id_template(parent, f"{where}.parent", params)
    assert isinstance(ident, str)  # narrowed by _id_template
    return ResourceTemplate(type=str(kind), id=ident, data_class=str(data_class), parent=parent)


def _id_template(value: object, where: str, params: frozenset[str]) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID or not value.isprintable():
        raise _bad(where, f"a string of 1 to {MAX_ID} printable characters")
    for place in _PLACE.findall(value):
        if place not in params:
            raise _bad(where, f"{{{place}}} is not a parameter of the route's path")
    if "{" in _PLACE.sub("", value) or "}" in _PLACE.sub("", value):
        raise _bad(where, "braces only around a parameter's name: {name}")


def _no_ties(routes: tuple[Route, ...], where: str) -> None:
    """Two routes that match the same request equally would make the winner an accident of
    order: refused."""
    seen: dict[tuple[tuple[int, str], ...], list[tuple[int, Route]]] = {}
    for i, route in enumerate(routes):
        shape = tuple((s.kind, s.value if s.kind == LITERAL else "") for s in route.segments)
        for j, other in seen.get(shape, []):
            same_any = route.methods is None and other.methods is None
            overlap = (
                route.methods is not None
                and other.methods is not None
                and bool(route.methods & other.methods)
            )
            if same_any or overlap:
                raise _bad(f"{where}[{i}]", f"matches the same requests as {where}[{j}]")
        seen.setdefault(shape, []).append((i, route))
