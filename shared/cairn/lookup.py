"""Facts that services check before deciding: does this workspace, experiment, run exist.

They read aggregates through a service's :class:`AggregateCache`. Existence cannot be undone
(workspaces, experiments and runs are never deleted), so a cached "exists" is trusted and only
a "missing" is confirmed by a fresh read.
"""

from __future__ import annotations

from cairn.bus import AggregateCache, Recorded
from cairn.domain import experiment, run, workspace
from cairn.errors import NotFound
from cairn.proto import subjects

__all__ = ["experiment_id", "require_workspace", "run_state"]


def _exists(history: list[Recorded]) -> bool:
    return bool(history)


async def require_workspace(cache: AggregateCache, ws: str) -> None:
    history = await cache.read(subjects.event(ws, workspace.KIND, ws), _exists)
    if not workspace.fold(r.envelope.data for r in history).exists:
        raise NotFound(f"workspace {ws} does not exist")


async def experiment_id(cache: AggregateCache, ws: str, name: str) -> str:
    """The id of experiment ``name``, which must exist."""
    eid = subjects.name_to_id(name)
    history = await cache.read(subjects.event(ws, experiment.KIND, eid), _exists)
    if not experiment.fold(r.envelope.data for r in history).exists:
        raise NotFound(f"experiment {name!r} does not exist")
    return eid


async def run_state(
    cache: AggregateCache, ws: str, run_id: str, *, fresh: bool = False
) -> run.RunState:
    """The run's state (refreshed from the log with ``fresh``); the run must exist."""
    subject = subjects.event(ws, run.KIND, run_id)
    history = await (cache.refresh(subject) if fresh else cache.read(subject, _exists))
    state = run.fold(r.envelope.data for r in history)
    if not state.exists:
        raise NotFound(f"run {run_id} does not exist")
    return state
