"""Route maps: which Tether action on which resource an HTTP request behind a proxy is.

Envoy's ext_authz filter and nginx ``auth_request`` ask Tether about plain HTTP requests
(``/v1/ext_authz/<service>/<path>``); the route map turns one into a checkpoint question. It
holds **services** — one per protected API — each with the **audience** its agents' tokens must
carry (Tether's issuer unless set) and its **routes**: an HTTP method (or ``*``) and a path
template, mapped to an action and a resource::

    [services.orders]
    audience = "https://orders.acme.org"     # optional; on TETHER_ALLOWED_AUDIENCES

    [[services.orders.routes]]
    method = "GET"                           # one method, a list, or "*"
    path = "/orders/{id}"                    # {name}: one segment; {name:path}: the rest
    action = "read"                          # read | write | delete | query
    resource = { type = "Table", id = "orders/{id}", data_class = "confidential" }

Matching is exact: a literal segment equals the decoded segment (case-sensitive), ``{name}``
takes one non-empty segment, ``{name:path}`` (last only) one or more. When several routes
match, the most specific wins, segment by segment from the left (literal before ``{name}``
before ``{name:path}``), then a named method before ``*``; two routes that would tie are
refused when the file is loaded. No route: the caller's request is refused. Paths are read by
:mod:`tether.enforcement.http.paths` (decoded once, tricks refused).

The path's parameters, the method, the decoded path and the raw query become the check's
arguments, so an approval binds to exactly this request.

Example::

    >>> routes = RouteMap.from_toml('''
    ... [[services.orders.routes]]
    ... method = "GET"
    ... path = "/orders/{id}"
    ... action = "read"
    ... resource = { type = "Table", id = "orders/{id}" }
    ... ''')
    >>> found = routes.match("orders", "GET", parse_target("/orders/42?full=1"))
    >>> found.action, found.resource.ref
    ('read', EntityRef(type='Table', id='orders/42'))
    >>> found.arguments["params"]
    {'id': '42'}
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tether.enforcement.http._load import load_services
from tether.enforcement.http.models import Match, Route, Service
from tether.enforcement.http.paths import Target, parse_target
from tether.errors import InvalidRouteMap

__all__ = ["MAX_FILE_BYTES", "RouteMap", "parse_target"]

#: The most bytes a route file may hold.
MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RouteMap:
    services: Mapping[str, Service]

    @classmethod
    def empty(cls) -> RouteMap:
        return cls(services={})

    @classmethod
    def from_toml(cls, text: str, *, source: str = "routes") -> RouteMap:
        """The route map a TOML document describes, or ``InvalidRouteMap`` naming the place
        (``source`` and the key path) and the rule broken."""
        if len(text.encode()) > MAX_FILE_BYTES:
            raise InvalidRouteMap(f"{source}: larger than {MAX_FILE_BYTES} bytes")
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidRouteMap(
                f"{source}: not TOML: {exc}", details={"where": source, "rule": "TOML 1.0"}
            ) from None
        try:
            return cls(services=load_services(document))
        except InvalidRouteMap as exc:  # the same error, naming the file too
            raise InvalidRouteMap(f"{source}: {exc.message}", details=exc.details) from None

    @classmethod
    def from_file(cls, path: Path) -> RouteMap:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise InvalidRouteMap(
                f"cannot read the route file {path.name!r}: {exc.strerror}",
                details={"where": str(path), "rule": "a readable file"},
            ) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRouteMap(f"{path.name}: not UTF-8 text") from None
        return cls.from_toml(text, source=path.name)

    def service(self, name: str) -> Service | None:
        return self.services.get(name)

    def match(self, service: str, method: str, target: Target) -> Match | None:
        """The most specific route of ``service`` that takes ``method`` on ``target``."""
        found = self.services.get(service)
        if found is None:
            return None
        best: tuple[Route, dict[str, str]] | None = None
        for route in found.routes:
            params = route.bind(method, target)
            if params is not None and (best is None or route.rank < best[0].rank):
                best = (route, params)
        if best is None:
            return None
        route, params = best
        arguments = {"method": method, "path": target.path, "params": params,
                     "query": target.query}  # fmt: skip
        return Match(route=route, action=route.action, resource=route.resource.entity(params),
                     params=params, arguments=arguments)  # fmt: skip
