"""The blocking driver of the sans-I/O flows (:mod:`tether.delegation.flows`) over httpx: it
sends each request a flow yields, as is (redirects are never followed: a flow reads them)."""

from __future__ import annotations

import httpx

from tether.delegation.flows import Flow, HttpRequest, HttpResponse, TokenSet

__all__ = ["drive"]


def drive(flow: Flow, client: httpx.Client) -> TokenSet:
    request: HttpRequest = next(flow)
    while True:
        sent = client.request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=dict(request.form) if request.form is not None else None,
            json=request.json,
            follow_redirects=False,
        )
        try:
            body = sent.json()
        except ValueError:
            body = None
        response = HttpResponse(status=sent.status_code, headers=sent.headers, body=body)
        try:
            request = flow.send(response)
        except StopIteration as done:
            result: TokenSet = done.value
            return result
