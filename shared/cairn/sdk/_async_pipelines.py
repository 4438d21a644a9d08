"""Published pipelines and endpoints (async core): the queries the facade's
``PublishedPipeline`` and ``PipelineEndpoint`` read."""

from __future__ import annotations

from typing import Any

from cairn.proto.pipelines import GetPipelineEndpoint, GetPublishedPipeline, ListPublishedPipelines
from cairn.sdk._session import Session

__all__ = ["pipeline_endpoint", "published_pipeline", "published_pipelines"]


async def published_pipeline(ws: Session, pipeline_id: str) -> dict[str, Any]:
    """``pipeline.published.get``: its name, version, parameters and stored submission."""
    q = GetPublishedPipeline(pipeline_id=pipeline_id, min_seq=ws.seen_seq)
    data: dict[str, Any] = (await ws.client.ask(q)).data
    return data


async def published_pipelines(ws: Session) -> list[dict[str, Any]]:
    """``pipeline.published.list``: newest first."""
    data: list[dict[str, Any]] = (
        await ws.client.ask(ListPublishedPipelines(min_seq=ws.seen_seq))
    ).data
    return data


async def pipeline_endpoint(ws: Session, name: str) -> dict[str, Any]:
    """``pipeline.endpoint.get``: its default pipeline and the pipelines added to it."""
    q = GetPipelineEndpoint(name=name, min_seq=ws.seen_seq)
    data: dict[str, Any] = (await ws.client.ask(q)).data
    return data
