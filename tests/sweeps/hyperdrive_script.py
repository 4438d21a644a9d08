"""A HyperDrive sweep with the Azure ML v1 names, the import line changed: a random space
over the trial script's --learning_rate and --n_estimators, AUC maximized."""

import json
import sys

from cairn.sdk import (
    BanditPolicy,
    Experiment,
    HyperDriveConfig,
    PrimaryMetricGoal,
    RandomParameterSampling,
    ScriptRunConfig,
    Workspace,
    choice,
    loguniform,
)

source = sys.argv[1]
ws = Workspace.from_config()
script_config = ScriptRunConfig(
    source_directory=source, script="train.py", arguments=["--reports", 2]
)
params = RandomParameterSampling(
    {"--learning_rate": loguniform(-6, -1), "--n_estimators": choice(10, 50, 100)},
    properties={"rngSeed": 11},
)
hyperdrive = HyperDriveConfig(
    run_config=script_config,
    hyperparameter_sampling=params,
    policy=BanditPolicy(evaluation_interval=1, slack_factor=10.0),
    primary_metric_name="AUC",
    primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
    max_total_runs=12,
    max_concurrent_runs=3,
)
experiment = Experiment(workspace=ws, name="hyperdrive")
run = experiment.submit(config=hyperdrive)
run.wait_for_completion(show_output=True)

best = run.get_best_run_by_primary_metric()
print(
    json.dumps(
        {
            "run_id": run.id,
            "status": run.get_status(),
            "best": best.id if best is not None else None,
            "best_metrics": best.get_metrics() if best is not None else None,
            "children": sorted(r.id for r in run.get_children()),
            "sorted": run.get_children_sorted_by_primary_metric(),
            "hyperparameters": run.get_hyperparameters(),
            "metrics": run.get_metrics(),
        }
    )
)
