"""A parallel run's mini-batches (``cairn.ev.<ws>.parallel.<id>``): split once, each leased to
one live worker attempt at a time, each committed once.

The decisions need two facts from outside the aggregate, which the service looks up and
passes in: the pipeline run a worker belongs to (``Prepare``) and which lease holders are
lost (``Take``: attempts that are no longer their run's current, running one). A lease held
by a lost attempt is free: the mini-batch is handed out again, and its next commit is the
only one. A holder the service did not look at (a lease appended after it looked, by a
concurrent take) is presumed alive, so two takes racing never hand out one mini-batch twice.
"""

from __future__ import annotations

import itertools

import msgspec

from cairn.domain import Aggregate
from cairn.errors import DataChanged, InvalidInput, InvalidTransition, NotFound
from cairn.proto.events import (
    Event,
    MiniBatchCommitted,
    MiniBatchesPrepared,
    MiniBatchLeased,
    ParallelRunAborted,
)
from cairn.proto.parallel import (
    MAX_BATCHES,
    MAX_RESULT_ROWS,
    CommitMiniBatch,
    FailureLimits,
    PrepareMiniBatches,
    TakeMiniBatch,
)

__all__ = [
    "AGGREGATE",
    "Commit",
    "Lease",
    "ParallelCommand",
    "ParallelState",
    "Prepare",
    "Take",
    "batch_bounds",
    "decide",
    "evolve",
    "held_by",
    "over_limits",
]


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    attempt: int
    delivery: int


class ParallelState(msgspec.Struct, frozen=True, kw_only=True):
    prepared: MiniBatchesPrepared | None = None
    #: the latest lease of each mini-batch not committed yet
    leases: dict[int, Lease] = msgspec.field(default_factory=dict)
    #: leases handed out per mini-batch (its deliveries)
    deliveries: dict[int, int] = msgspec.field(default_factory=dict)
    #: committed mini-batches: their events
    committed: dict[int, MiniBatchCommitted] = msgspec.field(default_factory=dict)
    failed_items: int = 0
    failed_batches: int = 0
    aborted: str = ""

    @property
    def batches(self) -> int:
        return len(self.prepared.starts) if self.prepared else 0

    @property
    def done(self) -> bool:
        return self.prepared is not None and len(self.committed) == self.batches


def batch_bounds(prepared: MiniBatchesPrepared, batch: int) -> tuple[int, int]:
    """Items ``[start, end)`` of mini-batch ``batch``."""
    starts = prepared.starts
    end = starts[batch + 1] if batch + 1 < len(starts) else prepared.items
    return starts[batch], end


def held_by(state: ParallelState, run_id: str, attempt: int) -> int | None:
    """The mini-batch that attempt ``attempt`` of ``run_id`` holds, if any."""
    for batch, lease in sorted(state.leases.items()):
        if lease.run_id == run_id and lease.attempt == attempt and batch not in state.committed:
            return batch
    return None


def over_limits(limits: FailureLimits, state: ParallelState) -> str:
    """Why the failures so far abort the run ("" while they do not)."""
    if limits.error_threshold >= 0 and state.failed_items > limits.error_threshold:
        return f"{state.failed_items} failed items exceed error_threshold {limits.error_threshold}"
    if limits.allowed_failed_count is not None and (
        state.failed_batches > limits.allowed_failed_count
    ):
        return (
            f"{state.failed_batches} failed mini-batches exceed allowed_failed_count"
            f" {limits.allowed_failed_count}"
        )
    percent = limits.allowed_failed_percent
    if percent is not None and state.failed_batches * 100 > percent * max(state.batches, 1):
        return (
            f"{state.failed_batches} of {state.batches} mini-batches failed, over"
            f" allowed_failed_percent {percent}"
        )
    return ""


def evolve(state: ParallelState, event: Event) -> ParallelState:
    match event:
        case MiniBatchesPrepared():
            return msgspec.structs.replace(state, prepared=event)
        case MiniBatchLeased(batch=batch, run_id=run_id, attempt=attempt, delivery=delivery):
            leases = {
                **state.leases,
                batch: Lease(run_id=run_id, attempt=attempt, delivery=delivery),
            }
            return msgspec.structs.replace(
                state, leases=leases, deliveries={**state.deliveries, batch: delivery}
            )
        case MiniBatchCommitted(batch=batch):
            failed = event.failed_items > 0 or bool(event.error)
            return msgspec.structs.replace(
                state,
                committed={**state.committed, batch: event},
                leases={b: lease for b, lease in state.leases.items() if b != batch},
                failed_items=state.failed_items + event.failed_items,
                failed_batches=state.failed_batches + int(failed),
            )
        case ParallelRunAborted(reason=reason):
            return msgspec.structs.replace(state, aborted=reason)
    return state


class Prepare(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``PrepareMiniBatches`` with the id of the worker's pipeline run (looked up)."""

    command: PrepareMiniBatches
    parallel_id: str
    pipeline_run_id: str


class Take(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``TakeMiniBatch``; ``lost``: lease holders ``(run, attempt)`` that are not their run's
    current, running attempt any more (looked up by the service)."""

    command: TakeMiniBatch
    lost: frozenset[tuple[str, int]] = frozenset()


class Commit(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    command: CommitMiniBatch


ParallelCommand = Prepare | Take | Commit


def _prepare(state: ParallelState, cmd: Prepare) -> list[Event]:
    c = cmd.command
    if state.prepared is not None:
        if state.prepared.digest != c.digest or state.prepared.items != c.items:
            raise DataChanged(
                f"parallel run {cmd.parallel_id}: the input is not the one its mini-batches"
                " were made from (it changed while the step ran)"
            )
        return []  # the split is made once: the first one recorded stands
    starts = list(c.starts)
    if not starts or len(starts) > MAX_BATCHES:
        raise InvalidInput(f"parallel.prepare: 1 to {MAX_BATCHES} mini-batches, not {len(starts)}")
    if starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
        raise InvalidInput("parallel.prepare: starts rise from 0")
    if starts[-1] >= c.items and c.items > 0:
        raise InvalidInput("parallel.prepare: every mini-batch holds an item")
    return [
        MiniBatchesPrepared(
            parallel_id=cmd.parallel_id,
            pipeline_run_id=cmd.pipeline_run_id,
            step=c.step,
            kind=c.kind,
            items=c.items,
            starts=starts,
            digest=c.digest,
            limits=c.limits,
        )
    ]


def _take(state: ParallelState, cmd: Take) -> list[Event]:
    c = cmd.command
    if state.prepared is None:
        raise NotFound("parallel.take: the mini-batches are not made yet (parallel.prepare)")
    if state.aborted or held_by(state, c.run_id, c.attempt) is not None:
        return []  # nothing more to hand out, or this attempt holds one already
    for batch in range(state.batches):
        if batch in state.committed:
            continue
        lease = state.leases.get(batch)
        if lease is not None and (lease.run_id, lease.attempt) not in cmd.lost:
            continue  # an attempt not known lost works on it
        delivery = state.deliveries.get(batch, 0) + 1
        return [MiniBatchLeased(batch=batch, run_id=c.run_id, attempt=c.attempt, delivery=delivery)]
    return []


def _commit(state: ParallelState, cmd: Commit) -> list[Event]:
    c = cmd.command
    if state.prepared is None:
        raise NotFound("parallel.commit: the mini-batches are not made yet (parallel.prepare)")
    if c.batch >= state.batches:
        raise InvalidInput(f"parallel.commit: there is no mini-batch {c.batch}")
    if c.batch in state.committed:
        return []  # committed once: a second result of the same mini-batch is dropped
    lease = state.leases.get(c.batch)
    if lease is None or (lease.run_id, lease.attempt) != (c.run_id, c.attempt):
        raise InvalidTransition(
            f"parallel.commit: mini-batch {c.batch} is not leased to attempt {c.attempt} of"
            f" {c.run_id}"
        )
    if len(c.rows) > MAX_RESULT_ROWS:
        raise InvalidInput(f"parallel.commit: at most {MAX_RESULT_ROWS} rows a mini-batch")
    start, end = batch_bounds(state.prepared, c.batch)
    if c.failed_items > end - start:
        raise InvalidInput(
            f"parallel.commit: mini-batch {c.batch} has {end - start} items, not"
            f" {c.failed_items} failed ones"
        )
    committed = MiniBatchCommitted(
        batch=c.batch,
        run_id=c.run_id,
        attempt=c.attempt,
        rows=list(c.rows),
        failed_items=c.failed_items,
        error=c.error,
    )
    events: list[Event] = [committed]
    if not state.aborted:
        reason = over_limits(state.prepared.limits, evolve(state, committed))
        if reason:
            events.append(ParallelRunAborted(reason=reason))
    return events


def decide(state: ParallelState, command: ParallelCommand) -> list[Event]:
    match command:
        case Prepare():
            return _prepare(state, command)
        case Take():
            return _take(state, command)
        case Commit():
            return _commit(state, command)


AGGREGATE: Aggregate[ParallelState, ParallelCommand] = Aggregate(
    kind="parallel",
    initial=ParallelState(),
    evolve=evolve,
    decide=decide,
    commands=ParallelCommand,
)
