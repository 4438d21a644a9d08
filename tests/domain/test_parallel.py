"""A parallel run's mini-batches: split once, leased to one live attempt at a time, a lease
of a lost attempt handed out again, each mini-batch committed once, failures over a limit
aborting the run."""

from __future__ import annotations

import pytest

from cairn.domain import parallel
from cairn.errors import DataChanged, InvalidInput, InvalidTransition, NotFound
from cairn.proto.events import (
    MiniBatchCommitted,
    MiniBatchesPrepared,
    MiniBatchLeased,
    ParallelRunAborted,
)
from cairn.proto.parallel import (
    CommitMiniBatch,
    FailureLimits,
    PrepareMiniBatches,
    TakeMiniBatch,
)
from tests.domain.gwt import Case, check, ids

W1, W2 = "worker-1", "worker-2"


def prepare(
    digest: str = "d1", starts: list[int] | None = None, items: int = 250
) -> parallel.Prepare:
    cmd = PrepareMiniBatches(
        command_id="p",
        run_id=W1,
        attempt=1,
        step="score",
        kind="tabular",
        items=items,
        starts=[0, 100, 200] if starts is None else starts,
        digest=digest,
    )
    return parallel.Prepare(command=cmd, parallel_id="pid", pipeline_run_id="pipe")


PREPARED = MiniBatchesPrepared(
    parallel_id="pid",
    pipeline_run_id="pipe",
    step="score",
    kind="tabular",
    items=250,
    starts=[0, 100, 200],
    digest="d1",
)
STRICT = MiniBatchesPrepared(
    parallel_id="pid",
    pipeline_run_id="pipe",
    step="score",
    kind="tabular",
    items=250,
    starts=[0, 100, 200],
    digest="d1",
    limits=FailureLimits(error_threshold=5),
)


def take(run: str = W1, attempt: int = 1, *lost: tuple[str, int]) -> parallel.Take:
    cmd = TakeMiniBatch(command_id="t", run_id=run, attempt=attempt, step="score")
    return parallel.Take(command=cmd, lost=frozenset(lost))


def commit(batch: int, run: str = W1, attempt: int = 1, failed: int = 0) -> parallel.Commit:
    cmd = CommitMiniBatch(
        command_id="c",
        run_id=run,
        attempt=attempt,
        step="score",
        batch=batch,
        rows=["a"],
        failed_items=failed,
    )
    return parallel.Commit(command=cmd)


def leased(batch: int, run: str = W1, attempt: int = 1, delivery: int = 1) -> MiniBatchLeased:
    return MiniBatchLeased(batch=batch, run_id=run, attempt=attempt, delivery=delivery)


def committed(batch: int, run: str = W1, attempt: int = 1, failed: int = 0) -> MiniBatchCommitted:
    return MiniBatchCommitted(
        batch=batch, run_id=run, attempt=attempt, rows=["a"], failed_items=failed
    )


CASES = [
    Case("first split is recorded", [], prepare(), [PREPARED]),
    Case("the same split again changes nothing", [PREPARED], prepare(), []),
    Case("another input is refused", [PREPARED], prepare(digest="d2"), DataChanged),
    Case("starts rise from 0", [], prepare(starts=[0, 0, 5]), InvalidInput, "rise"),
    Case("no empty split", [], prepare(starts=[]), InvalidInput),
    Case("take before the split", [], take(), NotFound),
    Case("take the first free batch", [PREPARED], take(), [leased(0)]),
    Case("a holder takes its own again", [PREPARED, leased(0)], take(W1, 1), []),
    Case(
        "a live holder's batch is skipped",
        [PREPARED, leased(0)],
        take(W2, 1),
        [leased(1, W2)],
    ),
    Case(
        "a lost holder's batch is handed out again",
        [PREPARED, leased(0)],
        take(W2, 1, (W1, 1)),
        [leased(0, W2, 1, 2)],
    ),
    Case(
        "the holder's next attempt takes it back",
        [PREPARED, leased(0)],
        take(W1, 2, (W1, 1)),
        [leased(0, W1, 2, 2)],
    ),
    Case(
        "nothing left to take",
        [PREPARED, committed(0), committed(1), committed(2)],
        take(),
        [],
    ),
    Case("nothing taken once aborted", [PREPARED, ParallelRunAborted(reason="x")], take(), []),
    Case("commit a leased batch", [PREPARED, leased(0)], commit(0), [committed(0)]),
    Case("a batch is committed once", [PREPARED, leased(0), committed(0)], commit(0, W2), []),
    Case(
        "a lost attempt's commit is refused",
        [PREPARED, leased(0), leased(0, W2, 1, 2)],
        commit(0),
        InvalidTransition,
    ),
    Case("no such batch", [PREPARED], commit(7), InvalidInput),
    Case(
        "failures over the threshold abort",
        [STRICT, leased(0)],
        commit(0, failed=6),
        [
            committed(0, failed=6),
            ParallelRunAborted(reason="6 failed items exceed error_threshold 5"),
        ],
    ),
    Case(
        "failures within the threshold",
        [STRICT, leased(0)],
        commit(0, failed=5),
        [committed(0, failed=5)],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_decide(case: Case) -> None:
    check(parallel.AGGREGATE, case)


def test_failed_batch_limits() -> None:
    state = parallel.AGGREGATE.fold([PREPARED, committed(0, failed=1), committed(1, failed=1)])
    assert parallel.over_limits(FailureLimits(allowed_failed_count=1), state).startswith("2 failed")
    assert parallel.over_limits(FailureLimits(allowed_failed_count=2), state) == ""
    assert "allowed_failed_percent 50" in parallel.over_limits(
        FailureLimits(allowed_failed_percent=50), state
    )
    assert parallel.over_limits(FailureLimits(allowed_failed_percent=70), state) == ""
    assert parallel.batch_bounds(PREPARED, 2) == (200, 250)
