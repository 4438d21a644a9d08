"""Automated ML with Azure ML v1's names, on the sweep engine.

``AutoMLConfig(task='classification', primary_metric='AUC_weighted', training_data=ds,
label_column_name='y', iterations=20, ...)`` given to ``experiment.submit`` is a sweep
(``SweepConfig``): its search space is a ``choice`` over the model families left by
``allowed_models``/``blocked_models`` plus each family's hyperparameters, sampled at random
with ``random_state`` as the seed; each trial is a job running the training script shipped in
this package (``_automl_script/train.py``) on the tabular dataset, which logs the primary
metric and the task's other standard metrics and saves the fitted pipeline as
``outputs/model.pkl``. Everything is checked at construction, before anything is queued:
an unknown task, metric or model, a label column the data lacks, both cross-validation and
validation data are ``InvalidInput`` naming them.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

from cairn.errors import InvalidInput
from cairn.proto.sweeps import (
    Choice,
    Distribution,
    LogUniform,
    Objective,
    Sampling,
    SweepLimits,
    SweepSpec,
    Uniform,
    parameter_placeholder,
)
from cairn.sdk._async_data import AsyncDatasets
from cairn.sdk._automl_trial import (
    CLASSIFICATION_METRICS,
    CLASSIFICATION_MODELS,
    REGRESSION_METRICS,
    REGRESSION_MODELS,
    Goal,
)
from cairn.sdk._datasets import TabularDataset
from cairn.sdk._hyperdrive import SweepConfig
from cairn.sdk._jobs import ScriptRunConfig
from cairn.sdk._refusals import refuses
from cairn.sdk._session import Session

__all__ = [
    "SCRIPT_FOLDER",
    "AutoMLConfig",
    "automl_spec",
    "check_options",
    "check_table",
    "models_left",
    "parameter_flags",
    "search_space",
]

#: the folder of the trial's script (the job's code snapshot)
SCRIPT_FOLDER = Path(__file__).parent / "_automl_script"

#: Azure ML's other model names: blocking one is a no-op, allowing one is refused
_AZURE_ONLY = {
    "classification": {
        "AveragedPerceptronClassifier",
        "BernoulliNaiveBayes",
        "LightGBM",
        "LinearSVM",
        "MultinomialNaiveBayes",
        "SGD",
        "SVM",
        "TabnetClassifier",
        "XGBoostClassifier",
    },
    "regression": {
        "FastLinearRegressor",
        "LassoLars",
        "LightGBM",
        "OnlineGradientDescentRegressor",
        "SGD",
        "TabnetRegressor",
        "XGBoostRegressor",
    },
}

#: each family's hyperparameters (flat names: every trial gets every parameter of the
#: families in its space, and its script reads those of the family it fits)
_FAMILY_SPACE: dict[str, dict[str, Distribution]] = {
    "LogisticRegression": {"logistic_C": LogUniform(min_value=-4.6, max_value=4.6)},
    "ElasticNet": {
        "elasticnet_alpha": LogUniform(min_value=-6.9, max_value=1.0),
        "elasticnet_l1_ratio": Uniform(min_value=0.0, max_value=1.0),
    },
    "trees": {
        "trees_n_estimators": Choice(values=[25, 50, 100]),
        "trees_max_features": Choice(values=["sqrt", 0.5, 1.0]),
        "trees_min_samples_leaf": Choice(values=[1, 2, 4]),
    },
    "GradientBoosting": {
        "boosting_learning_rate": LogUniform(min_value=-4.6, max_value=-0.7),
        "boosting_n_estimators": Choice(values=[50, 100]),
        "boosting_max_depth": Choice(values=[2, 3, 5]),
    },
    "DecisionTree": {
        "tree_max_depth": Choice(values=[3, 5, 8, 12]),
        "tree_min_samples_leaf": Choice(values=[1, 2, 5, 10]),
    },
    "KNN": {
        "knn_n_neighbors": Choice(values=[3, 5, 10, 15]),
        "knn_weights": Choice(values=["uniform", "distance"]),
    },
}


def models_left(
    task: str, allowed: list[str] | None, blocked: list[str] | None, where: str
) -> list[str]:
    """The model families left by ``allowed`` and ``blocked`` (Azure's names)."""
    known = CLASSIFICATION_MODELS if task == "classification" else REGRESSION_MODELS
    azure = _AZURE_ONLY[task]
    for name in [*(allowed or []), *(blocked or [])]:
        if name not in known and name not in azure:
            raise InvalidInput(
                f"{where}: {name!r} is not a {task} model; these are: {', '.join(known)}"
            )
    unavailable = sorted(set(allowed or []) & azure)
    if unavailable:
        raise InvalidInput(
            f"{where}: allowed models {unavailable} are Azure ML models Cairn does not fit;"
            f" Cairn's {task} models are: {', '.join(known)}"
        )
    models = [m for m in known if (allowed is None or m in allowed) and m not in (blocked or [])]
    if not models:
        raise InvalidInput(f"{where}: the allowed and blocked models leave no model")
    return models


def check_options(
    task: str,
    primary_metric: str | None,
    *,
    featurization: str,
    n_cross_validations: int | None,
    validation: bool,
    where: str,
) -> tuple[str, Goal]:
    """The primary metric (the task's default when None) and its goal; a task, metric,
    featurization or cross-validation Cairn does not run is an ``InvalidInput`` naming it."""
    metrics = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}
    if task not in metrics:
        raise InvalidInput(f"{where}: task {task!r} is not one of classification, regression")
    primary = primary_metric or ("AUC_weighted" if task == "classification" else "r2_score")
    if primary not in metrics[task]:
        raise InvalidInput(
            f"{where}: primary metric {primary!r} is not a {task} metric; these are:"
            f" {', '.join(metrics[task])}"
        )
    if featurization != "auto":
        raise InvalidInput(
            f"{where}: featurization {featurization!r}: only 'auto' (impute, scale numeric"
            " columns, one-hot the others)"
        )
    if n_cross_validations is not None and validation:
        raise InvalidInput(f"{where}: give n_cross_validations or validation data, not both")
    if n_cross_validations is not None and n_cross_validations < 2:
        raise InvalidInput(f"{where}: n_cross_validations is at least 2")
    return primary, metrics[task][primary]


def automl_spec(
    models: list[str],
    objective: Objective,
    *,
    seed: int | None,
    iterations: int,
    concurrency: int,
    timeout_minutes: float | None,
    trial_timeout_minutes: float | None,
) -> SweepSpec:
    """The sweep: random sampling (seeded) over the models and their parameters."""
    return SweepSpec(
        search_space=search_space(models),
        sampling=Sampling(algorithm="random", seed=seed),
        objective=objective,
        limits=SweepLimits(
            max_total_trials=iterations,
            max_concurrent_trials=min(concurrency, iterations),
            timeout_s=None if timeout_minutes is None else timeout_minutes * 60,
            trial_timeout_s=None if trial_timeout_minutes is None else trial_timeout_minutes * 60,
        ),
    )


def parameter_flags(spec: SweepSpec) -> list[str]:
    """``--<name> ${{search_space.<name>}}`` for each parameter, after the script's words."""
    flags: list[str] = []
    for name in spec.search_space:
        flags += [f"--{name}", parameter_placeholder(name)]
    return flags


def search_space(models: list[str]) -> dict[str, Distribution]:
    """A choice over ``models`` and the hyperparameters of each."""
    space: dict[str, Distribution] = {"model": Choice(values=list(models))}
    for model in models:
        family = "trees" if model in ("RandomForest", "ExtremeRandomTrees") else model
        space.update(_FAMILY_SPACE[family])
    return space


def _columns(data: Any, what: str) -> list[str]:
    """The columns of a registered tabular dataset (its first file's header)."""
    if not isinstance(data, TabularDataset):
        raise InvalidInput(f"AutoMLConfig: {what} is a TabularDataset, not {type(data).__name__}")
    if data.name is None or data.version is None:
        raise InvalidInput(f"AutoMLConfig: register {what} before submitting it")
    if data.steps:
        raise InvalidInput(
            f"AutoMLConfig: {what} applies {[s for s, _ in data.steps]}; register the table"
            " as the trials are to read it"
        )
    if not data.spec.header:
        raise InvalidInput(f"AutoMLConfig: {what} has no header; AutoML reads columns by name")
    with tempfile.TemporaryDirectory(prefix="cairn-automl-") as tmp:
        header = _header(data._local_files(Path(tmp)), data.spec.separator)
    if header:
        return header
    raise InvalidInput(f"AutoMLConfig: {what} has no rows")


def _header(files: list[Path], separator: str) -> list[str] | None:
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh, delimiter=separator), None)
        if header:
            return header
    return None


async def check_table(ws: Session, name: str, version: int | None, label: str, what: str) -> None:
    """Check that dataset ``name`` (``version``; None: the latest) is a comma-separated table
    with a header holding ``label`` (a v2 job file's data, read when it is submitted)."""
    datasets = AsyncDatasets(ws)
    _, spec = await datasets.spec(name, version, min_seq=ws.seen_seq)
    if spec.kind != "tabular" or not spec.header or spec.separator != ",":
        raise InvalidInput(
            f"{what}: dataset {name!r} is not a comma-separated table with a header"
            " (Dataset.Tabular.from_delimited_files)"
        )
    with tempfile.TemporaryDirectory(prefix="cairn-automl-") as tmp:
        header = _header(await datasets.materialise(spec, Path(tmp), label=name), ",")
    if header is None:
        raise InvalidInput(f"{what}: dataset {name!r} has no rows")
    if label not in header:
        raise InvalidInput(
            f"{what}: the target column {label!r} is not a column of dataset {name!r}"
            f" ({', '.join(header)})"
        )


class AutoMLConfig(SweepConfig):
    """An automated ML experiment: a sweep over scikit-learn pipelines (impute, scale numeric
    columns, one-hot the others, then a model family and its hyperparameters), each trial a
    child job scored by ``primary_metric`` with ``n_cross_validations`` folds (default: 10
    under 1000 rows, else 3) or on ``validation_data``. ``iterations`` trials,
    ``max_concurrent_iterations`` at once, the whole experiment within
    ``experiment_timeout_minutes`` and each trial within ``iteration_timeout_minutes``.
    ``experiment.submit`` returns an ``AutoMLRun`` whose ``get_output()`` is the best trial
    and its fitted model."""

    @refuses(
        enable_early_stopping="each trial logs its score once, at its end, so there is no"
        " curve to stop early; bound the search with iterations and experiment_timeout_minutes",
        enable_voting_ensemble="the result is the best single pipeline (get_output())",
        enable_stack_ensemble="the result is the best single pipeline (get_output())",
        validation_size="give n_cross_validations or validation_data",
        weight_column_name="every row weighs the same",
        experiment_exit_score="the experiment runs its iterations or until its timeout",
        enable_onnx_compatible_models="models are saved as pickled scikit-learn pipelines",
    )
    def __init__(
        self,
        task: str,
        primary_metric: str | None = None,
        training_data: Any = None,
        label_column_name: str | None = None,
        n_cross_validations: int | None = None,
        validation_data: Any = None,
        iterations: int = 100,
        max_concurrent_iterations: int = 1,
        experiment_timeout_minutes: float | None = None,
        iteration_timeout_minutes: float | None = None,
        featurization: str = "auto",
        compute_target: Any = None,
        enable_early_stopping: bool = False,
        allowed_models: list[str] | None = None,
        blocked_models: list[str] | None = None,
        random_state: int | None = None,
        enable_voting_ensemble: bool = False,
        enable_stack_ensemble: bool = False,
        validation_size: float | None = None,
        weight_column_name: str | None = None,
        experiment_exit_score: float | None = None,
        enable_onnx_compatible_models: bool = False,
    ) -> None:
        primary, goal = check_options(
            task,
            primary_metric,
            featurization=featurization,
            n_cross_validations=n_cross_validations,
            validation=validation_data is not None,
            where="AutoMLConfig",
        )
        models = models_left(task, allowed_models, blocked_models, "AutoMLConfig")
        if not label_column_name:
            raise InvalidInput("AutoMLConfig: label_column_name names the column to predict")
        if training_data is None:
            raise InvalidInput("AutoMLConfig: training_data is a registered TabularDataset")
        for what, data in (("training_data", training_data), ("validation_data", validation_data)):
            if data is not None and label_column_name not in (cols := _columns(data, what)):
                raise InvalidInput(
                    f"AutoMLConfig: label_column_name {label_column_name!r} is not a column of"
                    f" {what} ({', '.join(cols)})"
                )
        self.task = task
        self.primary_metric = primary
        self.label_column_name = label_column_name
        self.training_data = training_data
        self.validation_data = validation_data
        seed = 0 if random_state is None else random_state
        argv: list[Any] = [
            *("--task", task, "--label", label_column_name, "--metric", primary),
            *("--separator", training_data.spec.separator, "--random_state", seed),
            *("--training", training_data.as_named_input("training_data").as_download()),
        ]
        if validation_data is not None:
            argv += [
                "--validation",
                validation_data.as_named_input("validation_data").as_download(),
            ]
        else:
            argv += ["--cv", n_cross_validations or 0]
        run_config = ScriptRunConfig(
            source_directory=str(SCRIPT_FOLDER),
            script="train.py",
            arguments=argv,
            compute_target=compute_target,
        )
        spec = automl_spec(
            models,
            Objective(primary_metric=primary, goal=goal),
            seed=random_state,
            iterations=iterations,
            concurrency=max_concurrent_iterations,
            timeout_minutes=experiment_timeout_minutes,
            trial_timeout_minutes=iteration_timeout_minutes,
        )
        super().__init__(run_config, spec, [*run_config.argv(), *parameter_flags(spec)])
