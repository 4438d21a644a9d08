"""The seeds' real-time deployment through the sync SDK (Azure ML v1 names), served by a
real agent and the gateway."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cairn.errors import AlreadyExists, NotFound
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.services.gateway import Gateway
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import run_script, sdk_env

SOURCE = Path(__file__).with_name("serving")


async def test_the_seeds_deployment_scores_as_the_model_does(
    client: Client,
    client_settings: Settings,
    agents: Agents,
    gateway: Gateway,
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X @ np.array([1.5, -2.0, 0.5, 1.0]) > 0).astype(int)
    joblib.dump(LogisticRegression().fit(X, y), tmp_path / "diabetes_model.pkl")
    await agents.start(slots=3)  # two replicas after the update, one of the broken service
    env = {
        **sdk_env(client_settings, client.workspace, tmp_path / "home"),
        "CAIRN_GATEWAY_URL": gateway.url,
    }
    got = await run_script(
        "deploy_script.py",
        str(tmp_path / "diabetes_model.pkl"),
        str(SOURCE),
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert got["state"] == "Healthy"
    assert got["predictions"] == got["expected"]
    uri = f"{gateway.url}/endpoints/{client.workspace}/diabetes-service/score"
    assert got["scoring_uri"] == uri == got["found"]
    assert got["swagger_uri"] == uri.removesuffix("/score") + "/swagger.json"
    assert got["keys_changed"] == [True, True]
    assert got["after_update"] == ["Healthy", got["expected"]]
    assert got["listed"] == ["diabetes-service"]
    assert got["by_type"] == [["diabetes-service"], "ACI"]
    assert got["broken_state"] == "Failed"
    assert "Traceback" in got["broken_logs"]
    assert "FileNotFoundError: no model.pkl here" in got["broken_logs"]
    assert got["after_delete"] == []


async def test_a_create_run_twice_or_a_regen_refused_leaves_the_keys_as_they_were(
    ws: AsyncWorkspace,
) -> None:
    """The endpoint is recorded before its keys are stored: a second create (it exists) or a
    regen of an endpoint that does not exist changes no stored key."""
    first = await ws.endpoints.create("twice")
    with pytest.raises(AlreadyExists):
        await ws.endpoints.create("twice")
    assert await ws.endpoints.keys("twice") == (first["primary"], first["secondary"])
    with pytest.raises(NotFound):
        await ws.endpoints.regen_key("never-made", "primary")
    with pytest.raises(NotFound):
        await ws.endpoints.keys("never-made")
