"""Hyperparameter sweeps with Azure ML v1's HyperDrive names (async core and configuration).

``HyperDriveConfig(run_config=ScriptRunConfig(...), hyperparameter_sampling=
RandomParameterSampling({"--lr": loguniform(-6, -1)}), primary_metric_name="AUC", ...)``
given to ``experiment.submit`` becomes one ``SubmitSweep``: the trial is the script's job with
``--<name> ${{search_space.<name>}}`` after its arguments (a name that starts with ``-`` is used
as the flag itself), as HyperDrive passes parameters. Everything is checked before anything is
queued: a wrong space, policy or limit is an ``InvalidInput`` naming it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal

import msgspec

from cairn.domain.sweep import check
from cairn.errors import InvalidInput
from cairn.proto.sweeps import (
    CancelSweep,
    Choice,
    Distribution,
    GetSweep,
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
    SubmitSweep,
    SweepLimits,
    SweepSpec,
    TrialTemplate,
    Uniform,
    parameter_placeholder,
)
from cairn.sdk._jobs import ScriptRunConfig, build_job
from cairn.sdk._refusals import refuses
from cairn.sdk._session import Session, new_id

__all__ = [
    "BanditPolicy",
    "BayesianParameterSampling",
    "GridParameterSampling",
    "HyperDriveConfig",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "PrimaryMetricGoal",
    "RandomParameterSampling",
    "SweepConfig",
    "TruncationSelectionPolicy",
    "cancel_sweep",
    "choice",
    "get_sweep",
    "lognormal",
    "loguniform",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "submit_sweep",
    "uniform",
]


# -- distributions: Azure's parameter expressions ---------------------------------------------


def choice(*options: Any) -> Choice:
    """One of ``options`` (given as arguments, or as one list, tuple or range)."""
    values = (
        options[0]
        if len(options) == 1 and isinstance(options[0], list | tuple | range)
        else options
    )
    return Choice(values=list(values))


def randint(upper: int) -> RandInt:
    """An integer in ``[0, upper)``."""
    return RandInt(upper=upper)


def uniform(min_value: float, max_value: float) -> Uniform:
    return Uniform(min_value=min_value, max_value=max_value)


def quniform(min_value: float, max_value: float, q: float) -> QUniform:
    return QUniform(min_value=min_value, max_value=max_value, q=q)


def loguniform(min_value: float, max_value: float) -> LogUniform:
    """``exp(uniform(min_value, max_value))``"""
    return LogUniform(min_value=min_value, max_value=max_value)


def qloguniform(min_value: float, max_value: float, q: float) -> QLogUniform:
    return QLogUniform(min_value=min_value, max_value=max_value, q=q)


def normal(mu: float, sigma: float) -> Normal:
    return Normal(mu=mu, sigma=sigma)


def qnormal(mu: float, sigma: float, q: float) -> QNormal:
    return QNormal(mu=mu, sigma=sigma, q=q)


def lognormal(mu: float, sigma: float) -> LogNormal:
    """``exp(normal(mu, sigma))``"""
    return LogNormal(mu=mu, sigma=sigma)


def qlognormal(mu: float, sigma: float, q: float) -> QLogNormal:
    return QLogNormal(mu=mu, sigma=sigma, q=q)


# -- samplings ---------------------------------------------------------------------------------


Algorithm = Literal["grid", "random", "bayesian"]


class _Sampling:
    algorithm: ClassVar[Algorithm] = "random"

    def __init__(self, parameter_space: Mapping[str, Any], seed: int | None = None) -> None:
        if not isinstance(parameter_space, Mapping) or not parameter_space:
            raise InvalidInput(f"{type(self).__name__}: the parameter space is empty")
        for name, dist in parameter_space.items():
            if not isinstance(dist, Choice | RandInt | Uniform | QUniform | LogUniform):
                if not isinstance(dist, QLogUniform | Normal | QNormal | LogNormal | QLogNormal):
                    raise InvalidInput(
                        f"{type(self).__name__}: {name!r} is {dist!r}, not a distribution"
                        " (choice, randint, uniform, quniform, loguniform, qloguniform, normal,"
                        " qnormal, lognormal, qlognormal)"
                    )
        self.parameter_space: dict[str, Distribution] = dict(parameter_space)
        self.seed = seed

    def sampling(self) -> Sampling:
        return Sampling(algorithm=self.algorithm, seed=self.seed)


class GridParameterSampling(_Sampling):
    """Every combination of the choices once (choices only)."""

    algorithm: ClassVar[Algorithm] = "grid"


class RandomParameterSampling(_Sampling):
    """Independent draws; ``seed=``, or ``properties={"rngSeed": n}`` (Azure's argument takes
    free-form algorithm properties; that key is the one Cairn reads), fixes them."""

    algorithm: ClassVar[Algorithm] = "random"

    def __init__(
        self,
        parameter_space: Mapping[str, Any],
        properties: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        props = dict(properties or {})
        unknown = sorted(set(props) - {"rngSeed"})
        if unknown:
            raise InvalidInput(f"RandomParameterSampling: properties {unknown} are not supported")
        if seed is None and "rngSeed" in props:
            seed = int(props["rngSeed"])
        super().__init__(parameter_space, seed)


class BayesianParameterSampling(_Sampling):
    """Optuna's TPE over the space, each proposal made from the results before it."""

    algorithm: ClassVar[Algorithm] = "bayesian"


# -- policies ----------------------------------------------------------------------------------


class _Policy:
    def policy(self) -> Policy | None:
        raise NotImplementedError


class BanditPolicy(_Policy):
    def __init__(
        self,
        evaluation_interval: int = 1,
        slack_factor: float | None = None,
        slack_amount: float | None = None,
        delay_evaluation: int = 0,
    ) -> None:
        self._policy = Policy(
            kind="bandit",
            evaluation_interval=evaluation_interval,
            delay_evaluation=delay_evaluation,
            slack_factor=slack_factor,
            slack_amount=slack_amount,
        )

    def policy(self) -> Policy:
        return self._policy


class MedianStoppingPolicy(_Policy):
    def __init__(self, evaluation_interval: int = 1, delay_evaluation: int = 0) -> None:
        self._policy = Policy(
            kind="median_stopping",
            evaluation_interval=evaluation_interval,
            delay_evaluation=delay_evaluation,
        )

    def policy(self) -> Policy:
        return self._policy


class TruncationSelectionPolicy(_Policy):
    def __init__(
        self, truncation_percentage: int, evaluation_interval: int = 1, delay_evaluation: int = 0
    ) -> None:
        self._policy = Policy(
            kind="truncation_selection",
            evaluation_interval=evaluation_interval,
            delay_evaluation=delay_evaluation,
            truncation_percentage=truncation_percentage,
        )

    def policy(self) -> Policy:
        return self._policy


class NoTerminationPolicy(_Policy):
    def policy(self) -> None:
        return None


class PrimaryMetricGoal:
    """Whether the primary metric is better larger or smaller (Azure's values)."""

    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"


def _checked(spec: SweepSpec) -> SweepSpec:
    """``spec`` as the service will read it: bounds and limits checked now, not at queuing."""
    try:
        return msgspec.convert(msgspec.to_builtins(spec), SweepSpec)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"sweep: {exc}") from None


class SweepConfig:
    """A sweep as it is submitted: the trial's run config, the trial's argv (whose
    ``${{search_space.<name>}}`` words become each trial's values) and the sweep's spec, all
    checked now (a v2 ``type: sweep`` job file makes one directly)."""

    def __init__(self, run_config: ScriptRunConfig, spec: SweepSpec, command: list[str]) -> None:
        self.run_config = run_config
        self.spec = _checked(spec)
        self.command = command
        #: what needs the workspace to be checked, run before anything is sent
        self.data_checks: list[Callable[[Session], Awaitable[None]]] = []
        check(self.spec, command)

    @property
    def compute_name(self) -> str:
        return self.run_config.compute_name


class HyperDriveConfig(SweepConfig):
    """A sweep of ``run_config`` (a ``ScriptRunConfig`` or ``Estimator``; ``estimator=`` is
    the older name) over ``hyperparameter_sampling``, judged by ``primary_metric_name``
    logged by the script (``run.log``) with ``primary_metric_goal``. ``max_concurrent_runs``
    defaults to ``max_total_runs``; ``max_duration_minutes`` bounds the whole sweep."""

    @refuses(
        resume_from="a sweep starts from its own search; submit a new one",
        resume_child_runs="a sweep starts from its own search; submit a new one",
        pipeline="a sweep's trial is a script job (ScriptRunConfig or Estimator)",
        debug_flag="a sweep's events are its record (cairn job show)",
        custom_run_id="Cairn makes every run's id",
    )
    def __init__(
        self,
        hyperparameter_sampling: _Sampling,
        primary_metric_name: str,
        primary_metric_goal: str,
        max_total_runs: int,
        max_concurrent_runs: int | None = None,
        max_duration_minutes: float = 10080,
        policy: _Policy | None = None,
        estimator: ScriptRunConfig | None = None,
        run_config: ScriptRunConfig | None = None,
        resume_from: Any = None,
        resume_child_runs: Any = None,
        pipeline: Any = None,
        debug_flag: Any = None,
        custom_run_id: str | None = None,
    ) -> None:
        config = run_config if run_config is not None else estimator
        if config is None or (run_config is not None and estimator is not None):
            raise InvalidInput("HyperDriveConfig takes one of run_config= and estimator=")
        if not isinstance(hyperparameter_sampling, _Sampling):
            raise InvalidInput(
                "HyperDriveConfig: hyperparameter_sampling is a GridParameterSampling,"
                " RandomParameterSampling or BayesianParameterSampling"
            )
        given = str(primary_metric_goal).lower()
        if given not in ("maximize", "minimize"):
            raise InvalidInput(f"HyperDriveConfig: primary_metric_goal {primary_metric_goal!r}")
        goal: Literal["maximize", "minimize"] = "maximize" if given == "maximize" else "minimize"
        if policy is not None and not isinstance(policy, _Policy):
            raise InvalidInput(f"HyperDriveConfig: policy {policy!r} is not a policy")
        self.hyperparameter_sampling = hyperparameter_sampling
        concurrent = max_total_runs if max_concurrent_runs is None else max_concurrent_runs
        spec = SweepSpec(
            search_space=hyperparameter_sampling.parameter_space,
            sampling=hyperparameter_sampling.sampling(),
            objective=Objective(primary_metric=primary_metric_name, goal=goal),
            policy=policy.policy() if policy is not None else None,
            limits=SweepLimits(
                max_total_trials=max_total_runs,
                max_concurrent_trials=concurrent,
                timeout_s=max_duration_minutes * 60,
            ),
        )
        flags: list[str] = []  # the script's argv, then --<name> <value> per parameter
        for name in spec.search_space:
            flags += [name if name.startswith("-") else f"--{name}", parameter_placeholder(name)]
        super().__init__(config, spec, [*config.argv(), *flags])


async def submit_sweep(
    ws: Session,
    experiment_name: str,
    config: SweepConfig,
    *,
    tags: dict[str, str] | None = None,
    display_name: str | None = None,
) -> str:
    """Submit ``config`` as a new sweep of ``experiment_name``; returns its run id."""
    for data_check in config.data_checks:
        await data_check(ws)
    job, env_name, env_version = await build_job(ws, config.run_config, command=config.command)
    return await send_sweep(
        ws,
        experiment_name,
        TrialTemplate(
            compute=config.run_config.compute_name,
            job=job,
            environment_name=env_name,
            environment_version=env_version,
        ),
        config.spec,
        tags=tags,
        display_name=display_name,
    )


async def send_sweep(
    ws: Session,
    experiment_name: str,
    trial: TrialTemplate,
    spec: SweepSpec,
    *,
    tags: dict[str, str] | None = None,
    display_name: str | None = None,
) -> str:
    run_id = new_id()
    await ws.experiment_id(experiment_name)  # get-or-create, as a job's submission does
    await ws.send(
        SubmitSweep(
            command_id=new_id(),
            run_id=run_id,
            experiment_name=experiment_name,
            display_name=display_name,
            tags=tags or {},
            trial=trial,
            spec=spec,
        )
    )
    return run_id


async def get_sweep(ws: Session, run_id: str) -> dict[str, Any]:
    """The sweep's view: spec, status, best trial, trials (``sweep.get``)."""
    data: dict[str, Any] = (await ws.client.ask(GetSweep(run_id=run_id, min_seq=ws.seen_seq))).data
    return data


async def cancel_sweep(ws: Session, run_id: str, reason: str = "") -> None:
    await ws.send(CancelSweep(command_id=new_id(), run_id=run_id, reason=reason))


def best_first(trials: Iterable[dict[str, Any]], goal: str) -> list[dict[str, Any]]:
    """Trials with a primary metric, best first (ties: earlier first)."""
    sign = -1.0 if goal == "maximize" else 1.0
    scored = [t for t in trials if t.get("best") is not None]
    return sorted(scored, key=lambda t: (sign * float(t["best"]), t["index"]))
