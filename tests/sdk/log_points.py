# Logs N points to a new run of an experiment; optionally pauses halfway until a file exists.
import json
import os
import sys
import time

from cairn.sdk import Experiment, Workspace

experiment_name, n, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pause_file = sys.argv[4] if len(sys.argv) > 4 else None
pace = float(os.environ.get("LOG_PACE_S", "0"))

run = Experiment(Workspace.from_config(), experiment_name).start_logging(display_name=str(marker))
print(json.dumps({"run_id": run.id}), flush=True)
for step in range(n):
    run.log("value", marker * 1_000_000 + step)
    if pace and step % 1000 == 999:
        time.sleep(pace)
    if pause_file and step == n // 2:
        run.flush()
        print("half", flush=True)
        while not os.path.exists(pause_file):
            time.sleep(0.05)
run.complete()
print("done", flush=True)
