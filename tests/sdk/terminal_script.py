"""What a person runs at a terminal (tests/sdk/test_terminal.py runs it in a pseudo-terminal):

``upload FILE``: a run uploads FILE with the default ``show_progress``, then prints
``uploaded``. ``wait COMPUTE FOLDER ID_FILE``: submits FOLDER's ``job.py`` to COMPUTE, writes
the run's id to ID_FILE and waits with ``show_output=True``.
"""

import sys
from pathlib import Path

from cairn.sdk import Experiment, ScriptRunConfig, Workspace

ws = Workspace.from_config()
experiment = Experiment(workspace=ws, name="terminal")
if sys.argv[1] == "upload":
    run = experiment.start_logging()
    run.upload_file("outputs/big.bin", sys.argv[2])
    run.complete()
    print("uploaded", flush=True)
elif sys.argv[1] == "wait":
    compute, folder, id_file = sys.argv[2:5]
    config = ScriptRunConfig(source_directory=folder, script="job.py", compute_target=compute)
    run = experiment.submit(config)
    Path(id_file).write_text(run.id)
    run.wait_for_completion(show_output=True, raise_on_error=False)
