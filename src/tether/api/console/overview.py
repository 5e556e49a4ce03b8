"""The console's front page (posture at a glance) and the signed-out page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tether.api.console._render import page
from tether.api.console._session import ViewerDep

__all__ = ["router"]

router = APIRouter(tags=["console"], include_in_schema=False)


@router.get("/console")
async def overview(request: Request, viewer: ViewerDep) -> HTMLResponse:
    return page(request, "console/overview.html", viewer=viewer, active="overview")


@router.get("/console/signed-out")
async def signed_out(request: Request) -> HTMLResponse:
    return page(request, "console/signed_out.html", viewer=None)
