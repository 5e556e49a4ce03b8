"""Hostile input for the HTTP API: schemathesis cases from ``/openapi.json``, sent through an
httpx client with any caller's credentials, and the checks every answer must pass.

Example::

    schema = schemathesis.openapi.from_dict(app.openapi())
    for case in generate_cases(schema, examples=fuzz_examples()):
        answer = await send(client, case, headers={"Authorization": "Bearer ..."})
        problems = failures(case, answer)
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

#: A generated request for any operation.
AnyCase = Case[APIOperation[Any, Any, Any, Any]]

__all__ = [
    "ERROR_STATUSES",
    "AnyCase",
    "failures",
    "fuzz_examples",
    "generate_cases",
    "send",
    "thorough",
]

#: The statuses ``tether.api.errors`` (and the body cap) can answer with for a caller's
#: mistake; a 5xx is never one (no dependency is down in these tests).
ERROR_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 413, 415, 429})

#: schemathesis's own headers, which name the tool and not the caller.
_NOISE = frozenset({"user-agent", "x-schemathesis-testcaseid", "connection", "accept-encoding"})


def thorough() -> bool:
    """Whether this is ``make fuzz`` (``TETHER_FUZZ`` set)."""
    return bool(os.environ.get("TETHER_FUZZ"))


def fuzz_examples() -> int:
    """Examples per operation and generation mode: few in ``make test``, many under
    ``TETHER_FUZZ`` (``make fuzz``), which may name the number."""
    wanted = os.environ.get("TETHER_FUZZ", "")
    if not wanted:
        return 3
    return int(wanted) if wanted.isdigit() and int(wanted) > 1 else 60


def generate_cases(schema: BaseSchema, *, examples: int, thorough: bool) -> list[AnyCase]:
    """Up to ``examples`` valid and as many invalid requests for every operation. Invalid
    requests for an operation whose only inputs are path parameters (strings on the wire,
    and slow to negate) only when ``thorough``."""
    cases: list[AnyCase] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), (
            f"the spec has an operation schemathesis cannot read: {result}"
        )
        operation = result.ok()
        inputs = len(operation.body) + len(operation.query) + len(operation.headers)
        modes = [GenerationMode.POSITIVE]
        if inputs or thorough:
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @settings(
                max_examples=examples,
                database=None,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def collect(case: AnyCase) -> None:
                cases.append(case)

            try:
                collect()
            except Unsatisfiable:
                # An operation that takes no input has no invalid request to make.
                assert mode is GenerationMode.NEGATIVE, operation.label
    return cases


async def send(
    client: httpx.AsyncClient, case: AnyCase, *, headers: dict[str, str]
) -> httpx.Response:
    """The case as schemathesis would send it, with the caller's ``headers`` instead of any
    ``Authorization`` it generated."""
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=str(client.base_url))
    sent = {k: v for k, v in kwargs.pop("headers", {}).items() if k.lower() not in _NOISE}
    sent = {k: v for k, v in sent.items() if k.lower() != "authorization"} | headers
    body: dict[str, Any] = {}
    if "json" in kwargs:
        body["json"] = kwargs["json"]
    data = kwargs.get("data")
    if isinstance(data, dict):
        body["data"] = data
    elif data is not None:
        body["content"] = data.encode() if isinstance(data, str) else data
    if kwargs.get("files"):
        body["files"] = kwargs["files"]
    # The client's own default Authorization (root) must not ride along: an empty
    # ``headers`` means no credentials at all.
    request = client.build_request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params") or None,
        cookies=kwargs.get("cookies") or None,
        **body,
    )
    request.headers.pop("authorization", None)
    request.headers.update(sent)
    return await client.send(request)


def _error_statuses_are_tethers(
    ctx: CheckContext, response: Response, case: AnyCase
) -> bool | None:
    """An error status is one ``tether.api.errors`` maps to, with an error body (the shape of
    the body is the spec's: ``tether.api.openapi``)."""
    status = response.status_code
    if status < 400 or status >= 500:
        return None
    assert status in ERROR_STATUSES, f"{status} is not a status Tether's errors map to"
    if case.method.upper() == "HEAD":
        return True  # an answer to HEAD has no body (RFC 9110 §9.3.2)
    kind = response.headers.get("content-type", [""])[0]
    if kind.startswith("text/html") and case.path.startswith("/oauth2/authorize"):
        return True  # the sign-in pages show a person an error page, not a redirect
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    assert isinstance(body, dict), f"{status} without an error body"
    assert "error" in body, f"{status} without an error body"
    return True


def failures(case: AnyCase, answer: httpx.Response) -> str | None:
    """Why ``answer`` breaks the contract, or None: a server error, a status, a content type or
    a body the schema does not declare, an error status or body that is not Tether's."""
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        _error_statuses_are_tethers,
    ]
    try:
        case.validate_response(answer, checks=checks)
    except FailureGroup as failed:
        return str(failed)
    return None
