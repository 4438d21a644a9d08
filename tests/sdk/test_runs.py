"""Runs through both APIs: ``async with run:``, child runs and their filters, the ``log*``
signatures, and numbers read back with the type they were logged with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cairn.errors import InvalidInput
from cairn.rpc import Client
from cairn.sdk import AsyncRun, AsyncWorkspace
from cairn.settings import Settings
from tests.sdk.test_sync_sdk import run_script, sdk_env

#: what the older ``log(name, kind, value, step)`` shape passes as the description
OLD_DESCRIPTION: Any = 1.0
NOT_A_FILTER: Any = ["team"]


async def test_an_exception_inside_async_with_fails_the_run(ws: AsyncWorkspace) -> None:
    exp = await ws.experiment("ctx")
    with pytest.raises(ZeroDivisionError):
        async with await exp.start_run() as run:
            run.log("before", 1)
            _ = 1 / 0
    details = await run.details()
    assert details["status"] == "Failed"
    assert "ZeroDivisionError: division by zero" in details["error"]
    assert "Traceback" in details["error"]
    assert (await run.get_metrics())["before"] == 1, "its points are stored first"

    async with await exp.start_run() as ok:
        ok.log("x", 2)
    assert await ok.get_status() == "Completed"


async def test_async_log_has_the_sync_signature(ws: AsyncWorkspace) -> None:
    run = await (await ws.experiment("sig")).start_run()
    run.log("loss", 0.5, "the loss", step=3)
    run.log("loss", 0.25, description="", step=4)
    run.log_list("l", [1, 2.5])
    run.log_row("r", "a row", a=1, b=2.0)
    run.log_table("t", {"c": [1, 2]})
    with pytest.raises(InvalidInput, match="description"):
        run.log("old shape", "scalar", OLD_DESCRIPTION, 0)
    await run.complete()
    got = await run.get_metrics()
    assert got["loss"] == [0.5, 0.25]
    assert got["l"] == [1, 2.5] and got["r"] == {"a": [1], "b": [2.0]}
    assert got["t"] == {"c": [1, 2]}
    assert [p[0] for p in await run.history("loss")] == [3, 4]


async def test_numbers_read_back_with_their_type(ws: AsyncWorkspace) -> None:
    run = await (await ws.experiment("types")).start_run()
    run.log("epochs", 1)
    run.log("lr", 1.0)
    run.log("mixed", 2)
    run.log("mixed", 2.0)
    run.log("mixed", -0.0)
    for step in range(1_500):  # past the inline limit: read page by page
        run.log("long", step if step % 2 else float(step))
    await run.complete()
    got = await run.get_metrics()
    assert got["epochs"] == 1 and type(got["epochs"]) is int
    assert got["lr"] == 1.0 and type(got["lr"]) is float
    assert [type(v) for v in got["mixed"]] == [int, float, float]
    assert [type(v) for v in got["long"][:4]] == [float, int, float, int]
    assert got["long"][:4] == [0.0, 1, 2.0, 3]
    compared = await ws.compare((await ws.experiment("types")).id, "epochs")
    assert type(compared[0]["last"]) is int and type(compared[0]["max"]) is int
    compared = await ws.compare((await ws.experiment("types")).id, "lr")
    assert type(compared[0]["last"]) is float and type(compared[0]["min"]) is float


async def test_get_children_with_filters(ws: AsyncWorkspace) -> None:
    parent = await (await ws.experiment("family")).start_run()
    a = await parent.child("a")
    await a.set_tags({"team": "vision", "stage": "prod"})
    await a.add_properties({"git": "abc"})
    await a.complete()
    b = await parent.child("b")
    await b.set_tags({"team": "nlp"})
    grandchild = await b.child("b1")
    await grandchild.set_tags({"team": "vision"})

    def ids(runs: list[AsyncRun]) -> list[str]:
        return [r.id for r in runs]

    assert ids(await parent.get_children()) == [a.id, b.id]
    assert ids(await parent.get_children(recursive=True)) == [a.id, b.id, grandchild.id]
    assert ids(await parent.get_children(tags="stage")) == [a.id]
    assert ids(await parent.get_children(tags={"team": "vision"})) == [a.id]
    assert ids(await parent.get_children(recursive=True, tags={"team": "vision"})) == [
        a.id,
        grandchild.id,
    ]
    assert ids(await parent.get_children(properties={"git": "abc"})) == [a.id]
    assert ids(await parent.get_children(properties="nope")) == []
    assert ids(await parent.get_children(status="Running")) == [b.id]
    assert ids(await parent.get_children(recursive=True, status="Running")) == [
        b.id,
        grandchild.id,
    ]
    assert await grandchild.get_children() == []
    with pytest.raises(InvalidInput, match="filter"):
        await grandchild.get_children(properties=NOT_A_FILTER)  # refused with no child too
    with pytest.raises(InvalidInput, match="type="):
        await parent.get_children(type="azureml.scriptrun")
    with pytest.raises(InvalidInput, match="status 'Done'"):
        await parent.get_children(status="Done")
    with pytest.raises(InvalidInput, match="filter"):
        await parent.get_children(tags=NOT_A_FILTER)


async def test_the_sync_facade_children_and_types(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script("runs_script.py", env=env, cwd=tmp_path)
    assert got["children"] == got["made"][:2]
    assert got["recursive"] == got["made"]
    assert got["tagged"] == [got["made"][0]]
    assert got["running"] == [got["made"][1], got["made"][2]]
    assert got["type_refused"] and got["unknown_refused"]
    assert got["types"] == {"epochs": "int", "lr": "float"}
    assert got["failed"] == "Failed" and "ValueError: bad batch" in got["error"]
