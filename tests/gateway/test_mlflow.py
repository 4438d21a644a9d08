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
    async with httpx.AsyncClient() as http:
        anonymous = await http.get(f"{base}/experiments/get", params={"experiment_id": "0"})
        assert anonymous.status_code == 401
