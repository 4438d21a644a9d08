"""The core calls of a parallel run step's worker and gather jobs (``cairn.proto.parallel``):
one mini-batch command sent, its answer's data; one page of a parallel run read."""

from __future__ import annotations

from typing import Any

from cairn.proto.commands import QueryResult
from cairn.proto.parallel import (
    CommitMiniBatch,
    GetParallelRun,
    PrepareMiniBatches,
    TakeMiniBatch,
)
from cairn.sdk._session import Session

__all__ = ["parallel_page", "send_worker"]


async def send_worker(
    ws: Session, command: PrepareMiniBatches | TakeMiniBatch | CommitMiniBatch
) -> dict[str, Any]:
    """Send a worker's mini-batch command; its answer's data (``{}`` for ``Accepted``)."""
    reply = await ws.client.send_any(command)
    data = reply.data if isinstance(reply, QueryResult) else None
    return dict(data) if isinstance(data, dict) else {}


async def parallel_page(ws: Session, query: GetParallelRun) -> dict[str, Any]:
    """One page of a parallel run (its counts and committed rows from ``from_batch``)."""
    return dict((await ws.client.ask(query)).data)
