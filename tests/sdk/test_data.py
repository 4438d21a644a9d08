"""Datastores and datasets through the sync SDK against the real services and a real
SeaweedFS; versions that mean the same bytes; hostile paths refused."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.bus import EventStore
from cairn.embedded import NatsServer
from cairn.errors import NotFound, Unauthenticated, Unavailable
from cairn.proto import subjects
from cairn.proto.assets import DatastoreSpec
from cairn.proto.events import DatastoreFilesUploaded
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.settings import Settings
from cairn.storage import S3BlobStore
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import run_script, sdk_env
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS


def data_env(settings: Settings, server: NatsServer, ws: str, home: Path) -> dict[str, str]:
    """An SDK process that moves data: it holds the workspace key (here: the server's)."""
    return {**sdk_env(settings, ws, home), "CAIRN_KEYS_DIR": str(server.home / "keys")}


def _files(tmp_path: Path) -> None:
    (tmp_path / "data" / "archive").mkdir(parents=True)
    (tmp_path / "data" / "current_data.csv").write_text(
        "id,glucose,diabetic\n1,148,1\n2,85,0\n3,183,1\n"
    )
    (tmp_path / "data" / "archive" / "2026-01.csv").write_text("id,glucose,diabetic\n4,89,0\n")
    (tmp_path / "data" / "archive" / "2026-02.csv").write_text(
        "id,glucose,diabetic\n5,137,1\n6,116,0\n"
    )
    (tmp_path / "data" / "archive" / "notes.txt").write_text("not a csv\n")


async def test_the_seeds_datastore_and_dataset_code(
    client: Client,
    client_settings: Settings,
    nats_server: NatsServer,
    seaweed: SeaweedFS,
    store: EventStore,
    tmp_path: Path,
) -> None:
    bucket = "data-" + uuid.uuid4().hex[:10]
    s3 = await _bucket(seaweed, bucket)
    _files(tmp_path)
    env = data_env(client_settings, nats_server, client.workspace, tmp_path / "home")
    got = await run_script(
        "data_script.py",
        seaweed.endpoint,
        bucket,
        ACCESS_KEY,
        SECRET_KEY,
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert got["take2"] == {"id": [1, 2], "glucose": [148, 85], "diabetic": [1, 0]}
    assert got["v1_rows"] == 6 and got["v2_rows"] == 8
    assert got["v2_ids"] == [1, 2, 3, 4, 5, 6, 7, 8]  # current_data first, then the archive
    assert got["columns"] == ["id", "glucose", "diabetic"]
    assert got["dtypes"] == ["int64", "int64", "int64"]
    assert got["keep"] == ["id"] and got["drop"] == ["id", "diabetic"]
    assert got["skip"] == [6, 7, 8]
    assert got["versions"] == [1, 2]
    assert got["to_path"] == ["/2026-01.csv", "/2026-02.csv", "/2026-03.csv"]
    assert got["downloaded"] == ["2026-01.csv", "2026-02.csv", "2026-03.csv"]
    assert got["mount"] == [["2026-01.csv", "2026-02.csv", "2026-03.csv"], False]
    assert "data/files/archive/notes.txt" in got["listed"]
    assert got["by_mapping"] == ["diabetes dataset", "diabetes files"]
    objects = await s3.list_objects_v2(Bucket=bucket)
    assert len(objects["Contents"]) == 5
    history = await store.read(
        subjects.event(client.workspace, "datastore", subjects.name_to_id("blob_data"))
    )
    uploads = [
        r.envelope.data for r in history if isinstance(r.envelope.data, DatastoreFilesUploaded)
    ]
    recorded = sorted(f.path for u in uploads for f in u.files)
    assert recorded == [
        "data/files/archive/2026-01.csv",
        "data/files/archive/2026-02.csv",
        "data/files/archive/2026-03.csv",
        "data/files/archive/notes.txt",
        "data/files/current_data.csv",
    ]
    await s3.close()


async def _bucket(seaweed: SeaweedFS, bucket: str) -> _Client:
    blobs = await S3BlobStore.open(seaweed.config(bucket))
    await blobs.client.create_bucket(Bucket=bucket)
    return _Client(blobs)


class _Client:
    def __init__(self, blobs: S3BlobStore) -> None:
        self.blobs = blobs

    async def list_objects_v2(self, **kw: object) -> dict[str, Any]:
        listed: dict[str, Any] = await self.blobs.client.list_objects_v2(**kw)
        return listed

    async def close(self) -> None:
        await self.blobs.close()


_ = pytest


async def test_versions_mean_the_same_bytes_and_hostile_paths_are_refused(
    client: Client, client_settings: Settings, nats_server: NatsServer, tmp_path: Path
) -> None:
    env = data_env(client_settings, nats_server, client.workspace, tmp_path / "home")
    got = await run_script(
        "data_versions_script.py", str(tmp_path / "lake" / "root"), env=env, cwd=tmp_path
    )
    assert got["before"] == [1, 3]
    assert got["changed"] == ["data_changed", True]
    assert got["frozen"] == [1, 3], "a snapshot version reads the bytes it was registered with"
    assert got["gone"] == ["data_changed", True]
    assert got["exists"] == "already_exists"
    assert got["new_version"] == 2
    assert got["refused"] == {
        "pattern_dotdot": "invalid_name",
        "pattern_absolute": "invalid_name",
        "upload_target": "invalid_name",
        "download_prefix": "invalid_name",
        "list_prefix": "invalid_name",
        "symlink_read": "invalid_name",
    }
    assert got["listed"] == ["t/b.csv"], "a link out of the datastore is not listed"
    assert not (tmp_path / "got").exists() or not any((tmp_path / "got").rglob("*"))


async def test_a_job_reads_a_named_dataset_input_and_its_model_lists_the_version(
    client: Client,
    client_settings: Settings,
    nats_server: NatsServer,
    agents: Agents,
    tmp_path: Path,
) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.csv").write_text("x,y\n1,2\n3,4\n")
    (tmp_path / "raw" / "b.csv").write_text("x,y\n5,6\n")
    await agents.start()
    env = data_env(client_settings, nats_server, client.workspace, tmp_path / "home")
    folder = Path(__file__).with_name("training_data")
    got = await run_script("data_jobs_script.py", str(folder), env=env, cwd=tmp_path, timeout=180)
    assert got["status"] == "Completed"
    assert got["metrics"]["rows"] == 3 and got["metrics"]["mounted_files"] == 2
    assert got["lineage"] == ["raw data:1"]
    assert got["used_by"] == [[1, True]]
    assert got["uploaded"] == ["job-out/models/weights.bin"]
    assert got["model"] == "trained on 3 rows"
    assert got["estimator"] == ["Completed", 3, ["job-out/estimator/weights.bin"]]
    cache = tmp_path / "agent-state" / "agent" / "data"
    copies = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(copies) == 1, "both jobs read dataset version 1: fetched once, by fingerprint"
    assert (copies[0] / ".ready").exists() and sorted(os.listdir(copies[0])) == [
        ".ready",
        "a.csv",
        "b.csv",
    ]


async def test_an_s3_datastore_is_checked_when_it_is_registered(
    ws: AsyncWorkspace, seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wrong credentials, none at all, a missing bucket: one typed line each at registration,
    and nothing registered; the right ones register."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    bucket = "lake-" + uuid.uuid4().hex[:10]
    s3 = await _bucket(seaweed, bucket)
    spec = DatastoreSpec(kind="s3", bucket=bucket, endpoint_url=seaweed.endpoint)
    good = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    cases: list[tuple[DatastoreSpec, dict[str, str] | None, type[Exception], str]] = [
        (spec, {**good, "secret_access_key": "wrong"}, Unauthenticated, "refused the creden"),
        (spec, None, Unauthenticated, "no credentials"),
        (msgspec.structs.replace(spec, bucket="nope-" + bucket), good, NotFound, "no bucket"),
        (
            msgspec.structs.replace(spec, endpoint_url="http://127.0.0.1:9"),
            good,
            Unavailable,
            "cannot reach",
        ),
    ]
    for case_spec, creds, error, says in cases:
        with pytest.raises(error, match=says):
            await ws.assets.register_datastore("lake", case_spec, creds)
        with pytest.raises(NotFound):
            await ws.assets.get("datastore", "lake")
    registered = await ws.assets.register_datastore("lake", spec, good)
    assert registered["spec"]["bucket"] == bucket
    await s3.close()
