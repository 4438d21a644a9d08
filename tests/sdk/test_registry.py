"""The model registry through the sync SDK, against the real services."""

from __future__ import annotations

import uuid
from pathlib import Path

from cairn.bus import Connection
from cairn.embedded import NatsServer
from cairn.rpc import Client
from cairn.settings import Settings
from cairn.storage import S3BlobStore
from tests.conftest import add_people, settings_for
from tests.sdk.test_sync_sdk import run_script, sdk_env
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS


async def test_model_registry(client: Client, client_settings: Settings, tmp_path: Path) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script("registry_script.py", "registry", env=env, cwd=tmp_path, timeout=180)
    assert got["race_versions"] == list(range(1, 21)), "20 racing registrations: 1..20"
    assert got["race_tags_unique"] == 20
    assert got["from_run"] == [1, True, "ScikitLearn"]
    assert got["lineage"] == [True, "Completed", [], None]
    assert got["download_single"] == "pickled"
    assert got["download_folder"] == ["model_dir/sub/config.json", "model_dir/weights.bin"]
    assert got["as_of"] == [1, 2, 3]
    assert got["alias_now"] == 3 and got["latest"] == 3
    assert got["latest_after_archive"] == 3
    assert got["listed"] == [["classifier", 1], ["classifier", 3]]
    assert got["tag_filter"] == []  # v2 (the only candidate) is archived
    assert ["classifier", 3] in got["models_mapping"] and ["race", 20] in got["models_mapping"]
    assert got["refused"] == {
        "uri": "invalid_name",
        "absolute": "invalid_name",
        "digest": "invalid_name",
        "not committed": "not_found",
        "control": "invalid_input",
        "long": "invalid_input",
    }


async def test_environments_datastores_and_compute_from_the_sdk(
    client: Client,
    client_settings: Settings,
    nats_server: NatsServer,
    seaweed: SeaweedFS,
    tmp_path: Path,
    admin_conn: Connection,
) -> None:
    await add_people(admin_conn, client.workspace, "dana")
    bucket = "cairn-lake-" + uuid.uuid4().hex[:8]
    blobs = await S3BlobStore.open(seaweed.config(bucket))
    await blobs.client.create_bucket(Bucket=bucket)
    await blobs.close()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    env.update(
        LAKE_BUCKET=bucket,
        LAKE_ENDPOINT=seaweed.endpoint,
        LAKE_KEY=ACCESS_KEY,
        LAKE_SECRET=SECRET_KEY,
    )
    dana = settings_for(nats_server, service=False, person="dana")  # not a compute operator
    env.update(CAIRN_NATS_USER="dana", CAIRN_NATS_PASSWORD=dana.nats_password or "")
    got = await run_script("assets_script.py", env=env, cwd=tmp_path)
    envs = got["envs"]
    assert envs["pip"] == ["numpy==2.1", "pandas>=2"]
    assert envs["conda"] == [["scipy"], ["torch==2.4"], "3.11", {"OMP_NUM_THREADS": "1"}]
    assert envs["manual"] == ["cairn-base:bookworm", {"MODE": "train"}, 1]
    assert envs["same_spec_same_version"]
    assert envs["listed"] == [
        "cairn-lightgbm",
        "cairn-minimal",
        "cairn-python-3.11",
        "cairn-pytorch",
        "cairn-sklearn",
        "cairn-tensorflow",
        "conda-env",
        "manual",
        "pip-env",
    ]
    ds = got["datastores"]
    assert ds["default"] == ["workspaceblobstore", "local"]
    assert ds["local"] == ["local", True] and ds["s3"] == [bucket, True, True]
    assert ds["listed"] == ["lake", "scratch", "workspaceblobstore", "workspacefilestore"]
    assert got["compute_as_scientist"] == "denied"
    assert got["compute_listed"] == ["local"]
    data = got["datasets"]
    assert data["versions"] == [1, 2] and data["refused"] == "already_exists"
    assert data["v1_paths"] == [
        ["workspaceblobstore", "data/files/current_data.csv"],
        ["workspaceblobstore", "data/files/archive/*.csv"],
    ]
    assert data["latest"] == 2 and data["file_kind"] == "FileDataset"
    assert data["listed"] == ["diabetes", "images"]
    assert data["hostile"] == {
        "traversal": "invalid_name",
        "absolute": "invalid_name",
        "unknown store": "not_found",
    }
