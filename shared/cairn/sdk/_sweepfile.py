"""Sweep jobs from YAML in the shape of the Azure ML CLI v2 (``type: sweep``), and the one
reader of job files the CLI uses (``read_job_file``: a command job or a sweep).

::

    type: sweep
    trial:
      code: ./src
      command: python train.py --lr ${{search_space.lr}} --data ${{inputs.data}}
      environment: sklearn-env@latest
    compute: local
    inputs: {data: {type: uri_folder, path: ./data}}
    search_space:
      lr: {type: loguniform, min_value: -6, max_value: -1}
      n: {type: choice, values: [10, 50, 100]}
    sampling_algorithm: random          # grid, bayesian, or {type: random, seed: 7}
    objective: {goal: maximize, primary_metric: AUC}
    early_termination: {type: bandit, slack_factor: 0.1, evaluation_interval: 1}
    limits: {max_total_trials: 20, max_concurrent_trials: 4, timeout: 3600, trial_timeout: 600}
    experiment_name: diabetes

The trial is a command job (its keys, and the top level's ``compute``, ``inputs``,
``outputs``, are read as a command job's are); ``${{search_space.<name>}}`` in its command
becomes each trial's value. Every key is honoured or refused by name.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Literal

import msgspec

from cairn.errors import InvalidInput
from cairn.proto.sweeps import (
    Distribution,
    Objective,
    Policy,
    Sampling,
    SweepLimits,
    SweepSpec,
    parameter_placeholder,
)
from cairn.sdk._automlfile import AutoMLFile, load_automl_file
from cairn.sdk._hyperdrive import SweepConfig
from cairn.sdk._jobfile import JobFile, job_from_doc, read_yaml
from cairn.sdk._jobs import ScriptRunConfig
from cairn.sdk._refusals import refuse

__all__ = ["UNREAD_SWEEP_KEYS", "SweepFile", "read_job_file"]

_SWEEP_SCHEMA = "sweepJob.schema.json"
#: keys the loader needs not read, and why
UNREAD_SWEEP_KEYS: dict[str, str] = {
    "SweepFile.type": "the schema accepts only 'sweep'",
}
_SPACE_REF = re.compile(r"\$\{\{\s*search_space\.([A-Za-z0-9_-]+)\s*\}\}")
_SENTINEL = "__cairn_search_space_{}__"


class Trial(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The command each trial runs (a command job's keys that belong to a trial)."""

    code: str = "."
    command: str
    environment: str | dict[str, Any] | None = None
    environment_variables: dict[str, str | int | float] = msgspec.field(default_factory=dict)
    resources: dict[str, Any] | None = None
    distribution: dict[str, Any] | None = None


class SamplingObject(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["grid", "random", "bayesian"]
    seed: int | None = None
    rule: Literal["random", "sobol"] = "random"
    logbase: float | str | None = None


class EarlyTermination(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["bandit", "median_stopping", "truncation_selection"]
    evaluation_interval: int = 1
    delay_evaluation: int = 0
    slack_factor: float | None = None
    slack_amount: float | None = None
    truncation_percentage: int | None = None
    exclude_finished_jobs: bool = False


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_total_trials: int
    max_concurrent_trials: int | None = None
    timeout: float | None = None
    trial_timeout: float | None = None


class SweepFile(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename={"schema": "$schema"}
):
    schema: str | None = None
    type: Literal["sweep"] = "sweep"
    trial: Trial
    compute: str = "local"
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    outputs: dict[str, Any] = msgspec.field(default_factory=dict)
    search_space: dict[str, Any]
    sampling_algorithm: Literal["grid", "random", "bayesian"] | SamplingObject = "random"
    objective: Objective
    early_termination: EarlyTermination | None = None
    limits: Limits
    experiment_name: str | None = None
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    name: str | None = None
    secrets: list[str] = msgspec.field(default_factory=list)


def read_job_file(
    path: Path,
) -> tuple[JobFile | SweepFile | AutoMLFile, ScriptRunConfig | SweepConfig]:
    """Read and check a job file of any type (``command``, the default, ``sweep`` or
    ``automl``); what it describes, ready for ``experiment.submit``."""
    doc = read_yaml(path)
    if doc.get("type") == "sweep":
        return load_sweep_file(doc, path)
    if doc.get("type") == "automl":
        return load_automl_file(doc, path)
    return job_from_doc(doc, path)


def _sampling(
    value: Literal["grid", "random", "bayesian"] | SamplingObject, where: str
) -> Sampling:
    if isinstance(value, str):
        return Sampling(algorithm=value)
    if value.rule != "random":
        raise refuse(where, "rule", "random sampling draws independently (rule: random)")
    if value.logbase is not None:
        raise refuse(where, "logbase", "loguniform samples exp(uniform(min, max)), base e")
    return Sampling(algorithm=value.type, seed=value.seed)


def _policy(value: EarlyTermination | None, where: str) -> Policy | None:
    if value is None:
        return None
    if value.exclude_finished_jobs:
        raise refuse(where, "exclude_finished_jobs", "truncation ranks every trial at an interval")
    return Policy(
        kind=value.type,
        evaluation_interval=value.evaluation_interval,
        delay_evaluation=value.delay_evaluation,
        slack_factor=value.slack_factor,
        slack_amount=value.slack_amount,
        truncation_percentage=value.truncation_percentage,
    )


def _space(raw: dict[str, Any], where: str) -> dict[str, Distribution]:
    try:
        space = msgspec.convert(raw, dict[str, Distribution])
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{where}: {exc}") from exc
    for name, dist in space.items():
        for value in getattr(dist, "values", ()):
            if isinstance(value, str) and shlex.quote(value) != value:
                raise InvalidInput(
                    f"{where}.{name}: {value!r} is not one shell word; a trial's command gets"
                    " its values unquoted"
                )
    return space


def load_sweep_file(doc: dict[str, Any], path: Path) -> tuple[SweepFile, SweepConfig]:
    """Check a sweep job's keys; the sweep they describe."""
    try:
        sweep = msgspec.convert(doc, SweepFile)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{path}: {exc}") from exc
    where = str(path)
    if sweep.schema is not None and not sweep.schema.endswith(_SWEEP_SCHEMA):
        raise InvalidInput(f"{path}: $schema {sweep.schema!r} is not a sweep job's schema")
    if sweep.name is not None:
        raise refuse(where, "name", "Cairn makes every run's id; use display_name")
    trial = sweep.trial
    if trial.resources is not None:
        raise refuse(f"{where}: trial", "resources", "a trial is one process on one agent")
    if trial.distribution is not None:
        raise refuse(f"{where}: trial", "distribution", "a trial is one process on one agent")
    names = set(_SPACE_REF.findall(trial.command))
    # the search space's words stand aside while the command job's expressions are checked
    command = _SPACE_REF.sub(lambda m: _SENTINEL.format(m.group(1)), trial.command)
    job_doc = {
        "code": trial.code,
        "command": command,
        "environment": trial.environment,
        "environment_variables": trial.environment_variables,
        "compute": sweep.compute,
        "inputs": sweep.inputs,
        "outputs": sweep.outputs,
        "secrets": sweep.secrets,
    }
    _, config = job_from_doc({k: v for k, v in job_doc.items() if v is not None}, path)
    argv = config.argv()
    for name in names:
        argv = [w.replace(_SENTINEL.format(name), parameter_placeholder(name)) for w in argv]
    limits = sweep.limits
    spec = SweepSpec(
        search_space=_space(sweep.search_space, f"{path}: search_space"),
        sampling=_sampling(sweep.sampling_algorithm, f"{where}: sampling_algorithm"),
        objective=sweep.objective,
        policy=_policy(sweep.early_termination, f"{where}: early_termination"),
        limits=SweepLimits(
            max_total_trials=limits.max_total_trials,
            max_concurrent_trials=limits.max_concurrent_trials or limits.max_total_trials,
            timeout_s=limits.timeout,
            trial_timeout_s=limits.trial_timeout,
        ),
    )
    try:
        return sweep, SweepConfig(config, spec, argv)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc.message}") from exc
