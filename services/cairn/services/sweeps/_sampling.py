"""Proposals: the next trial's parameters, from the sweep's seed and its events alone.

Each proposal builds an in-memory Optuna study, replays into it the trials proposed before
(with the results the proposal is told it may see: ``seen``), and asks the sampler once:
``RandomSampler`` or ``TPESampler`` seeded with a number derived from the sweep's seed and the
trial's index. Nothing is kept between proposals, so a controller that restarts, or a second
one, proposes exactly what an uninterrupted one would have from the same events: a proposal
depends on the seed, the earlier proposals and the results recorded before it, never on when
it is made. A grid needs no study: trial n takes point n of the grid in an order the seed
gives (:func:`grid_point`), computed from n without listing the grid.

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

import numpy as np
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

__all__ = [
    "Proposal",
    "grid_point",
    "optuna_distribution",
    "propose",
    "seed_for",
    "transform",
]

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


#: a grid up to this many points is ordered as Optuna's ``GridSampler`` orders it (the sweeps
#: of earlier versions keep their order); a larger one by :func:`_permuted`, without
#: materialising it
SHUFFLED_UP_TO = 100_000


def grid_point(spec: SweepSpec, seed: int, index: int) -> dict[str, Scalar]:
    """Point ``index`` of the grid in the order the sweep's seed gives it: the values of
    point ``p`` of the product of the choices, parameters sorted by name, the last one varying
    fastest (``p`` is a mixed-radix number)."""
    names = sorted(spec.search_space)
    choices: list[Sequence[Scalar]] = []
    for name in names:
        dist = spec.search_space[name]
        assert isinstance(dist, Choice)
        choices.append(dist.values)
    size = math.prod(len(c) for c in choices)
    if not 0 <= index < size:
        raise IndexError(f"point {index} of a grid of {size}")
    if size <= SHUFFLED_UP_TO:
        # what GridSampler(grid, seed) gives trial ``index``: its list of points shuffled by
        # numpy's RandomState(seed) (the same swaps whatever the list holds)
        order = np.arange(size)
        np.random.RandomState(seed or 0).shuffle(order)
        point = int(order[index])
    else:
        point = _permuted(index, size, seed)
    values: list[Scalar] = []
    for values_of in reversed(choices):
        point, digit = divmod(point, len(values_of))
        values.append(values_of[digit])
    return dict(zip(names, reversed(values), strict=True))


def _permuted(index: int, size: int, seed: int) -> int:
    """``index``'s image under a permutation of ``range(size)`` that the seed picks: a
    balanced Feistel network over the smallest even number of bits that holds ``size`` (a
    bijection on that power of two), walked until it lands inside ``range(size)`` (a cycle
    of the bijection through an inside point comes back inside, so this is a bijection on
    ``range(size)``; the domain is under four times ``size``, so a few steps on average)."""
    bits = max(2, (size - 1).bit_length())
    bits += bits % 2
    half = bits // 2
    mask = (1 << half) - 1
    key = seed.to_bytes(8, "big", signed=False)
    x = index
    while True:
        left, right = x >> half, x & mask
        for round_ in range(4):
            digest = hashlib.sha256(key + bytes([round_]) + right.to_bytes(16, "big")).digest()
            left, right = right, left ^ (int.from_bytes(digest[:16], "big") & mask)
        x = (left << half) | right
        if x < size:
            return x


def _sampler(spec: SweepSpec, seed: int, index: int) -> optuna.samplers.BaseSampler:
    if spec.sampling.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed_for(seed, index))
    return optuna.samplers.TPESampler(seed=seed_for(seed, index))


def propose(
    spec: SweepSpec, seed: int, index: int, trials: Sequence[TrialState], seen: set[int]
) -> Proposal:
    """Proposal ``index``, given the ``index`` trials proposed before it and the indices of
    those whose results it may use (``seen``: ended trials)."""
    if spec.sampling.algorithm == "grid":  # point ``index`` of the shuffled grid: no study
        point = grid_point(spec, seed, index)
        return Proposal(sampled=point, parameters=dict(point))
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
