"""The sweep aggregate as a given-when-then table: proposals in order and within the limits,
a policy's stop and a trial's end recorded once, and the sweep's end decided from its state."""

from __future__ import annotations

import pytest

from cairn.domain import sweep
from cairn.errors import AlreadyExists, InvalidInput, InvalidTransition, NotFound
from cairn.proto.events import (
    SweepCancelRequested,
    SweepEnded,
    SweepSubmitted,
    TrialEnded,
    TrialProposed,
    TrialStopped,
)
from cairn.proto.jobs import JobSpec
from cairn.proto.sweeps import (
    CancelSweep,
    Choice,
    Objective,
    Policy,
    Sampling,
    SubmitSweep,
    SweepLimits,
    SweepSpec,
    TrialTemplate,
    Uniform,
)
from tests.domain.gwt import Case, check, ids

LR = "${{search_space.lr}}"
SPEC = SweepSpec(
    search_space={"lr": Uniform(min_value=0.0, max_value=1.0)},
    objective=Objective(primary_metric="AUC", goal="maximize"),
    limits=SweepLimits(max_total_trials=3, max_concurrent_trials=2),
)
TEMPLATE = TrialTemplate(job=JobSpec(command=["python", "t.py", "--lr", LR]))
SUBMIT = SubmitSweep(command_id="c", run_id="s1", experiment_name="e", trial=TEMPLATE, spec=SPEC)
SUBMITTED = SweepSubmitted(run_id="s1", experiment_name="e", spec=SPEC, trial=TEMPLATE, seed=5)


def submit(spec: SweepSpec, command: list[str] | None = None) -> sweep.SubmitResolvedSweep:
    template = TrialTemplate(job=JobSpec(command=command or ["python", "t.py", "--lr", LR]))
    made = SubmitSweep(command_id="c", run_id="s1", experiment_name="e", trial=template, spec=spec)
    return sweep.SubmitResolvedSweep(command=made, seed=5)


def proposed(i: int, seen: list[int] | None = None) -> TrialProposed:
    return TrialProposed(
        index=i,
        run_id=f"t{i}",
        parameters={"lr": 0.1 * i},
        sampled={"lr": 0.1 * i},
        seen=seen or [],
    )


def propose(i: int, seen: list[int] | None = None) -> sweep.ProposeTrial:
    return sweep.ProposeTrial(
        index=i,
        run_id=f"t{i}",
        parameters={"lr": 0.1 * i},
        sampled={"lr": 0.1 * i},
        seen=seen or [],
    )


def ended(i: int, best: float | None = 0.5, status: str = "Completed") -> TrialEnded:
    return TrialEnded(index=i, status=status, best=best, last=best, reports=1 if best else 0)


STOP = sweep.StopTrial(
    index=0, policy="bandit", interval=2, value=0.5, reference=0.9, threshold=0.81, reason="r"
)
STOPPED = TrialStopped(
    index=0, policy="bandit", interval=2, value=0.5, reference=0.9, threshold=0.81, reason="r"
)
GRID = SweepSpec(
    search_space={"lr": Choice(values=[1, 2])},
    sampling=Sampling(algorithm="grid"),
    objective=Objective(primary_metric="AUC", goal="maximize"),
    limits=SweepLimits(max_total_trials=10, max_concurrent_trials=5),
)
GRID_SUBMITTED = SweepSubmitted(run_id="s1", experiment_name="e", spec=GRID, trial=TEMPLATE, seed=1)


def spec_with(**kw: object) -> SweepSpec:
    base = {
        "search_space": {"lr": Uniform(min_value=0.0, max_value=1.0)},
        "objective": Objective(primary_metric="AUC", goal="maximize"),
        "limits": SweepLimits(max_total_trials=3),
    }
    return SweepSpec(**{**base, **kw})


CASES = [
    Case("submit", [], sweep.SubmitResolvedSweep(command=SUBMIT, seed=5), [SUBMITTED]),
    Case(
        "submit twice",
        [SUBMITTED],
        sweep.SubmitResolvedSweep(command=SUBMIT, seed=5),
        AlreadyExists,
    ),
    Case(
        "a grid over anything but choices is refused",
        [],
        submit(spec_with(sampling=Sampling(algorithm="grid"))),
        InvalidInput,
        "grid sampling takes choice only",
    ),
    Case(
        "a bound that is not one is refused",
        [],
        submit(spec_with(search_space={"lr": Uniform(min_value=1.0, max_value=1.0)})),
        InvalidInput,
        "min_value must be below max_value",
    ),
    Case(
        "a parameter the command never uses is refused",
        [],
        submit(SPEC, ["python", "t.py"]),
        InvalidInput,
        "does not use",
    ),
    Case(
        "a placeholder naming no parameter is refused",
        [],
        submit(SPEC, ["python", "t.py", LR, "${{search_space.momentum}}"]),
        InvalidInput,
        "momentum",
    ),
    Case(
        "a bandit policy needs its slack",
        [],
        submit(spec_with(policy=Policy(kind="bandit"))),
        InvalidInput,
        "slack_factor",
    ),
    Case(
        "bayesian sampling takes no policy",
        [],
        submit(
            spec_with(
                sampling=Sampling(algorithm="bayesian"),
                policy=Policy(kind="median_stopping"),
            )
        ),
        InvalidInput,
        "bayesian",
    ),
    Case("propose the first trial", [SUBMITTED], propose(0), [proposed(0)]),
    Case("a trial proposed already is a no-op", [SUBMITTED, proposed(0)], propose(0), []),
    Case("proposals go in order", [SUBMITTED], propose(1), InvalidTransition, "trial 0 next"),
    Case(
        "no more running at once than the limit",
        [SUBMITTED, proposed(0), proposed(1)],
        propose(2),
        InvalidTransition,
        "its limit at once",
    ),
    Case(
        "an ended trial frees its place",
        [SUBMITTED, proposed(0), proposed(1), ended(0)],
        propose(2, [0]),
        [proposed(2, [0])],
    ),
    Case(
        "a proposal sees only results recorded before it",
        [SUBMITTED, proposed(0)],
        propose(1, [0]),
        InvalidTransition,
        "no result yet",
    ),
    Case(
        "no more than max_total_trials",
        [SUBMITTED, proposed(0), ended(0), proposed(1), ended(1), proposed(2), ended(2)],
        propose(3, [0, 1, 2]),
        InvalidTransition,
        "no more trials",
    ),
    Case(
        "a grid ends at its size",
        [GRID_SUBMITTED, proposed(0), proposed(1)],
        propose(2),
        InvalidTransition,
        "no more trials",
    ),
    Case(
        "no proposal once a cancel was asked for",
        [SUBMITTED, SweepCancelRequested(reason="x")],
        propose(0),
        InvalidTransition,
    ),
    Case("propose on no sweep", [], propose(0), NotFound),
    Case("stop a trial", [SUBMITTED, proposed(0)], STOP, [STOPPED]),
    Case("stop it again", [SUBMITTED, proposed(0), STOPPED], STOP, []),
    Case("stop an ended trial", [SUBMITTED, proposed(0), ended(0)], STOP, []),
    Case("stop no trial", [SUBMITTED], STOP, NotFound),
    Case(
        "end a trial",
        [SUBMITTED, proposed(0)],
        sweep.EndTrial(index=0, status="Completed", best=0.5, last=0.5, reports=1),
        [ended(0)],
    ),
    Case(
        "end it again",
        [SUBMITTED, proposed(0), ended(0)],
        sweep.EndTrial(index=0, status="Failed"),
        [],
    ),
    Case(
        "cancel",
        [SUBMITTED],
        CancelSweep(command_id="c", run_id="s1"),
        [SweepCancelRequested(reason="canceled")],
    ),
    Case(
        "cancel again",
        [SUBMITTED, SweepCancelRequested(reason="canceled")],
        CancelSweep(command_id="c", run_id="s1", reason="again"),
        [],
    ),
    Case(
        "time out",
        [SUBMITTED],
        sweep.TimeOutSweep(timeout_s=60),
        [SweepCancelRequested(reason="timeout: ran past 60 s")],
    ),
    Case(
        "end with the best trial",
        [
            SUBMITTED,
            proposed(0),
            proposed(1),
            ended(0, 0.4),
            ended(1, 0.7),
            proposed(2),
            ended(2, 0.7),
        ],
        sweep.EndSweep(),
        [SweepEnded(status="Completed", best_index=1)],
    ),
    Case(
        "end while trials run",
        [SUBMITTED, proposed(0)],
        sweep.EndSweep(),
        InvalidTransition,
        "still has trials",
    ),
    Case(
        "a sweep whose trials never logged the metric fails naming it",
        [
            SUBMITTED,
            proposed(0),
            ended(0, None),
            proposed(1),
            ended(1, None),
            proposed(2),
            ended(2, None),
        ],
        sweep.EndSweep(),
        [SweepEnded(status="Failed", error="no trial logged the primary metric 'AUC'")],
    ),
    Case(
        "a sweep whose trials could not run says why",
        [
            SUBMITTED,
            *(
                e
                for i in range(3)
                for e in (
                    proposed(i),
                    TrialEnded(index=i, status="Failed", error="environment 'x' does not exist"),
                )
            ),
        ],
        sweep.EndSweep(),
        [
            SweepEnded(
                status="Failed",
                error="no trial logged the primary metric 'AUC'"
                " (trial 0: environment 'x' does not exist)",
            )
        ],
    ),
    Case(
        "a canceled sweep ends Canceled",
        [
            SUBMITTED,
            proposed(0),
            SweepCancelRequested(reason="canceled"),
            ended(0, 0.3, "Canceled"),
        ],
        sweep.EndSweep(),
        [SweepEnded(status="Canceled", error="canceled", best_index=0)],
    ),
    Case(
        "a timed out sweep completes with what it has",
        [
            SUBMITTED,
            proposed(0),
            ended(0, 0.3),
            SweepCancelRequested(reason="timeout: ran past 1 s"),
        ],
        sweep.EndSweep(),
        [SweepEnded(status="Completed", error="timeout: ran past 1 s", best_index=0)],
    ),
    Case(
        "end once",
        [SUBMITTED, SweepCancelRequested(reason="x"), SweepEnded(status="Canceled")],
        sweep.EndSweep(),
        [],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_decide(case: Case) -> None:
    check(sweep.AGGREGATE, case)


def test_a_minimized_metric_picks_the_smallest() -> None:
    spec = spec_with(objective=Objective(primary_metric="loss", goal="minimize"))
    given = [
        SweepSubmitted(run_id="s1", experiment_name="e", spec=spec, trial=TEMPLATE, seed=5),
        *(e for i, v in enumerate([0.4, 0.2, 0.9]) for e in (proposed(i), ended(i, v))),
    ]
    assert sweep.best_index(sweep.AGGREGATE.fold(given)) == 1
