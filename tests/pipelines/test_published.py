"""Published pipelines: stored submissions run again with parameters, from the SDK (Azure ML
v1's names, in a script) and over HTTP on the gateway with a bearer token."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from cairn.embedded._server import NatsServer
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.services.gateway import Gateway
from cairn.settings import Settings
from tests.conftest import Agents
from tests.gateway.test_tokens import bearer, make_token
from tests.pipelines.helpers import logs, wait_pipeline
from tests.sdk.test_sync_sdk import run_script, sdk_env

SRC = Path(__file__).with_name("v1_src")
SCRIPT = Path(__file__).with_name("published_script.py")


async def test_published_pipelines_and_endpoints_run_with_parameters(
    client: Client,
    client_settings: Settings,
    ws: AsyncWorkspace,
    agents: Agents,
    gateway: Gateway,
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    shutil.copytree(SRC, tmp_path / "src")
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script(str(SCRIPT), str(tmp_path / "src"), env=env, cwd=tmp_path, timeout=400)
    assert got["published"] == ["echo", "1", "echo it", {"scale": "2"}]
    assert got["endpoint_url"].endswith(
        f"/api/w/{client.workspace}/pipelines/{got['ids']['first']}/runs"
    )
    assert got["got"] == [True, "echo", "1"]
    assert got["listed"][0] == got["ids"]["first"]
    assert got["run"] == ["Completed", "scale=7"]
    assert got["default_run"] == ["Completed", "scale=2"]
    assert got["unknown"][0] == "InvalidInput" and "'nope'" in got["unknown"][1]
    assert got["endpoint"][:2] == ["nightly", True]
    assert got["twice"] == "AlreadyExists"
    assert got["default"] == [True, 2]
    assert got["endpoint_run"] == ["Completed", "scale=3"]
    assert got["schedule"] == [True, "SubmitPipeline", "scheduled-echo", "9"]

    first = got["ids"]["first"]
    base = f"/api/w/{client.workspace}"
    body = {"ExperimentName": "http-runs", "ParameterAssignments": {"scale": 11}}
    _, token = make_token(nats_server)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        refused = await http.post(f"{base}/pipelines/{first}/runs", json=body)
        assert refused.status_code == 401, refused.text
        reply = await http.post(f"{base}/pipelines/{first}/runs", json=body, headers=bearer(token))
        assert reply.status_code == 201, reply.text
        run_id = reply.json()["Id"]
        by_name = await http.post(
            f"{base}/pipeline-endpoints/nightly/runs",
            json={"ExperimentName": "http-runs", "ParameterAssignments": {"scale": 13}},
            headers=bearer(token),
        )
        assert by_name.status_code == 201, by_name.text
        missing = await http.post(
            f"{base}/pipelines/no-such-pipeline/runs", json=body, headers=bearer(token)
        )
        assert missing.status_code == 404, missing.text
        unknown_key = await http.post(
            f"{base}/pipelines/{first}/runs",
            json={**body, "Extra": 1},
            headers=bearer(token),
        )
        assert unknown_key.status_code == 400, unknown_key.text
    for rid, said in ((run_id, "scale=11"), (by_name.json()["Id"], "scale=13")):
        done = await wait_pipeline(ws, rid, timeout=120)
        assert done["status"] == "Completed", done
        step = done["steps"][0]["run_id"]
        assert said in await logs(ws, step)
