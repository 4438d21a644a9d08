"""``s3://`` URLs as job inputs and dataset paths, against a real SeaweedFS: read through the
registered S3 datastore of the bucket (its credentials, not the agent's), a file under its
own name, a prefix as a folder with its layout, cached by ETag (a changed object fetched
again, an unchanged one not)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from cairn.data import resolve_s3_url
from cairn.errors import DataChanged, InvalidInput
from cairn.proto.assets import DataPath, DatasetSpec, DatastoreSpec
from cairn.proto.commands import CreateExperiment
from cairn.proto.jobs import JobInput, JobSpec, ListJobs, SubmitJob
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, new_id
from cairn.settings import Settings
from cairn.storage import S3BlobStore
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import sdk_env
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS
from tests.test_cli import cli, run_cli
from tests.test_url_inputs import _job

TREE = """\
import os, sys
root = sys.argv[1]
for d, _, files in sorted(os.walk(root)):
    for f in sorted(files):
        p = os.path.join(d, f)
        print("file=" + os.path.relpath(p, root) + ":" + open(p).read().replace("\\n", "|"))
"""


@dataclass
class Lake:
    bucket: str
    datastore: str
    blobs: S3BlobStore

    async def put(self, key: str, body: bytes) -> None:
        await self.blobs.client.put_object(Bucket=self.bucket, Key=key, Body=body)


@pytest.fixture
async def lake(ws: AsyncWorkspace, seaweed: SeaweedFS) -> AsyncIterator[Lake]:
    """A bucket with files, registered as an S3 datastore of the test's workspace."""
    bucket = "urls-" + uuid.uuid4().hex[:10]
    blobs = await S3BlobStore.open(seaweed.config(bucket))
    await blobs.client.create_bucket(Bucket=bucket)
    lake = Lake(bucket, "lake", blobs)
    for key, body in {
        "raw/a.csv": b"x\n1\n",
        "raw/2026/b.csv": b"x\n2\n",
        "raw/2026/03/c.csv": b"x\n3\n",
        "other/d.csv": b"x\n4\n",
    }.items():
        await lake.put(key, body)
    spec = DatastoreSpec(kind="s3", bucket=bucket, endpoint_url=seaweed.endpoint)
    creds = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    await ws.assets.register_datastore("lake", spec, creds)
    yield lake
    await blobs.close()


def _copies(tmp_path: Path) -> list[Path]:
    cache = tmp_path / "agent-state" / "agent" / "data"
    return [p for p in cache.iterdir() if not p.name.startswith(".")]


async def test_an_s3_file_keeps_its_name_and_is_fetched_again_only_when_it_changed(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path, lake: Lake
) -> None:
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    _job(tmp_path, f"s3://{lake.bucket}/raw/a.csv")
    for _ in range(2):
        out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
        assert "name=a.csv parent=inputs/f" in out and "content=x|1|" in out
    assert len(_copies(tmp_path)) == 1, "the second job read the cached copy (same ETag)"
    await lake.put("raw/a.csv", b"x\n10\n")
    out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
    assert "name=a.csv parent=inputs/f" in out and "content=x|10|" in out
    assert len(_copies(tmp_path)) == 2, "a changed object is a new copy"


async def test_an_s3_prefix_arrives_as_a_folder_with_its_layout(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path, lake: Lake
) -> None:
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    _job(tmp_path, f"s3://{lake.bucket}/raw", "uri_folder")
    (tmp_path / "src" / "show.py").write_text(TREE)
    out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
    files = sorted(line for line in out.splitlines() if line.startswith("file="))
    assert files == ["file=2026/03/c.csv:x|3|", "file=2026/b.csv:x|2|", "file=a.csv:x|1|"], out


async def test_an_s3_url_needs_its_buckets_datastore_and_names_exactly_its_key(
    client: Client, client_settings: Settings, tmp_path: Path, lake: Lake
) -> None:
    """No datastore for the bucket: refused at submit naming the way; a client that names a
    datastore path other than the URL's key (to read what the URL does not say) is refused
    by the scheduler; nothing is queued."""
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    _job(tmp_path, "s3://no-such-bucket-registered/a.csv")
    code, out, err = await run_cli("job", "create", "--file", "job.yml", env=env, cwd=tmp_path)
    assert code != 0 and "Datastore.register_s3" in err and "queued" not in out + err
    await client.send(CreateExperiment(command_id=new_id(), name="urls"))
    url = f"s3://{lake.bucket}/raw/a.csv"
    for item in (
        JobInput(name="f", url=url),
        JobInput(name="f", url=url, datastore="lake", path="other/d.csv"),
        JobInput(name="f", url=url, datastore="workspaceblobstore", path="raw/a.csv"),
    ):
        job = JobSpec(command=["true"], inputs=[item])
        cmd = SubmitJob(command_id=new_id(), run_id=new_id(), experiment_name="urls", job=job)
        with pytest.raises(InvalidInput):
            await client.send(cmd)
    assert (await client.ask(ListJobs())).data == []


async def test_a_dataset_from_an_s3_url_is_a_path_of_its_buckets_datastore(
    ws: AsyncWorkspace, tmp_path: Path, lake: Lake
) -> None:
    """The URL is kept as given; the version records the datastore path it resolved to and
    the ETag of every file, and reads through the datastore."""
    url = f"s3://{lake.bucket}/raw/2026"
    record = await ws.datasets.register("s3 files", DatasetSpec(kind="file", paths=[], urls=[url]))
    spec = msgspec.convert(record["spec"], DatasetSpec)
    assert spec.urls == [url] and spec.paths == [DataPath("lake", "raw/2026")]
    assert sorted(f.path for f in spec.files) == ["raw/2026/03/c.csv", "raw/2026/b.csv"]
    assert all(f.etag for f in spec.files) and spec.url_files == []
    got = await ws.datasets.materialise(spec, tmp_path / "got")
    assert sorted(p.relative_to(tmp_path / "got").as_posix() for p in got) == ["03/c.csv", "b.csv"]
    await lake.put("raw/2026/b.csv", b"x\n20\n")
    with pytest.raises(DataChanged, match=r"raw/2026/b\.csv"):
        await ws.datasets.materialise(spec, tmp_path / "again")


async def test_an_s3_url_never_reads_with_the_agents_own_credentials(
    client: Client,
    client_settings: Settings,
    agents: Agents,
    ws: AsyncWorkspace,
    seaweed: SeaweedFS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A datastore registered without credentials is read, as a datastore, with the
    credentials of the machine moving the data (here: the agent's environment). An s3://
    URL of its bucket is not: it is read unsigned, which this private bucket refuses, so
    naming a URL borrows nothing from the agent."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    bucket = "bare-" + uuid.uuid4().hex[:10]
    blobs = await S3BlobStore.open(seaweed.config(bucket))
    try:
        await blobs.client.create_bucket(Bucket=bucket)
        await blobs.client.put_object(Bucket=bucket, Key="raw/a.csv", Body=b"x\n1\n")
        spec = DatastoreSpec(kind="s3", bucket=bucket, endpoint_url=seaweed.endpoint)
        await ws.assets.register_datastore("bare", spec, None)
    finally:
        await blobs.close()
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    _job(tmp_path, "azureml://datastores/bare/paths/raw/a.csv")
    out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
    assert "name=a.csv parent=inputs/f" in out and "content=x|1|" in out
    _job(tmp_path, f"s3://{bucket}/raw/a.csv")
    code, out, err = await run_cli(
        "job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path
    )
    assert code != 0 and "content=" not in out
    assert "datastore bare" in out + err and "refused an unsigned request" in out + err


async def test_an_s3_url_resolves_to_the_datastore_with_the_longest_prefix_holding_it(
    client: Client, ws: AsyncWorkspace, seaweed: SeaweedFS, lake: Lake
) -> None:
    creds = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    spec = DatastoreSpec(kind="s3", bucket=lake.bucket, endpoint_url=seaweed.endpoint)
    await ws.assets.register_datastore(
        "rawlake", msgspec.structs.replace(spec, prefix="raw/"), creds
    )
    url = f"s3://{lake.bucket}/raw/2026/b.csv"
    assert await resolve_s3_url(client, url) == ("rawlake", "2026/b.csv")
    assert await resolve_s3_url(client, f"s3://{lake.bucket}/other/d.csv") == (
        "lake",
        "other/d.csv",
    )
    assert await resolve_s3_url(client, f"s3://{lake.bucket}/rawer/x") == ("lake", "rawer/x")
    await ws.assets.register_datastore("twin", spec, creds)
    with pytest.raises(InvalidInput, match="datastores lake, twin all read bucket"):
        await resolve_s3_url(client, f"s3://{lake.bucket}/other/d.csv")
