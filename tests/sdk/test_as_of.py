"""A run as it was: status, tags, metrics and files as of a stream sequence or a time, read
from the log, equal to what was read live at that moment."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.errors import InvalidInput, NotFound
from cairn.proto.assets import DataPath, DatasetSpec, DatastoreSpec
from cairn.rpc import Client
from cairn.sdk import AsyncRun, AsyncWorkspace
from cairn.settings import Settings
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli, run_cli


async def _moment(run: AsyncRun, ws: AsyncWorkspace) -> dict[str, Any]:
    """What a reader sees now, and the sequence and time that name this moment."""
    details = await run.details()
    return {
        "seq": ws.seen_seq,
        "time": datetime.now(UTC),
        "status": details["status"],
        "tags": details["tags"],
        "metrics": await run.get_metrics(),
        "files": [f["path"] for f in await run.files()],
    }


async def test_a_run_as_of_three_moments_is_what_was_read_live_then(
    ws: AsyncWorkspace, tmp_path: Path
) -> None:
    run = await (await ws.experiment("as-of")).start_run(display_name="then")
    moments = []
    run.log("loss", 0.9)
    await run.flush()
    await run.set_tags({"phase": "warmup"})  # an event after the batch: its sequence covers it
    moments.append(await _moment(run, ws))

    for step in range(3):
        run.log("loss", 0.5 - step / 10)
    await run.flush()
    (tmp_path / "w.bin").write_bytes(b"weights")
    await run.upload_file("outputs/w.bin", tmp_path / "w.bin")
    await run.set_tags({"phase": "training"})
    moments.append(await _moment(run, ws))

    run.log("accuracy", 0.8)
    await run.flush()
    await run.complete()
    moments.append(await _moment(run, ws))

    assert [m["status"] for m in moments] == ["Running", "Running", "Completed"]
    assert moments[0]["metrics"] != moments[1]["metrics"] != moments[2]["metrics"]
    for moment in moments:
        for when in (moment["seq"], moment["time"]):
            then = await run.details(as_of=when)
            assert (then["status"], then["tags"]) == (moment["status"], moment["tags"]), when
            assert await run.get_metrics(as_of=when) == moment["metrics"], when
            assert [f["path"] for f in await run.files(as_of=when)] == moment["files"], when
    assert (await run.details())["status"] == "Completed", "the live read model is untouched"


async def test_long_series_page_as_of_too(ws: AsyncWorkspace) -> None:
    run = await (await ws.experiment("as-of")).start_run()
    for i in range(1500):  # past what a metrics answer carries inline
        run.log("loss", float(i))
    await run.flush()
    await run.set_tags({"half": "done"})
    middle = ws.seen_seq
    for i in range(1500, 2000):
        run.log("loss", float(i))
    await run.complete()
    assert len((await run.get_metrics())["loss"]) == 2000
    assert (await run.get_metrics(as_of=middle))["loss"] == [float(i) for i in range(1500)]


async def test_before_a_run_existed_and_bad_moments_are_refused(ws: AsyncWorkspace) -> None:
    exp = await ws.experiment("as-of")
    await exp.start_run()
    before = ws.seen_seq
    run = await exp.start_run()
    with pytest.raises(NotFound, match=rf"run {run.id} did not exist as of sequence {before}"):
        await run.details(as_of=before)
    assert await run.get_metrics(as_of=before) == {}
    with pytest.raises(InvalidInput, match="a stream sequence is 1 or more"):
        await run.details(as_of=0)
    with pytest.raises(InvalidInput, match="not str"):
        moment: Any = "yesterday"  # neither a time nor a sequence
        await run.details(as_of=moment)
    with pytest.raises(NotFound, match="the log holds no event at sequence"):
        await run.get_metrics(as_of=10**12)


async def test_the_cli_shows_a_run_as_of_a_moment(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    settings = msgspec.structs.replace(client_settings, home=str(tmp_path / "sdk"))
    ws = AsyncWorkspace(client.conn, client.workspace, settings)
    run = await (await ws.experiment("as-of")).start_run()
    started = ws.seen_seq
    await run.complete()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    now = json.loads(await cli("run", "show", run.id, "--json", env=env, cwd=tmp_path))
    then = await cli(
        "run", "show", run.id, "--as-of", str(started), "--json", env=env, cwd=tmp_path
    )
    assert (now["status"], json.loads(then)["status"]) == ("Completed", "Running")
    code, _, err = await run_cli("run", "show", run.id, "--as-of", "soon", env=env, cwd=tmp_path)
    assert code == 2 and "neither a sequence number nor an ISO 8601 time" in err


async def test_a_dataset_as_of_before_its_second_version_is_its_first(
    ws: AsyncWorkspace, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.csv").write_text("x\n1\n")
    await ws.assets.register_datastore("lake", DatastoreSpec(kind="local", path=str(lake)))
    spec = DatasetSpec(kind="tabular", paths=[DataPath("lake", "*.csv")])
    before = ws.seen_seq
    first = await ws.datasets.register("rows", spec)
    between = ws.seen_seq
    (lake / "b.csv").write_text("x\n2\n")
    second = await ws.datasets.register("rows", spec, create_new_version=True)
    assert (first["version"], second["version"]) == (1, 2)
    then = await ws.datasets.get("rows", as_of=between)
    assert then["version"] == 1 and then == first | {"version": 1}
    assert (await ws.datasets.get("rows"))["version"] == 2
    with pytest.raises(NotFound, match="rows"):
        await ws.datasets.get("rows", as_of=before)
