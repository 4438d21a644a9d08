"""A v2 command job whose script logs with ``mlflow`` (``autolog`` with scikit-learn): it
lands in the job's own run through its agent's MLflow endpoint, which acts through the job's
gate — another run is refused with MLflow's 403, and the job holds no person's token."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from cairn.proto.artifacts import ListRunFiles
from cairn.proto.commands import CreateExperiment, CreateRun, GetRun
from cairn.proto.metrics import GetMetrics
from cairn.rpc import Client
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli

JOB = """\
$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
type: command
code: ./src
command: python train.py --alpha ${{inputs.alpha}} --other ${{inputs.other}}
environment: azureml:cairn-python-3.11@latest
compute: azureml:local
inputs:
  alpha: 0.5
  other: OTHER
experiment_name: mlflow-jobs
display_name: autologged
"""

TRAIN = """\
import argparse, json, os
import mlflow
from mlflow import MlflowClient
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

p = argparse.ArgumentParser()
p.add_argument("--alpha", type=float)
p.add_argument("--other")
a = p.parse_args()
assert not any(k.startswith("CAIRN_NATS") for k in os.environ), "no NATS credentials"
from cairn.sdk import Workspace
uri = Workspace.from_config().get_mlflow_tracking_uri()
assert uri == os.environ["MLFLOW_TRACKING_URI"] and uri.startswith("http://127.0.0.1:"), uri
mlflow.autolog()
X, y = load_diabetes(return_X_y=True)
with mlflow.start_run() as run:
    assert run.info.run_id == os.environ["CAIRN_RUN_ID"]
    Ridge(alpha=a.alpha).fit(X, y)
    mlflow.log_metric("custom", 1.5, step=2)
    with mlflow.start_run(run_name="child", nested=True) as child:
        mlflow.log_param("inner", "yes")
try:
    MlflowClient().log_param(a.other, "stolen", "1")
    refused = ""
except mlflow.exceptions.MlflowException as exc:
    refused = exc.error_code
import requests
probe = f"{uri}/api/2.0/mlflow/runs/get?run_id={run.info.run_id}"
anonymous = requests.get(probe, timeout=10).status_code
wrong = requests.get(probe, headers={"Authorization": "Bearer x"}, timeout=10).status_code
print("RESULT " + json.dumps({
    "refused": refused,
    "child": child.info.run_id,
    "anonymous": anonymous,
    "wrong": wrong,
    "uri": uri,
    "token": os.environ["MLFLOW_TRACKING_TOKEN"],
}))
"""


async def test_a_job_logs_with_mlflow_autolog_into_its_own_run(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="elsewhere"))
    other = uuid.uuid4().hex
    await client.send(
        CreateRun(command_id=uuid.uuid4().hex, run_id=other, experiment_name="elsewhere")
    )
    await agents.start()
    env = {
        **sdk_env(client_settings, client.workspace, tmp_path / "home"),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(TRAIN)
    (tmp_path / "job.yml").write_text(JOB.replace("OTHER", other))
    out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, out[-4000:]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["refused"] == "PERMISSION_DENIED"
    assert result["anonymous"] == 401 and result["wrong"] == 401

    jobs = json.loads(await cli("job", "list", "--json", env=env, cwd=tmp_path))
    assert [j["status"] for j in jobs] == ["Completed"]
    run_id = jobs[0]["run_id"]
    run = (await client.ask(GetRun(run_id=run_id))).data
    assert run["properties"]["alpha"] == "0.5", run["properties"]
    assert "fit_intercept" in run["properties"]
    metrics = (await client.ask(GetMetrics(run_id=run_id))).data
    assert metrics["custom"]["value"] == 1.5
    assert "training_score" in metrics and "training_mean_squared_error" in metrics
    files = {f["path"] for f in (await client.ask(ListRunFiles(run_id=run_id))).data}
    assert {"model/MLmodel", "model/model.pkl"} <= files, files
    child = (await client.ask(GetRun(run_id=result["child"]))).data
    assert child["parent_run_id"] == run_id and child["properties"] == {"inner": "yes"}
    assert child["status"] == "Completed"
    untouched = (await client.ask(GetRun(run_id=other))).data
    assert untouched["properties"] == {}
    # the attempt has ended: its token with it (the agent's endpoint still serves its jobs)
    async with httpx.AsyncClient() as http:
        after = await http.get(
            f"{result['uri']}/api/2.0/mlflow/runs/get",
            params={"run_id": run_id},
            headers={"authorization": f"Bearer {result['token']}"},
        )
    assert after.status_code == 401, after.text
