"""A deployment's data collector end to end: requests scored through the gateway, collected
by the replica, delivered by its agent to the workspace's default datastore and read back
from there; and the agent's side alone (what it delivers of a replica's folder)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from cairn.bus import Connection, connect
from cairn.proto.commands import CreateWorkspace
from cairn.proto.serving import DataCollector
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.services.agent._collect import _read_grown
from cairn.services.gateway import running
from cairn.serving import ServeAnswer, ServeRequest, _collect, sampled
from cairn.settings import Settings
from tests.conftest import Agents
from tests.services.test_serving import _register, _source


@dataclass
class Collecting:
    """The module's workspace: a gateway of its own as its scoring address, an agent that
    delivers collected data every 0.5 s, and model iris-like 1 registered (with its rows)."""

    ws: AsyncWorkspace
    model: Any
    X: np.ndarray


@pytest.fixture(scope="module")
async def collecting(
    services: None,
    client_conn: Connection,
    client_settings: Settings,
    agent_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Collecting]:
    """One workspace, gateway and agent for the tests that deploy with a data collector (each
    deploys an endpoint of its own)."""
    tmp = tmp_path_factory.mktemp("collecting")
    workspace = "t" + uuid.uuid4().hex[:12]
    await Client(client_conn, workspace).send(
        CreateWorkspace(command_id=uuid.uuid4().hex, name=workspace)
    )
    gw_settings = msgspec.structs.replace(
        client_settings, nats_user=None, nats_password=None, gateway_port=0
    )
    agents = Agents(
        msgspec.structs.replace(
            agent_settings,
            workspace=workspace,
            state_dir=str(tmp / "agent-state"),
            collect_deliver_s=0.5,
        )
    )
    async with running(gw_settings) as gw:
        settings = msgspec.structs.replace(client_settings, gateway_url=gw.url)
        conn = await connect(settings)
        ws = AsyncWorkspace(conn, workspace, settings)
        try:
            model, X = await _register(ws, tmp)
            await agents.start()
            yield Collecting(ws=ws, model=model, X=X)
        finally:
            await agents.close()
            await ws.close()
            await conn.close()


async def _collected(
    ws: AsyncWorkspace, tmp_path: Path, endpoint: str, collection: str, expected: int
) -> list[dict[str, Any]]:
    """The records of ``collection`` of ``endpoint``'s deployment blue in the default
    datastore, once there are ``expected`` of them (read back as files, waiting up to 120 s
    for the agent's deliveries)."""
    store = await ws.default_datastore()
    prefix = f"modelDataCollector/{endpoint}/blue/{collection}"
    records: list[dict[str, Any]] = []
    for _ in range(240):
        target = tmp_path / f"read-{collection}"
        await ws.datastores.download(store, target, prefix, overwrite=True, show_progress=False)
        records = [
            json.loads(line)
            for path in sorted(target.rglob("*.jsonl"))
            for line in path.read_text().splitlines()
        ]
        if len(records) >= expected:
            return records
        await asyncio.sleep(0.5)
    raise AssertionError(f"{len(records)} {collection} records collected, not {expected}")


async def _score(
    ws: AsyncWorkspace, endpoint: str, key: str, bodies: list[dict[str, Any]]
) -> list[Any]:
    url = ws.endpoints.scoring_uri(endpoint)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        answers = []
        for body in bodies:
            reply = await http.post(url, content=json.dumps(body), timeout=60)
            assert reply.status_code == 200, reply.text
            answers.append(reply.json())
        return answers


async def test_every_request_is_collected_once_in_the_default_datastore(
    collecting: Collecting, tmp_path: Path
) -> None:
    ws, model, X = collecting.ws, collecting.model, collecting.X
    keys = await ws.endpoints.create("ep")
    collector = DataCollector(
        datastore=await ws.default_datastore(),
        collections=["model_inputs", "model_outputs"],
    )
    await ws.endpoints.deploy(
        "ep",
        "blue",
        entry_script="score.py",
        source_directory=_source(tmp_path / "src", "blue"),
        models=[("iris-like", 1)],
        all_traffic=True,
        data_collector=collector,
    )
    row = await ws.endpoints.wait("ep", "blue", timeout=90)
    assert row["status"] == "Succeeded", row
    assert row["spec"]["data_collector"]["collections"] == ["model_inputs", "model_outputs"]
    n = 25
    bodies = [{"data": X[i % len(X) : i % len(X) + 1].tolist(), "n": i} for i in range(n)]
    answers = await _score(ws, "ep", keys["primary"], bodies)
    assert answers[0]["predictions"] == model.predict(X[:1]).tolist()

    inputs = await _collected(ws, tmp_path, "ep", "model_inputs", n)
    outputs = await _collected(ws, tmp_path, "ep", "model_outputs", n)
    assert sorted(r["data"]["n"] for r in inputs) == list(range(n))  # each exactly once
    assert len({r["id"] for r in inputs}) == n
    assert {r["id"] for r in outputs} == {r["id"] for r in inputs}
    by_id = {r["id"]: r for r in outputs}
    for record in inputs:
        assert (record["endpoint"], record["deployment"]) == ("ep", "blue")
        assert record["time"].endswith("Z")
        answer = by_id[record["id"]]
        assert answer["status"] == 200
        assert answer["data"] == answers[record["data"]["n"]]
    # the files lie by hour: <collection>/<yyyy>/<mm>/<dd>/<hh>/<replica>.jsonl
    store = await ws.default_datastore()
    paths = [e.path for e in await ws.datastores.list_files(store, "modelDataCollector/ep/blue")]
    assert paths and all(len(p.split("/")) == 9 and p.endswith(".jsonl") for p in paths), paths
    # the replica's counts, logged by its agent as its run's metrics
    for _ in range(120):
        metrics = await ws.endpoints._metric_sums(row["replicas"][0])
        if metrics.get("collected_records", 0) >= 2 * n:
            break
        await asyncio.sleep(0.5)
    assert metrics["collected_records"] == 2 * n
    assert metrics.get("collected_dropped", 0) == 0


async def test_a_sampling_rate_collects_the_requests_its_ids_choose(
    collecting: Collecting, tmp_path: Path
) -> None:
    ws, X = collecting.ws, collecting.X
    keys = await ws.endpoints.create("sampled")
    collector = DataCollector(
        datastore=await ws.default_datastore(),
        collections=["model_inputs"],
        sampling_rate=0.5,
        rolling_rate="day",
    )
    await ws.endpoints.deploy(
        "sampled",
        "blue",
        entry_script="score.py",
        source_directory=_source(tmp_path / "src", "blue"),
        models=[("iris-like", 1)],
        all_traffic=True,
        data_collector=collector,
    )
    row = await ws.endpoints.wait("sampled", "blue", timeout=90)
    assert row["status"] == "Succeeded", row
    n = 200
    await _score(
        ws, "sampled", keys["primary"], [{"data": X[:1].tolist(), "n": i} for i in range(n)]
    )
    # the replica numbers its requests from 1; its ids choose which are collected
    replica = f"{row['replicas'][0]}-1"
    chosen = {f"{replica}-{i}" for i in range(1, n + 1) if sampled(f"{replica}-{i}", 0.5)}
    assert 60 < len(chosen) < 140  # about half: 200 draws of a fair coin
    inputs = await _collected(ws, tmp_path, "sampled", "model_inputs", len(chosen))
    assert len(inputs) == len(chosen)
    assert {r["id"] for r in inputs} == chosen
    store = await ws.default_datastore()
    listed = await ws.datastores.list_files(store, "modelDataCollector/sampled/blue")
    assert all(e.path.startswith("modelDataCollector/sampled/blue/model_inputs/") for e in listed)
    assert all(len(e.path.split("/")) == 8 for e in listed)  # by day: no hour's folder


def test_the_agent_delivers_only_collector_files_and_follows_no_link(tmp_path: Path) -> None:
    folder = tmp_path / ".collected"
    day = folder / "model_inputs" / "2026" / "11" / "30" / "04"
    day.mkdir(parents=True)
    (day / "r-1.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "unfinished')
    secret = tmp_path / "secret.txt"
    secret.write_text("the agent's own file\n")
    os.symlink(secret, day / "r-2.jsonl")
    os.symlink(day, folder / "model_outputs")  # a linked folder is not walked either
    (folder / "model_inputs" / "notes.txt").write_text("not the collector's\n")
    out = tmp_path / "out"
    out.mkdir()

    grown = _read_grown(folder, {}, out)
    assert [(rel, size, lines) for rel, _, size, lines in grown] == [
        ("model_inputs/2026/11/30/04/r-1.jsonl", 24, 2)
    ]
    assert grown[0][1].read_text() == '{"id": "a"}\n{"id": "b"}\n'  # complete lines only
    # nothing grew since: nothing to deliver
    assert _read_grown(folder, {"model_inputs/2026/11/30/04/r-1.jsonl": 24}, out) == []


def test_a_full_collector_drops_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_collect, "CAPACITY", 2)
    collector = _collect.Collector(
        tmp_path,
        replica="r-1",
        endpoint="ep",
        deployment="blue",
        collections=["model_inputs", "model_outputs"],
    )
    for i in range(1, 5):
        collector.add(ServeRequest(id=i, body=b'{"n": %d}' % i), ServeAnswer(i, 200, b"[1]"), 0)
    collector.flush()
    assert (collector.collected, collector.dropped) == (4, 4)  # 2 kept, 2 dropped: 2 lines each
    lines = (tmp_path / "model_inputs/1970/01/01/00/r-1.jsonl").read_text().splitlines()
    assert [json.loads(line)["data"] for line in lines] == [{"n": 1}, {"n": 2}]
    assert json.loads((tmp_path / "counts.json").read_text()) == {"collected": 4, "dropped": 4}
