# A run logged with start_logging. "wait": stays open until killed. "live <s>": stays open
# for <s> seconds, then completes. Prints the run id, and at the end its status before and after.
import json
import sys
import time

from cairn.sdk import Experiment, Workspace

mode = sys.argv[1]
run = Experiment(Workspace.from_config(), "beating").start_logging(display_name=mode)
print(json.dumps({"run_id": run.id}), flush=True)
if mode == "wait":
    while True:
        time.sleep(1)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    run.log("alive", 1)
    time.sleep(0.1)
before = run.get_status()
run.complete()
print(json.dumps({"before": before, "after": run.get_status()}), flush=True)
