"""The sweep aggregate: a hyperparameter sweep's proposals, stops, trial ends and its own end.

A sweep is Running from ``SweepSubmitted`` until ``SweepEnded``. Its controller (the sweeps
service) decides what to do next and sends it here as a command, so that two controllers, or
one that was killed and came back, take each decision once and in order:

* ``ProposeTrial`` is accepted only for the next index, while fewer than
  ``max_concurrent_trials`` trials are running, fewer than the sweep's limit were proposed
  (``max_total_trials``, or a grid's size) and no cancel was asked for. A trial is running from
  its proposal until its ``TrialEnded``, so the children that can run at once never exceed the
  limit, whoever proposes.
* ``StopTrial`` records the policy's decision once per trial; ``EndTrial`` a child run's end.
* ``EndSweep`` is accepted once no trial runs and nothing more will be proposed; the status
  follows from the state: ``Canceled`` after a person's cancel, ``Failed`` naming the primary
  metric when no trial ever logged it, else ``Completed`` (after a timeout too: the trials it
  has are its result).
"""

from __future__ import annotations

import math
import re
from typing import Literal

import msgspec

from cairn.domain import Aggregate
from cairn.errors import AlreadyExists, InvalidInput, InvalidTransition, NotFound
from cairn.proto.events import (
    Event,
    SweepCancelRequested,
    SweepEnded,
    SweepSubmitted,
    TrialEnded,
    TrialProposed,
    TrialStopped,
)
from cairn.proto.sweeps import (
    CancelSweep,
    Choice,
    LogUniform,
    QLogUniform,
    QUniform,
    SubmitSweep,
    SweepSpec,
    TrialTemplate,
    Uniform,
    parameter_placeholder,
)

__all__ = [
    "AGGREGATE",
    "KIND",
    "MAX_GRID_POINTS",
    "EndSweep",
    "EndTrial",
    "ProposeTrial",
    "StopTrial",
    "SubmitResolvedSweep",
    "SweepCommand",
    "SweepState",
    "TimeOutSweep",
    "TrialState",
    "better",
    "check",
    "decide",
    "evolve",
    "grid_size",
]

KIND = "sweep"


class TrialState(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    run_id: str
    parameters: dict[str, bool | int | float | str]
    sampled: dict[str, bool | int | float | str]
    seen: list[int]
    #: None while running; the child run's end status after
    status: str | None = None
    best: float | None = None
    last: float | None = None
    reports: int = 0
    error: str = ""
    stopped: TrialStopped | None = None


class SweepState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    run_id: str = ""
    experiment_name: str = ""
    spec: SweepSpec | None = None
    trial: TrialTemplate | None = None
    seed: int = 0
    trials: tuple[TrialState, ...] = ()
    cancel_requested: bool = False
    cancel_reason: str = ""
    timed_out: bool = False
    status: str = ""  # "" while running; SweepEnded's status after
    error: str = ""
    best_index: int | None = None

    @property
    def running(self) -> int:
        return sum(1 for t in self.trials if t.status is None)

    @property
    def limit(self) -> int:
        """How many trials the sweep proposes at most."""
        assert self.spec is not None
        total = self.spec.limits.max_total_trials
        if self.spec.sampling.algorithm == "grid":
            return min(total, grid_size(self.spec))
        return total

    @property
    def ended(self) -> bool:
        return bool(self.status)

    @property
    def proposing(self) -> bool:
        """Whether more trials will be proposed."""
        return not self.ended and not self.cancel_requested and len(self.trials) < self.limit


#: the most points a grid sweep may have (its points are computed one at a time, never listed)
MAX_GRID_POINTS = 10**9


def grid_size(spec: SweepSpec) -> int:
    """The number of points of a grid over choices (other distributions have no grid)."""
    sizes = [len(d.values) if isinstance(d, Choice) else 0 for d in spec.search_space.values()]
    return math.prod(sizes)


def better(goal: Literal["maximize", "minimize"], a: float, b: float) -> bool:
    """Whether ``a`` is strictly better than ``b`` for ``goal``."""
    return a > b if goal == "maximize" else a < b


_PLACEHOLDER = re.compile(r"\$\{\{\s*search_space\.([^}\s]*)\s*\}\}")


def check(spec: SweepSpec, command: list[str]) -> None:
    """Refuse, naming what is wrong, a sweep that could not run as written: a bound that is not
    one, a grid over anything but choices, a policy without its numbers (or with another's),
    a parameter the trial's command never uses or a placeholder naming none."""
    for name, dist in spec.search_space.items():
        if isinstance(dist, Uniform | QUniform | LogUniform | QLogUniform):
            if not dist.min_value < dist.max_value:
                raise InvalidInput(f"search space {name!r}: min_value must be below max_value")
            if isinstance(dist, LogUniform | QLogUniform) and dist.max_value > 700:
                raise InvalidInput(f"search space {name!r}: exp({dist.max_value:g}) overflows")
        if spec.sampling.algorithm == "grid" and not isinstance(dist, Choice):
            raise InvalidInput(
                f"search space {name!r}: grid sampling takes choice only, not {type(dist).__name__}"
            )
    if spec.sampling.algorithm == "grid" and (size := grid_size(spec)) > MAX_GRID_POINTS:
        raise InvalidInput(
            f"search space: a grid of {size} points; at most {MAX_GRID_POINTS} are swept"
        )
    _check_policy(spec)
    used = {m for word in command for m in _PLACEHOLDER.findall(word)}
    unknown = sorted(used - set(spec.search_space))
    if unknown:
        raise InvalidInput(f"the trial's command names no parameter of the search space: {unknown}")
    unused = sorted(set(spec.search_space) - used)
    if unused:
        words = ", ".join(parameter_placeholder(n) for n in unused)
        raise InvalidInput(f"the trial's command does not use {words}")


def _check_policy(spec: SweepSpec) -> None:
    policy = spec.policy
    if policy is None:
        return
    if spec.sampling.algorithm == "bayesian":
        raise InvalidInput("bayesian sampling takes no early termination policy (as in Azure ML)")
    slack = (policy.slack_factor, policy.slack_amount)
    if policy.kind == "bandit":
        if (slack[0] is None) == (slack[1] is None):
            raise InvalidInput("a bandit policy takes one of slack_factor and slack_amount")
    elif slack != (None, None):
        raise InvalidInput(f"a {policy.kind} policy takes no slack_factor or slack_amount")
    if (policy.kind == "truncation_selection") != (policy.truncation_percentage is not None):
        raise InvalidInput("truncation_percentage is for (and needed by) truncation_selection")


def evolve(state: SweepState, event: Event) -> SweepState:
    match event:
        case SweepSubmitted() as ev:
            return SweepState(
                exists=True,
                run_id=ev.run_id,
                experiment_name=ev.experiment_name,
                spec=ev.spec,
                trial=ev.trial,
                seed=ev.seed,
            )
        case TrialProposed() as ev:
            trial = TrialState(
                index=ev.index,
                run_id=ev.run_id,
                parameters=dict(ev.parameters),
                sampled=dict(ev.sampled),
                seen=list(ev.seen),
            )
            return msgspec.structs.replace(state, trials=(*state.trials, trial))
        case TrialStopped(index=index) as ev:
            return _with_trial(state, index, stopped=ev)
        case TrialEnded(index=index) as ev:
            return _with_trial(
                state,
                index,
                status=ev.status,
                best=ev.best,
                last=ev.last,
                reports=ev.reports,
                error=ev.error,
            )
        case SweepCancelRequested(reason=reason):
            timed_out = reason.startswith("timeout")
            return msgspec.structs.replace(
                state, cancel_requested=True, cancel_reason=reason, timed_out=timed_out
            )
        case SweepEnded(status=status, error=error, best_index=best_index):
            return msgspec.structs.replace(state, status=status, error=error, best_index=best_index)
    return state


def _with_trial(state: SweepState, index: int, **changes: object) -> SweepState:
    trials = list(state.trials)
    trials[index] = msgspec.structs.replace(trials[index], **changes)
    return msgspec.structs.replace(state, trials=tuple(trials))


# -- commands: the wire's, completed by the service, and the controller's own ----------------


class SubmitResolvedSweep(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``SubmitSweep`` with the sampler's seed (the one given, or one the service drew)."""

    command: SubmitSweep
    seed: int


class ProposeTrial(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    index: int
    run_id: str
    parameters: dict[str, bool | int | float | str]
    sampled: dict[str, bool | int | float | str]
    seen: list[int]


class StopTrial(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    index: int
    policy: str
    interval: int
    value: float
    reference: float
    threshold: float
    reason: str


class EndTrial(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Trial ``index``'s child run ended ``status``, with these primary-metric numbers."""

    index: int
    status: str
    best: float | None = None
    last: float | None = None
    reports: int = 0
    error: str = ""


class TimeOutSweep(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The sweep ran past its ``timeout_s`` (the controller read the clock)."""

    timeout_s: float


class EndSweep(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """End the sweep once nothing runs and nothing more will be proposed."""


SweepCommand = (
    SubmitResolvedSweep
    | CancelSweep
    | ProposeTrial
    | StopTrial
    | EndTrial
    | TimeOutSweep
    | EndSweep
)


def decide(state: SweepState, command: SweepCommand) -> list[Event]:
    if isinstance(command, SubmitResolvedSweep):
        return _submit(state, command)
    if not state.exists:
        raise NotFound(f"sweep {state.run_id or '?'} does not exist")
    match command:
        case CancelSweep(reason=reason):
            if state.ended or state.cancel_requested:
                return []
            return [SweepCancelRequested(reason=reason or "canceled")]
        case TimeOutSweep(timeout_s=timeout_s):
            if state.ended or state.cancel_requested:
                return []
            return [SweepCancelRequested(reason=f"timeout: ran past {timeout_s:g} s")]
        case ProposeTrial():
            return _propose(state, command)
        case StopTrial():
            return _stop(state, command)
        case EndTrial():
            return _end_trial(state, command)
        case EndSweep():
            return _end(state)


def _submit(state: SweepState, command: SubmitResolvedSweep) -> list[Event]:
    submit = command.command
    if state.exists:
        raise AlreadyExists(f"sweep {submit.run_id} already exists")
    check(submit.spec, submit.trial.job.command)
    return [
        SweepSubmitted(
            run_id=submit.run_id,
            experiment_name=submit.experiment_name,
            spec=submit.spec,
            trial=submit.trial,
            seed=command.seed,
        )
    ]


def _propose(state: SweepState, command: ProposeTrial) -> list[Event]:
    n = len(state.trials)
    if command.index < n:  # proposed already (another controller, or this one before)
        return []
    if command.index > n:
        raise InvalidTransition(
            f"sweep {state.run_id} proposes trial {n} next, not {command.index}"
        )
    if not state.proposing:
        raise InvalidTransition(f"sweep {state.run_id} proposes no more trials")
    assert state.spec is not None
    if state.running >= state.spec.limits.max_concurrent_trials:
        raise InvalidTransition(
            f"sweep {state.run_id} runs {state.running} trials, its limit at once"
        )
    unknown = sorted(i for i in command.seen if i >= n or state.trials[i].status is None)
    if unknown:
        raise InvalidTransition(f"trials {unknown} of sweep {state.run_id} have no result yet")
    return [
        TrialProposed(
            index=command.index,
            run_id=command.run_id,
            parameters=command.parameters,
            sampled=command.sampled,
            seen=sorted(command.seen),
        )
    ]


def _trial(state: SweepState, index: int) -> TrialState:
    if not 0 <= index < len(state.trials):
        raise NotFound(f"sweep {state.run_id} has no trial {index}")
    return state.trials[index]


def _stop(state: SweepState, command: StopTrial) -> list[Event]:
    trial = _trial(state, command.index)
    if trial.stopped is not None or trial.status is not None:
        return []
    return [
        TrialStopped(
            index=command.index,
            policy=command.policy,
            interval=command.interval,
            value=command.value,
            reference=command.reference,
            threshold=command.threshold,
            reason=command.reason,
        )
    ]


def _end_trial(state: SweepState, command: EndTrial) -> list[Event]:
    trial = _trial(state, command.index)
    if trial.status is not None:
        return []
    return [
        TrialEnded(
            index=command.index,
            status=command.status,
            best=command.best,
            last=command.last,
            reports=command.reports,
            error=command.error,
        )
    ]


def best_index(state: SweepState) -> int | None:
    """The trial with the best primary metric (the earliest of equals); None when no trial
    logged it."""
    assert state.spec is not None
    goal = state.spec.objective.goal
    found: tuple[float, int] | None = None
    for trial in state.trials:
        if trial.best is None:
            continue
        if found is None or better(goal, trial.best, found[0]):
            found = (trial.best, trial.index)
    return found[1] if found is not None else None


def _end(state: SweepState) -> list[Event]:
    if state.ended:
        return []
    if state.running or state.proposing:
        raise InvalidTransition(f"sweep {state.run_id} still has trials to run")
    assert state.spec is not None
    best = best_index(state)
    if state.cancel_requested and not state.timed_out:
        return [SweepEnded(status="Canceled", error=state.cancel_reason, best_index=best)]
    if best is None:
        metric = state.spec.objective.primary_metric
        error = f"no trial logged the primary metric {metric!r}"
        refused = next((t for t in state.trials if t.error), None)
        if refused is not None:
            error += f" (trial {refused.index}: {refused.error})"
        if state.timed_out:
            error += f" ({state.cancel_reason})"
        return [SweepEnded(status="Failed", error=error)]
    note = state.cancel_reason if state.timed_out else ""
    return [SweepEnded(status="Completed", error=note, best_index=best)]


AGGREGATE: Aggregate[SweepState, SweepCommand] = Aggregate(
    kind=KIND, initial=SweepState(), evolve=evolve, decide=decide, commands=SweepCommand
)
