"""Facts that services check before deciding: does this workspace, experiment, run exist.

They read aggregates through a service's :class:`AggregateCache` and fold them with their
domain descriptors (the cache keeps the folded state with the history). Existence cannot be
undone (workspaces, experiments and runs are never deleted), so a cached "exists" is trusted
and only a "missing" is confirmed by a fresh read, which the stream leader completes (a
follower that answers a read may be behind it).
"""

from __future__ import annotations

from typing import Any, TypeVar

from cairn.bus import AggregateCache, Recorded
from cairn.domain import Aggregate, experiment, run, workspace
from cairn.errors import NotFound
from cairn.proto import subjects

__all__ = ["experiment_id", "require_workspace", "run_state", "state"]

S = TypeVar("S")


def _exists(history: list[Recorded]) -> bool:
    return bool(history)


async def state(
    cache: AggregateCache,
    aggregate: Aggregate[S, Any],
    ws: str,
    aggregate_id: str,
    *,
    fresh: bool = False,
) -> S:
    """The state of an aggregate: cached when it has any history (refreshed with ``fresh``)."""
    subject = subjects.event(ws, aggregate.kind, aggregate_id)
    history = await (cache.refresh(subject) if fresh else cache.read(subject, _exists))
    if not history:  # "missing" only on the stream leader's word: a follower may be behind
        history = await cache.refresh(subject, complete=True)
    return cache.state(subject, aggregate, history)


async def require_workspace(cache: AggregateCache, ws: str) -> None:
    if not (await state(cache, workspace.AGGREGATE, ws, ws)).exists:
        raise NotFound(f"workspace {ws} does not exist")


async def experiment_id(cache: AggregateCache, ws: str, name: str) -> str:
    """The id of experiment ``name``, which must exist."""
    eid = subjects.name_to_id(name)
    if not (await state(cache, experiment.AGGREGATE, ws, eid)).exists:
        raise NotFound(f"experiment {name!r} does not exist")
    return eid


async def run_state(
    cache: AggregateCache, ws: str, run_id: str, *, fresh: bool = False
) -> run.RunState:
    """The run's state (refreshed from the log with ``fresh``); the run must exist."""
    found = await state(cache, run.AGGREGATE, ws, run_id, fresh=fresh)
    if not found.exists:
        raise NotFound(f"run {run_id} does not exist")
    return found
