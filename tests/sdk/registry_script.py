# The model registry through the sync SDK, in one process.
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from cairn.errors import CairnError
from cairn.sdk import Experiment, Model, Workspace

ws = Workspace.from_config()
out = {}
os.makedirs("model_dir/sub", exist_ok=True)
with open("model_dir/weights.bin", "wb") as f:
    f.write(b"w" * 1000)
with open("model_dir/sub/config.json", "w") as f:
    f.write('{"layers": 3}')

# 20 concurrent registrations of one name
with ThreadPoolExecutor(20) as pool:
    models = list(
        pool.map(lambda i: Model.register(ws, "model_dir", "race", tags={"i": i}), range(20))
    )
out["race_versions"] = sorted(m.version for m in models)
out["race_tags_unique"] = len({m.tags["i"] for m in models})

# from a run, with lineage
run = Experiment(ws, sys.argv[1]).start_logging()
with open("model.pkl", "wb") as f:
    f.write(b"pickled")
run.upload_file("outputs/model.pkl", "model.pkl")
registered = run.register_model(
    "classifier",
    "outputs/model.pkl",
    model_framework="ScikitLearn",
    model_framework_version="1.5",
    description="first",
)
run.complete()
out["from_run"] = [registered.version, registered.run_id == run.id, registered.model_framework]
lineage = registered.lineage()
out["lineage"] = [
    lineage["run"]["run_id"] == run.id,
    lineage["run"]["status"],
    lineage["datasets"],
    lineage["environment"],
]
path = registered.download(target_dir="dl1")
out["download_single"] = open(path, "rb").read().decode()
v2 = Model.register(ws, "model_dir", "classifier", tags={"stage": "candidate"})
path = v2.download(target_dir="dl2")
out["download_folder"] = sorted(
    os.path.relpath(os.path.join(d, f), "dl2") for d, _, fs in os.walk("dl2") for f in fs
)

# aliases moved three times, then "as of" each moment
v3 = Model.register(ws, "model_dir", "classifier")
moments = []
for v in (registered, v2, v3):
    v.set_alias("production")
    time.sleep(0.05)
    moments.append(datetime.now(UTC))
    time.sleep(0.05)
out["as_of"] = [Model(ws, "classifier", alias="production", as_of=m).version for m in moments]
out["alias_now"] = Model(ws, "classifier", alias="production").version
out["latest"] = Model(ws, "classifier").version

# archive, list, filters
v2.archive()
out["latest_after_archive"] = Model(ws, "classifier").version
out["listed"] = sorted((m.name, m.version) for m in Model.list(ws, name="classifier"))
out["tag_filter"] = [(m.name, m.version) for m in Model.list(ws, tags={"stage": "candidate"})]
v2.archive(restore=True)
out["models_mapping"] = sorted((k, m.version) for k, m in ws.models.items())

# refused sources and names
refused = {}
for label, kwargs in {
    "uri": {"model_path": "s3://bucket/model.pkl"},
    "absolute": {"model_path": "/etc/passwd"},
    "digest": {"model_path": "sha256:" + "a" * 64},
    "not committed": {"model_path": "outputs/never-uploaded.pkl"},
}.items():
    try:
        run.register_model("refused", **kwargs)
        refused[label] = "accepted"
    except CairnError as exc:
        refused[label] = exc.code
for label, name in {"control": "bad\\x00name", "long": "x" * 300}.items():
    try:
        run.register_model(name.encode().decode("unicode_escape"), "outputs/model.pkl")
        refused[label] = "accepted"
    except CairnError as exc:
        refused[label] = exc.code
out["refused"] = refused
print(json.dumps(out))
