"""Azure ML v1 batch scoring: a registered tabular dataset of ``rows`` rows scored by a
ParallelRunStep (``mini_batch_size``, ``node_count`` workers, SCORE_MODE for the entry
script, ``error_threshold``), its output read by a later PythonScriptStep. With ``wait`` it
waits for the pipeline and prints its status and steps; else it prints the run id at once.
Prints one JSON line."""

import json
import sys
from pathlib import Path

from cairn.sdk import (
    Dataset,
    Datastore,
    Environment,
    Experiment,
    ParallelRunConfig,
    ParallelRunStep,
    Pipeline,
    PipelineData,
    PythonScriptStep,
    Workspace,
)

src, lake, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
rows, size, nodes, threshold, wait = (int(a) for a in sys.argv[4:9])
(lake / "rows").mkdir(parents=True, exist_ok=True)
per_file = rows // 4
for i in range(4):
    values = range(i * per_file, rows if i == 3 else (i + 1) * per_file)
    (lake / "rows" / f"part{i}.csv").write_text("x\n" + "".join(f"{x}\n" for x in values))
ws = Workspace.from_config()
store = Datastore.register_local(ws, "lake", str(lake))
table = Dataset.Tabular.from_delimited_files(path=(store, "rows/*.csv"))
table = table.register(workspace=ws, name="rows", create_new_version=True)
env = Environment("agent-python")
env.python.user_managed_dependencies = True
config = ParallelRunConfig(
    source_directory=str(src),
    entry_script="score.py",
    mini_batch_size=size,
    error_threshold=threshold,
    output_action="append_row",
    environment=env,
    compute_target="local",
    node_count=nodes,
    environment_variables={"SCORE_MODE": mode},
    run_invocation_timeout=900,
)
scored = PipelineData("scored", datastore=ws.get_default_datastore())
step = ParallelRunStep(
    name="score",
    parallel_run_config=config,
    inputs=[table.as_named_input("rows")],
    output=scored,
)
count = PythonScriptStep(
    name="count",
    source_directory=str(src),
    script_name="count.py",
    arguments=["--scored", scored],
    inputs=[scored],
    compute_target="local",
)
run = Experiment(ws, "batch-scoring").submit(Pipeline(ws, steps=[count]))
out = {"run_id": run.id}
if wait:
    run.wait_for_completion(show_output=False, timeout_seconds=400, raise_on_error=False)
    out["status"] = run.get_status()
    out["steps"] = {s.name: s.get_status() for s in run.get_steps()}
    out["step_runs"] = {s.name: s.id for s in run.get_steps()}
print(json.dumps(out))
