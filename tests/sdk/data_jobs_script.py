"""Data on compute: a registered dataset as a named input, a datastore folder mounted, an
output folder uploaded; the model registered from the run lists the dataset version."""

import json
import sys

from cairn.proto.jobs import DatasetRuns
from cairn.proto.registry import ModelLineage
from cairn.sdk import Dataset, Environment, Estimator, Experiment, ScriptRunConfig, Workspace

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
        "--data", raw.as_named_input("raw").as_download(),
        "--extra", ds.path("raw-data", data_reference_name="extra").as_mount(),
        "--out", ds.path("job-out/models", data_reference_name="models").as_upload(),
    ],
    environment=env,
)  # fmt: skip
run = Experiment(ws, "data-jobs").submit(config)
run.wait_for_completion(show_output=True)
model = run.register_model(model_name="from-data", model_path="outputs/model.txt")
lineage = ws._run(ws.core.client.ask(ModelLineage(name="from-data", version=model.version)))
used = ws._run(ws.core.client.ask(DatasetRuns(dataset="raw data", min_seq=0)))
estimator = Estimator(
    source_directory=training_folder, entry_script="train.py",
    script_params={
        "--data": raw.as_named_input("raw").as_download(path_on_compute="training_data"),
        "--extra": ds.path("raw-data", data_reference_name="extra").as_download(),
        "--out": ds.path("job-out/estimator", data_reference_name="models").as_upload(),
    },
    environment_definition=env,
)  # fmt: skip
second = Experiment(ws, "data-jobs").submit(estimator)
second.wait_for_completion()
estimated = [second.get_status(), second.get_metrics()["rows"],
             [f["path"] for f in ds.list_files("job-out/estimator")]]  # fmt: skip
print(
    json.dumps(
        {
            "estimator": estimated,
            "status": run.get_status(),
            "metrics": run.get_metrics(),
            "lineage": lineage.data["datasets"],
            "used_by": [[r["version"], r["run_id"] == run.id] for r in used.data],
            "uploaded": [f["path"] for f in ds.list_files("job-out/models")],
            "model": open(run.download_file("outputs/model.txt", "model.txt")).read(),
        }
    )
)
