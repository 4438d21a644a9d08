"""The controller's pure parts: proposals (Optuna, rebuilt from the events before them) and
the early-termination policies, without a server."""

from __future__ import annotations

import math

import optuna
import pytest

from cairn.domain.sweep import TrialState, check, grid_size
from cairn.errors import InvalidInput
from cairn.proto.sweeps import (
    Choice,
    LogNormal,
    LogUniform,
    Normal,
    Objective,
    Policy,
    QLogNormal,
    QLogUniform,
    QNormal,
    QUniform,
    RandInt,
    Sampling,
    SweepLimits,
    SweepSpec,
    Uniform,
)
from cairn.services.sweeps._policy import evaluate, evaluated_at
from cairn.services.sweeps._sampling import _permuted, grid_point, optuna_distribution, propose

SPACE = {
    "c": Choice(values=["a", "b", 3]),
    "r": RandInt(upper=4),
    "u": Uniform(min_value=-1.0, max_value=1.0),
    "qu": QUniform(min_value=0.0, max_value=10.0, q=2.5),
    "lu": LogUniform(min_value=-6.0, max_value=-1.0),
    "qlu": QLogUniform(min_value=0.0, max_value=4.0, q=5.0),
    "n": Normal(mu=10.0, sigma=2.0),
    "qn": QNormal(mu=0.0, sigma=3.0, q=0.5),
    "ln": LogNormal(mu=0.0, sigma=1.0),
    "qln": QLogNormal(mu=1.0, sigma=1.0, q=0.25),
}
MAX = Objective(primary_metric="m", goal="maximize")


def spec(algorithm: str, space: dict[str, object] = SPACE) -> SweepSpec:
    return SweepSpec(
        search_space=space,
        sampling=Sampling(algorithm=algorithm, seed=4),
        objective=MAX,
        limits=SweepLimits(max_total_trials=100),
    )


def run(s: SweepSpec, n: int, score: object = None) -> list[TrialState]:
    trials: list[TrialState] = []
    for i in range(n):
        p = propose(s, 4, i, trials, {t.index for t in trials})
        best = float(p.parameters["u"]) if "u" in p.parameters else float(i)
        trials.append(
            TrialState(
                index=i,
                run_id=f"t{i}",
                parameters=p.parameters,
                sampled=p.sampled,
                seen=[],
                status="Completed",
                best=best,
            )
        )
    return trials


def q_multiple(value: float, q: float) -> bool:
    return math.isclose(value / q, round(value / q), abs_tol=1e-9)


@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
def test_each_distribution_gives_values_of_its_kind(algorithm: str) -> None:
    for t in run(spec(algorithm), 14):
        p, raw = t.parameters, t.sampled
        assert p["c"] in ("a", "b", 3) and p["r"] in range(4)
        assert -1 <= p["u"] <= 1 and 0 <= p["qu"] <= 10 and q_multiple(p["qu"], 2.5)
        assert p["lu"] == pytest.approx(math.exp(raw["lu"]))
        assert math.exp(-6) <= p["lu"] <= math.exp(-1)
        assert q_multiple(p["qlu"], 5.0) and 0 <= p["qlu"] <= 55
        assert 0 < raw["n"] < 1 and math.isfinite(p["n"])  # a quantile, made a value
        assert q_multiple(p["qn"], 0.5) and p["ln"] > 0 and q_multiple(p["qln"], 0.25)


@pytest.mark.parametrize("algorithm", ["random", "bayesian", "grid"])
def test_a_proposal_is_a_function_of_the_seed_and_the_events_before_it(algorithm: str) -> None:
    space = {"c": Choice(values=[1, 2, 3]), "d": Choice(values=["x", "y"])}
    s = spec(algorithm, space if algorithm == "grid" else SPACE)
    n = 6 if algorithm == "grid" else 14
    first, again = run(s, n), run(s, n)
    assert [t.parameters for t in first] == [t.parameters for t in again]
    if algorithm == "grid":  # every point once
        assert sorted((t.parameters["c"], t.parameters["d"]) for t in first) == sorted(
            (c, d) for c in (1, 2, 3) for d in ("x", "y")
        )


@pytest.mark.parametrize("seed", [0, 4, 2**32 - 1])
def test_a_small_grid_keeps_the_order_optuna_gave_it(seed: int) -> None:
    """Up to ``SHUFFLED_UP_TO`` points, trial n takes what ``GridSampler(grid, seed)`` gives
    trial number n, as in earlier versions (their sweeps go on in the same order)."""
    space: dict[str, object] = {
        "b": Choice(values=[1, 2, 3]),
        "a": Choice(values=["x", "y"]),
        "c": Choice(values=[0.5, 1.5, 2.5, 3.5]),
    }
    s = spec("grid", space)
    distributions = {name: optuna_distribution(d) for name, d in s.search_space.items()}
    study = optuna.create_study(
        sampler=optuna.samplers.GridSampler(
            {name: d.values for name, d in s.search_space.items()}, seed=seed
        )
    )
    for index in range(24):
        asked = study.ask(distributions)
        assert grid_point(s, seed, index) == asked.params
        if index < 23:  # (the last would stop the study, outside an optimize loop)
            study.tell(asked, 0.0)


def test_a_huge_grid_is_never_listed() -> None:
    """A grid of 10^8 points (and one of 10^9 - 1) gives its first proposals at once, each a
    point of the grid, none twice; a bigger one than the cap is refused by ``check``."""
    digits = [str(d) for d in range(10)]
    space: dict[str, object] = {f"p{i}": Choice(values=digits) for i in range(8)}
    s = spec("grid", space)
    points = [tuple(grid_point(s, 7, i).values()) for i in range(2000)]
    assert len(set(points)) == 2000 and all(len(p) == 8 for p in points)
    assert propose(s, 7, 3, [], set()).parameters == grid_point(s, 7, 3)
    assert propose(s, 8, 3, [], set()).parameters != grid_point(s, 7, 3)
    odd = {"a": Choice(values=list(range(999))), "b": Choice(values=list(range(1_001_001)))}
    assert grid_size(spec("grid", odd)) == 10**9 - 1
    assert len({tuple(grid_point(spec("grid", odd), 1, i).values()) for i in range(500)}) == 500
    over = {**space, "p8": Choice(values=digits), "p9": Choice(values=digits)}
    command = [f"${{{{search_space.{name}}}}}" for name in over]
    with pytest.raises(InvalidInput, match="grid of 10000000000 points"):
        check(spec("grid", over), command)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17, 64, 100, 1000])
def test_the_permutation_of_a_big_grid_is_one(size: int) -> None:
    assert sorted(_permuted(i, size, 3) for i in range(size)) == list(range(size))


def test_a_bayesian_proposal_depends_on_the_results_it_saw() -> None:
    s = spec("bayesian", {"u": Uniform(min_value=-1.0, max_value=1.0)})
    trials = run(s, 12)
    seen_all = propose(s, 4, 12, trials, {t.index for t in trials})
    seen_none = propose(s, 4, 12, trials, set())
    assert seen_all.parameters != seen_none.parameters
    assert propose(s, 4, 12, trials, {t.index for t in trials}) == seen_all


def bandit(**kw: object) -> Policy:
    return Policy(kind="bandit", **kw)


def test_the_policy_is_applied_at_its_intervals_from_its_delay() -> None:
    policy = bandit(slack_factor=0.1, evaluation_interval=2, delay_evaluation=4)
    assert [k for k in range(1, 10) if evaluated_at(policy, k)] == [4, 6, 8]


def test_bandit_by_factor_and_by_amount_both_ways() -> None:
    series = {0: [1.0, 1.0], 1: [0.95, 0.8]}
    stop = evaluate(bandit(slack_factor=0.1), MAX, 1, series, 2)
    assert stop is not None and stop.interval == 2 and stop.threshold == pytest.approx(1 / 1.1)
    assert evaluate(bandit(slack_factor=0.1), MAX, 1, series, 1) is None
    assert evaluate(bandit(slack_amount=0.3), MAX, 1, series, 2) is None
    low = Objective(primary_metric="loss", goal="minimize")
    losses = {0: [1.0, 0.5], 1: [1.0, 0.7]}
    stop = evaluate(bandit(slack_amount=0.1), low, 1, losses, 2)
    assert stop is not None and stop.threshold == pytest.approx(0.6) and "above" in stop.reason
    assert evaluate(bandit(slack_amount=0.1), low, 0, losses, 2) is None


def test_median_stopping_compares_running_averages() -> None:
    policy = Policy(kind="median_stopping")
    series = {0: [0.9, 0.9], 1: [0.8, 0.8], 2: [0.1, 0.9]}
    stop = evaluate(policy, MAX, 2, series, 2)
    assert (
        stop is not None
        and stop.value == pytest.approx(0.5)
        and stop.reference == pytest.approx(0.85)
    )
    assert evaluate(policy, MAX, 0, series, 2) is None
    assert evaluate(policy, MAX, 0, {0: [0.1]}, 1) is None  # nothing to compare with


def test_truncation_selection_stops_the_worst_percent() -> None:
    policy = Policy(kind="truncation_selection", truncation_percentage=50)
    series = {i: [v] for i, v in enumerate([0.4, 0.9, 0.1, 0.7])}
    stopped = {i for i in series if evaluate(policy, MAX, i, series, 1)}
    assert stopped == {0, 2}
    assert evaluate(policy, MAX, 0, {0: [0.4]}, 1) is None  # a cut of none
