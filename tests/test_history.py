"""``cairn history``: an entity's events in order, from the log, with who and what caused
each."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.errors import InvalidInput, NotFound
from cairn.proto.assets import DatastoreSpec
from cairn.proto.commands import GetHistory
from cairn.proto.feed import SEALED
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.settings import Settings
from cairn.storage import S3BlobStore
from tests.sdk.test_sync_sdk import sdk_env
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS
from tests.test_cli import cli, run_cli


async def test_a_runs_history_names_each_event_its_actor_and_command(
    ws: AsyncWorkspace, client_settings: Settings
) -> None:
    run = await (await ws.experiment("history")).start_run(display_name="h")
    await run.set_tags({"a": "1"})
    await run.set_tags({"a": "2"})
    await run.complete()
    events = await ws.history("run", run.id)
    assert [e["event"] for e in events] == [
        "RunCreated",
        "RunStarted",
        "RunTagsSet",
        "RunTagsSet",
        "RunCompleted",
    ]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert {e["actor"] for e in events} == {client_settings.nats_user}
    assert len({e["command_id"] for e in events[2:4]}) == 2, "one command, one id"
    assert [e["data"].get("tags") for e in events[2:4]] == [{"a": "1"}, {"a": "2"}]
    # paging: the query answers a page and says where the next starts
    page = (await ws.client.ask(GetHistory(entity_kind="run", name=run.id, limit=2))).data
    assert [e["event"] for e in page["events"]] == ["RunCreated", "RunStarted"]
    assert page["next_after"] == page["events"][-1]["seq"]
    later = await ws.history("run", run.id, after_seq=page["next_after"])
    assert later == events[2:]


async def test_histories_of_named_entities_and_what_they_refuse(
    ws: AsyncWorkspace, seaweed: SeaweedFS, tmp_path: Path
) -> None:
    exp = await ws.experiment("history")
    run = await exp.start_run()
    (tmp_path / "m.bin").write_bytes(b"w")
    await run.upload_file("outputs/m.bin", tmp_path / "m.bin")
    await run.complete()
    for _ in range(2):
        await ws.models.register("hist-model", "outputs/m.bin", run_id=run.id)
    await ws.models.set_alias("hist-model", "prod", 2)
    events = [e["event"] for e in await ws.history("model", "hist-model")]
    assert events == ["ModelVersionRegistered", "ModelVersionRegistered", "ModelAliasSet"]
    assert [e["event"] for e in await ws.history("experiment", "history")] == ["ExperimentCreated"]
    assert (await ws.history("workspace", ws.name))[0]["event"] == "WorkspaceCreated"

    bucket = "hist-" + uuid.uuid4().hex[:10]
    blobs = await S3BlobStore.open(seaweed.config(bucket))
    try:
        await blobs.client.create_bucket(Bucket=bucket)
    finally:
        await blobs.close()
    store = DatastoreSpec(kind="s3", bucket=bucket, endpoint_url=seaweed.endpoint)
    creds = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    await ws.assets.register_datastore("vault", store, creds)
    [registered] = await ws.history("datastore", "vault")
    spec = registered["data"]["spec"]
    assert spec["sealed_credentials"] == SEALED and spec["bucket"] == bucket
    assert SECRET_KEY not in json.dumps(registered)

    with pytest.raises(NotFound, match="no model called 'never' has any event"):
        await ws.history("model", "never")
    with pytest.raises(NotFound, match="experiment"):
        await ws.history("experiment", "never-made")
    with pytest.raises(InvalidInput, match="a workspace's history is its own"):
        await ws.history("workspace", "another")
    with pytest.raises(InvalidInput):
        kind: Any = "secret"  # not a kind a history is offered for
        await ws.history(kind, "x")


async def test_the_cli_prints_a_history(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    settings = msgspec.structs.replace(client_settings, home=str(tmp_path / "sdk"))
    ws = AsyncWorkspace(client.conn, client.workspace, settings)
    run = await (await ws.experiment("history")).start_run()
    await run.fail("bad data")
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    table = await cli("history", "run", run.id, env=env, cwd=tmp_path)
    assert table.splitlines()[0].split()[:5] == ["SEQ", "TIME", "EVENT", "ACTOR", "COMMAND"]
    assert "RunFailed" in table and "bad data" in table
    listed = json.loads(await cli("history", "run", run.id, "--json", env=env, cwd=tmp_path))
    assert [e["event"] for e in listed] == ["RunCreated", "RunStarted", "RunFailed"]
    assert all("correlation_id" in e for e in listed)
    code, _, err = await run_cli("history", "secret", "x", env=env, cwd=tmp_path)
    assert code == 2 and "'secret' is not one of" in err
