"""Automated ML jobs from YAML in the shape of the Azure ML CLI v2 (``type: automl``), read
into the same sweep as ``AutoMLConfig``::

    type: automl
    task: classification                    # or regression
    primary_metric: accuracy
    training_data: {type: mltable, path: azureml:churn:1}
    validation_data: {type: mltable, path: azureml:churn-holdout@latest}   # or:
    n_cross_validations: 5
    target_column_name: label
    compute: local
    limits: {max_trials: 20, max_concurrent_trials: 4, timeout_minutes: 60,
             trial_timeout_minutes: 10, enable_early_termination: false}
    training: {allowed_training_algorithms: [LogisticRegression, RandomForest],
               blocked_training_algorithms: [KNN]}
    featurization: {mode: auto}
    experiment_name: churn

The data are registered tabular datasets, by reference (or the reference as a plain string);
whether each holds the target column is checked when the job is submitted, before anything
is queued. Every key is honoured or refused by name; unknown keys are msgspec's errors.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Literal

import msgspec

from cairn.errors import InvalidInput
from cairn.proto.sweeps import Objective, parameter_placeholder
from cairn.sdk._automl import (
    SCRIPT_FOLDER,
    automl_spec,
    check_options,
    check_table,
    models_left,
)
from cairn.sdk._hyperdrive import SweepConfig
from cairn.sdk._jobfile import job_from_doc
from cairn.sdk._refusals import refuse

__all__ = ["UNREAD_AUTOML_KEYS", "AutoMLFile", "load_automl_file"]

_AUTOML_SCHEMA = "autoMLJob.schema.json"
#: keys the loader needs not read, and why
UNREAD_AUTOML_KEYS: dict[str, str] = {
    "AutoMLFile.type": "the schema accepts only 'automl'",
    "TableInput.type": "a table is a registered tabular dataset whatever its type says",
}
_SENTINEL = "__cairn_search_space_{}__"
_DATASET_REF = re.compile(r"^(?:azureml|cairn):([^:@/][^:@]*)(?:[:@](latest|\d+))?$")


class TableInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["mltable", "uri_folder", "uri_file"] = "mltable"
    path: str


class AutoMLLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_trials: int = 1000
    max_concurrent_trials: int = 1
    timeout_minutes: float | None = None
    trial_timeout_minutes: float | None = None
    enable_early_termination: bool = False


class Training(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    allowed_training_algorithms: list[str] | None = None
    blocked_training_algorithms: list[str] | None = None
    enable_stack_ensemble: bool = False
    enable_vote_ensemble: bool = False


class Featurization(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    mode: str = "auto"


class AutoMLFile(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename={"schema": "$schema"}
):
    schema: str | None = None
    type: Literal["automl"] = "automl"
    task: str
    primary_metric: str | None = None
    training_data: TableInput | str
    validation_data: TableInput | str | None = None
    target_column_name: str
    n_cross_validations: int | None = None
    compute: str = "local"
    limits: AutoMLLimits = msgspec.field(default_factory=AutoMLLimits)
    training: Training = msgspec.field(default_factory=Training)
    featurization: Featurization = msgspec.field(default_factory=Featurization)
    random_state: int | None = None
    experiment_name: str | None = None
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    name: str | None = None


def _dataset(value: TableInput | str, where: str) -> tuple[str, str, int | None]:
    """The reference as a job input's path, and the dataset's name and version."""
    ref = value if isinstance(value, str) else value.path
    m = _DATASET_REF.match(ref)
    if m is None:
        raise InvalidInput(
            f"{where}: {ref!r} is not a registered dataset (azureml:<name>:<version> or"
            " azureml:<name>@latest)"
        )
    version = None if m.group(2) in (None, "latest") else int(m.group(2))
    return ref, m.group(1), version


def load_automl_file(doc: dict[str, Any], path: Path) -> tuple[AutoMLFile, SweepConfig]:
    """Check an automl job's keys; the sweep they describe."""
    try:
        automl = msgspec.convert(doc, AutoMLFile)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{path}: {exc}") from exc
    where = str(path)
    if automl.schema is not None and not automl.schema.endswith(_AUTOML_SCHEMA):
        raise InvalidInput(f"{path}: $schema {automl.schema!r} is not an automl job's schema")
    if automl.name is not None:
        raise refuse(where, "name", "Cairn makes every run's id; use display_name")
    limits, training = automl.limits, automl.training
    if limits.enable_early_termination:
        raise refuse(
            f"{where}: limits",
            "enable_early_termination",
            "each trial logs its score once, at its end; bound the search with max_trials",
        )
    for key, value in (
        ("enable_stack_ensemble", training.enable_stack_ensemble),
        ("enable_vote_ensemble", training.enable_vote_ensemble),
    ):
        if value:
            raise refuse(f"{where}: training", key, "the result is the best single pipeline")
    primary, goal = check_options(
        automl.task,
        automl.primary_metric,
        featurization=automl.featurization.mode,
        n_cross_validations=automl.n_cross_validations,
        validation=automl.validation_data is not None,
        where=where,
    )
    models = models_left(
        automl.task,
        training.allowed_training_algorithms,
        training.blocked_training_algorithms,
        where,
    )
    label = automl.target_column_name
    seed = automl.random_state
    words = f"--task {automl.task} --label {label} --metric {primary}"
    words += f" --random_state {seed or 0} --training ${{{{inputs.training_data}}}}"
    train_ref, train_name, train_version = _dataset(automl.training_data, f"{where}: training_data")
    inputs: dict[str, Any] = {
        "training_data": {"type": "uri_folder", "path": train_ref, "mode": "download"}
    }
    tables = [(train_name, train_version, "training_data")]
    if automl.validation_data is not None:
        ref, name, version = _dataset(automl.validation_data, f"{where}: validation_data")
        inputs["validation_data"] = {"type": "uri_folder", "path": ref, "mode": "download"}
        tables.append((name, version, "validation_data"))
        words += " --validation ${{inputs.validation_data}}"
    else:
        words += f" --cv {automl.n_cross_validations or 0}"
    if re.search(r"[^A-Za-z0-9_.-]", label):
        raise InvalidInput(f"{where}: target_column_name {label!r} is not one shell word")
    spec = automl_spec(
        models,
        Objective(primary_metric=primary, goal=goal),
        seed=seed,
        iterations=limits.max_trials,
        concurrency=limits.max_concurrent_trials,
        timeout_minutes=limits.timeout_minutes,
        trial_timeout_minutes=limits.trial_timeout_minutes,
    )
    # the search space's words stand aside while the command job's expressions are checked
    # (a v2 command runs under /bin/sh -c: the parameters are words of the command itself)
    flags = [f"--{name} {_SENTINEL.format(name)}" for name in spec.search_space]
    job_doc = {
        "code": str(SCRIPT_FOLDER),
        "command": f"python train.py {words} {' '.join(flags)}",
        "compute": automl.compute,
        "inputs": inputs,
    }
    _, config = job_from_doc(job_doc, path)
    argv = config.argv()
    for name in spec.search_space:
        argv = [w.replace(_SENTINEL.format(name), parameter_placeholder(name)) for w in argv]
    try:
        sweep = SweepConfig(config, spec, argv)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc.message}") from exc
    sweep.data_checks = [
        functools.partial(check_table, name=name, version=version, label=label, what=what)
        for name, version, what in tables
    ]
    return automl, sweep
