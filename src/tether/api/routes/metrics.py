"""``GET /metrics``: the server's Prometheus metrics, in the text format.

What it shows is counts and durations only (:mod:`tether.api.metrics`): no secret, no agent,
user or resource name. It is therefore open by default on the server's port, as Prometheus
scrapes without Tether roles; setting ``TETHER_METRICS_TOKEN`` makes it answer only a request
bearing that token (``Authorization: Bearer <token>``, Prometheus ``authorization:
credentials``), compared in constant time; any other is answered 401.

Example::

    curl -s http://127.0.0.1:8200/metrics | grep tether_decisions_total
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from tether.api.deps import ServicesDep, bearer_token
from tether.api.metrics import Metrics
from tether.errors import Unauthenticated

__all__ = ["router"]

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    expected = services.settings.metrics_token
    if expected is not None:
        # Digests compared, so that not even the token's length shows in the time taken.
        presented = hashlib.sha256(bearer_token(request).encode()).digest()
        if not hmac.compare_digest(presented, hashlib.sha256(expected.encode()).digest()):
            raise Unauthenticated("the metrics token is not the one configured")
    found: Metrics = request.app.state.metrics
    body = await found.render()
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
