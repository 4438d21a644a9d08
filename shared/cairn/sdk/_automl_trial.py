"""What one AutoML trial runs: read the table, build the pipeline the trial's parameters name,
score it (cross-validation or the validation table), fit it on all the training rows and save
it. The job's script (``_automl_script/train.py``, shipped in this package) calls ``main``.

Everything here imports scikit-learn and numpy lazily (they are the trial environment's, not
Cairn's dependencies); ``AutoMLModel`` is what ``outputs/model.pkl`` holds, so unpickling it
needs scikit-learn and Cairn, nothing else.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CLASSIFICATION_METRICS",
    "CLASSIFICATION_MODELS",
    "REGRESSION_METRICS",
    "REGRESSION_MODELS",
    "AutoMLModel",
    "main",
]

Goal = Literal["maximize", "minimize"]

#: Azure ML's primary metrics and their goals
CLASSIFICATION_METRICS: dict[str, Goal] = {
    "AUC_weighted": "maximize",
    "accuracy": "maximize",
    "norm_macro_recall": "maximize",
    "precision_score_weighted": "maximize",
    "average_precision_score_weighted": "maximize",
}
REGRESSION_METRICS: dict[str, Goal] = {
    "r2_score": "maximize",
    "normalized_root_mean_squared_error": "minimize",
    "spearman_correlation": "maximize",
    "normalized_mean_absolute_error": "minimize",
}
#: the model families a trial can fit, by Azure ML's names
CLASSIFICATION_MODELS = (
    "LogisticRegression",
    "RandomForest",
    "ExtremeRandomTrees",
    "GradientBoosting",
    "DecisionTree",
    "KNN",
)
REGRESSION_MODELS = (
    "ElasticNet",
    "RandomForest",
    "ExtremeRandomTrees",
    "GradientBoosting",
    "DecisionTree",
    "KNN",
)


def _import(name: str) -> Any:
    return importlib.import_module(name)


class AutoMLModel:
    """A fitted pipeline and the columns it reads: ``predict(rows)`` takes a pandas
    DataFrame, a list of dicts (column to value; a missing key is a missing value) or rows of
    values in the training columns' order."""

    def __init__(self, pipeline: Any, columns: list[str], numeric: list[str], task: str) -> None:
        self.pipeline = pipeline
        self.columns = columns
        self.numeric = numeric
        self.task = task

    def _matrix(self, rows: Any) -> Any:
        np = _import("numpy")
        if hasattr(rows, "columns") and hasattr(rows, "to_dict"):  # a pandas DataFrame
            rows = rows.to_dict("records")
        table = [
            [row.get(c) for c in self.columns] if isinstance(row, Mapping) else list(row)
            for row in rows
        ]
        for row in table:
            if len(row) != len(self.columns):
                raise ValueError(f"a row has {len(row)} values; the model reads {self.columns}")
        numeric = set(self.numeric)
        return np.array(
            [
                [_cell(v, c in numeric) for v, c in zip(row, self.columns, strict=True)]
                for row in table
            ],
            dtype=object,
        )

    def predict(self, rows: Any) -> Any:
        return self.pipeline.predict(self._matrix(rows))

    def predict_proba(self, rows: Any) -> Any:
        if self.task != "classification":
            raise AttributeError("a regression model has no predict_proba")
        return self.pipeline.predict_proba(self._matrix(rows))

    @property
    def classes_(self) -> Any:
        return self.pipeline.classes_

    def __repr__(self) -> str:
        return f"AutoMLModel({self.pipeline!r})"


def _cell(value: Any, numeric: bool) -> Any:
    """A value as the pipeline reads it: numeric columns as floats, the others as strings,
    missing values (None, NaN, an empty string) as NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return math.nan
    return float(value) if numeric else str(value)


def read_table(folder: Path, separator: str) -> tuple[list[str], list[list[str]]]:
    """The delimited files under ``folder`` (a dataset's local copy), one table: the first
    file's header names the columns; every file has the same header."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".ready")
    columns: list[str] | None = None
    rows: list[list[str]] = []
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter=separator)
            header = next(reader, None)
            if header is None:
                continue
            if columns is None:
                columns = header
            elif header != columns:
                raise SystemExit(f"{f.name}: its columns {header} differ from {columns}")
            rows += [r for r in reader if r]
    if columns is None:
        raise SystemExit(f"no rows in {folder}")
    return columns, rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def numeric_columns(columns: list[str], rows: list[list[str]]) -> list[str]:
    """The columns whose every present value is a number."""
    return [
        c
        for i, c in enumerate(columns)
        if all(_is_number(r[i]) for r in rows if i < len(r) and r[i] != "")
    ]


def _estimator(task: str, params: dict[str, Any], seed: int) -> Any:
    ens = _import("sklearn.ensemble")
    model = params["model"]
    cls = task == "classification"
    trees = {
        "n_estimators": int(params.get("trees_n_estimators", 50)),
        "max_features": _maybe_number(params.get("trees_max_features", "sqrt")),
        "min_samples_leaf": int(params.get("trees_min_samples_leaf", 1)),
        "random_state": seed,
    }
    if model == "LogisticRegression":
        return _import("sklearn.linear_model").LogisticRegression(
            C=float(params.get("logistic_C", 1.0)), max_iter=1000
        )
    if model == "ElasticNet":
        return _import("sklearn.linear_model").ElasticNet(
            alpha=float(params.get("elasticnet_alpha", 1.0)),
            l1_ratio=float(params.get("elasticnet_l1_ratio", 0.5)),
            random_state=seed,
        )
    if model == "RandomForest":
        return (ens.RandomForestClassifier if cls else ens.RandomForestRegressor)(**trees)
    if model == "ExtremeRandomTrees":
        return (ens.ExtraTreesClassifier if cls else ens.ExtraTreesRegressor)(**trees)
    if model == "GradientBoosting":
        boosting = ens.GradientBoostingClassifier if cls else ens.GradientBoostingRegressor
        return boosting(
            learning_rate=float(params.get("boosting_learning_rate", 0.1)),
            n_estimators=int(params.get("boosting_n_estimators", 100)),
            max_depth=int(params.get("boosting_max_depth", 3)),
            random_state=seed,
        )
    if model == "DecisionTree":
        tree = _import("sklearn.tree")
        return (tree.DecisionTreeClassifier if cls else tree.DecisionTreeRegressor)(
            max_depth=int(params.get("tree_max_depth", 5)),
            min_samples_leaf=int(params.get("tree_min_samples_leaf", 1)),
            random_state=seed,
        )
    if model == "KNN":
        nb = _import("sklearn.neighbors")
        return (nb.KNeighborsClassifier if cls else nb.KNeighborsRegressor)(
            n_neighbors=int(params.get("knn_n_neighbors", 5)),
            weights=str(params.get("knn_weights", "uniform")),
        )
    raise SystemExit(f"unknown model family {model!r}")


def _maybe_number(value: Any) -> Any:
    return float(value) if isinstance(value, str) and _is_number(value) else value


def build_pipeline(
    task: str, columns: list[str], numeric: list[str], params: dict[str, Any], seed: int
) -> Any:
    """Impute, scale the numeric columns, one-hot the others, then the trial's model."""
    pipe = _import("sklearn.pipeline")
    pre = _import("sklearn.preprocessing")
    impute = _import("sklearn.impute")
    compose = _import("sklearn.compose")
    num_idx = [i for i, c in enumerate(columns) if c in numeric]
    cat_idx = [i for i, c in enumerate(columns) if c not in numeric]
    numeric_steps = pipe.Pipeline(
        [("impute", impute.SimpleImputer(strategy="median")), ("scale", pre.StandardScaler())]
    )
    categorical_steps = pipe.Pipeline(
        [
            ("impute", impute.SimpleImputer(strategy="most_frequent")),
            ("onehot", pre.OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    features = compose.ColumnTransformer(
        [("numeric", numeric_steps, num_idx), ("categorical", categorical_steps, cat_idx)]
    )
    return pipe.Pipeline([("featurize", features), ("model", _estimator(task, params, seed))])


def classification_metrics(y: Any, pred: Any, proba: Any, classes: Any) -> dict[str, float]:
    m = _import("sklearn.metrics")
    np = _import("numpy")
    labels = list(classes)
    onehot = np.array([[1.0 if v == c else 0.0 for c in labels] for v in y])
    if len(labels) == 2:
        auc = m.roc_auc_score(onehot[:, 1], proba[:, 1])
        ap = m.average_precision_score(onehot[:, 1], proba[:, 1])
    else:
        auc = m.roc_auc_score(onehot, proba, average="weighted", multi_class="ovr")
        ap = m.average_precision_score(onehot, proba, average="weighted")
    chance = 1.0 / len(labels)
    recall = m.recall_score(y, pred, average="macro", labels=labels, zero_division=0)
    return {
        "accuracy": float(m.accuracy_score(y, pred)),
        "AUC_weighted": float(auc),
        "average_precision_score_weighted": float(ap),
        "precision_score_weighted": float(
            m.precision_score(y, pred, average="weighted", labels=labels, zero_division=0)
        ),
        "recall_score_macro": float(recall),
        "norm_macro_recall": float(max(0.0, (recall - chance) / (1.0 - chance))),
    }


def regression_metrics(y: Any, pred: Any, spread: float) -> dict[str, float]:
    m = _import("sklearn.metrics")
    stats = _import("scipy.stats")
    rmse = math.sqrt(float(m.mean_squared_error(y, pred)))
    mae = float(m.mean_absolute_error(y, pred))
    rho = stats.spearmanr(y, pred).statistic
    return {
        "r2_score": float(m.r2_score(y, pred)),
        "root_mean_squared_error": rmse,
        "mean_absolute_error": mae,
        "normalized_root_mean_squared_error": rmse / spread if spread else rmse,
        "normalized_mean_absolute_error": mae / spread if spread else mae,
        "spearman_correlation": 0.0 if math.isnan(rho) else float(rho),
    }


def _split(
    columns: list[str], rows: list[list[str]], label: str, numeric: list[str], task: str
) -> tuple[Any, Any]:
    np = _import("numpy")
    if label not in columns:
        raise SystemExit(f"the label column {label!r} is not among {columns}")
    li = columns.index(label)
    kept = [r for r in rows if li < len(r) and r[li] != ""]  # rows without a label teach nothing
    num = set(numeric)
    x = np.array(
        [
            [_cell(r[i] if i < len(r) else "", c in num) for i, c in enumerate(columns) if i != li]
            for r in kept
        ],
        dtype=object,
    )
    y_raw = [r[li] for r in kept]
    y = np.array(y_raw if task == "classification" else [float(v) for v in y_raw])
    return x, y


def _score(task: str, fitted: Any, x: Any, y: Any, spread: float) -> dict[str, float]:
    pred = fitted.predict(x)
    if task == "classification":
        return classification_metrics(y, pred, fitted.predict_proba(x), fitted.classes_)
    return regression_metrics(y, pred, spread)


def evaluate(args: argparse.Namespace, params: dict[str, Any]) -> tuple[dict[str, float], Any]:
    """The trial's metrics (averaged over the folds, or on the validation table) and its
    pipeline fitted on every training row, with the columns it reads."""
    np = _import("numpy")
    base = _import("sklearn.base")
    selection = _import("sklearn.model_selection")
    columns, rows = read_table(Path(args.training), args.separator)
    numeric = [c for c in numeric_columns(columns, rows) if c != args.label]
    features = [c for c in columns if c != args.label]
    x, y = _split(columns, rows, args.label, numeric, args.task)
    spread = float(np.max(y) - np.min(y)) if args.task == "regression" and len(y) else 0.0
    pipeline = build_pipeline(args.task, features, numeric, params, args.random_state)
    if args.validation:
        v_columns, v_rows = read_table(Path(args.validation), args.separator)
        vx, vy = _split(v_columns, v_rows, args.label, numeric, args.task)
        metrics = _score(args.task, base.clone(pipeline).fit(x, y), vx, vy, spread)
    else:
        folds = args.cv or (10 if len(y) < 1000 else 3)
        kind = selection.StratifiedKFold if args.task == "classification" else selection.KFold
        splitter = kind(n_splits=folds, shuffle=True, random_state=args.random_state)
        scores = [
            _score(args.task, base.clone(pipeline).fit(x[tr], y[tr]), x[te], y[te], spread)
            for tr, te in splitter.split(x, y)
        ]
        metrics = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
    model = AutoMLModel(pipeline.fit(x, y), features, numeric, args.task)
    return metrics, model


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="One Cairn AutoML trial")
    p.add_argument("--task", choices=["classification", "regression"], required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--metric", required=True)
    p.add_argument("--training", required=True)
    p.add_argument("--validation", default="")
    p.add_argument("--cv", type=int, default=0)
    p.add_argument("--separator", default=",")
    p.add_argument("--random_state", type=int, default=0)
    return p


def main(context: Callable[[], Any], argv: Sequence[str] | None = None) -> int:
    """Run one trial: log every standard metric of its task to the run ``context()`` gives
    (the job's: ``Run.get_context``), save ``outputs/model.pkl``."""
    args, rest = _parser().parse_known_args(argv)
    params: dict[str, Any] = {}
    for flag, given in zip(rest[::2], rest[1::2], strict=True):
        params[flag.removeprefix("--")] = given
    for module in ("numpy", "scipy", "sklearn"):
        try:
            _import(module)
        except ImportError:
            print(
                f"an AutoML trial needs scikit-learn (with numpy and scipy) in its job's"
                f" environment, and {module} is not importable there: install scikit-learn"
                " where the agent runs (its default environment sees the agent's packages)",
                file=sys.stderr,
            )
            return 2
    metrics, model = evaluate(args, params)
    run = context()
    for name, score in sorted(metrics.items()):
        run.log(name, score)
    out = Path("outputs")
    out.mkdir(exist_ok=True)
    with (out / "model.pkl").open("wb") as fh:
        pickle.dump(model, fh)
    print(f"{params.get('model')}: {args.metric} = {metrics.get(args.metric)}")
    return 0
