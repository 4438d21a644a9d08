# The rest of the sync surface, in one process: context manager, child runs, images, folders,
# properties, threads, Run.get_context inside and outside a job, get_details.
import json
import os
import sys
import threading

from cairn.errors import AlreadyExists
from cairn.sdk import Experiment, OfflineRun, Run, Workspace

ws = Workspace.from_config()
exp = Experiment(ws, sys.argv[1])
out = {}

with exp.start_logging(display_name="parent") as parent:
    child = parent.child_run("child")
    child.log("depth", 1)
    child.complete()
    parent.add_properties({"git": "abc123"})
    try:
        parent.add_properties({"git": "def456"})
    except AlreadyExists:
        out["properties_write_once"] = True
    parent.set_tags({"team": "vision", "stage": "dev"})
    parent.tag("stage", "prod")
    os.makedirs("folder/sub", exist_ok=True)
    for name in ("folder/a.txt", "folder/sub/b.txt"):
        with open(name, "w") as f:
            f.write(name)
    parent.upload_folder("inputs", "folder")
    with open("pixel.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16)
    parent.log_image("confusion", path="pixel.png")

    def worker(k: int) -> None:
        for i in range(500):
            parent.log(f"thread{k}", i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    parent_id = parent.id

out["parent_status"] = parent.get_status()
out["details"] = {k: parent.get_details()[k] for k in ("runId", "status", "display_name")}
out["child_parent"] = child.get_details()["parent_run_id"]
out["properties"] = parent.get_properties()
out["tags"] = parent.get_tags()
out["files"] = parent.get_file_names()
m = parent.get_metrics()
out["threads"] = {k: m[f"thread{k}"] == list(range(500)) for k in range(4)}
out["image"] = m["confusion"]
out["downloaded"] = sorted(parent.download_files(prefix="inputs", output_directory="dl"))

try:
    with exp.start_logging() as failing:
        raise ValueError("boom")
except ValueError:
    pass
out["failed_status"] = failing.get_status()
out["failed_error"] = "ValueError: boom" in failing.get_details()["error"]

offline = Run.get_context()
out["offline"] = isinstance(offline, OfflineRun)
offline.log("a", 1)
offline.log("a", 2)
out["offline_metrics"] = offline.get_metrics()

os.environ["CAIRN_RUN_ID"] = parent_id
os.environ["CAIRN_EXPERIMENT"] = exp.name
bound = Run.get_context()
out["bound"] = bound.id == parent_id and bound.get_status() == "Completed"
out["experiments"] = [e.name for e in Experiment.list(ws)]
print(json.dumps(out))
