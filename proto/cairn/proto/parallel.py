"""Parallel runs: one input split into mini-batches, scored by many worker jobs, every
mini-batch's result committed once.

A ``ParallelRunStep`` of a pipeline is ``node_count * process_count_per_node`` worker steps
and one gather step. Its mini-batches live on one aggregate,
``cairn.ev.<ws>.parallel.<id>``, whose id is :func:`parallel_run_id` of the pipeline run and
the step's name (the gather step's run id). A worker job, through its agent, sends:

1. ``PrepareMiniBatches`` (``parallel.prepare``): how its input splits (the count of items,
   where each mini-batch starts, a digest of the items). The first one recorded is the split
   every worker uses; a later one with another digest is refused (the input changed).
2. ``TakeMiniBatch`` (``parallel.take``): the next mini-batch for this attempt of this worker
   (one not committed, and not leased to an attempt that still lives), answered with
   ``QueryResult{"batch": n, "start", "end", "delivery"}``; ``{"batch": null, "done": true}``
   once every mini-batch is committed, ``{"batch": null, "done": false}`` while the last ones
   are leased to live workers, and ``{"aborted": reason}`` once failures passed the threshold.
3. ``CommitMiniBatch`` (``parallel.commit``): its result rows and its failed items. A
   mini-batch is committed once: a second commit of it (a worker that was thought dead, a
   retried reply) changes nothing and is answered ``{"committed": false}``.

Each command names the worker's run and attempt; its agent forwards it only for the job's
own run and attempt, and the service refuses an attempt that is not the run's current one.
``GetParallelRun`` (``parallel.get``) reads the split, the counts and a page of committed
rows in mini-batch order (what the gather step writes out).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from cairn.proto._base import Count, Id, Int64, Text
from cairn.proto.commands import Command, Query
from cairn.proto.pipelines import step_run_id

__all__ = [
    "PARALLEL_COMMAND_TYPES",
    "PARALLEL_QUERY_TYPES",
    "CommitMiniBatch",
    "FailureLimits",
    "GetParallelRun",
    "PrepareMiniBatches",
    "TakeMiniBatch",
    "parallel_run_id",
]

#: mini-batches one ``PrepareMiniBatches`` may describe
MAX_BATCHES = 20_000
#: rows of one mini-batch's result (each a line of text)
MAX_RESULT_ROWS = 100_000


def parallel_run_id(pipeline_run_id: str, step: str) -> str:
    """The parallel run of step ``step`` of pipeline run ``pipeline_run_id``: the run id of
    its gather step, the step that carries its name."""
    return step_run_id(pipeline_run_id, step)


class FailureLimits(msgspec.Struct, frozen=True, kw_only=True):
    """When a parallel run is aborted: more than ``error_threshold`` failed items (-1: any
    number), more than ``allowed_failed_count`` failed mini-batches, more than
    ``allowed_failed_percent`` percent of the mini-batches failed (None: no such limit)."""

    error_threshold: Int64 = -1
    allowed_failed_count: Count | None = None
    allowed_failed_percent: float | None = None


class _WorkerCommand(Command, frozen=True, kw_only=True, tag=True):
    #: the worker's own run (a step of the pipeline run) and its attempt
    run_id: Id
    attempt: Count
    #: the ``ParallelRunStep``'s name
    step: Id


class PrepareMiniBatches(_WorkerCommand, frozen=True, kw_only=True, tag=True):
    """The split of the step's input: ``items`` (rows of a table, files of a file dataset),
    mini-batch ``i`` being items ``starts[i]`` to ``starts[i + 1]`` (the last one to
    ``items``); ``digest`` names the items (the same input gives the same digest)."""

    VERB = "parallel.prepare"
    kind: Literal["tabular", "file"]
    items: Count
    starts: list[Count] = msgspec.field(default_factory=list)
    digest: Text
    limits: FailureLimits = msgspec.field(default_factory=FailureLimits)


class TakeMiniBatch(_WorkerCommand, frozen=True, kw_only=True, tag=True):
    """The next mini-batch for this worker's attempt (the one it holds, when it holds one)."""

    VERB = "parallel.take"


class CommitMiniBatch(_WorkerCommand, frozen=True, kw_only=True, tag=True):
    """Mini-batch ``batch``'s result: ``rows`` (for ``append_row``, one line each), how many
    of its items failed, and why (``error``, when ``run()`` raised)."""

    VERB = "parallel.commit"
    batch: Count
    rows: list[str] = msgspec.field(default_factory=list)
    failed_items: Count = 0
    error: Text = ""


class GetParallelRun(Query, frozen=True, kw_only=True, tag=True):
    """A parallel run: its split, counts, whether it is done or aborted, and with ``rows``
    the committed rows of mini-batches ``from_batch`` onwards, in order, as many as fit in
    ``max_bytes`` (``next_batch``: where the next page starts; None when every batch is
    in); without, the leases, deliveries and committers of 1,000 mini-batches from
    ``from_batch``."""

    NAME = "parallel.get"
    parallel_id: Id
    from_batch: Count = 0
    max_bytes: Count = 256 * 1024
    rows: bool = True


PARALLEL_COMMAND_TYPES: tuple[type[Command], ...] = (
    PrepareMiniBatches,
    TakeMiniBatch,
    CommitMiniBatch,
)
PARALLEL_QUERY_TYPES: tuple[type[Query], ...] = (GetParallelRun,)
