"""Hyperparameter sweeps: a parent run whose trials are child jobs, proposed by a sampler over
a search space and stopped early by a policy (Azure ML's HyperDrive; a v2 ``type: sweep`` job).

1. ``SubmitSweep`` (``cairn.cmd.<ws>.sweep.submit``, the sweeps service) creates the parent run
   and records ``SweepSubmitted`` on ``cairn.ev.<ws>.sweep.<run>``.
2. The sweep controller proposes trials (``TrialProposed``: index, parameters, the results it
   saw), submits each as a child job (``SubmitJob`` with ``parent_run_id``; run id
   ``derived_id("trial", sweep, index)``), follows the primary metric in METRICS, stops trials
   its policy picks (``TrialStopped``: the reason and the numbers compared), records each
   trial's end (``TrialEnded``) and ends the sweep (``SweepEnded``) at its limits.
3. ``CancelSweep`` asks it to stop: the running trials are canceled, then the sweep ends.

A distribution is one tagged struct (``{"type": "uniform", "min_value": 0, "max_value": 1}``),
with Azure's meaning: ``loguniform(a, b)`` is ``exp(uniform(a, b))``, ``quniform`` rounds to a
multiple of ``q``, ``lognormal(mu, sigma)`` is ``exp(normal(mu, sigma))``, ``randint(upper)``
is an integer in ``[0, upper)``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cairn.proto._base import (
    Count,
    Id,
    Int64,
    Key,
    MetricName,
    Name,
    Strict,
    TagKey,
    TagValue,
    Text,
)
from cairn.proto.commands import Command, Query
from cairn.proto.jobs import JobSpec

__all__ = [
    "DISTRIBUTIONS",
    "SWEEP_COMMAND_TYPES",
    "SWEEP_QUERY_TYPES",
    "CancelSweep",
    "Choice",
    "Distribution",
    "GetSweep",
    "LogNormal",
    "LogUniform",
    "Normal",
    "Objective",
    "ParameterValue",
    "Policy",
    "QLogNormal",
    "QLogUniform",
    "QNormal",
    "QUniform",
    "RandInt",
    "Sampling",
    "SubmitSweep",
    "SweepLimits",
    "SweepSpec",
    "TrialTemplate",
    "Uniform",
    "parameter_placeholder",
]

#: a hyperparameter's value, as the trial's script receives it
ParameterValue = bool | Int64 | float | Annotated[str, msgspec.Meta(max_length=1024)]


class Choice(Strict, frozen=True, kw_only=True, tag_field="type", tag="choice"):
    values: Annotated[list[ParameterValue], msgspec.Meta(min_length=1, max_length=10_000)]


class RandInt(Strict, frozen=True, kw_only=True, tag_field="type", tag="randint"):
    """An integer in ``[0, upper)``."""

    upper: Annotated[int, msgspec.Meta(ge=1, le=2**53)]


class Uniform(Strict, frozen=True, kw_only=True, tag_field="type", tag="uniform"):
    min_value: float
    max_value: float


class QUniform(Strict, frozen=True, kw_only=True, tag_field="type", tag="quniform"):
    """``round(uniform(min_value, max_value) / q) * q``"""

    min_value: float
    max_value: float
    q: Annotated[float, msgspec.Meta(gt=0)]


class LogUniform(Strict, frozen=True, kw_only=True, tag_field="type", tag="loguniform"):
    """``exp(uniform(min_value, max_value))``"""

    min_value: float
    max_value: float


class QLogUniform(Strict, frozen=True, kw_only=True, tag_field="type", tag="qloguniform"):
    """``round(exp(uniform(min_value, max_value)) / q) * q``"""

    min_value: float
    max_value: float
    q: Annotated[float, msgspec.Meta(gt=0)]


class Normal(Strict, frozen=True, kw_only=True, tag_field="type", tag="normal"):
    mu: float
    sigma: Annotated[float, msgspec.Meta(gt=0)]


class QNormal(Strict, frozen=True, kw_only=True, tag_field="type", tag="qnormal"):
    """``round(normal(mu, sigma) / q) * q``"""

    mu: float
    sigma: Annotated[float, msgspec.Meta(gt=0)]
    q: Annotated[float, msgspec.Meta(gt=0)]


class LogNormal(Strict, frozen=True, kw_only=True, tag_field="type", tag="lognormal"):
    """``exp(normal(mu, sigma))``"""

    mu: float
    sigma: Annotated[float, msgspec.Meta(gt=0)]


class QLogNormal(Strict, frozen=True, kw_only=True, tag_field="type", tag="qlognormal"):
    """``round(exp(normal(mu, sigma)) / q) * q``"""

    mu: float
    sigma: Annotated[float, msgspec.Meta(gt=0)]
    q: Annotated[float, msgspec.Meta(gt=0)]


Distribution = (
    Choice
    | RandInt
    | Uniform
    | QUniform
    | LogUniform
    | QLogUniform
    | Normal
    | QNormal
    | LogNormal
    | QLogNormal
)
DISTRIBUTIONS: tuple[type[Strict], ...] = (
    Choice,
    RandInt,
    Uniform,
    QUniform,
    LogUniform,
    QLogUniform,
    Normal,
    QNormal,
    LogNormal,
    QLogNormal,
)


class Sampling(Strict, frozen=True, kw_only=True):
    """``grid`` (choices only: every combination once, in an order the seed shuffles),
    ``random`` or ``bayesian`` (Optuna's TPE). ``seed`` None: the service draws one and
    records it, so the sweep's proposals can be made again from its events."""

    algorithm: Literal["grid", "random", "bayesian"] = "random"
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] | None = None


class Objective(Strict, frozen=True, kw_only=True):
    primary_metric: MetricName
    goal: Literal["maximize", "minimize"]


class Policy(Strict, frozen=True, kw_only=True):
    """An early-termination policy, applied at every ``evaluation_interval``-th report of the
    primary metric from the ``delay_evaluation``-th on (docs/design.md, "Sweeps").

    ``bandit``: stop a trial whose value at that interval is outside ``slack_factor`` (or
    ``slack_amount``) of the best value any trial reported at that interval.
    ``median_stopping``: stop one whose running average is worse than the median of the other
    trials' running averages at that interval. ``truncation_selection``: stop one among the
    worst ``truncation_percentage`` percent of the values reported at that interval."""

    kind: Literal["bandit", "median_stopping", "truncation_selection"]
    evaluation_interval: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    delay_evaluation: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    slack_factor: Annotated[float, msgspec.Meta(gt=0)] | None = None
    slack_amount: Annotated[float, msgspec.Meta(gt=0)] | None = None
    truncation_percentage: Annotated[int, msgspec.Meta(ge=1, le=99)] | None = None


class SweepLimits(Strict, frozen=True, kw_only=True):
    """``timeout_s``: the sweep's whole run (its trials are canceled when it passes);
    ``trial_timeout_s``: each trial's (the child job's ``timeout_s``)."""

    max_total_trials: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    max_concurrent_trials: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    trial_timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


class SweepSpec(Strict, frozen=True, kw_only=True):
    search_space: Annotated[dict[Key, Distribution], msgspec.Meta(min_length=1, max_length=100)]
    sampling: Sampling = msgspec.field(default_factory=Sampling)
    objective: Objective
    policy: Policy | None = None
    limits: SweepLimits


def parameter_placeholder(name: str) -> str:
    """What a trial's command says where a parameter's value goes (v2: ``${{search_space.x}}``;
    v1 puts ``--x ${{search_space.x}}`` after the script's arguments)."""
    return "${{search_space." + name + "}}"


class TrialTemplate(Strict, frozen=True, kw_only=True):
    """What each trial's ``SubmitJob`` says, but for its run id and its parameters: the
    command's ``${{search_space.<name>}}`` words become the trial's values."""

    compute: Key = "local"
    job: JobSpec
    environment_name: Name | None = None
    environment_version: Count | None = None


class SubmitSweep(Command, frozen=True, kw_only=True, tag=True):
    """Create the sweep's parent run ``run_id`` in ``experiment_name`` and start its
    controller. The trial's command names each parameter of the search space."""

    VERB = "sweep.submit"
    run_id: Id
    experiment_name: Name
    display_name: Name | None = None
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    trial: TrialTemplate
    spec: SweepSpec


class CancelSweep(Command, frozen=True, kw_only=True, tag=True):
    """Stop proposing, cancel the running trials, end the sweep Canceled."""

    VERB = "sweep.cancel"
    run_id: Id
    reason: Text = ""


class GetSweep(Query, frozen=True, kw_only=True, tag=True):
    """The sweep's spec, state and trials (index, run id, parameters, state, primary metric
    best and last, stopped early and why)."""

    NAME = "sweep.get"
    run_id: Id


SWEEP_COMMAND_TYPES: tuple[type[Command], ...] = (SubmitSweep, CancelSweep)
SWEEP_QUERY_TYPES: tuple[type[Query], ...] = (GetSweep,)
