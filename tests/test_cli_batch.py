"""Batch endpoints from the command line (YAML in the Azure ML CLI v2 shape), against the real
services and an agent: an invocation over a local folder scores every file once, in
mini-batches shared by two workers; bad files are refused naming the key."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cairn.errors import InvalidInput, Unsupported
from cairn.proto.parallel import parallel_run_id
from cairn.proto.pipelines import GetPipeline
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, load_batch_deployment_file, load_batch_endpoint_file
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli, cli_json, run_cli

SCORE = """\
import os

SEEN = 0


def init():
    global SEEN
    SEEN += 1


def run(mini_batch):
    return [f"{os.path.basename(f)} {len(open(f).read())} {SEEN}" for f in mini_batch]
"""
ENDPOINT = """\
$schema: https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json
name: scorer
description: files scored in batches
tags: {team: ml}
"""
DEPLOYMENT = """\
$schema: https://azuremlschemas.azureedge.net/latest/batchDeployment.schema.json
name: v1
endpoint_name: scorer
type: model
code_configuration: {code: ./src, scoring_script: score.py}
compute: local
resources: {instance_count: 2}
max_concurrency_per_instance: 1
mini_batch_size: 4
output_action: append_row
output_file_name: predictions.csv
retry_settings: {max_retries: 2, timeout: 60}
error_threshold: -1
logging_level: info
environment_variables: {MODE: test}
"""


def _files(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "score.py").write_text(SCORE)
    (tmp_path / "endpoint.yml").write_text(ENDPOINT)
    (tmp_path / "deployment.yml").write_text(DEPLOYMENT)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for i in range(30):
        (data / f"item{i:02d}.txt").write_text("x" * i)
    return data


async def _ended(ws: AsyncWorkspace, run_id: str) -> dict[str, Any]:
    for _ in range(1200):
        found = (await ws.client.ask(GetPipeline(run_id=run_id))).data
        if found["status"] in ("Completed", "Failed", "Canceled"):
            return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"pipeline {run_id} did not end")


@pytest.mark.timeout(300)
async def test_a_batch_endpoint_scores_every_file_once(
    client: Client, client_settings: Settings, agents: Agents, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    await agents.start(slots=3)
    data = _files(tmp_path)
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    created = await cli_json(
        "batch-endpoint", "create", "--file", "endpoint.yml", env=env, cwd=tmp_path
    )
    assert created["name"] == "scorer" and created["default_deployment"] is None
    shown = await cli_json(
        "batch-deployment", "create", "--file", "deployment.yml", env=env, cwd=tmp_path
    )
    assert shown["default_deployment"] == "v1"
    assert shown["deployments"]["v1"]["workers"] == 2
    invoked = await cli_json(
        "batch-endpoint", "invoke", "--name", "scorer", "--input", str(data), env=env, cwd=tmp_path
    )
    ended = await _ended(ws, invoked["run_id"])
    assert ended["status"] == "Completed", ended
    gather = parallel_run_id(invoked["run_id"], "score")
    names = [f["path"] for f in await ws.run(gather).files()]
    found = [n for n in names if n.endswith("predictions.csv")]
    assert found, names
    target = await ws.run(gather).download_file(found[0], tmp_path / "predictions.csv")
    rows = [line.split() for line in target.read_text().splitlines()]
    assert [r[0] for r in rows] == [f"item{i:02d}.txt" for i in range(30)]  # once each, in order
    assert [int(r[1]) for r in rows] == list(range(30))
    assert {r[2] for r in rows} == {"1"}  # init() once per worker
    state = (await ws.client.ask(GetPipeline(run_id=invoked["run_id"]))).data
    assert sorted(s["step"] for s in state["steps"]) == ["score", "score-w0", "score-w1"]
    # a registered dataset as the input, the deployment named
    lake = tmp_path / "lake"
    (lake / "items").mkdir(parents=True)
    for i in range(6):
        (lake / "items" / f"d{i}.txt").write_text("z" * (i + 1))
    await cli("datastore", "create", "lake", "--path", str(lake), env=env, cwd=tmp_path)
    await cli("dataset", "create", "items", "--path", "lake:items/*.txt", env=env, cwd=tmp_path)
    by_name = await cli_json(
        "batch-endpoint",
        "invoke",
        "--name",
        "scorer",
        "--input",
        "azureml:items:1",
        "--deployment-name",
        "v1",
        env=env,
        cwd=tmp_path,
    )
    assert (await _ended(ws, by_name["run_id"]))["status"] == "Completed"
    gather = parallel_run_id(by_name["run_id"], "score")
    names = [f["path"] for f in await ws.run(gather).files()]
    found = [n for n in names if n.endswith("predictions.csv")]
    target = await ws.run(gather).download_file(found[0], tmp_path / "second.csv")
    rows = [line.split() for line in target.read_text().splitlines()]
    assert [(r[0], int(r[1])) for r in rows] == [(f"d{i}.txt", i + 1) for i in range(6)]
    again = await cli("batch-endpoint", "show", "--name", "scorer", env=env, cwd=tmp_path)
    assert "v1" in again
    code, _, err = await run_cli(
        "batch-endpoint", "invoke", "--name", "nope", "--input", str(data), env=env, cwd=tmp_path
    )
    assert code == 1 and "no batch endpoint 'nope'" in err


@pytest.mark.parametrize(
    ("change", "error", "named"),
    [
        ("mini_batch_size: 4", "mini_batch_size: 0", "mini_batch_size"),
        ("mini_batch_size: 4", "mini_batch_size: 10MB", "mini_batch_size"),
        ("output_action: append_row", "output_action: append", "output_action"),
        ("scoring_script: score.py", "scoring_script: missing.py", "scoring_script"),
        ("error_threshold: -1", "error_threshold: -5", "error_threshold"),
        ("resources: {instance_count: 2}", "resources: {instance_count: 0}", "instance_count"),
        ("logging_level: info", "logging_level: loud", "logging_level"),
        ("compute: local", "compute: local\nbogus: 1", "bogus"),
    ],
)
def test_a_bad_deployment_file_is_refused_naming_the_key(
    tmp_path: Path, change: str, error: str, named: str
) -> None:
    _files(tmp_path)
    path = tmp_path / "deployment.yml"
    path.write_text(DEPLOYMENT.replace(change, error))
    with pytest.raises(InvalidInput, match=named):
        load_batch_deployment_file(path)


def test_keys_cairn_does_not_honour_are_refused_by_name(tmp_path: Path) -> None:
    _files(tmp_path)
    path = tmp_path / "deployment.yml"
    path.write_text(DEPLOYMENT + "model: azureml:clf:1\n")
    with pytest.raises(Unsupported, match="model"):
        load_batch_deployment_file(path)
    path.write_text(
        DEPLOYMENT.replace("{instance_count: 2}", "{instance_count: 2, instance_type: big}")
    )
    with pytest.raises(Unsupported, match="instance_type"):
        load_batch_deployment_file(path)
    endpoint = tmp_path / "endpoint.yml"
    endpoint.write_text(ENDPOINT + "auth_mode: key\n")
    with pytest.raises(Unsupported, match="auth_mode"):
        load_batch_endpoint_file(endpoint)
    endpoint.write_text(ENDPOINT + "defaults: {deployment_name: v1}\n")
    with pytest.raises(Unsupported, match="defaults"):
        load_batch_endpoint_file(endpoint)
