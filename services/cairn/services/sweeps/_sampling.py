"""Proposals: the next trial's parameters, from the sweep's seed and its events alone.

Each proposal builds an in-memory Optuna study, replays into it the trials proposed before
(with the results the proposal is told it may see: ``seen``), and asks the sampler once:
``GridSampler`` (its grid shuffled by the sweep's seed; trial n takes point n),
``RandomSampler`` or ``TPESampler`` seeded with a number derived from the sweep's seed and the
trial's index. Nothing is kept between proposals, so a controller that restarts, or a second
one, proposes exactly what an uninterrupted one would have from the same events: a proposal
depends on the seed, the earlier proposals and the results recorded before it, never on when
it is made.

Optuna samples each parameter in a space of its own (``sampled``); the distribution's
transform makes the value the trial gets (``loguniform`` samples the exponent, the normal
family a quantile in (0, 1) turned into a value by the inverse CDF), so a bounded sampler
serves Azure's unbounded distributions too.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState as OptunaState

from cairn.domain.sweep import TrialState
from cairn.proto.sweeps import (
    Choice,
    Distribution,
    LogNormal,
    LogUniform,
    Normal,
    QLogNormal,
    QLogUniform,
    QNormal,
    QUniform,
    RandInt,
    SweepSpec,
    Uniform,
)

__all__ = ["Proposal", "optuna_distribution", "propose", "seed_for", "transform"]

optuna.logging.set_verbosity(optuna.logging.WARNING)

Scalar = bool | int | float | str
#: quantiles of the normal family stay inside (EDGE, 1 - EDGE): a finite value always
_EDGE = 1e-12


@dataclass(frozen=True)
class Proposal:
    sampled: dict[str, Scalar]
    parameters: dict[str, Scalar]


def seed_for(seed: int, index: int) -> int:
    """The seed of proposal ``index`` of a sweep seeded ``seed``."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def optuna_distribution(dist: Distribution) -> BaseDistribution:
    """The space Optuna samples ``dist`` in."""
    match dist:
        case Choice(values=values):
            return CategoricalDistribution(values)
        case RandInt(upper=upper):
            return IntDistribution(0, upper - 1)
        case Uniform() | QUniform() | LogUniform() | QLogUniform():
            return FloatDistribution(dist.min_value, dist.max_value)
        case Normal() | QNormal() | LogNormal() | QLogNormal():
            return FloatDistribution(_EDGE, 1.0 - _EDGE)


def _q(value: float, q: float) -> float:
    return round(value / q) * q


def transform(dist: Distribution, sampled: Scalar) -> Scalar:
    """The value a trial gets for what Optuna sampled."""
    if isinstance(dist, Choice | RandInt):
        return sampled
    x = float(sampled)
    match dist:
        case Uniform():
            return x
        case QUniform(q=q):
            return _q(x, q)
        case LogUniform():
            return math.exp(x)
        case QLogUniform(q=q):
            return _q(math.exp(x), q)
    assert isinstance(dist, Normal | QNormal | LogNormal | QLogNormal)
    normal = NormalDist(dist.mu, dist.sigma).inv_cdf(min(max(x, _EDGE), 1.0 - _EDGE))
    match dist:
        case Normal():
            return normal
        case QNormal(q=q):
            return _q(normal, q)
        case LogNormal():
            return math.exp(normal)
        case QLogNormal(q=q):
            return _q(math.exp(normal), q)


def _sampler(spec: SweepSpec, seed: int, index: int) -> optuna.samplers.BaseSampler:
    algorithm = spec.sampling.algorithm
    if algorithm == "grid":
        grid: dict[str, Sequence[Any]] = {}
        for name, dist in spec.search_space.items():
            assert isinstance(dist, Choice)
            grid[name] = dist.values
        return optuna.samplers.GridSampler(grid, seed=seed)
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed_for(seed, index))
    return optuna.samplers.TPESampler(seed=seed_for(seed, index))


def propose(
    spec: SweepSpec, seed: int, index: int, trials: Sequence[TrialState], seen: set[int]
) -> Proposal:
    """Proposal ``index``, given the ``index`` trials proposed before it and the indices of
    those whose results it may use (``seen``: ended trials)."""
    distributions = {name: optuna_distribution(d) for name, d in spec.search_space.items()}
    sampler = _sampler(spec, seed, index)
    study = optuna.create_study(direction=spec.objective.goal, sampler=sampler)
    # a random draw depends on its seed alone: the history is replayed for the other two
    history = trials[:index] if spec.sampling.algorithm != "random" else ()
    for trial in history:
        value: float | None = None
        if trial.index not in seen:
            state = OptunaState.RUNNING
        elif trial.best is None:
            state = OptunaState.FAIL
        else:
            state, value = OptunaState.COMPLETE, trial.best
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna warns of trials added as RUNNING
            study.add_trial(
                optuna.trial.create_trial(
                    params=dict(trial.sampled),
                    distributions=distributions,
                    value=value,
                    state=state,
                )
            )
    asked = study.ask(distributions)
    sampled: dict[str, Scalar] = {name: asked.params[name] for name in spec.search_space}
    parameters = {name: transform(spec.search_space[name], v) for name, v in sampled.items()}
    return Proposal(sampled=sampled, parameters=parameters)
