"""Automated ML with the Azure ML v1 names, the import line changed: a classification on a
table with a categorical column and missing values (accuracy, 3-fold cross-validation) and a
regression scored on validation data (r2_score); the refused configs first."""

import json
import sys

from cairn.errors import CairnError
from cairn.sdk import AutoMLConfig, Dataset, Experiment, Workspace

ws = Workspace.from_config()
ds = ws.get_default_datastore()
ds.upload(src_dir=sys.argv[1], target_path="automl", overwrite=True, show_progress=False)


def table(pattern: str, name: str) -> Dataset:
    data = Dataset.Tabular.from_delimited_files(path=(ds, f"automl/{pattern}"))
    return data.register(workspace=ws, name=name, create_new_version=True)


classes = table("classes.csv", "classes")
values = table("values.csv", "values")
holdout = table("holdout.csv", "values holdout")

# refused before anything is queued, each naming what is wrong
bad_experiment = Experiment(ws, "automl-refused")
bad = {
    "task": {"task": "forecasting", "primary_metric": "accuracy"},
    "metric": {"task": "classification", "primary_metric": "r2_score"},
    "label": {"task": "classification", "label_column_name": "no such column"},
    "both": {"task": "regression", "n_cross_validations": 3, "validation_data": holdout},
    "model": {"task": "classification", "allowed_models": ["Prophet"]},
}
refused = {}
for case, given in bad.items():
    kwargs = {"training_data": classes, "label_column_name": "label", **given}
    if case == "both":
        kwargs["training_data"] = values
        kwargs["label_column_name"] = "target"
    try:
        bad_experiment.submit(AutoMLConfig(**kwargs))
        refused[case] = None
    except CairnError as exc:
        refused[case] = [type(exc).__name__, str(exc)]
queued = [r.id for r in bad_experiment.get_runs()]

config = AutoMLConfig(
    task="classification",
    primary_metric="accuracy",
    training_data=classes,
    label_column_name="label",
    n_cross_validations=3,
    iterations=4,
    max_concurrent_iterations=2,
    experiment_timeout_minutes=10,
    featurization="auto",
    blocked_models=["KNN", "LightGBM"],
    enable_early_stopping=False,
    random_state=7,
)
run = Experiment(ws, "automl").submit(config)
run.wait_for_completion(show_output=True)
best, model = run.get_output()
new_rows = [
    {"x1": 2.5, "x2": 0.1, "color": "red"},
    {"x1": -2.5, "x2": None, "color": "blue"},
    {"x1": 0.3, "x2": 1.0, "color": "purple"},  # a category never seen
]
registered = best.register_model(model_name="automl-best", model_path="outputs/model.pkl")

reg = AutoMLConfig(
    task="regression",
    primary_metric="r2_score",
    training_data=values,
    validation_data=holdout,
    label_column_name="target",
    iterations=3,
    max_concurrent_iterations=2,
    allowed_models=["ElasticNet", "GradientBoosting", "RandomForest"],
    random_state=3,
)
reg_run = Experiment(ws, "automl-regression").submit(reg)
reg_run.wait_for_completion(show_output=True)
reg_best, reg_model = reg_run.get_output()

print(
    json.dumps(
        {
            "refused": refused,
            "queued": queued,
            "run_id": run.id,
            "type": type(run).__name__,
            "status": run.get_status(),
            "best": best.id,
            "best_metrics": best.get_metrics(),
            "metrics": run.get_metrics(),
            "hyperparameters": run.get_hyperparameters(),
            "predictions": [str(p) for p in model.predict(new_rows)],
            "model_version": registered.version,
            "reg_status": reg_run.get_status(),
            "reg_best_metrics": reg_best.get_metrics(),
            "reg_predictions": [
                float(v) for v in reg_model.predict([[1.0, 1.0, "red"], [-1.0, 0.0, "green"]])
            ],
        }
    )
)
