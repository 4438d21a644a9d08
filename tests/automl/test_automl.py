"""Automated ML end to end: an AutoMLConfig becomes a sweep whose trials are scikit-learn
pipelines run by a real agent; the best model is downloaded, predicts and registers."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cairn.bus import EventStore
from cairn.errors import InvalidInput, Unsupported
from cairn.proto import subjects
from cairn.proto.assets import DataPath, DatasetSpec
from cairn.proto.events import RunSubmitted
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, AutoMLConfig, read_job_file
from cairn.sdk._automl import search_space
from cairn.sdk._automl_trial import CLASSIFICATION_MODELS
from cairn.sdk._automlfile import AutoMLFile
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import sdk_env
from tests.sweeps.test_sweeps import overlap, run_script_at, wait_sweep

HERE = Path(__file__).parent
COLORS = ["red", "green", "blue"]


def _cell(value: float | str | None) -> str:
    return "" if value is None else str(value)


def write_tables(folder: Path) -> list[str]:
    """A classification table (a categorical column, missing values) and a regression one
    with its holdout; returns the classification's labels."""
    rng = random.Random(42)
    folder.mkdir()
    labels: list[str] = []
    lines = ["x1,x2,color,label"]
    rows = []
    for _ in range(300):
        x1, x2, color = rng.gauss(0, 1), rng.gauss(0, 1), rng.choice(COLORS)
        score = 1.5 * x1 + (1.2 if color == "red" else -0.4) + 0.3 * x2 + rng.gauss(0, 0.3)
        rows.append((x1, x2, color, score))
    for x1, x2, color, score in rows[:200]:
        label = "yes" if score > 0.9 else "no"
        labels.append(label)
        x2_cell = None if rng.random() < 0.15 else round(x2, 4)
        color_cell = None if rng.random() < 0.1 else color
        lines.append(f"{round(x1, 4)},{_cell(x2_cell)},{_cell(color_cell)},{label}")
    (folder / "classes.csv").write_text("\n".join(lines) + "\n")
    for name, part in (("values.csv", rows[:200]), ("holdout.csv", rows[200:])):
        out = ["x1,x2,color,target"]
        for x1, x2, color, score in part:
            x2_cell = None if rng.random() < 0.1 else round(x2, 4)
            out.append(f"{round(x1, 4)},{_cell(x2_cell)},{color},{round(3 * score, 4)}")
        (folder / name).write_text("\n".join(out) + "\n")
    return labels


@pytest.mark.timeout(450)
async def test_automl_classification_and_regression_end_to_end(
    client: Client, client_settings: Settings, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    await agents.start(slots=3)
    labels = write_tables(tmp_path / "tables")
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script_at(
        HERE / "automl_script.py", str(tmp_path / "tables"), env=env, cwd=tmp_path, timeout=400
    )
    # every bad config refused, typed, naming what is wrong, and nothing queued
    refused = got["refused"]
    assert refused["task"][0] == "InvalidInput" and "forecasting" in refused["task"][1]
    assert refused["metric"][0] == "InvalidInput" and "'r2_score'" in refused["metric"][1]
    assert refused["label"][0] == "InvalidInput" and "no such column" in refused["label"][1]
    assert refused["both"][0] == "InvalidInput" and "not both" in refused["both"][1]
    assert refused["model"][0] == "InvalidInput" and "Prophet" in refused["model"][1]
    assert got["queued"] == []

    assert got["type"] == "AutoMLRun" and got["status"] == "Completed"
    trials = got["hyperparameters"]
    assert len(trials) == 4
    for params in map(json.loads, trials.values()):
        assert params["model"] in set(CLASSIFICATION_MODELS) - {"KNN"}
    runs = {c: await store.read(subjects.event(client.workspace, "run", c)) for c in trials}
    assert all(
        isinstance(first.envelope.data, RunSubmitted)
        and first.envelope.data.parent_run_id == got["run_id"]
        for first, *_ in runs.values()
    )
    assert overlap(runs) <= 2
    # the best trial beats always answering the majority class, and it is the best one
    baseline = max(labels.count(v) for v in set(labels)) / len(labels)
    best_accuracy = got["best_metrics"]["accuracy"]
    assert best_accuracy > baseline + 0.05, (best_accuracy, baseline)
    assert best_accuracy == max(m["accuracy"] for m in got["metrics"].values())
    for name in ("AUC_weighted", "norm_macro_recall", "precision_score_weighted"):
        assert 0.0 <= got["best_metrics"][name] <= 1.0
    assert "average_precision_score_weighted" in got["best_metrics"]
    # the model predicts on new rows, a missing value and an unseen category among them
    assert got["predictions"][0] == "yes" and got["predictions"][1] == "no"
    assert got["predictions"][2] in ("yes", "no")
    assert got["model_version"] == 1

    assert got["reg_status"] == "Completed"
    assert got["reg_best_metrics"]["r2_score"] > 0.5
    assert "normalized_root_mean_squared_error" in got["reg_best_metrics"]
    high, low = got["reg_predictions"]
    assert high > low


def test_the_search_space_is_the_models_left_and_their_parameters() -> None:
    space = search_space(["LogisticRegression", "KNN"])
    assert set(space) == {"model", "logistic_C", "knn_n_neighbors", "knn_weights"}


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"task": "forecasting"}, InvalidInput, "forecasting"),
        ({"task": "regression", "primary_metric": "accuracy"}, InvalidInput, "'accuracy'"),
        ({"task": "classification", "featurization": "off"}, InvalidInput, "featurization"),
        ({"task": "classification", "enable_early_stopping": True}, Unsupported, "early"),
        ({"task": "classification", "enable_voting_ensemble": True}, Unsupported, "ensemble"),
        ({"task": "classification", "n_cross_validations": 1}, InvalidInput, "at least 2"),
        (
            {"task": "classification", "allowed_models": ["XGBoostClassifier"]},
            InvalidInput,
            "Azure",
        ),
        (
            {"task": "classification", "blocked_models": list(CLASSIFICATION_MODELS)},
            InvalidInput,
            "leave no model",
        ),
    ],
)
def test_bad_configs_are_refused_at_construction(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        AutoMLConfig(label_column_name="y", **kwargs)


async def test_a_v2_automl_job_file_runs_as_the_same_sweep(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    write_tables(tmp_path / "tables")
    await ws.datastores.upload(
        "workspaceblobstore", [(tmp_path / "tables" / "values.csv", "v2/values.csv")]
    )
    spec = DatasetSpec(kind="tabular", paths=[DataPath("workspaceblobstore", "v2/values.csv")])
    await ws.datasets.register("v2-values", spec)
    doc = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/autoMLJob.schema.json",
        "type": "automl",
        "task": "regression",
        "primary_metric": "r2_score",
        "training_data": {"type": "mltable", "path": "azureml:v2-values:1"},
        "target_column_name": "target",
        "n_cross_validations": 3,
        "limits": {"max_trials": 2, "max_concurrent_trials": 2, "timeout_minutes": 10},
        "training": {"allowed_training_algorithms": ["ElasticNet", "DecisionTree"]},
        "random_state": 5,
        "experiment_name": "automl-v2",
    }
    exp = await ws.experiment("automl-v2")

    def job_file(name: str, **changes: object) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump({**doc, **changes}))
        return path

    # refused by name, or as msgspec names an unknown key, before anything is queued
    with pytest.raises(Unsupported, match="enable_early_termination"):
        read_job_file(
            job_file("early.yml", limits={"max_trials": 2, "enable_early_termination": True})
        )
    with pytest.raises(InvalidInput, match="iterations"):
        read_job_file(job_file("unknown.yml", iterations=3))
    with pytest.raises(InvalidInput, match="not both"):
        read_job_file(job_file("both.yml", validation_data="azureml:v2-values:1"))
    _, missing = read_job_file(job_file("missing.yml", target_column_name="price"))
    with pytest.raises(InvalidInput, match="'price' is not a column"):
        await exp.submit(missing)
    assert await exp.runs() == []

    await agents.start(slots=2)
    spec_file, config = read_job_file(job_file("automl.yml"))
    assert isinstance(spec_file, AutoMLFile)
    run = await exp.submit(config)
    view = await wait_sweep(ws, run.id, timeout=300)
    assert view["status"] == "Completed", view
    assert len(view["trials"]) == 2
    assert {t["parameters"]["model"] for t in view["trials"]} <= {"ElasticNet", "DecisionTree"}
    assert max(t["best"] for t in view["trials"]) > 0.5
    events = [r.envelope.data for r in await store.read(subjects.event(ws.name, "sweep", run.id))]
    assert events[0].spec.sampling.seed == 5


def test_a_trial_without_scikit_learn_says_so(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from cairn.sdk._automl_trial import main\n"
        "sys.exit(main(print, ['--task', 'regression', '--label', 'y', '--metric', 'r2_score',"
        " '--training', '.', '--model', 'KNN']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "needs scikit-learn" in done.stderr and "sklearn is not importable" in done.stderr
    assert not (tmp_path / "outputs").exists()
