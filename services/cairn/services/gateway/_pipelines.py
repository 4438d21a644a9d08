"""Published pipelines started over HTTP, as Azure ML's REST endpoints start them:
``POST /api/w/<ws>/pipelines/<id>/runs`` and ``POST /api/w/<ws>/pipeline-endpoints/<name>/runs``
with ``{"ExperimentName": ..., "ParameterAssignments": {...}}``, as the signed-in user (a
bearer token for scripts): the reply holds the new run's id (``Id``)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, post
from litestar.params import FromPath, JSONBody

from cairn.proto.commands import CreateExperiment
from cairn.proto.pipelines import RunPublishedPipeline
from cairn.services.gateway._app import send

__all__ = ["PIPELINE_ROUTES"]


class RunRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of a run request, with Azure ML's names."""

    ExperimentName: str
    ParameterAssignments: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    DisplayName: str | None = None
    Tags: dict[str, str] = msgspec.field(default_factory=dict)


async def _run(
    request: Request[Any, Any, Any],
    workspace: str,
    body: RunRequest,
    *,
    pipeline_id: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex
    # get-or-create the experiment, as the SDK's submissions do
    await send(
        request, workspace, CreateExperiment(command_id=uuid.uuid4().hex, name=body.ExperimentName)
    )
    command = RunPublishedPipeline(
        command_id=uuid.uuid4().hex,
        run_id=run_id,
        experiment_name=body.ExperimentName,
        pipeline_id=pipeline_id,
        endpoint=endpoint,
        parameters={k: _text(v) for k, v in body.ParameterAssignments.items()},
        display_name=body.DisplayName,
        tags=dict(body.Tags),
    )
    await send(request, workspace, command)
    return {"Id": run_id, "run_id": run_id, "experiment_name": body.ExperimentName}


def _text(value: str | int | float | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@post("/api/w/{workspace:str}/pipelines/{pipeline_id:str}/runs")
async def run_published(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    pipeline_id: FromPath[str],
    data: JSONBody[RunRequest],
) -> dict[str, Any]:
    """Run published pipeline ``pipeline_id``; ``{"Id": run id}``."""
    return await _run(request, workspace, data, pipeline_id=pipeline_id)


@post("/api/w/{workspace:str}/pipeline-endpoints/{name:str}/runs")
async def run_endpoint(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    name: FromPath[str],
    data: JSONBody[RunRequest],
) -> dict[str, Any]:
    """Run endpoint ``name``'s default pipeline; ``{"Id": run id}``."""
    return await _run(request, workspace, data, endpoint=name)


PIPELINE_ROUTES = [run_published, run_endpoint]
