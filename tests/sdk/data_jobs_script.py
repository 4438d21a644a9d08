"""Data on compute: a registered dataset as a named input, a datastore folder mounted, an
output folder uploaded; the model registered from the run lists the dataset version."""

import asyncio
import json
import sys
from typing import Any

from cairn.sdk import (
    Dataset,
    Environment,
    Estimator,
    Experiment,
    ScriptRunConfig,
    Workspace,
    connect,
)


async def runs_that_read(dataset: str) -> list[dict[str, Any]]:
    async with connect() as core:
        return await core.datasets.runs(dataset)


training_folder = sys.argv[1]
ws = Workspace.from_config()
ds = ws.get_default_datastore()
ds.upload(src_dir="./raw", target_path="raw-data", overwrite=True, show_progress=False)
raw = Dataset.Tabular.from_delimited_files(path=(ds, "raw-data/*.csv"))
raw = raw.register(workspace=ws, name="raw data", create_new_version=True)

env = Environment("agent-python")
env.python.user_managed_dependencies = True
config = ScriptRunConfig(
    source_directory=training_folder,
    script="train.py",
    arguments=[
        "--data",
        raw.as_named_input("raw").as_download(),
        "--extra",
        ds.path("raw-data", data_reference_name="extra").as_mount(),
        "--out",
        ds.path("job-out/models", data_reference_name="models").as_upload(),
    ],
    environment=env,
)
run = Experiment(ws, "data-jobs").submit(config)
run.wait_for_completion(show_output=True)
model = run.register_model(model_name="from-data", model_path="outputs/model.txt")
lineage = model.lineage()
used = asyncio.run(runs_that_read("raw data"))
estimator = Estimator(
    source_directory=training_folder,
    entry_script="train.py",
    script_params={
        "--data": raw.as_named_input("raw").as_download(path_on_compute="training_data"),
        "--extra": ds.path("raw-data", data_reference_name="extra").as_download(),
        "--out": ds.path("job-out/estimator", data_reference_name="models").as_upload(),
    },
    environment_definition=env,
)
second = Experiment(ws, "data-jobs").submit(estimator)
second.wait_for_completion()
estimated = [
    second.get_status(),
    second.get_metrics()["rows"],
    [f["path"] for f in ds.list_files("job-out/estimator")],
]
print(
    json.dumps(
        {
            "estimator": estimated,
            "status": run.get_status(),
            "metrics": run.get_metrics(),
            "lineage": lineage["datasets"],
            "used_by": [[r["version"], r["run_id"] == run.id] for r in used],
            "uploaded": [f["path"] for f in ds.list_files("job-out/models")],
            "model": open(run.download_file("outputs/model.txt", "model.txt")).read(),
        }
    )
)
