"""Every entity as of a moment, from the log: experiments, runs listed, models, environments,
datastores, datasets and compute targets read live at three moments equal what ``as_of``
(a stream sequence, or a time) answers later; before an entity existed it is not found; a
bad moment is refused with a typed error, in the SDK and on the command line."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from cairn.cli import cli as cli_group
from cairn.errors import InvalidInput, NotFound
from cairn.proto.assets import (
    ComputeSpec,
    DataPath,
    DatasetSpec,
    DatastoreSpec,
    EnvironmentSpec,
)
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.settings import Settings
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli, run_cli

#: a read of the workspace, now or as of a moment
Read = Callable[[datetime | int | None], Awaitable[Any]]


async def _moment(ws: AsyncWorkspace, reads: dict[str, Read]) -> dict[str, Any]:
    """What each read answers live now, and the sequence and time that name this moment."""
    seen = {name: await read(None) for name, read in reads.items()}
    return {"seq": ws.seen_seq, "time": datetime.now(UTC), "seen": seen}


async def _check_later(reads: dict[str, Read], moments: list[dict[str, Any]]) -> None:
    """Each moment, named by its sequence and by its time, reads as it was read live."""
    for moment in moments:
        for when in (moment["seq"], moment["time"]):
            for name, read in reads.items():
                assert await read(when) == moment["seen"][name], (name, when)


async def test_experiments_and_their_runs_as_of_three_moments(ws: AsyncWorkspace) -> None:
    before = await _first_event(ws)
    first = await ws.experiment("asof-exp-a")
    r1 = await first.start_run(display_name="one")
    reads: dict[str, Read] = {
        "experiments": lambda when: ws.experiments("all", as_of=when),
        "a": lambda when: ws.get_experiment("asof-exp-a", as_of=when),
        "a runs": lambda when: first.runs(None, as_of=when),
        "every run": lambda when: ws.runs(None, limit=None, as_of=when),
        "tagged": lambda when: ws.runs(filter="tags.team = 'x'", limit=None, as_of=when),
    }
    moments = [await _moment(ws, reads)]

    second = await ws.experiment("asof-exp-b")
    r2 = await second.start_run(display_name="two")
    await r2.set_tags({"team": "x"})
    await first.create_run(display_name="three")
    moments.append(await _moment(ws, reads))

    await r1.complete()
    await r2.set_tags({"team": "y"})
    await second.archive()
    moments.append(await _moment(ws, reads))

    seen = [m["seen"] for m in moments]
    assert [len(s["experiments"]) for s in seen] == [1, 2, 2]
    assert [s["a"]["runs"] for s in seen] == [1, 2, 2]
    assert [len(s["tagged"]) for s in seen] == [0, 1, 0]
    assert [r["status"] for r in seen[2]["a runs"]] == ["NotStarted", "Completed"]
    assert seen[2]["experiments"][1]["archived"] and not seen[1]["experiments"][1]["archived"]
    await _check_later(reads, moments)

    with pytest.raises(NotFound, match=r"experiment 'asof-exp-b' does not exist as of sequence"):
        await ws.get_experiment("asof-exp-b", as_of=moments[0]["seq"])
    assert await ws.experiments(as_of=before) == []
    with pytest.raises(InvalidInput, match="cannot filter, order or show metrics"):
        await ws.runs(filter="metrics.loss < 1", as_of=moments[0]["seq"])
    assert (await ws.get_experiment("asof-exp-b"))["archived"], "the live read model is untouched"


async def test_models_as_of_three_moments(ws: AsyncWorkspace, tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"weights")

    async def register(name: str) -> None:
        staging, path = await ws.models.upload(tmp_path / "m.bin")
        await ws.models.register(name, path, staging_id=staging, tags={"stage": "dev"})

    await register("asof-clf")
    reads: dict[str, Read] = {
        "all": lambda when: ws.models.list(as_of=when),
        "latest": lambda when: ws.models.list(latest=True, as_of=when),
        "clf": lambda when: ws.models.get("asof-clf", as_of=when),
    }
    before_reg = ws.seen_seq
    moments = [await _moment(ws, reads)]
    await register("asof-clf")
    await ws.models.set_alias("asof-clf", "production", 1)
    await register("asof-reg")
    moments.append(await _moment(ws, reads))
    await ws.models.set_alias("asof-clf", "production", 2)
    await ws.models.archive("asof-clf", 1)
    moments.append(await _moment(ws, reads))

    seen = [m["seen"] for m in moments]
    assert [len(s["all"]) for s in seen] == [1, 3, 2]
    assert [s["clf"]["version"] for s in seen] == [1, 2, 2]
    assert seen[1]["all"][0]["aliases"] == ["production"] and seen[2]["clf"]["aliases"]
    await _check_later(reads, moments)
    with pytest.raises(NotFound, match="asof-reg"):
        await ws.models.get("asof-reg", as_of=before_reg)
    assert await ws.models.list("asof-reg", as_of=before_reg) == []


async def test_assets_as_of_three_moments(ws: AsyncWorkspace, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.csv").write_text("x\n1\n")
    kinds = ("environment", "datastore", "compute", "dataset")
    reads: dict[str, Read] = {
        **{kind: _lister(ws, kind) for kind in kinds},
        "env": lambda when: ws.assets.get("environment", "asof-env", as_of=when),
        "store": lambda when: ws.assets.get("datastore", "asof-lake", as_of=when),
        "gpu": lambda when: ws.assets.get("compute", "asof-gpu", as_of=when),
        "rows": lambda when: ws.datasets.get("asof-rows", as_of=when),
        "rows versions": lambda when: ws.datasets.versions("asof-rows", as_of=when),
    }
    before = await _first_event(ws)
    await ws.assets.register_environment("asof-env", EnvironmentSpec(pip=["numpy"]))
    await ws.assets.register_datastore("asof-lake", DatastoreSpec(kind="local", path=str(lake)))
    await ws.assets.create_compute("asof-gpu", ComputeSpec(kind="cluster", max_nodes=1))
    spec = DatasetSpec(kind="tabular", paths=[DataPath("asof-lake", "*.csv")])
    await ws.datasets.register("asof-rows", spec)
    moments = [await _moment(ws, reads)]

    await ws.assets.register_environment("asof-env", EnvironmentSpec(pip=["numpy", "pandas"]))
    await ws.assets.create_compute("asof-cpu", ComputeSpec(kind="cluster", max_nodes=2))
    (lake / "b.csv").write_text("x\n2\n")
    await ws.datasets.register("asof-rows", spec, create_new_version=True)
    moments.append(await _moment(ws, reads))

    await ws.assets.register_datastore("asof-lake2", DatastoreSpec(kind="local", path=str(lake)))
    await ws.assets.delete_compute("asof-cpu")
    await ws.assets.register_environment("asof-env", EnvironmentSpec(pip=["scipy"]))
    moments.append(await _moment(ws, reads))

    seen = [m["seen"] for m in moments]
    assert [s["env"]["version"] for s in seen] == [1, 2, 3]
    assert [len(s["rows versions"]) for s in seen] == [1, 2, 2]
    assert [_names(s["compute"]) >= {"asof-gpu"} for s in seen] == [True] * 3
    assert ["asof-cpu" in _names(s["compute"]) for s in seen] == [False, True, False]
    assert ["asof-lake2" in _names(s["datastore"]) for s in seen] == [False, False, True]
    await _check_later(reads, moments)

    named: list[tuple[Any, str]] = [
        ("environment", "asof-env"),
        ("datastore", "asof-lake"),
        ("compute", "asof-gpu"),
        ("dataset", "asof-rows"),
    ]
    for kind, name in named:
        with pytest.raises(NotFound, match=name):
            await ws.assets.get(kind, name, as_of=before)
        assert name not in _names(await ws.assets.list(kind, as_of=before))
    with pytest.raises(NotFound, match="asof-rows"):
        await ws.datasets.versions("asof-rows", as_of=before)


async def test_a_dataset_as_of_before_its_second_version_lists_one_version(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    """The requirement's own check, through the SDK and the command line."""
    settings = msgspec.structs.replace(client_settings, home=str(tmp_path / "sdk"))
    ws = AsyncWorkspace(client.conn, client.workspace, settings)
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.csv").write_text("x\n1\n")
    await ws.assets.register_datastore("v-lake", DatastoreSpec(kind="local", path=str(lake)))
    spec = DatasetSpec(kind="tabular", paths=[DataPath("v-lake", "*.csv")])
    first = await ws.datasets.register("v-rows", spec)
    between = ws.seen_seq
    (lake / "b.csv").write_text("x\n2\n")
    await ws.datasets.register("v-rows", spec, create_new_version=True)

    then = await ws.datasets.versions("v-rows", as_of=between)
    assert [v["version"] for v in then] == [1] and then[0]["spec"] == first["spec"]
    assert [v["version"] for v in await ws.datasets.versions("v-rows")] == [1, 2]
    listed = {d["name"]: d["version"] for d in await ws.datasets.list(as_of=between)}
    assert listed["v-rows"] == 1

    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    out = await cli(
        "dataset", "versions", "v-rows", "--as-of", str(between), "--json", env=env, cwd=tmp_path
    )
    assert [v["version"] for v in json.loads(out)] == [1]
    out = await cli("dataset", "versions", "v-rows", "--json", env=env, cwd=tmp_path)
    assert [v["version"] for v in json.loads(out)] == [1, 2]


async def test_the_cli_lists_as_of_and_refuses_bad_moments(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    settings = msgspec.structs.replace(client_settings, home=str(tmp_path / "sdk"))
    ws = AsyncWorkspace(client.conn, client.workspace, settings)
    exp = await ws.experiment("cli-asof")
    run = await exp.start_run()
    started = ws.seen_seq
    await run.complete()
    await ws.assets.create_compute("cli-asof-gpu", ComputeSpec(kind="cluster"))
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")

    async def json_of(*args: str) -> Any:
        return json.loads(await cli(*args, "--json", env=env, cwd=tmp_path))

    runs = await json_of("run", "list", "-e", "cli-asof", "--as-of", str(started))
    assert [(r["run_id"], r["status"]) for r in runs] == [(run.id, "Running")]
    shown = await json_of("experiment", "show", "cli-asof", "--as-of", str(started))
    assert (shown["name"], shown["runs"]) == ("cli-asof", 1)
    computes = await json_of("compute", "list", "--as-of", str(started))
    assert "cli-asof-gpu" not in _names(computes)
    assert (await json_of("compute", "show", "cli-asof-gpu"))["name"] == "cli-asof-gpu"

    code, _, err = await run_cli(
        "compute", "show", "cli-asof-gpu", "--as-of", str(started), env=env, cwd=tmp_path
    )
    assert code != 0 and "compute" in err and "Traceback" not in err
    for command in (
        ("experiment", "list"),
        ("run", "list"),
        ("model", "list"),
        ("environment", "list"),
        ("datastore", "list"),
        ("compute", "list"),
        ("dataset", "list"),
        ("dataset", "versions", "rows"),
    ):
        # refused as usage errors before anything connects: in process, not a CLI each
        refused = CliRunner().invoke(cli_group, [*command, "--as-of", "soon"], env=env)
        assert refused.exit_code == 2, (command, refused.output)
        assert "neither a sequence number nor an ISO 8601 time" in refused.stderr, command
        refused = CliRunner().invoke(cli_group, [*command, "--as-of", "0"], env=env)
        assert refused.exit_code == 2 and "a stream sequence is 1 or more" in refused.stderr


def _lister(ws: AsyncWorkspace, kind: Any) -> Read:
    return lambda when: ws.assets.list(kind, as_of=when)


def _names(rows: list[dict[str, Any]]) -> set[str]:
    return {r["name"] for r in rows}


async def _first_event(ws: AsyncWorkspace) -> int:
    """A sequence before anything of this test's workspace: its creation is the first event,
    so as of it the workspace has no experiment."""
    history = await ws.history("workspace", ws.name)
    return int(history[0]["seq"])
