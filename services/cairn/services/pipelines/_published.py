"""Published pipelines and endpoints, in the pipelines service.

``pipeline.publish`` stores a checked ``SubmitPipeline`` (its graph, compute targets,
environments and snapshots resolved as a submission's are) on its own aggregate;
``pipeline.endpoint`` adds a published pipeline to an endpoint; ``pipeline.run`` fills the
parameters of a published pipeline (or of an endpoint's default one) and submits it under the
``pipeline.run`` command's own id and run id, as the person who sent it. A submission that
says a schedule fired it is accepted only when that schedule's log records the fire with this
run id (:meth:`PublishedPipelines.check_fired`, as the scheduler checks a job's).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import msgspec

from cairn import lookup
from cairn.bus import execute
from cairn.domain import published as domain
from cairn.domain import schedule as schedules
from cairn.errors import InvalidInput, NotFound, PermissionDenied
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.commands import Accepted, QueryResult
from cairn.proto.pipelines import (
    PUBLISHED_TAG,
    GetPipelineEndpoint,
    GetPublishedPipeline,
    ListPublishedPipelines,
    PublishPipeline,
    RunPublishedPipeline,
    SetPipelineEndpoint,
    SubmitPipeline,
)
from cairn.rpc import SERVICE_ACTOR, Request
from cairn.services.pipelines._projection import read_published

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from cairn.services.pipelines._service import PipelinesService

__all__ = ["PublishedPipelines"]


class PublishedPipelines:
    def __init__(self, service: PipelinesService) -> None:
        self.service = service
        self.cache = service.cache

    def commands(self) -> dict[str, Callable[[Request], Awaitable[Any]]]:
        return {
            PublishPipeline.VERB: self.publish,
            SetPipelineEndpoint.VERB: self.set_endpoint,
            RunPublishedPipeline.VERB: self.run,
        }

    def queries(self) -> dict[str, Callable[[Request], Awaitable[Any]]]:
        return {
            GetPublishedPipeline.NAME: self.get,
            ListPublishedPipelines.NAME: self.list,
            GetPipelineEndpoint.NAME: self.get_endpoint,
        }

    async def _published(self, ws: str, pipeline_id: str) -> domain.PublishedState:
        state = await lookup.state(self.cache, domain.PUBLISHED, ws, pipeline_id, fresh=True)
        if state.published is None:
            raise NotFound(f"no published pipeline {pipeline_id}")
        return state

    async def _endpoint(self, ws: str, name: str) -> domain.EndpointState:
        eid = subjects.name_to_id(name)
        return await lookup.state(self.cache, domain.ENDPOINT, ws, eid, fresh=True)

    async def publish(self, req: Request) -> Accepted:
        cmd: PublishPipeline = req.body
        await lookup.require_workspace(self.cache, req.workspace)
        # the defaults filled in: what a run without values would submit must be valid
        filled = domain.fill_parameters(cmd.submission, dict(cmd.parameters), {})
        await self.service.check(req.workspace, filled)
        return await execute(
            req.context(), domain.PUBLISHED, cmd.pipeline_id, cmd, cache=self.cache, new=True
        )

    async def set_endpoint(self, req: Request) -> Accepted:
        cmd: SetPipelineEndpoint = req.body
        await self._published(req.workspace, cmd.pipeline_id)
        eid = subjects.name_to_id(cmd.name)
        return await execute(req.context(), domain.ENDPOINT, eid, cmd, cache=self.cache)

    async def run(self, req: Request) -> Accepted:
        cmd: RunPublishedPipeline = req.body
        ws = req.workspace
        if (cmd.pipeline_id is None) == (cmd.endpoint is None):
            raise InvalidInput(
                "pipeline.run names a published pipeline or an endpoint: one of them"
            )
        pipeline_id = cmd.pipeline_id
        if cmd.endpoint is not None:
            endpoint = await self._endpoint(ws, cmd.endpoint)
            pipeline_id = domain.require_endpoint(endpoint, cmd.endpoint)
        assert pipeline_id is not None
        published = (await self._published(ws, pipeline_id)).published
        assert published is not None
        stored = domain.fill_parameters(
            published.submission, dict(published.parameters), dict(cmd.parameters)
        )
        submission = msgspec.structs.replace(
            stored,
            command_id=cmd.command_id,
            run_id=cmd.run_id,
            experiment_name=cmd.experiment_name,
            display_name=cmd.display_name or stored.display_name or published.name,
            tags={**stored.tags, **cmd.tags, PUBLISHED_TAG: pipeline_id},
            scheduled=None,
        )
        return await self.service.submit(req, submission)

    async def check_fired(self, ws: str, cmd: SubmitPipeline, actor: str) -> None:
        """A pipeline run that says a schedule fired it is accepted only from the services (the
        schedules service sends it) and only if the schedule's log records that fire with
        this run id (read fresh: the fire was appended just before)."""
        scheduled = cmd.scheduled
        assert scheduled is not None
        if actor != SERVICE_ACTOR:
            raise PermissionDenied(
                f"only the schedules service submits a run as a fire of schedule"
                f" {scheduled.schedule!r}"
            )
        sid = subjects.name_to_id(scheduled.schedule)
        state = await lookup.state(self.cache, schedules.AGGREGATE, ws, sid, fresh=True)
        if (scheduled.due, cmd.run_id) not in state.recent:
            raise PermissionDenied(
                f"schedule {scheduled.schedule!r} has no recent fire with run {cmd.run_id}"
            )

    async def get(self, req: Request) -> QueryResult:
        q: GetPublishedPipeline = req.body
        state = await self._published(req.workspace, q.pipeline_id)
        assert state.published is not None
        return QueryResult(seq=0, data=_describe(state.published))

    async def list(self, req: Request) -> QueryResult:
        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            return read_published(db, t, req.workspace)

        return await self.service.read(req, fn)

    async def get_endpoint(self, req: Request) -> QueryResult:
        q: GetPipelineEndpoint = req.body
        state = await self._endpoint(req.workspace, q.name)
        domain.require_endpoint(state, q.name)
        data = {
            "name": state.name,
            "description": state.description,
            "default_pipeline_id": state.default,
            "pipelines": list(state.pipelines),
        }
        return QueryResult(seq=0, data=data)


def _describe(event: Any) -> dict[str, Any]:
    return {
        "id": event.pipeline_id,
        "name": event.name,
        "version": event.version,
        "description": event.description,
        "parameters": dict(event.parameters),
        "submission": msgspec.to_builtins(event.submission),
    }
