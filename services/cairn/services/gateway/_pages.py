"""The studio's pages: server-rendered, one workspace at a time (``/w/<workspace>/...``)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.params import FromPath
from litestar.response import Redirect, Template

from cairn.errors import PermissionDenied
from cairn.proto.commands import ListExperiments, ListWorkspaces
from cairn.proto.subjects import validate_token
from cairn.services.gateway._app import ask
from cairn.services.gateway._auth import principal_of, session_of

__all__ = ["PAGES", "page"]


async def page(
    request: Request[Any, Any, Any], workspace: str, template: str, **context: Any
) -> Template:
    """``template`` with what every page shows: who is signed in, the workspaces they are a
    member of (the switcher), this workspace, the CSRF token for forms."""
    principal = principal_of(request)
    validate_token(workspace, "workspace")
    workspaces = (await ask(request, workspace, ListWorkspaces())).data
    return Template(
        template_name=template,
        context={
            "user": principal.person,
            "workspace": workspace,
            "workspaces": [w["name"] for w in workspaces],
            "csrf": session_of(request).get("csrf", ""),
            **context,
        },
    )


@get("/")
async def home(request: Request[Any, Any, Any]) -> Redirect:
    """The default workspace of the settings when the user is its member, else their first."""
    principal = principal_of(request)
    default = request.app.state.settings.workspace
    try:
        mine = [w["name"] for w in (await ask(request, default, ListWorkspaces())).data]
    except PermissionDenied:
        mine = []
    if not mine:
        raise PermissionDenied(
            f"{principal.person} is a member of no workspace: an admin adds them with"
            " `cairn workspace add-member`"
        )
    target = default if default in mine else mine[0]
    return Redirect(path=f"/w/{target}/experiments", status_code=303)


@get("/w/{workspace:str}")
async def workspace_home(workspace: FromPath[str]) -> Redirect:
    validate_token(workspace, "workspace")
    return Redirect(path=f"/w/{workspace}/experiments", status_code=303)


@get("/w/{workspace:str}/experiments")
async def experiments(request: Request[Any, Any, Any], workspace: FromPath[str]) -> Template:
    rows = (await ask(request, workspace, ListExperiments())).data
    return await page(request, workspace, "experiments.html", nav="experiments", experiments=rows)


PAGES: list[Any] = [home, workspace_home, experiments]
