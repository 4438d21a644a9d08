# Environments, datastores and compute targets through the sync SDK.
import json
import os
import tempfile
from pathlib import Path

from cairn.errors import PermissionDenied
from cairn.sdk import ComputeTarget, CondaDependencies, Datastore, Environment, Workspace

ws = Workspace.from_config()
out = {}
with open("requirements.txt", "w") as f:
    f.write("numpy==2.1  # arrays\n\npandas>=2\n")
with open("environment.yml", "w") as f:
    f.write(
        "name: x\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - scipy\n"
        "  - pip:\n    - torch==2.4\nvariables:\n  OMP_NUM_THREADS: '1'\n"
    )
pip_env = Environment.from_pip_requirements("pip-env", "requirements.txt").register(ws)
conda_env = Environment.from_conda_specification("conda-env", "environment.yml").register(ws)
manual = Environment("manual")
manual.python.conda_dependencies = CondaDependencies.create(pip_packages=["requests"])
manual.docker.base_image = "cairn-base:bookworm"
manual.environment_variables = {"MODE": "train"}
manual = manual.register(ws)
again = Environment.from_pip_requirements("pip-env", "requirements.txt").register(ws)
got = Environment.get(ws, "conda-env")
out["envs"] = {
    "pip": pip_env.python.conda_dependencies.pip_packages,
    "conda": [
        got.python.conda_dependencies.conda_packages,
        got.python.conda_dependencies.pip_packages,
        got.python.conda_dependencies.python_version,
        got.environment_variables,
    ],
    "manual": [manual.docker.base_image, manual.environment_variables, manual.version],
    "same_spec_same_version": again.version == pip_env.version == 1,
    "listed": sorted(ws.environments),
}
local = Datastore.register_local(ws, "scratch", "data_root")
s3 = Datastore.register_s3(  # a real bucket: registration opens it with the credentials
    ws,
    "lake",
    bucket_name=os.environ["LAKE_BUCKET"],
    endpoint_url=os.environ["LAKE_ENDPOINT"],
    access_key_id=os.environ["LAKE_KEY"],
    secret_access_key=os.environ["LAKE_SECRET"],
)
out["datastores"] = {
    "default": [ws.get_default_datastore().name, ws.get_default_datastore().datastore_type],
    "local": [local.datastore_type, local.local_path.endswith("data_root")],
    "s3": [s3.bucket_name, s3.has_credentials, os.environ["LAKE_SECRET"] not in repr(vars(s3))],
    "listed": sorted(ws.datastores),
}
try:
    ComputeTarget.create(ws, "gpus", max_nodes=2, labels=["gpu"])
    out["compute_as_scientist"] = "created"
except PermissionDenied:
    out["compute_as_scientist"] = "denied"
out["compute_listed"] = sorted(ws.compute_targets)

# datasets: definitions and versions (the seeds' registration flow)
from cairn.errors import AlreadyExists  # noqa: E402
from cairn.sdk import Dataset  # noqa: E402

ds = ws.get_default_datastore()
src = Path(tempfile.mkdtemp())
(src / "archive").mkdir()
(src / "images").mkdir()
(src / "current_data.csv").write_text("a\n1\n")
(src / "archive" / "2026-01.csv").write_text("a\n2\n")
(src / "images" / "x.jpg").write_bytes(b"\xff\xd8\xff")
ds.upload(str(src), target_path="data/files", overwrite=True, show_progress=False)
tab = Dataset.Tabular.from_delimited_files(
    path=[(ds, "data/files/current_data.csv"), (ds, "data/files/archive/*.csv")]
)
v1 = tab.register(
    workspace=ws, name="diabetes", description="diabetes data", tags={"format": "CSV"}
)
other = Dataset.Tabular.from_delimited_files(path=[(ds, "data/files/current_data.csv")])
try:
    other.register(workspace=ws, name="diabetes")
    refused = "accepted"
except AlreadyExists:
    refused = "already_exists"
v2 = other.register(workspace=ws, name="diabetes", create_new_version=True)
files = Dataset.File.from_files(path=(ds, "data/files/images/*.jpg")).register(ws, "images")
hostile = {}
for label, path in {
    "traversal": (ds, "../outside/*.csv"),
    "absolute": (ds, "/etc/*"),
    "unknown store": ("nope", "x.csv"),
}.items():
    try:
        Dataset.File.from_files(path=path).register(ws, "hostile")
        hostile[label] = "accepted"
    except Exception as exc:
        hostile[label] = getattr(exc, "code", repr(exc))
out["datasets"] = {
    "versions": [v1.version, v2.version],
    "refused": refused,
    "v1_paths": [
        [p.datastore, p.pattern] for p in Dataset.get_by_name(ws, "diabetes", version=1).spec.paths
    ],
    "latest": Dataset.get_by_name(ws, "diabetes").version,
    "file_kind": type(files).__name__,
    "listed": sorted(ws.datasets),
    "hostile": hostile,
}
print(json.dumps(out))
