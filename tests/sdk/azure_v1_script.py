# A training script as the Azure ML v1 notes write it; only the import line differs.
import json
import sys

from cairn.sdk import Experiment, Workspace  # was: from azureml.core import ...

ws = Workspace.from_config()
experiment = Experiment(workspace=ws, name=sys.argv[1])
run = experiment.start_logging()
run.log("observations", 442)
run.log("loss", 0.9)
run.log("loss", 0.5)
run.log("loss", 0.25)
run.log_list("label distribution", [0.33, 0.67])
run.log_row("sample", age=32, bmi=22.5)
run.log_row("sample", age=41, bmi=27.1)
run.log_table("per class", {"class": ["a", "b"], "recall": [0.9, 0.8]})
run.tag("stage", "baseline")
with open("sample.csv", "w") as f:
    f.write("age,bmi\n32,22.5\n41,27.1\n")
run.upload_file(name="outputs/sample.csv", path_or_stream="./sample.csv")
run.complete()

metrics = run.get_metrics()
files = run.get_file_names()
run.download_file(name="outputs/sample.csv", output_file_path="downloaded.csv")
with open("downloaded.csv") as f:
    downloaded = f.read()
print(
    json.dumps(
        {
            "run_id": run.id,
            "status": run.get_status(),
            "metrics": metrics,
            "files": files,
            "downloaded": downloaded,
            "tags": run.get_tags(),
            "runs": [r.id for r in experiment.get_runs()],
        }
    )
)
