"""Batch endpoints, in the pipelines service: ``batch.endpoint.create``,
``batch.deployment.set`` (its environment and compute target checked as a pipeline step's
are) and ``batch.endpoint.get``. An invocation is an ordinary ``pipeline.submit``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from cairn import lookup
from cairn.bus import execute
from cairn.domain import batch as domain
from cairn.errors import NotFound
from cairn.proto import subjects
from cairn.proto.batch import CreateBatchEndpoint, GetBatchEndpoint, SetBatchDeployment
from cairn.proto.commands import Accepted, QueryResult
from cairn.proto.pipelines import PipelineSpec, PipelineStep, SubmitPipeline
from cairn.rpc import Request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from cairn.services.pipelines._service import PipelinesService

__all__ = ["BatchEndpoints"]


class BatchEndpoints:
    def __init__(self, service: PipelinesService) -> None:
        self.service = service
        self.cache = service.cache

    def commands(self) -> dict[str, Callable[[Request], Awaitable[Any]]]:
        return {CreateBatchEndpoint.VERB: self.create, SetBatchDeployment.VERB: self.deploy}

    def queries(self) -> dict[str, Callable[[Request], Awaitable[Any]]]:
        return {GetBatchEndpoint.NAME: self.get}

    async def create(self, req: Request) -> Accepted:
        cmd: CreateBatchEndpoint = req.body
        await lookup.require_workspace(self.cache, req.workspace)
        eid = subjects.name_to_id(cmd.name)
        return await execute(req.context(), domain.AGGREGATE, eid, cmd, cache=self.cache)

    async def deploy(self, req: Request) -> Accepted:
        cmd: SetBatchDeployment = req.body
        spec = cmd.spec
        # checked as a pipeline step that runs it would be: compute target, environment,
        # snapshot (a submission that is never sent)
        step = PipelineStep(
            name=cmd.name,
            compute=spec.compute,
            job=msgspec.structs.replace(spec.job, command=["true"]),
            environment_name=spec.environment_name,
            environment_version=spec.environment_version,
        )
        check = SubmitPipeline(
            command_id=cmd.command_id,
            run_id="batch-check",
            experiment_name=cmd.endpoint,
            pipeline=PipelineSpec(steps=[step]),
        )
        await self.service.check(req.workspace, check)
        eid = subjects.name_to_id(cmd.endpoint)
        return await execute(req.context(), domain.AGGREGATE, eid, cmd, cache=self.cache)

    async def get(self, req: Request) -> QueryResult:
        q: GetBatchEndpoint = req.body
        eid = subjects.name_to_id(q.name)
        state = await lookup.state(self.cache, domain.AGGREGATE, req.workspace, eid, fresh=True)
        if not state.exists:
            raise NotFound(f"no batch endpoint {q.name!r}")
        data = {
            "name": state.name,
            "description": state.description,
            "tags": state.tags,
            "default_deployment": state.default or None,
            "deployments": {n: msgspec.to_builtins(s) for n, s in state.deployments.items()},
        }
        return QueryResult(seq=0, data=data)
