"""Listing runs through the SDK (async and sync) and the CLI: filters and orders on metrics,
Azure ML v1's ``get_runs`` and ``Run.list``, and every run of an experiment larger than any
page, followed cursor by cursor."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from cairn.embedded._server import NatsServer
from cairn.errors import InvalidInput
from cairn.proto.commands import CreateExperiment, CreateRun, ListRuns
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.services.gateway import Gateway
from cairn.settings import Settings
from tests.gateway.conftest import login_password, sign_in
from tests.sdk.test_sync_sdk import run_script, sdk_env
from tests.test_cli import CAIRN


async def _logged(ws: AsyncWorkspace, exp_name: str) -> dict[str, str]:
    """Four runs with a loss, one without, and a child run: name -> run id."""
    exp = await ws.experiment(exp_name)
    ids: dict[str, str] = {}
    for name, losses, team in [
        ("a", [0.9, 0.4], "a"),
        ("b", [0.3, 0.7], "b"),
        ("c", [0.5, 0.5], "a"),
        ("d", [0.8, 0.2], "b"),
        ("none", [], "a"),
    ]:
        run = await exp.start_run(display_name=name)
        for step, value in enumerate(losses):
            run.log("loss", value, step=step)
        await run.set_tags({"team": team})
        await run.complete()
        ids[name] = run.id
    parent = await ws.run(ids["a"], exp_name).child()
    await parent.set_tags({"team": "a"})
    await parent.complete()
    ids["child"] = parent.id
    return ids


async def test_async_get_runs_filters_orders_and_follows_cursors(ws: AsyncWorkspace) -> None:
    ids = await _logged(ws, "listing")
    exp = await ws.experiment("listing")

    async def names(
        *, order_by: tuple[str, ...] = (), page_size: int = 100, filter: str = "", top: bool = False
    ) -> list[str]:
        by_id = {v: k for k, v in ids.items()}
        runs = exp.get_runs(
            filter=filter, order_by=order_by, page_size=page_size, include_children=not top
        )
        return [by_id[r.id] async for r in runs]

    by_min = await names(order_by=("metrics.loss.min",), page_size=1)
    assert by_min[:4] == ["d", "b", "a", "c"]  # then the two without a loss, by run id
    assert by_min[4:] == sorted(["child", "none"], key=lambda k: ids[k])
    by_last = await names(order_by=("metrics.loss DESC",), page_size=2, top=True)
    assert by_last == ["b", "c", "a", "d", "none"]
    assert await names(filter="metrics.loss.max >= 0.8 AND tags.team = 'b'") == ["d"]
    assert set(await names()) == set(ids)  # newest first, children included
    rows = await ws.runs("listing", limit=None, order_by=["display_name"])
    assert [r["display_name"] for r in rows] == ["a", "b", "c", "d", "none", None]
    assert len(await ws.runs("listing", limit=2)) == 2
    with pytest.raises(InvalidInput, match="unknown column"):
        _ = [r async for r in exp.get_runs(filter="loss < 1")]


async def test_sync_get_runs_and_run_list(
    ws: AsyncWorkspace, client_settings: Settings, tmp_path: Path
) -> None:
    ids = await _logged(ws, "sync listing")
    await ws.runs_page("sync listing")  # the read model has them all (read-your-writes)
    env = sdk_env(client_settings, ws.name, tmp_path / "home")
    got = await run_script("runs_listing_script.py", "sync listing", "rows", env=env, cwd=tmp_path)
    by_id = {v: k for k, v in ids.items()}

    def named(key: str) -> list[str]:
        return [by_id[r] for r in got[key]]

    assert named("best") == ["d", "a", "c"]  # last loss under 0.6, by the smallest loss
    assert named("paged") == ["a", "d", "b", "c", "none"]  # max DESC; no child: top level
    assert named("top_level") == ["none", "d", "c", "b", "a"]
    assert named("with_children") == ["child", "none", "d", "c", "b", "a"]
    assert named("tagged") == ["child", "none", "c", "a"]
    assert named("has_tag") == ["none", "d", "c", "b", "a"]
    assert named("completed") == ["none", "d", "c", "b", "a"]
    assert named("unhydrated") == named("top_level")
    assert "type= is not supported" in got["refused"][0]
    assert "status 'Done' is not one of" in got["refused"][1]


async def _cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int | None, str, str]:
    """Exit code, stdout and stderr of one command; stdout through a file, since a listing
    of thousands of runs is megabytes."""
    with (cwd / "stdout").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *CAIRN, *args, env=env, cwd=cwd, stdout=out, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, (cwd / "stdout").read_text(), err.decode()


async def _create_runs(client: Client, experiment: str, n: int) -> int:
    """``n`` runs, created by commands sent concurrently: the last EVENTS sequence."""
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name=experiment))
    gate = asyncio.Semaphore(256)
    last = 0

    async def one(i: int) -> None:
        nonlocal last
        async with gate:
            cmd = CreateRun(
                command_id=uuid.uuid4().hex, run_id=f"big{i:05d}", experiment_name=experiment
            )
            last = max(last, (await client.send(cmd)).seq)

    await asyncio.gather(*(one(i) for i in range(n)))
    return last


async def test_an_experiment_of_10001_runs_lists_every_run(
    client: Client,
    ws: AsyncWorkspace,
    client_settings: Settings,
    tmp_path: Path,
    gateway: Gateway,
    nats_server: NatsServer,
) -> None:
    n = 10_001
    seq = await _create_runs(client, "big", n)
    first = (await client.ask(ListRuns(experiment_name="big", min_seq=seq, count=True))).data
    assert len(first["runs"]) == 100 and first["remaining"] == n - 100

    exp = await ws.experiment("big")
    seen = [r.id async for r in exp.get_runs(page_size=1000)]
    assert len(seen) == n and len(set(seen)) == n

    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script("runs_listing_script.py", "big", "count", env=env, cwd=tmp_path)
    assert got == {"count": n, "distinct": n}

    code, out, err = await _cli(
        "run", "list", "-e", "big", "--all", "--json", env=env, cwd=tmp_path
    )
    assert code == 0, err
    listed = [r["run_id"] for r in json.loads(out)]
    assert len(listed) == n and set(listed) == set(seen)
    assert "more" not in err

    # through a pipe whose reader starts late: the listing arrives whole (a plain write of it
    # came back short, silently, once the event loop had run)
    pipe = asyncio.subprocess.PIPE
    everything = ("run", "list", "-e", "big", "--all", "--json")
    proc = await asyncio.create_subprocess_exec(
        *CAIRN, *everything, env=env, cwd=tmp_path, stdout=pipe, stderr=pipe
    )
    await asyncio.sleep(1.0)
    piped, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0 and [r["run_id"] for r in json.loads(piped)] == listed

    code, out, err = await _cli("run", "list", "-e", "big", "--limit", "5", env=env, cwd=tmp_path)
    assert code == 0 and len(out.splitlines()) == 1 + 5
    assert [line.split()[0] for line in out.splitlines()[1:]] == listed[:5]
    hint = err.strip().splitlines()[-1]
    assert hint.startswith(f"… {n - 5:,} more: --limit, --all, or --cursor ")
    cursor = hint.rsplit(" ", 1)[-1]
    more = ("--limit", "1000", "--cursor", cursor, "--json")
    code, out, err = await _cli("run", "list", "-e", "big", *more, env=env, cwd=tmp_path)
    assert code == 0, err
    assert [r["run_id"] for r in json.loads(out)] == listed[5:1005]
    assert f"… {n - 1005:,} more" in err

    # the studio: its table pages with "next", its JSON API follows the same cursors
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        assert (await sign_in(http, *login_password(nats_server))).status_code == 303
        table = await http.get(f"/w/{client.workspace}/experiments/big")
        assert table.status_code == 200 and 'rel="next"' in table.text
        studio: list[str] = []
        cursor = ""
        while True:
            params = {"experiment": "big", "limit": "1000", "cursor": cursor}
            page = (await http.get(f"/api/w/{client.workspace}/runs", params=params)).json()
            studio += [r["run_id"] for r in page["runs"]]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert studio == listed


async def test_cli_filters_orders_and_refuses_a_bad_filter(
    ws: AsyncWorkspace, client_settings: Settings, tmp_path: Path
) -> None:
    ids = await _logged(ws, "cli listing")
    await ws.runs_page("cli listing")
    env = sdk_env(client_settings, ws.name, tmp_path / "home")
    by_id = {v: k for k, v in ids.items()}
    args = ("run", "list", "-e", "cli listing", "--json")
    query = ("-f", "tags.team = 'b' OR metrics.loss.min >= 0.5", "-o", "metrics.loss.max DESC")
    code, out, err = await _cli(*args, *query, "--order-by", "name", env=env, cwd=tmp_path)
    assert code == 0, err
    assert [by_id[r["run_id"]] for r in json.loads(out)] == ["d", "b", "c"]
    assert "more" not in err
    code, out, err = await _cli(*args, "--all", "--limit", "2", env=env, cwd=tmp_path)
    assert code == 0 and len(json.loads(out)) == len(ids) and "more" not in err
    code, out, err = await _cli(*args, "--filter", "metrics.loss < 'x'", env=env, cwd=tmp_path)
    assert code == 1 and "error [invalid_input]: filter: metrics.loss compares with numbers" in err
    code, out, err = await _cli(*args, "--order-by", "loss", env=env, cwd=tmp_path)
    assert code == 1 and "order_by: unknown column 'loss'" in err
    code, out, err = await _cli(*args, "--limit", "1001", env=env, cwd=tmp_path)
    assert code == 2 and "--limit" in err
