"""The console's pages: rendering with the layout's values, and the headers every page has.

The Content-Security-Policy allows script only from this origin's ``/static`` files (htmx and
``console.js``): no inline script, no ``eval``, no inline style, no framing, forms posting
only here. htmx is told not to inject its indicator styles (which that policy would refuse).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from tether.api.console._session import Viewer
from tether.console import PAGES
from tether.identity.access import Permission

__all__ = ["HEADERS", "NAV", "Section", "page"]

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class Section:
    """A part of the console in its navigation: shown to whom ``shown`` says."""

    key: str
    path: str
    title: str
    shown: Callable[[Viewer], bool]


def _may(permission: Permission) -> Callable[[Viewer], bool]:
    return lambda viewer: viewer.may(permission)


def _anyone(_viewer: Viewer) -> bool:
    return True


def _with_role(viewer: Viewer) -> bool:
    return viewer.role is not None


NAV = (
    Section("overview", "/console", "Overview", _anyone),
    Section("agents", "/console/agents", "Agents", _may(Permission.AGENT_READ)),
    Section("me", "/console/me", "My access", _anyone),
    Section("decisions", "/console/decisions", "Decisions", _may(Permission.AUDIT_READ)),
    Section("audit", "/console/audit", "Audit", _may(Permission.AUDIT_READ)),
    Section("alerts", "/console/alerts", "Alerts", _with_role),
    Section("policies", "/console/policies", "Policies", _may(Permission.POLICY_READ)),
    Section("credentials", "/console/credentials", "Credentials", _may(Permission.LEASE_READ)),
)


def page(
    request: Request,
    template: str,
    *,
    viewer: Viewer | None,
    active: str = "",
    status: int = 200,
    **values: Any,
) -> HTMLResponse:
    """``template`` rendered with the layout's values: who looks, what they may open, the
    session's CSRF token (for forms and htmx), the section being shown."""
    html = PAGES.get_template(template).render(
        viewer=viewer,
        nav=[s for s in NAV if viewer is not None and s.shown(viewer)],
        active=active,
        csrf=viewer.csrf if viewer is not None else "",
        path=request.url.path,
        **values,
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)
