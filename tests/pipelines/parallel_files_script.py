"""Azure ML v1 batch scoring over a registered file dataset: 12 files in mini-batches of 5,
one worker node with two processes, arguments for the entry script, another output file
name, and a mini-batch whose run() times out on every try (its 2 items fail, within
error_threshold). Prints one JSON line."""

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
    Workspace,
)

src, lake = Path(sys.argv[1]), Path(sys.argv[2])
(lake / "files").mkdir(parents=True, exist_ok=True)
for i in range(11):
    (lake / "files" / f"f{i:02d}.txt").write_text("y" * i)
(lake / "files" / "slow.txt").write_text("z")
ws = Workspace.from_config()
store = Datastore.register_local(ws, "filelake", str(lake))
files = Dataset.File.from_files(path=(store, "files/*.txt"))
files = files.register(workspace=ws, name="files", create_new_version=True)
env = Environment("agent-python")
env.python.user_managed_dependencies = True
config = ParallelRunConfig(
    source_directory=str(src),
    entry_script="files.py",
    mini_batch_size="5",
    error_threshold=5,
    output_action="append_row",
    environment=env,
    compute_target="local",
    node_count=1,
    process_count_per_node=2,
    run_invocation_timeout=1,
    run_max_try=2,
    append_row_file_name="scored.txt",
    logging_level="WARNING",
)
out = PipelineData("scored", datastore=ws.get_default_datastore())
step = ParallelRunStep(
    name="files",
    parallel_run_config=config,
    inputs=[files.as_named_input("files")],
    output=out,
    arguments=["--suffix", "ok"],
)
run = Experiment(ws, "batch-files").submit(Pipeline(ws, steps=[step]))
run.wait_for_completion(show_output=False, timeout_seconds=300, raise_on_error=False)
print(json.dumps({"run_id": run.id, "status": run.get_status()}))
