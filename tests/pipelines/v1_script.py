"""Azure ML v1's Python pipeline API: two PythonScriptSteps joined by PipelineData, the first
reading a registered tabular dataset as a named input; submitted fresh, unchanged, after a
file of the dataset changed in place, on the dataset's new version, with allow_reuse=False and
with regenerate_outputs=True. Prints one JSON line."""

import json
import sys
from pathlib import Path
from typing import Any

from cairn.sdk import (
    Dataset,
    Datastore,
    Environment,
    Experiment,
    Pipeline,
    PipelineData,
    PipelineParameter,
    PythonScriptStep,
    RunConfiguration,
    Workspace,
)

src, lake = Path(sys.argv[1]), Path(sys.argv[2])
ws = Workspace.from_config()
store = Datastore.register_local(ws, "lake", str(lake))
raw = Dataset.Tabular.from_delimited_files(path=(store, "raw/*.csv"))
raw = raw.register(workspace=ws, name="raw table", create_new_version=True)
env = Environment("agent-python")
env.python.user_managed_dependencies = True
config = RunConfiguration()
config.environment = env
experiment = Experiment(ws, "v1-pipes")
out: dict[str, Any] = {}


def pipeline(allow_reuse: bool = True, dataset: Any = raw) -> Pipeline:
    prepped = PipelineData("prepped", datastore=ws.get_default_datastore())
    scale = PipelineParameter("scale", default_value=2)
    PythonScriptStep(  # the producer of prepped: found through it, not listed
        name="prep",
        source_directory=str(src),
        script_name="prep.py",
        arguments=["--out", prepped, "--scale", scale],
        inputs=[dataset.as_named_input("raw")],
        outputs=[prepped],
        compute_target="local",
        runconfig=config,
        allow_reuse=allow_reuse,
    )
    train = PythonScriptStep(
        name="train",
        source_directory=str(src),
        script_name="train.py",
        arguments=["--data", prepped],
        inputs=[prepped],
        compute_target="local",
        runconfig=config,
        allow_reuse=allow_reuse,
    )
    return Pipeline(ws, steps=[train], description="prep then train")


def submit(label: str, made: Pipeline, **kw: Any) -> None:
    run = experiment.submit(made, **kw)
    run.wait_for_completion(show_output=True, timeout_seconds=150)
    steps = {s.name: s for s in run.get_steps()}
    prep = run.find_step_run("prep")
    out[label] = {
        "status": run.get_status(),
        "reused": {name: s.reused_run_id is not None for name, s in steps.items()},
        "children": sorted(c.id for c in run.get_children()),
        "steps": sorted(s.id for s in steps.values()),
        "prep": [s.id for s in prep],
        "train_parent": steps["train"].parent.id if steps["train"].parent else None,
        "run_id": run.id,
        "prep_log": _log(steps["prep"]),
    }


def _log(step: Any) -> str:
    return "".join(step.get_details_with_logs()["logFiles"].values())


submit("first", pipeline(), pipeline_parameters={"scale": 3})
submit("again", pipeline(), pipeline_parameters={"scale": 3})
(lake / "raw" / "b.csv").write_text("x\n100\n")  # same path, new bytes
submit("changed", pipeline(), pipeline_parameters={"scale": 3})
again = Dataset.Tabular.from_delimited_files(path=(store, "raw/*.csv"))
again = again.register(workspace=ws, name="raw table", create_new_version=True)
out["versions"] = [raw.version, again.version]
submit("new_version", pipeline(dataset=again), pipeline_parameters={"scale": 3})
submit("no_reuse", pipeline(allow_reuse=False), pipeline_parameters={"scale": 3})
submit("regenerate", pipeline(), pipeline_parameters={"scale": 3}, regenerate_outputs=True)
try:
    experiment.submit(pipeline(), pipeline_parameters={"nope": 1})
except Exception as exc:
    out["unknown_parameter"] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
