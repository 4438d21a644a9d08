"""The seeds' datastore and dataset code, with only the import line changed (an S3
datastore stands where they register a blob container)."""

import json
import os
import sys
from pathlib import Path

from cairn.sdk import Dataset, Datastore, Workspace

endpoint, bucket, key, secret = sys.argv[1:5]
ws = Workspace.from_config()

blob_ds = Datastore.register_s3(
    workspace=ws,
    datastore_name="blob_data",
    bucket_name=bucket,
    endpoint_url=endpoint,
    access_key_id=key,
    secret_access_key=secret,
)
blob_ds.upload_files(
    files=["./data/current_data.csv"],
    target_path="data/files/",
    overwrite=True,
    show_progress=True,
)
blob_ds.upload(
    src_dir="./data/archive", target_path="data/files/archive", overwrite=True, show_progress=True
)

tab_data_set = Dataset.Tabular.from_delimited_files(
    path=[(blob_ds, "data/files/current_data.csv"), (blob_ds, "data/files/archive/*.csv")],
    separator=",",
    header=True,
    infer_column_types=True,
)
first = tab_data_set.take(2).to_pandas_dataframe()
tab_data_set = tab_data_set.register(
    workspace=ws,
    name="diabetes dataset",
    description="diabetes data",
    tags={"format": "CSV"},
    create_new_version=True,
)

# a new month of data arrives: the same definition, registered again, is version 2
Path("./data/archive/2026-03.csv").write_text("id,glucose,diabetic\n7,140,1\n8,99,0\n")
blob_ds.upload(src_dir="./data/archive", target_path="data/files/archive", overwrite=False)
tab_data_set = Dataset.Tabular.from_delimited_files(
    path=[(blob_ds, "data/files/current_data.csv"), (blob_ds, "data/files/archive/*.csv")]
)
tab_data_set.register(workspace=ws, name="diabetes dataset", create_new_version=True)

v2 = Dataset.get_by_name(ws, name="diabetes dataset", version=2)
df = v2.to_pandas_dataframe()
v1 = Dataset.get_by_name(ws, name="diabetes dataset", version=1)

file_ds = Dataset.File.from_files(path=(blob_ds, "data/files/archive/*.csv"))
file_ds = file_ds.register(workspace=ws, name="diabetes files", create_new_version=True)
downloaded = file_ds.download(target_path="./downloaded", overwrite=True)
with file_ds.mount() as mounted:
    mount_files = sorted(os.listdir(mounted.mount_point))
    mode = os.stat(os.path.join(mounted.mount_point, mount_files[0])).st_mode
    writable = bool(mode & 0o222)  # by mode: root may write anything

print(
    json.dumps(
        {
            "take2": first.to_dict("list"),
            "v1_rows": len(v1.to_pandas_dataframe()),
            "v2_rows": len(df),
            "v2_ids": sorted(df["id"].tolist()),
            "columns": list(df.columns),
            "dtypes": [str(t) for t in df.dtypes],
            "keep": list(v2.keep_columns(["id"]).to_pandas_dataframe().columns),
            "drop": list(v2.drop_columns("glucose").to_pandas_dataframe().columns),
            "skip": v2.skip(5).to_pandas_dataframe()["id"].tolist(),
            "versions": [v1.version, v2.version],
            "to_path": file_ds.to_path(),
            "downloaded": sorted(os.path.relpath(p, "downloaded") for p in downloaded),
            "mount": [mount_files, writable],
            "listed": [f["path"] for f in blob_ds.list_files("data/files")],
            "by_mapping": sorted(ws.datasets),
        }
    )
)
