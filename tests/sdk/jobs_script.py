"""The seeds' job submission with only the import line changed (the environment uses the
agent's interpreter, as ``user_managed_dependencies`` says)."""

import json
import sys

from cairn.sdk import Environment, Experiment, ScriptRunConfig, Workspace

training_folder = sys.argv[1]
ws = Workspace.from_config()

sklearn_env = Environment("sklearn-env")
sklearn_env.python.user_managed_dependencies = True

script_config = ScriptRunConfig(
    source_directory=training_folder,
    script="diabetes_training.py",
    arguments=["--reg_rate", 0.1],
    environment=sklearn_env,
)

experiment = Experiment(workspace=ws, name="mslearn-train-diabetes")
run = experiment.submit(config=script_config)
run.wait_for_completion(show_output=True)

metrics = run.get_metrics()
run.download_file(name="outputs/diabetes_model.pkl", output_file_path="downloaded.pkl")
model = run.register_model(
    model_path="outputs/diabetes_model.pkl",
    model_name="diabetes_model",
    tags={"Training context": "Script"},
    properties={"AUC": metrics["AUC"], "Accuracy": metrics["Accuracy"]},
)

import joblib  # noqa: E402

loaded = joblib.load("downloaded.pkl")
again = experiment.submit(config=script_config)  # same folder: the snapshot is reused
again.wait_for_completion()
print(
    json.dumps(
        {
            "status": run.get_status(),
            "metrics": {
                k: metrics[k] for k in ("observations", "Regularization Rate", "AUC", "Accuracy")
            },
            "files": sorted(run.get_file_names()),
            "model": [model.name, model.version, model.run_id == run.id],
            "loaded": type(loaded).__name__,
            "again": [again.get_status(), again.id],
            "run_id": run.id,
        }
    )
)
