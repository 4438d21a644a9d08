"""Published pipelines and endpoints with Azure ML v1's names: publish, get, list, submit with
a parameter, an endpoint over it, a second version made its default, a daily schedule of it.
Prints one JSON line."""

import json
import sys
from typing import Any

from cairn.sdk import (
    Pipeline,
    PipelineEndpoint,
    PipelineParameter,
    PublishedPipeline,
    PythonScriptStep,
    Schedule,
    ScheduleRecurrence,
    Workspace,
)

src = sys.argv[1]
ws = Workspace.from_config()
out: dict[str, Any] = {}


def pipeline(default: int) -> Pipeline:
    step = PythonScriptStep(
        name="echo",
        source_directory=src,
        script_name="echo.py",
        arguments=["--scale", PipelineParameter("scale", default_value=default)],
        compute_target="local",
    )
    return Pipeline(ws, steps=[step], description="says its scale")


def logs(run: Any) -> str:
    step = run.find_step_run("echo")[0]
    return "".join(step.get_details_with_logs()["logFiles"].values())


first = pipeline(2).publish(name="echo", description="echo it", version="1")
out["published"] = [first.name, first.version, first.description, first.parameters]
out["endpoint_url"] = first.endpoint
got = PublishedPipeline.get(ws, first.id)
out["got"] = [got.id == first.id, got.name, got.version]
out["listed"] = [p.id for p in PublishedPipeline.list(ws)]
run = first.submit(ws, "published-runs", pipeline_parameters={"scale": 7})
run.wait_for_completion(show_output=False, timeout_seconds=120)
out["run"] = [run.get_status(), logs(run).strip()]
run = first.submit(ws, "published-runs")
run.wait_for_completion(show_output=False, timeout_seconds=120)
out["default_run"] = [run.get_status(), logs(run).strip()]
try:
    first.submit(ws, "published-runs", pipeline_parameters={"nope": 1})
except Exception as exc:
    out["unknown"] = [type(exc).__name__, str(exc)]

endpoint = PipelineEndpoint.publish(ws, name="nightly", description="every night", pipeline=first)
out["endpoint"] = [endpoint.name, endpoint.default_version == first.id, endpoint.endpoint]
try:
    PipelineEndpoint.publish(ws, name="nightly", description="again", pipeline=first)
except Exception as exc:
    out["twice"] = type(exc).__name__
second = pipeline(3).publish(name="echo", version="2")
endpoint.add_default(second)
again = PipelineEndpoint.get(ws, name="nightly")
out["default"] = [again.default_version == second.id, len(again.pipelines)]
run = again.submit("published-runs")
run.wait_for_completion(show_output=False, timeout_seconds=120)
out["endpoint_run"] = [run.get_status(), logs(run).strip()]
recurrence = ScheduleRecurrence(frequency="Day", interval=1, start_time="2031-01-01T00:00:00")
Schedule.create(
    ws,
    "echo-daily",
    pipeline_id=first.id,
    experiment_name="scheduled-echo",
    recurrence=recurrence,
    pipeline_parameters={"scale": 9},
)
schedule = Schedule.get(ws, "echo-daily")
stored = schedule._record["submission"]
out["schedule"] = [
    schedule.pipeline_id == first.id,
    stored["type"],
    stored["experiment_name"],
    stored["pipeline"]["steps"][0]["job"]["command"][-1],
]
out["ids"] = {"first": first.id, "second": second.id}
print(json.dumps(out))
