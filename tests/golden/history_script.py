"""The golden history's workload, through the sync SDK as a data scientist writes it:
experiments and runs (metrics of every shape, tags, properties, files, a child, a failure, a
cancel), models with aliases, environments, datastores and datasets, a compute target,
secrets, a job, a pipeline (published too), a sweep, a schedule, a webhook, endpoints and
deployments (one healthy, one failing).
``tests/golden/record.py`` runs it against a fresh stack with one agent; it prints one JSON
line of what it made. An event type new to Cairn gets a line here before it is recorded."""

import json
import sys
from pathlib import Path

from cairn.sdk import (
    AciWebservice,
    ComputeTarget,
    Dataset,
    Datastore,
    Environment,
    Experiment,
    HyperDriveConfig,
    InferenceConfig,
    Model,
    Pipeline,
    PipelineData,
    PrimaryMetricGoal,
    PythonScriptStep,
    RandomParameterSampling,
    RunConfiguration,
    Schedule,
    ScheduleRecurrence,
    ScriptRunConfig,
    Workspace,
    choice,
)

work = Path(sys.argv[1])
ws = Workspace.from_config()
out: dict[str, object] = {}

# -- experiments and runs ------------------------------------------------------------------
exp = Experiment(ws, "golden-runs")
with exp.start_logging(display_name="parent") as parent:
    for step in range(4):
        parent.log("loss", 1.0 / (step + 1), step=step)
    parent.log("observations", 442)
    parent.log_list("label distribution", [0.33, 0.67])
    parent.log_row("sample", age=32, bmi=22.5)
    parent.log_table("per class", {"class": ["a", "b"], "recall": [0.9, 0.8]})
    parent.set_tags({"team": "vision", "stage": "dev"})
    parent.tag("stage", "prod")
    parent.add_properties({"git": "abc123"})
    (work / "model.pkl").write_bytes(b"pickled model")
    parent.upload_file("outputs/model.pkl", str(work / "model.pkl"))
    child = parent.child_run("child")
    child.log("depth", 1)
    child.complete()
    model = parent.register_model("classifier", "outputs/model.pkl", description="first")
out["parent"] = parent.id
try:
    with exp.start_logging(display_name="failing"):
        raise ValueError("diverged")
except ValueError:
    pass
canceled = exp.start_logging(display_name="canceled")
canceled.cancel()
old = Experiment(ws, "golden-archived")
old.start_logging().complete()
old.archive()
old.reactivate()

# -- models --------------------------------------------------------------------------------
(work / "weights.bin").write_bytes(b"w" * 100)
second = Model.register(ws, str(work / "weights.bin"), "classifier", tags={"from": "file"})
second.set_alias("production")
model.set_alias("staging")
third = Model.register(ws, str(work / "weights.bin"), "classifier", tags={"from": "again"})
third.archive()
third.archive(restore=True)
third.archive()
out["models"] = [model.version, second.version, third.version]

# -- environments, datastores, datasets, compute -------------------------------------------
(work / "requirements.txt").write_text("numpy==2.1\n")
Environment.from_pip_requirements("golden-env", str(work / "requirements.txt")).register(ws)
lake = work / "lake"
(lake / "raw").mkdir(parents=True)
(lake / "raw" / "a.csv").write_text("x\n1\n2\n")
store = Datastore.register_local(ws, "lake", str(lake))
src = work / "upload"
src.mkdir()
(src / "data.csv").write_text("x\n3\n")
ws.get_default_datastore().upload(
    str(src), target_path="golden", overwrite=True, show_progress=False
)
table = Dataset.Tabular.from_delimited_files(path=(store, "raw/*.csv"))
v1 = table.register(workspace=ws, name="golden table", create_new_version=True)
(lake / "raw" / "b.csv").write_text("x\n4\n")
v2 = table.register(workspace=ws, name="golden table", create_new_version=True)
files = Dataset.File.from_files(path=(store, "raw"))
files.register(workspace=ws, name="golden files")
ComputeTarget.create(ws, "gpus", max_nodes=2, labels=["gpu"])
out["datasets"] = [v1.version, v2.version]

# -- secrets -------------------------------------------------------------------------------
kv = ws.get_default_keyvault()
kv.set_secret("db-pass", "s3cr3t")
kv.set_secret("temporary", "x")
kv.delete_secret("temporary")

# -- a job, on the agent -------------------------------------------------------------------
code = work / "code"
code.mkdir()
(code / "train.py").write_text(
    "from cairn.sdk import Run\nrun = Run.get_context()\nrun.log('AUC', 0.5)\nprint('trained')\n"
)
env = Environment("agent-python")
env.python.user_managed_dependencies = True
job = Experiment(ws, "golden-jobs").submit(
    ScriptRunConfig(source_directory=str(code), script="train.py", environment=env)
)
job.wait_for_completion()
out["job"] = job.get_status()
# one on a compute target no agent serves: queued, then canceled
queued = Experiment(ws, "golden-jobs").submit(
    ScriptRunConfig(
        source_directory=str(code), script="train.py", environment=env, compute_target="gpus"
    )
)
queued.cancel()
out["queued"] = queued.wait_for_completion(raise_on_error=False)["status"]

# -- a pipeline, and published -------------------------------------------------------------
config = RunConfiguration()
config.environment = env
(code / "prep.py").write_text(
    "import sys, pathlib\n"
    "out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1])\n"
    "out.mkdir(parents=True, exist_ok=True)\n"
    "(out / 'x.txt').write_text('1')\n"
)
(code / "use.py").write_text("print('used')\n")
prepped = PipelineData("prepped", datastore=ws.get_default_datastore())
prep = PythonScriptStep(
    name="prep",
    source_directory=str(code),
    script_name="prep.py",
    arguments=["--out", prepped],
    outputs=[prepped],
    compute_target="local",
    runconfig=config,
)
use = PythonScriptStep(
    name="use",
    source_directory=str(code),
    script_name="use.py",
    arguments=["--data", prepped],
    inputs=[prepped],
    compute_target="local",
    runconfig=config,
)
pipeline = Pipeline(ws, steps=[use], description="prep then use")
piped = Experiment(ws, "golden-pipelines").submit(pipeline)
piped.wait_for_completion(show_output=False, timeout_seconds=150)
again = Experiment(ws, "golden-pipelines").submit(pipeline)  # both steps reused
again.wait_for_completion(show_output=False, timeout_seconds=150)
published = pipeline.publish(name="golden-published", description="on request")
out["pipeline"] = [piped.get_status(), again.get_status()]

# -- a sweep -------------------------------------------------------------------------------
sweep = HyperDriveConfig(
    run_config=ScriptRunConfig(source_directory=str(code), script="train.py", environment=env),
    hyperparameter_sampling=RandomParameterSampling(
        {"--n": choice(1, 2)}, properties={"rngSeed": 3}
    ),
    primary_metric_name="AUC",
    primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
    max_total_runs=2,
    max_concurrent_runs=2,
)
swept = Experiment(ws, "golden-sweeps").submit(sweep)
swept.wait_for_completion()
out["sweep"] = swept.get_status()
stuck = Experiment(ws, "golden-sweeps").submit(
    HyperDriveConfig(
        run_config=ScriptRunConfig(
            source_directory=str(code), script="train.py", environment=env, compute_target="gpus"
        ),
        hyperparameter_sampling=RandomParameterSampling({"--n": choice(1, 2)}),
        primary_metric_name="AUC",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=2,
        max_concurrent_runs=1,
    )
)
stuck.cancel()
stuck.wait_for_completion(raise_on_error=False)
out["stuck"] = stuck.get_status()

# -- a schedule, a webhook, an endpoint ----------------------------------------------------
recurrence = ScheduleRecurrence(
    frequency="Week",
    interval=1,
    start_time="2026-01-05T00:00:00",
    time_zone="UTC",
    week_days=["Monday"],
    time_of_day="06:30",
)
schedule = Schedule.create(
    ws,
    "weekly",
    experiment_name="golden-jobs",
    recurrence=recurrence,
    job=ScriptRunConfig(source_directory=str(code), script="train.py", environment=env),
    description="every Monday",
)
schedule.disable()
Schedule.get(ws, "weekly").enable()
Schedule.create(
    ws,
    "short-lived",
    experiment_name="golden-jobs",
    recurrence=recurrence,
    job=ScriptRunConfig(source_directory=str(code), script="train.py", environment=env),
).delete()
hook = ws._run(
    ws.core.webhooks.create(
        "https://hooks.example.com/cairn", ["RunCompleted"], secret="golden-secret-0123456789"
    )
)
ws._run(ws.core.webhooks.delete(hook))
ws._run(ws.core.endpoints.create("golden-endpoint", description="no deployment yet"))
ws._run(ws.core.endpoints.regen_key("golden-endpoint", "secondary"))
ws._run(ws.core.endpoints.update("golden-endpoint", description="still none"))
ws._run(ws.core.endpoints.create("gone-endpoint"))
ws._run(ws.core.endpoints.delete("gone-endpoint"))
# -- deployments: one served (updated to two replicas), one that fails, both deleted --------
serving = work / "serving"
serving.mkdir()
(serving / "score.py").write_text(
    "def init():\n    global scale\n    scale = 2\n\n\n"
    "def run(raw_data):\n    return [scale * x for x in raw_data['data']]\n"
)
(serving / "broken_score.py").write_text(
    "def init():\n    raise FileNotFoundError('no model here')\n\n\n"
    "def run(raw_data):\n    return raw_data\n"
)
inference = InferenceConfig(source_directory=str(serving), entry_script="score.py", environment=env)
service = Model.deploy(
    ws,
    "golden-service",
    [second],
    inference,
    AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1),
)
service.wait_for_deployment()
service.update(inference_config=inference, num_replicas=2)
service.wait_for_deployment()
broken = Model.deploy(
    ws,
    "golden-broken",
    [second],
    InferenceConfig(source_directory=str(serving), entry_script="broken_score.py", environment=env),
    AciWebservice.deploy_configuration(),
)
broken.wait_for_deployment()
out["deployments"] = [service.state, broken.state]
broken.delete()
service.delete()
out["published"] = published.id
print(json.dumps(out))
