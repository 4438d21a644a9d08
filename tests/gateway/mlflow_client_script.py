"""The real ``mlflow`` client against the URI in ``MLFLOW_TRACKING_URI`` (a Cairn gateway),
run in its own process (the client keeps global state). Prints one JSON line."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient


def main(experiment: str) -> None:
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="first") as run:
        mlflow.log_param("lr", 0.1)
        mlflow.log_params({"depth": 3, "kind": "tree"})
        for step in range(4):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.8})
        mlflow.set_tag("team", "a")
        with tempfile.TemporaryDirectory() as tmp:
            note = Path(tmp) / "note.txt"
            note.write_text("hello from mlflow")
            mlflow.log_artifact(str(note))
            mlflow.log_artifact(str(note), artifact_path="notes")
        run_id = run.info.run_id
    with mlflow.start_run(run_name="second"):
        mlflow.log_param("lr", 0.5)
        mlflow.log_metric("loss", 2.0)
    client = MlflowClient()
    history = client.get_metric_history(run_id, "loss")
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], "params.lr = '0.1' and metrics.loss < 1")
    ordered = client.search_runs([exp.experiment_id], order_by=["metrics.loss DESC"])
    paged = client.search_runs([exp.experiment_id], max_results=1)
    rest = client.search_runs([exp.experiment_id], max_results=1, page_token=paged.token)
    got = client.get_run(run_id)
    files = sorted(f.path for f in client.list_artifacts(run_id))
    inner = sorted(f.path for f in client.list_artifacts(run_id, "notes"))
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(client.download_artifacts(run_id, "notes/note.txt", tmp)).read_text()
    try:
        client.get_run("0" * 32)
        missing = ""
    except mlflow.exceptions.MlflowException as exc:
        missing = exc.error_code
    print(
        json.dumps(
            {
                "run_id": run_id,
                "status": got.info.status,
                "name": got.info.run_name,
                "history": [(m.step, m.value) for m in history],
                "params": got.data.params,
                "metrics": got.data.metrics,
                "tags": {k: v for k, v in got.data.tags.items() if not k.startswith("mlflow.")},
                "found": [r.info.run_id for r in found],
                "ordered": [r.info.run_name for r in ordered],
                "paged": [len(paged), paged.token is not None],
                "pages": [r.info.run_name for r in [*paged, *rest]] + [rest.token],
                "files": files,
                "inner": inner,
                "text": text,
                "missing": missing,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
