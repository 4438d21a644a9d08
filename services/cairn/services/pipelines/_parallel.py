"""Parallel runs' mini-batches, in the pipelines service: ``parallel.prepare``,
``parallel.take``, ``parallel.commit`` from worker jobs (through their agents) and
``parallel.get``.

Every command names the worker's run and attempt. The service checks, from the log, that this
attempt is the run's current one and that the run is running (a re-queued or ended attempt
gets ``StaleAttempt``: it must stop), and finds the worker's pipeline run in its
``RunSubmitted``; the parallel run is :func:`~cairn.proto.parallel.parallel_run_id` of that
pipeline run and the step's name. ``parallel.take`` passes the aggregate the lease holders
whose attempt is lost (re-queued, ended, superseded), so their mini-batches are handed out
again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cairn import lookup
from cairn.bus import CommandContext, execute
from cairn.domain import parallel as domain
from cairn.domain import run as runs
from cairn.errors import InvalidInput, NotFound, PermissionDenied, StaleAttempt
from cairn.proto import subjects
from cairn.proto.commands import Accepted, QueryResult
from cairn.proto.events import RunSubmitted
from cairn.proto.jobs import derived_id
from cairn.proto.parallel import (
    CommitMiniBatch,
    GetParallelRun,
    PrepareMiniBatches,
    TakeMiniBatch,
    parallel_run_id,
)
from cairn.rpc import Request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from cairn.services.pipelines._service import PipelinesService

__all__ = ["ParallelRuns"]

#: the tag naming a pipeline step's run's step
STEP_TAG = "pipeline_step"
_LIVE = (runs.RunStatus.PREPARING, runs.RunStatus.RUNNING, runs.RunStatus.CANCEL_REQUESTED)


class ParallelRuns:
    def __init__(self, service: PipelinesService) -> None:
        self.service = service
        self.cache = service.cache

    def commands(self) -> dict[str, Callable[[Request], Awaitable[Any]]]:
        return {
            PrepareMiniBatches.VERB: self.prepare,
            TakeMiniBatch.VERB: self.take,
            CommitMiniBatch.VERB: self.commit,
        }

    def queries(self) -> dict[str, Callable[[Request], Awaitable[Any]]]:
        return {GetParallelRun.NAME: self.get}

    async def _worker(
        self, ws: str, cmd: PrepareMiniBatches | TakeMiniBatch | CommitMiniBatch
    ) -> str:
        """The parallel run of ``cmd``'s worker, once its attempt is checked current."""
        run = await lookup.run_state(self.cache, ws, cmd.run_id, fresh=True)
        if run.attempt != cmd.attempt or run.status not in _LIVE:
            raise StaleAttempt(
                f"attempt {cmd.attempt} of run {cmd.run_id} is not running (the run is"
                f" {run.status.value}, attempt {run.attempt})"
            )
        if not run.tags.get(STEP_TAG, "").startswith(f"{cmd.step}-w"):
            raise PermissionDenied(
                f"run {cmd.run_id} is not a worker of parallel run step {cmd.step!r}"
            )
        return parallel_run_id(await self._pipeline_run(ws, cmd.run_id), cmd.step)

    async def _pipeline_run(self, ws: str, run_id: str) -> str:
        history = await self.cache.read(subjects.event(ws, runs.AGGREGATE.kind, run_id))
        for recorded in history:
            event = recorded.envelope.data
            if isinstance(event, RunSubmitted):
                if event.parent_run_id is None:
                    break
                return event.parent_run_id
        raise InvalidInput(f"run {run_id} is not a step of a pipeline: it has no parallel run")

    async def _state(self, ws: str, pid: str) -> domain.ParallelState:
        return await lookup.state(self.cache, domain.AGGREGATE, ws, pid, fresh=True)

    async def prepare(self, req: Request) -> Accepted:
        cmd: PrepareMiniBatches = req.body
        pid = await self._worker(req.workspace, cmd)
        pipeline_run = await self._pipeline_run(req.workspace, cmd.run_id)
        command = domain.Prepare(command=cmd, parallel_id=pid, pipeline_run_id=pipeline_run)
        return await execute(req.context(), domain.AGGREGATE, pid, command, cache=self.cache)

    async def take(self, req: Request) -> QueryResult:
        cmd: TakeMiniBatch = req.body
        ws = req.workspace
        pid = await self._worker(ws, cmd)
        state = await self._state(ws, pid)
        lost: set[tuple[str, int]] = set()
        for holder in {(lease.run_id, lease.attempt) for lease in state.leases.values()}:
            found = await lookup.state(self.cache, runs.AGGREGATE, ws, holder[0], fresh=True)
            if found.attempt != holder[1] or found.status not in _LIVE:
                lost.add(holder)
        command = domain.Take(command=cmd, lost=frozenset(lost))
        accepted = await execute(req.context(), domain.AGGREGATE, pid, command, cache=self.cache)
        state = await self._state(ws, pid)
        if state.aborted:
            return QueryResult(seq=accepted.seq, data={"batch": None, "aborted": state.aborted})
        batch = domain.held_by(state, cmd.run_id, cmd.attempt)
        if batch is None or state.prepared is None:
            return QueryResult(seq=accepted.seq, data={"batch": None, "done": state.done})
        start, end = domain.batch_bounds(state.prepared, batch)
        delivery = state.leases[batch].delivery
        data = {"batch": batch, "start": start, "end": end, "delivery": delivery}
        return QueryResult(seq=accepted.seq, data=data)

    async def commit(self, req: Request) -> QueryResult:
        cmd: CommitMiniBatch = req.body
        ws = req.workspace
        pid = await self._worker(ws, cmd)
        before = await self._state(ws, pid)
        # one id per mini-batch and attempt: a retried commit is a replay of the first
        ctx = CommandContext(
            workspace=ws,
            command_id=derived_id("pr-commit", pid, cmd.batch, cmd.run_id, cmd.attempt),
            actor=req.actor,
            correlation_id=cmd.correlation_id,
        )
        accepted = await execute(
            ctx, domain.AGGREGATE, pid, domain.Commit(command=cmd), cache=self.cache
        )
        state = await self._state(ws, pid)
        mine = state.committed.get(cmd.batch)
        committed = (
            mine is not None
            and (mine.run_id, mine.attempt) == (cmd.run_id, cmd.attempt)
            and cmd.batch not in before.committed
        ) or accepted.replayed
        return QueryResult(
            seq=accepted.seq,
            data={"committed": committed, "aborted": state.aborted, "done": state.done},
        )

    async def get(self, req: Request) -> QueryResult:
        q: GetParallelRun = req.body
        state = await self._state(req.workspace, q.parallel_id)
        prepared = state.prepared
        if prepared is None:
            raise NotFound(f"no parallel run {q.parallel_id} (its mini-batches are not made yet)")
        rows: list[str] = []
        size = 0
        next_batch: int | None = None
        if q.rows:
            for batch in range(q.from_batch, state.batches):
                found = state.committed.get(batch)
                if found is None:
                    next_batch = batch
                    break
                more = sum(len(r) + 1 for r in found.rows)
                if rows and size + more > q.max_bytes:
                    next_batch = batch
                    break
                rows += found.rows
                size += more
        data = {
            "parallel_id": q.parallel_id,
            "pipeline_run_id": prepared.pipeline_run_id,
            "step": prepared.step,
            "kind": prepared.kind,
            "items": prepared.items,
            "batches": state.batches,
            "committed": len(state.committed),
            "failed_items": state.failed_items,
            "failed_batches": state.failed_batches,
            "aborted": state.aborted,
            "done": state.done,
            **({} if q.rows else _per_batch(state, q.from_batch)),
            "errors": [
                {"batch": b, "error": c.error, "failed_items": c.failed_items}
                for b, c in sorted(state.committed.items())
                if c.error or c.failed_items
            ][:100],
            "rows": rows,
            "next_batch": next_batch,
        }
        return QueryResult(seq=0, data=data)


#: mini-batches whose leases, deliveries and committers one ``parallel.get`` lists
_PER_BATCH = 1000


def _per_batch(state: domain.ParallelState, first: int) -> dict[str, Any]:
    """Leases, deliveries and committers of mini-batches ``first`` onwards (a window)."""
    window = range(first, first + _PER_BATCH)
    return {
        "deliveries": {str(b): n for b, n in sorted(state.deliveries.items()) if b in window},
        "leases": {
            str(b): {"run_id": lease.run_id, "attempt": lease.attempt}
            for b, lease in sorted(state.leases.items())
            if b in window
        },
        "committed_by": {
            str(b): {"run_id": c.run_id, "attempt": c.attempt}
            for b, c in sorted(state.committed.items())
            if b in window
        },
    }
