"""Online endpoints from the command line (YAML in the Azure ML CLI v2 shape), against the
real services, an agent and the gateway; and every key of those files read or refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import joblib
import msgspec
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cairn.errors import InvalidInput, Unsupported
from cairn.proto.serving import DataCollector, GetEndpoint, ScaleSettings
from cairn.rpc import Client
from cairn.sdk import _onlinefile, load_deployment_file, load_endpoint_file
from cairn.services.gateway import Gateway
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli, run_cli

ROOT = Path(__file__).parents[1]
SCORE = """\
import json
import joblib
from cairn.sdk import Model


def init():
    global model
    model = joblib.load(Model.get_model_path("clf"))


def run(raw_data):
    return {"predictions": model.predict(json.loads(raw_data)["data"]).tolist(), "who": WHO}
"""
ENDPOINT = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json
name: clf-ep
auth_mode: key
description: a classifier
tags: {team: ml}
"""
DEPLOYMENT = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: {name}
endpoint_name: clf-ep
model: azureml:clf:1
code_configuration:
  code: ./{name}
  scoring_script: score.py
instance_type: Standard_DS3_v2
instance_count: 1
request_settings: {{request_timeout_ms: 30000}}
environment_variables: {{MODE: test}}
"""


def _files(tmp_path: Path) -> None:
    (tmp_path / "endpoint.yml").write_text(ENDPOINT)
    for name in ("blue", "green"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "score.py").write_text(f"WHO = {name!r}\n" + SCORE)
        collect = "data_collector: {collections: {model_inputs: {enabled: 'True'}}}\n"
        (tmp_path / f"{name}.yml").write_text(
            DEPLOYMENT.format(name=name) + (collect if name == "green" else "")
        )


async def test_the_online_commands(
    client: Client,
    client_settings: Settings,
    agents: Agents,
    gateway: Gateway,
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 3))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    joblib.dump(model, tmp_path / "clf.pkl")
    _files(tmp_path)
    await agents.start(slots=2)
    env = {
        **sdk_env(client_settings, client.workspace, tmp_path / "home"),
        "CAIRN_GATEWAY_URL": gateway.url,
    }
    await cli("model", "register", "clf", "clf.pkl", env=env, cwd=tmp_path)
    created = json.loads(
        await cli(
            "online-endpoint", "create", "--file", "endpoint.yml", "--json", env=env, cwd=tmp_path
        )
    )
    assert created["name"] == "clf-ep" and created["scoring_uri"].startswith(gateway.url)
    blue = json.loads(
        await cli(
            "online-deployment",
            "create",
            "--file",
            "blue.yml",
            "--all-traffic",
            "--json",
            env=env,
            cwd=tmp_path,
        )
    )
    assert blue["status"] == "Succeeded" and blue["tags"] == {"instance_type": "Standard_DS3_v2"}
    await cli("online-deployment", "create", "--file", "green.yml", env=env, cwd=tmp_path)
    rows = (await client.ask(GetEndpoint(endpoint="clf-ep"))).data["deployments"]
    specs = {row["name"]: row["spec"]["data_collector"] for row in rows}
    assert specs == {  # collected into the workspace's default datastore
        "blue": None,
        "green": {
            "datastore": "workspaceblobstore",
            "collections": ["model_inputs"],
            "sampling_rate": 1.0,
            "rolling_rate": "hour",
        },
    }
    await cli(
        "online-endpoint",
        "update",
        "--name",
        "clf-ep",
        "--traffic",
        "blue=0 green=100",
        env=env,
        cwd=tmp_path,
    )
    (tmp_path / "sample.json").write_text(json.dumps({"data": X[:4].tolist()}))
    answer = json.loads(
        await cli(
            "online-endpoint",
            "invoke",
            "--name",
            "clf-ep",
            "--request-file",
            "sample.json",
            env=env,
            cwd=tmp_path,
        )
    )
    assert answer == {"predictions": model.predict(X[:4]).tolist(), "who": "green"}
    keys = json.loads(
        await cli("online-endpoint", "get-credentials", "--name", "clf-ep", env=env, cwd=tmp_path)
    )
    assert set(keys) == {"primaryKey", "secondaryKey"}
    shown = json.loads(
        await cli("online-endpoint", "show", "--name", "clf-ep", "--json", env=env, cwd=tmp_path)
    )
    assert shown["traffic"] == {"green": 100}
    assert shown["deployments"]["blue"]["status"] == "Succeeded"
    assert {"requests", "status_codes", "latency_ms_mean"} <= set(shown["deployments"]["green"])
    assert keys["primaryKey"] not in json.dumps(shown)
    listed = await cli("online-endpoint", "list", env=env, cwd=tmp_path)
    assert re.search(r"clf-ep\s+green=100\s+blue, green", listed), listed
    logs = await cli(
        "online-deployment",
        "get-logs",
        "--name",
        "green",
        "--endpoint-name",
        "clf-ep",
        env=env,
        cwd=tmp_path,
    )
    assert "init() returned; serving requests" in logs
    code, _, err = await run_cli(
        "online-deployment",
        "delete",
        "--name",
        "green",
        "--endpoint-name",
        "clf-ep",
        "--yes",
        env=env,
        cwd=tmp_path,
    )
    assert code == 1 and "traffic" in err  # it still has all of it
    await cli(
        "online-deployment",
        "delete",
        "--name",
        "blue",
        "--endpoint-name",
        "clf-ep",
        "--yes",
        env=env,
        cwd=tmp_path,
    )
    rows = await cli(
        "online-deployment", "list", "--endpoint-name", "clf-ep", env=env, cwd=tmp_path
    )
    assert "blue" not in rows and "green" in rows
    await cli("online-endpoint", "delete", "--name", "clf-ep", "--yes", env=env, cwd=tmp_path)
    assert "clf-ep" not in await cli("online-endpoint", "list", env=env, cwd=tmp_path)


@pytest.mark.parametrize(
    ("text", "error", "named"),
    [
        (ENDPOINT + "auth_mode: aml_token\n", Unsupported, "auth_mode"),
        (ENDPOINT.replace("auth_mode: key\n", "auth_mode: aml_token\n"), Unsupported, "auth_mode"),
        (ENDPOINT + "mirror_traffic: {green: 10}\n", Unsupported, "mirror_traffic"),
        (ENDPOINT + "colour: red\n", InvalidInput, "colour"),
    ],
)
def test_endpoint_keys_are_read_or_refused(
    tmp_path: Path, text: str, error: type[Exception], named: str
) -> None:
    path = tmp_path / "endpoint.yml"
    path.write_text(text)
    with pytest.raises(error, match=named):
        load_endpoint_file(path)


@pytest.mark.parametrize(
    ("extra", "error", "named"),
    [
        ("liveness_probe: {period: 10}\n", Unsupported, "liveness_probe"),
        (
            "scale_settings: {type: default, min_instances: 2}\n",
            Unsupported,
            "scale_settings.min_instances",
        ),
        ("scale_settings: {type: burst}\n", InvalidInput, "type"),
        (
            "scale_settings: {type: target_utilization, target_utilization_percentage: 0}\n",
            InvalidInput,
            "target_utilization_pct",
        ),
        ("scale_settings: {type: target_utilization, cooldown: 5}\n", InvalidInput, "cooldown"),
        (
            "request_settings: {max_concurrent_requests_per_instance: 0}\n",
            InvalidInput,
            "max_concurrent_requests_per_instance",
        ),
        ("request_settings: {max_queue_wait_ms: -1}\n", InvalidInput, "max_queue_wait_ms"),
        ("app_insights_enabled: true\n", Unsupported, "app_insights_enabled"),
        ("replicas: 3\n", InvalidInput, "replicas"),
        (
            "data_collector: {collections: {request: {enabled: 'True'}}}\n",
            Unsupported,
            "data_collector.collections.request",
        ),
        (
            "data_collector: {collections: {model_inputs: {enabled: 'True'}}, colour: red}\n",
            InvalidInput,
            "colour",
        ),
        (
            "data_collector: {collections: {model_inputs: {enabled: 'True', tint: 1}}}\n",
            InvalidInput,
            "tint",
        ),
        (
            "data_collector: {collections: {model_inputs: {enabled: 'yes'}}}\n",
            InvalidInput,
            "model_inputs.enabled",
        ),
        (
            "data_collector: {collections: {model_inputs: {enabled: 'True', data: {name: x}}}}\n",
            Unsupported,
            "model_inputs.data",
        ),
        (
            "data_collector: {collections: {}, request_logging: {capture_headers: [a]}}\n",
            Unsupported,
            "data_collector.request_logging",
        ),
        ("data_collector: {sampling_rate: 1.5}\n", InvalidInput, "sampling_rate"),
        ("data_collector: {rolling_rate: Week}\n", InvalidInput, "rolling_rate"),
    ],
)
def test_deployment_keys_are_read_or_refused(
    tmp_path: Path, extra: str, error: type[Exception], named: str
) -> None:
    path = tmp_path / "blue.yml"
    text = DEPLOYMENT.format(name="blue").replace(
        "request_settings: {request_timeout_ms: 30000}\n", ""
    )
    path.write_text(text + extra)
    with pytest.raises(error, match=named):
        load_deployment_file(path)


def test_request_settings_set_each_replicas_concurrency_and_queue_wait(tmp_path: Path) -> None:
    path = tmp_path / "blue.yml"
    text = DEPLOYMENT.format(name="blue").replace(
        "request_settings: {request_timeout_ms: 30000}\n", ""
    )
    path.write_text(text)
    plain = load_deployment_file(path)
    assert (plain.max_concurrent_requests, plain.max_queue_wait_s) == (1, 0.5)  # Azure's
    path.write_text(
        text
        + "request_settings: {max_concurrent_requests_per_instance: 4, max_queue_wait_ms: 200}\n"
    )
    spec = load_deployment_file(path)
    assert (spec.max_concurrent_requests, spec.max_queue_wait_s) == (4, 0.2)


def test_the_v1_aks_configuration_sets_each_replicas_concurrency_and_queue_wait() -> None:
    from cairn.sdk import AksWebservice

    plain = AksWebservice.deploy_configuration(num_replicas=2)
    assert (plain.max_concurrent_requests, plain.max_queue_wait_s) == (1, 0.5)
    config = AksWebservice.deploy_configuration(
        num_replicas=2, replica_max_concurrent_requests=4, max_request_wait_time=200
    )
    assert (config.max_concurrent_requests, config.max_queue_wait_s) == (4, 0.2)


def test_scale_settings_become_the_deployments_autoscaling(tmp_path: Path) -> None:
    path = tmp_path / "blue.yml"
    path.write_text(
        DEPLOYMENT.format(name="blue")
        + "scale_settings:\n  type: target_utilization\n  min_instances: 1\n"
        "  max_instances: 3\n  polling_interval: 5\n  target_utilization_percentage: 60\n"
    )
    assert load_deployment_file(path).scale == ScaleSettings(
        min_replicas=1, max_replicas=3, polling_interval_s=5.0, target_utilization_pct=60.0
    )
    path.write_text(DEPLOYMENT.format(name="blue") + "scale_settings: {type: default}\n")
    assert load_deployment_file(path).scale is None


def test_a_data_collector_is_read(tmp_path: Path) -> None:
    path = tmp_path / "blue.yml"
    path.write_text(
        DEPLOYMENT.format(name="blue")
        + "data_collector:\n"
        + "  collections:\n"
        + "    model_inputs: {enabled: 'True'}\n"
        + "    model_outputs: {enabled: 'False'}\n"
        + "  sampling_rate: 0.25\n"
        + "  rolling_rate: Minute\n"
    )
    found = load_deployment_file(path).collector("store")
    assert found == DataCollector(
        datastore="store", collections=["model_inputs"], sampling_rate=0.25, rolling_rate="minute"
    )
    path.write_text(
        DEPLOYMENT.format(name="blue")
        + "data_collector: {collections: {model_inputs: {enabled: false}}}\n"
    )
    assert load_deployment_file(path).collector("store") is None  # nothing enabled
    path.write_text(DEPLOYMENT.format(name="blue"))
    assert load_deployment_file(path).collector("store") is None


def test_a_model_needs_its_version(tmp_path: Path) -> None:
    path = tmp_path / "blue.yml"
    path.write_text(DEPLOYMENT.format(name="blue").replace("azureml:clf:1", "azureml:clf"))
    with pytest.raises(InvalidInput, match="version"):
        load_deployment_file(path)


def test_every_key_of_the_online_files_is_read() -> None:
    """Each field of the files' structs is read by name by the loader or the CLI."""
    source = (ROOT / "shared/cairn/sdk/_onlinefile.py").read_text()
    source += (ROOT / "shared/cairn/cli/_online.py").read_text()
    structs = [
        obj
        for obj in vars(_onlinefile).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == _onlinefile.__name__
    ]
    assert len(structs) == 7
    unread = [
        f"{s.__name__}.{f.name}"
        for s in structs
        for f in msgspec.structs.fields(s)
        if f".{f.name}" not in source and f'"{f.name}"' not in source
    ]
    assert unread == []


def test_a_deployments_timeouts_are_read_within_their_ranges(tmp_path: Path) -> None:
    """``rollout_timeout_s`` (Cairn's key) is the deployment's roll deadline (1800 when left
    out); it and ``request_settings.request_timeout_ms`` beyond their ranges are refused
    naming the key."""
    path = tmp_path / "blue.yml"
    path.write_text(DEPLOYMENT.format(name="blue"))
    assert load_deployment_file(path).rollout_timeout == 1800.0
    path.write_text(DEPLOYMENT.format(name="blue") + "rollout_timeout_s: 120\n")
    assert load_deployment_file(path).rollout_timeout == 120.0
    for extra, named in [
        ("rollout_timeout_s: 0\n", "rollout_timeout_s"),
        ("rollout_timeout_s: 86401\n", "rollout_timeout_s"),
    ]:
        path.write_text(DEPLOYMENT.format(name="blue") + extra)
        with pytest.raises(InvalidInput, match=named):
            load_deployment_file(path)
    path.write_text(
        DEPLOYMENT.format(name="blue").replace(
            "request_timeout_ms: 30000", "request_timeout_ms: 300001"
        )
    )
    with pytest.raises(InvalidInput, match="request_timeout_ms must be at most 300000"):
        load_deployment_file(path)


def test_deployment_show_says_its_timeouts_and_replacements() -> None:
    from cairn.cli._online import _deployment_row

    row = {
        "name": "blue",
        "endpoint": "clf-ep",
        "status": "Succeeded",
        "replicas": ["r1"],
        "ready": {"r1": 1},
        "error": "",
        "replacements": 3,
        "spec": {"request_timeout_s": 30.0, "rollout_timeout_s": 600.0, "models": []},
    }
    shown = _deployment_row(row)
    assert (shown["replacements"], shown["rollout_timeout_s"], shown["request_timeout_s"]) == (
        3,
        600.0,
        30.0,
    )
