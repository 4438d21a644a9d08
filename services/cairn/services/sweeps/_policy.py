"""Early termination: whether a trial's primary metric, at one of its reports, stops it.

Pure functions over the primary metric's series of every trial of a sweep (the values each
logged, in order: the n-th value is *interval* n). A policy is applied at interval ``k`` when
``k`` is a multiple of ``evaluation_interval`` and at least ``delay_evaluation``; what it
compares is what the trials reported at that same interval, so the decision for (trial, k)
depends on the values logged, not on when the controller looked.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cairn.domain.sweep import better
from cairn.proto.sweeps import Objective, Policy

__all__ = ["Stop", "evaluate", "evaluated_at"]


@dataclass(frozen=True)
class Stop:
    interval: int
    value: float
    reference: float
    threshold: float
    reason: str


def evaluated_at(policy: Policy, k: int) -> bool:
    """Whether the policy is applied at interval ``k`` (1: a trial's first report)."""
    return k >= 1 and k % policy.evaluation_interval == 0 and k >= policy.delay_evaluation


def evaluate(
    policy: Policy,
    objective: Objective,
    index: int,
    series: Mapping[int, Sequence[float]],
    k: int,
) -> Stop | None:
    """The policy's decision for trial ``index`` at interval ``k`` (None: it goes on)."""
    own = series.get(index, ())
    if len(own) < k or not evaluated_at(policy, k):
        return None
    match policy.kind:
        case "bandit":
            return _bandit(policy, objective, series, own, k)
        case "median_stopping":
            return _median(objective, index, series, own, k)
        case "truncation_selection":
            return _truncation(policy, objective, index, series, own, k)
    return None


def _bandit(
    policy: Policy,
    objective: Objective,
    series: Mapping[int, Sequence[float]],
    own: Sequence[float],
    k: int,
) -> Stop | None:
    goal, value = objective.goal, own[k - 1]
    at_k = [s[k - 1] for s in series.values() if len(s) >= k]
    best = max(at_k) if goal == "maximize" else min(at_k)
    sign = 1 if goal == "maximize" else -1
    if policy.slack_factor is not None:
        factor = 1 + policy.slack_factor
        threshold = best / factor if goal == "maximize" else best * factor
        slack = f"slack factor {policy.slack_factor:g}"
    else:
        amount = policy.slack_amount or 0.0
        threshold = best - sign * amount
        slack = f"slack amount {amount:g}"
    if not better(goal, threshold, value):
        return None
    word = "below" if goal == "maximize" else "above"
    reason = (
        f"bandit: {objective.primary_metric} {value:g} at interval {k} is {word} {threshold:g},"
        f" the best at that interval ({best:g}) within {slack}"
    )
    return Stop(interval=k, value=value, reference=best, threshold=threshold, reason=reason)


def _median(
    objective: Objective,
    index: int,
    series: Mapping[int, Sequence[float]],
    own: Sequence[float],
    k: int,
) -> Stop | None:
    others = [statistics.fmean(s[:k]) for i, s in series.items() if i != index and len(s) >= k]
    if not others:
        return None
    median = statistics.median(others)
    average = statistics.fmean(own[:k])
    if not better(objective.goal, median, average):
        return None
    reason = (
        f"median stopping: the running average of {objective.primary_metric} at interval {k}"
        f" ({average:g}) is worse than the median of the other trials' ({median:g})"
    )
    return Stop(interval=k, value=average, reference=median, threshold=median, reason=reason)


def _truncation(
    policy: Policy,
    objective: Objective,
    index: int,
    series: Mapping[int, Sequence[float]],
    own: Sequence[float],
    k: int,
) -> Stop | None:
    percent = policy.truncation_percentage or 0
    at_k = sorted(
        ((s[k - 1], i) for i, s in series.items() if len(s) >= k),
        key=lambda vi: (vi[0] if objective.goal == "maximize" else -vi[0], vi[1]),
    )  # worst first
    cut = math.floor(len(at_k) * percent / 100)
    if cut == 0 or index not in {i for _, i in at_k[:cut]}:
        return None
    value, threshold = own[k - 1], at_k[cut - 1][0]
    reason = (
        f"truncation selection: {objective.primary_metric} {value:g} at interval {k} is among"
        f" the worst {percent}% of the {len(at_k)} trials' values there (cut-off {threshold:g})"
    )
    return Stop(interval=k, value=value, reference=threshold, threshold=threshold, reason=reason)
