"""The Azure ML v1 course flow (a compute cluster, a CondaDependencies environment, a
ScriptRunConfig reading a tabular dataset, the logs, the model) with only the imports
changed."""

import json
import os
import sys

# was: from azureml.core import Dataset, Environment, Experiment, Model, ScriptRunConfig,
#      Workspace; from azureml.core.compute import AmlCompute, ComputeTarget;
#      from azureml.core.compute_target import ComputeTargetException;
#      from azureml.core.conda_dependencies import CondaDependencies
from cairn.sdk import (
    AmlCompute,
    ComputeTarget,
    ComputeTargetException,
    CondaDependencies,
    Dataset,
    Environment,
    Estimator,
    Experiment,
    Model,
    ScriptRunConfig,
    Workspace,
)

training_folder, cluster_name = sys.argv[1], sys.argv[2]
ws = Workspace.from_config()
print("Ready to use Azure ML to work with", ws.name)

try:
    training_cluster = ComputeTarget(workspace=ws, name=cluster_name)
    print("Found existing cluster, use it.")
    found = True
except ComputeTargetException:
    found = False
    compute_config = AmlCompute.provisioning_configuration(vm_size="STANDARD_DS11_V2", max_nodes=2)
    training_cluster = ComputeTarget.create(ws, cluster_name, compute_config)
    training_cluster.wait_for_completion(show_output=True)

default_ds = ws.get_default_datastore()
default_ds.upload_files(
    files=[os.path.join(training_folder, "data", "diabetes.csv")],
    target_path="diabetes-data/",
    overwrite=True,
    show_progress=True,
)
tab_data_set = Dataset.Tabular.from_delimited_files(path=(default_ds, "diabetes-data/*.csv"))
tab_data_set = tab_data_set.register(
    workspace=ws,
    name="diabetes dataset",
    description="diabetes data",
    tags={"format": "CSV"},
    create_new_version=True,
)

diabetes_env = Environment("diabetes-experiment-env")
diabetes_env.python.user_managed_dependencies = True  # the agent's interpreter has them
packages = CondaDependencies.create(
    conda_packages=["scikit-learn", "pandas"], pip_packages=["joblib"]
)
diabetes_env.python.conda_dependencies = packages
packages.save("conda.yml")

script_config = ScriptRunConfig(
    source_directory=os.path.join(training_folder, "src"),
    script="diabetes_training.py",
    arguments=[
        "--regularization",
        0.1,
        "--input-data",
        tab_data_set.as_named_input("training_data"),
    ],
    environment=diabetes_env,
    compute_target=cluster_name,
)

experiment = Experiment(workspace=ws, name="mslearn-train-diabetes")
run = experiment.submit(config=script_config)
run.wait_for_completion()
details = run.get_details_with_logs()
metrics = run.get_metrics()

run.register_model(
    model_path="outputs/diabetes_model.pkl",
    model_name="diabetes_model",
    tags={"Training context": "Tabular dataset"},
    properties={"AUC": metrics["AUC"], "Accuracy": metrics["Accuracy"]},
)
estimator = Estimator(
    source_directory=os.path.join(training_folder, "src"),
    entry_script="diabetes_training.py",
    script_params={"--regularization": 0.5, "--input-data": "-"},
    inputs=[tab_data_set.as_named_input("training_data")],
    environment_definition=diabetes_env,
    compute_target=cluster_name,
)
second = experiment.submit(estimator)
second.wait_for_completion()
log_paths = run.get_all_logs(destination="logs")
from_run = [m.version for m in Model.list(ws, name="diabetes_model", run_id=run.id)]
models = [
    [model.name, model.version, model.tags, model.properties]
    for model in Model.list(ws)
    if model.name == "diabetes_model"
]
print(
    json.dumps(
        {
            "found_cluster": found,
            "cluster": [training_cluster.name, training_cluster.type, training_cluster.max_nodes],
            "compute_targets": sorted(ws.compute_targets),
            "status": details["status"],
            "logs": details["logFiles"],
            "metrics": metrics,
            "environment": [
                run.get_environment().python.user_managed_dependencies,
                open("conda.yml").read(),
            ],
            "models": models,
            "dataset_tags": Dataset.get_by_name(ws, "diabetes dataset").tags,
            "log_paths": log_paths,
            "from_run": from_run,
            "estimator": [second.get_status(), second.get_metrics()["Regularization Rate"]],
            "estimator_log": second.get_details_with_logs()["logFiles"],
        }
    )
)
