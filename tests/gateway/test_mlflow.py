"""The real ``mlflow`` client logs into Cairn through the gateway's MLflow API, with an API
token as ``MLFLOW_TRACKING_TOKEN``: what it logs is Cairn's run (metrics, properties, tags,
files), and reads back through MLflow's API as it was logged."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec

from cairn.embedded._server import NatsServer
from cairn.sdk import AsyncWorkspace, Workspace
from cairn.services.gateway import Gateway
from cairn.tokens import parse_token
from tests.gateway.test_tokens import bearer, make_token

SCRIPT = Path(__file__).parent / "mlflow_client_script.py"


async def run_mlflow(env: dict[str, str], *args: str, cwd: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 110)
    assert proc.returncode == 0, err.decode()[-4000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def mlflow_env(uri: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CAIRN_"))}
    env.update(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_TRACKING_TOKEN=token,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_ENABLE_ASYNC_LOGGING="false",
        GIT_PYTHON_REFRESH="quiet",
    )
    return env


async def test_the_mlflow_client_logs_a_cairn_run(
    gateway: Gateway, nats_server: NatsServer, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    _, token = make_token(nats_server)
    port = int(gateway.url.rsplit(":", 1)[1])
    settings = msgspec.structs.replace(gateway.settings, gateway_port=port)
    uri = Workspace(settings, ws.name).get_mlflow_tracking_uri()
    assert uri == f"{gateway.url}/mlflow/{ws.name}"
    got = await run_mlflow(mlflow_env(uri, token), "mlflow-exp", cwd=tmp_path)

    assert got["status"] == "FINISHED" and got["name"] == "first"
    assert got["history"] == [[0, 1.0], [1, 0.5], [2, 1 / 3], [3, 0.25]]
    assert got["params"] == {"lr": "0.1", "depth": "3", "kind": "tree"}
    assert got["metrics"] == {"loss": 0.25, "acc": 0.9, "f1": 0.8}
    assert got["tags"] == {"team": "a"}
    assert got["found"] == [got["run_id"]]
    assert got["ordered"] == ["second", "first"]
    assert got["paged"] == [1, True]
    assert got["pages"] == ["second", "first", None]  # newest first, as MLflow's default
    assert got["files"] == ["note.txt", "notes"] and got["inner"] == ["notes/note.txt"]
    assert got["text"] == "hello from mlflow"
    assert got["missing"] == "RESOURCE_DOES_NOT_EXIST"

    # Cairn's own SDK sees the same run
    run = ws.run(got["run_id"], "mlflow-exp")
    details = await run.details()
    assert details["status"] == "Completed" and details["display_name"] == "first"
    assert details["properties"] == {"lr": "0.1", "depth": "3", "kind": "tree"}
    assert details["tags"]["team"] == "a"
    assert await run.get_metrics("loss") == {"loss": [1.0, 0.5, 1 / 3, 0.25]}
    assert [f["path"] for f in await run.files()] == ["note.txt", "notes/note.txt"]


async def test_mlflow_errors_are_mlflow_shaped(
    gateway: Gateway, nats_server: NatsServer, ws: AsyncWorkspace
) -> None:
    _, token = make_token(nats_server)
    base = f"{gateway.url}/mlflow/{ws.name}/api/2.0/mlflow"
    async with httpx.AsyncClient(headers=bearer(token)) as http:
        missing = await http.get(f"{base}/runs/get", params={"run_id": "nosuchrun"})
        assert missing.status_code == 404
        assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        unknown = await http.post(f"{base}/registered-models/create", json={"name": "m"})
        assert unknown.status_code == 404
        assert unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"
        assert "registered-models/create" in unknown.json()["message"]
        bad = await http.post(
            f"{base}/runs/search", json={"experiment_ids": ["0"], "filter": "hyper.lr = 1"}
        )
        assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "hyper.lr" in bad.json()["message"]
        created = await http.post(f"{base}/experiments/create", json={"name": "twice"})
        assert created.status_code == 200, created.text
        again = await http.post(f"{base}/experiments/create", json={"name": "twice"})
        assert again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
        for text, found in (("name LIKE 'tw_c%'", ["twice"]), ("name = 'tw'", [])):
            searched = await http.post(f"{base}/experiments/search", json={"filter": text})
            assert [e["name"] for e in searched.json()["experiments"]] == found
        other = await http.post(f"{base}/experiments/search", json={"filter": "tags.a = 'b'"})
        assert other.status_code == 400 and "by name only" in other.json()["message"]
    async with httpx.AsyncClient() as http:
        anonymous = await http.get(f"{base}/experiments/get", params={"experiment_id": "0"})
        assert anonymous.status_code == 401


async def test_runs_through_the_rest_routes(
    gateway: Gateway, nats_server: NatsServer, ws: AsyncWorkspace
) -> None:
    """What the client does not show: deletion as a mark that searches honour, the ajax
    routes, a run killed, a batch read back, NaN refused by the ingester's policy."""
    _, token = make_token(nats_server)
    base = f"{gateway.url}/mlflow/{ws.name}/ajax-api/2.0/mlflow"
    async with httpx.AsyncClient(headers=bearer(token)) as http:
        exp = (await http.post(f"{base}/experiments/create", json={"name": "rest"})).json()
        made = await http.post(
            f"{base}/runs/create",
            json={"experiment_id": exp["experiment_id"], "run_name": "r", "tags": []},
        )
        assert made.status_code == 200, made.text
        run_id = made.json()["run"]["info"]["run_id"]
        assert made.json()["run"]["info"]["status"] == "RUNNING"
        batch = {
            "run_id": run_id,
            "metrics": [
                {"key": "m", "value": "-1.5", "timestamp": 1000, "step": 0},
                {"key": "m", "value": 2.5, "timestamp": 2000, "step": 1},
            ],
            "params": [{"key": "p", "value": "1"}],
            "tags": [{"key": "t", "value": "x"}],
        }
        logged = await http.post(f"{base}/runs/log-batch", json=batch)
        assert logged.status_code == 200, logged.text
        history = await http.get(
            f"{base}/metrics/get-history", params={"run_id": run_id, "metric_key": "m"}
        )
        points = [(p["step"], p["value"], p["timestamp"]) for p in history.json()["metrics"]]
        assert points == [(0, -1.5, 1000), (1, 2.5, 2000)]
        nan = {"run_id": run_id, "key": "m", "value": "NaN", "timestamp": 0, "step": 2}
        refused = await http.post(f"{base}/runs/log-metric", json=nan)
        assert refused.status_code == 400 and "policy" in refused.json()["message"]

        async def search(view: str) -> list[str]:
            found = await http.post(
                f"{base}/runs/search",
                json={"experiment_ids": [exp["experiment_id"]], "run_view_type": view},
            )
            assert found.status_code == 200, (view, found.text)
            return [r["info"]["run_id"] for r in found.json().get("runs", [])]

        assert await search("ACTIVE_ONLY") == [run_id]
        assert (await http.post(f"{base}/runs/delete", json={"run_id": run_id})).status_code == 200
        assert await search("ACTIVE_ONLY") == []
        assert await search("DELETED_ONLY") == [run_id]
        got = await http.get(f"{base}/runs/get", params={"run_id": run_id})
        assert got.json()["run"]["info"]["lifecycle_stage"] == "deleted"
        await http.post(f"{base}/runs/restore", json={"run_id": run_id})
        assert await search("ALL") == [run_id] == await search("ACTIVE_ONLY")

        killed = await http.post(f"{base}/runs/update", json={"run_id": run_id, "status": "KILLED"})
        assert killed.json()["run_info"]["status"] == "KILLED"
        assert (await ws.run(run_id).details())["status"] == "Canceled"
    # what the caller wrote is remembered between its requests: its METRICS and EVENTS
    # positions (read-your-writes), and the runs it renewed
    principal = await gateway.pool.principal(*parse_token(token), "token")
    assert principal.metrics_seen[ws.name] > 0 and principal.seen[ws.name] > 0
    assert run_id in principal.renewed


async def test_mlflow_2_records_a_logged_model_in_its_history_tag(
    gateway: Gateway, nats_server: NatsServer, ws: AsyncWorkspace
) -> None:
    _, token = make_token(nats_server)
    base = f"{gateway.url}/mlflow/{ws.name}/api/2.0/mlflow"
    async with httpx.AsyncClient(headers=bearer(token)) as http:
        made = await http.post(f"{base}/runs/create", json={"experiment_id": "0"})
        run_id = made.json()["run"]["info"]["run_id"]
        model = {"artifact_path": "model", "flavors": {"sklearn": {}}, "run_id": run_id}
        for _ in range(2):
            logged = await http.post(
                f"{base}/runs/log-model", json={"run_id": run_id, "model_json": json.dumps(model)}
            )
            assert logged.status_code == 200, logged.text
        got = (await http.get(f"{base}/runs/get", params={"run_id": run_id})).json()
        tags = {t["key"]: t["value"] for t in got["run"]["data"]["tags"]}
        assert json.loads(tags["mlflow.log-model.history"]) == [model, model]
        assert (
            got["run"]["info"]["experiment_id"]
            == (
                await http.get(
                    f"{base}/experiments/get-by-name", params={"experiment_name": "Default"}
                )
            ).json()["experiment"]["experiment_id"]
        )


async def test_a_client_keeps_its_connection_between_calls_seconds_apart(
    gateway: Gateway,
) -> None:
    """An idle connection stays open past uvicorn's default of 5 s (a training loop logs once
    an epoch): the second request goes over the same connection, not a new one."""
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    try:
        for pause in (0.0, 6.0):
            await asyncio.sleep(pause)
            writer.write(request)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 10)
            assert status.startswith(b"HTTP/1.1 200"), (pause, status)
            headers = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            length = int(headers.split("content-length:", 1)[1].split("\r\n", 1)[0])
            await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()
