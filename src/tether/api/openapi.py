"""``/openapi.json`` that tells the truth about errors: the answers of :mod:`tether.api.errors`.

FastAPI declares a 422 on every operation with inputs; Tether never sends one (a request that
fails validation is ``400 invalid_input``). This module drops the 422 and declares, on each
operation, the error answers it can give, with a shared schema for the body: ``TetherError``
(``{"error": {"code", "message", "details"}}``), or ``OAuthError`` (RFC 6749 §5.2,
``{"error", "error_description"}``) under ``/oauth2/``. The set is derived from the operation:

* every operation: ``400`` (invalid input) and ``503`` (store or audit log unavailable,
  overloaded: ``Retry-After``);
* one that carries a body (``POST``/``PUT``/``PATCH``): ``413`` (the body cap);
* one that needs a caller (all but the open ones: health, metrics, discovery, the trust
  bundle, the sign-in pages): ``401`` and ``403``;
* one with a path parameter: ``404`` (the object it names);
* a management operation (``/v1/``) that writes (``POST``/``PUT``/``PATCH``): ``409``
  (exists, state transition, version);
* :data:`EXTRA` adds the statuses a route gives beyond that rule.

A route that declares error statuses itself (``responses=``) keeps its own declarations and
gets only the app-wide ``413``/``503``.

Example::

    app = FastAPI()

    @app.delete("/v1/things/{name}")
    def remove(name: str) -> None: ...

    install_openapi(app)
    responses = app.openapi()["paths"]["/v1/things/{name}"]["delete"]["responses"]
    assert "422" not in responses and {"400", "404", "503"} <= set(responses)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI

__all__ = ["EXTRA", "OAUTH_ERROR", "TETHER_ERROR", "declare_errors", "install_openapi"]

#: The component names of the two error bodies.
TETHER_ERROR, OAUTH_ERROR = "TetherError", "OAuthError"

_SCHEMAS: dict[str, dict[str, Any]] = {
    TETHER_ERROR: {
        "title": TETHER_ERROR,
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "description": "Stable machine code"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    },
    OAUTH_ERROR: {
        "title": OAUTH_ERROR,
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "RFC 6749 §5.2 error code"},
            "error_description": {"type": "string"},
        },
    },
}
_DESCRIPTIONS = {
    303: "On to the next step of signing in, or back to the client",
    400: "Invalid input: a parameter or the body broke a rule (invalid_input)",
    401: "No valid credentials (unauthenticated, token_invalid, invalid_client)",
    403: "The caller may not do this (forbidden, denied)",
    404: "No such object (not_found)",
    409: "Conflicts with the current state (exists, invalid_state_transition, version)",
    413: "The request body is over the cap (body_too_large)",
    429: "Too many failed sign-ins: try again later",
    503: "Store or audit log unavailable, or overloaded (Retry-After)",
}
#: Paths anyone may reach without credentials (on the sign-in pages, a person signs in).
_OPEN = ("/healthz", "/readyz", "/metrics", "/.well-known/", "/v1/svid/bundle", "/oauth2/authorize")
_BODY_METHODS = frozenset({"post", "put", "patch"})
#: Statuses a route gives beyond the derived rule, by ``"METHOD /path"``: the sign-in pages
#: (a redirect onward, a session that ended, no external provider, a locked-out name) and a
#: query parameter naming an object.
EXTRA: Mapping[str, frozenset[int]] = {
    "GET /oauth2/authorize": frozenset({303}),
    "POST /oauth2/authorize": frozenset({303}),
    "POST /oauth2/authorize/login": frozenset({303, 401, 429}),
    "GET /oauth2/authorize/federated": frozenset({303, 404}),
    "GET /oauth2/authorize/federated/callback": frozenset({303, 401, 404}),
    "POST /oauth2/authorize/consent": frozenset({303, 401}),
    "GET /v1/policies/diff": frozenset({404}),
}
_DROPPED = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json``) declare Tether's error answers."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def declare_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` without FastAPI's 422 and with each operation's error answers (in place)."""
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in sorted(_statuses(path, method, responses)):
                responses.setdefault(str(status), _answer(path, status))
    schemas: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_SCHEMAS)
    text = json.dumps(spec["paths"])
    for name in _DROPPED:
        if f'"#/components/schemas/{name}"' not in text:
            schemas.pop(name, None)
    return spec


def _statuses(path: str, method: str, declared: Mapping[str, Any]) -> set[int]:
    statuses = {503} | EXTRA.get(f"{method.upper()} {path}", frozenset())
    if method in _BODY_METHODS:
        statuses.add(413)
    if any(code.startswith("4") for code in declared):
        return statuses  # the route declared its errors itself
    statuses.add(400)
    if not path.startswith(_OPEN):
        statuses |= {401, 403}
    if "{" in path:
        statuses.add(404)
    if path.startswith("/v1/") and method in _BODY_METHODS:
        statuses.add(409)
    return statuses


def _answer(path: str, status: int) -> dict[str, Any]:
    if status < 400:
        return {"description": _DESCRIPTIONS[status]}
    name = OAUTH_ERROR if path.startswith("/oauth2/") else TETHER_ERROR
    content: dict[str, Any] = {"application/json": {"schema": _ref(name)}}
    if path.startswith("/oauth2/authorize"):
        # The sign-in pages show a person an error page.
        content["text/html"] = {"schema": {"type": "string"}}
    return {"description": _DESCRIPTIONS[status], "content": content}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
