"""Online endpoints end to end: a real scheduler, real agents running replicas, the gateway
scoring over NATS with keys, weights, failures and a killed replica."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import msgspec
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cairn.bus import Connection, connect
from cairn.embedded import NatsServer
from cairn.embedded._users import create_token, revoke_token
from cairn.errors import InvalidInput, NotFound
from cairn.proto.commands import CreateWorkspace
from cairn.proto.serving import DeploymentSpec, DeployModel
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.services.gateway import Gateway, running
from cairn.settings import Settings
from tests.conftest import Agents

SCORE = """
import json
import os

import joblib
from cairn.sdk import Model

model = None


def init():
    global model
    model = joblib.load(Model.get_model_path("iris-like"))
    assert os.environ["AZUREML_MODEL_DIR"].endswith("azureml-models/iris-like/1")


def run(raw_data):
    data = json.loads(raw_data)
    if data.get("boom"):
        raise ValueError("boom was asked for")
    if data.get("pid"):
        return {"pid": os.getpid(), "name": NAME}
    if data.get("big"):
        return {"x": "a" * data["big"]}
    if data.get("sleep"):
        import time

        time.sleep(data["sleep"])
    return {"predictions": model.predict(data["data"]).tolist(), "name": NAME}
"""

FAILING = """
def init():
    raise RuntimeError("the model file is missing on purpose")


def run(raw_data):
    return raw_data
"""


def _model(folder: Path) -> tuple[LogisticRegression, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    y = (X @ np.array([1.0, -1.5, 0.5, 2.0]) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.pkl")
    return model, X[:20]


def _source(folder: Path, name: str, text: str = SCORE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "score.py").write_text(f"NAME = {name!r}\n" + text)
    return folder


@asynccontextmanager
async def _scoring(
    client_settings: Settings, workspace: str
) -> AsyncIterator[tuple[Gateway, AsyncWorkspace]]:
    """A gateway of the caller's own (a seeded choice of deployment) and a workspace whose
    scoring address is that gateway."""
    gw_settings = msgspec.structs.replace(
        client_settings,
        nats_user=None,
        nats_password=None,
        gateway_port=0,
        gateway_route_seed=7,
        gateway_score_max_bytes=4096,
    )
    async with running(gw_settings) as gw:
        settings = msgspec.structs.replace(client_settings, gateway_url=gw.url)
        conn = await connect(settings)
        ws = AsyncWorkspace(conn, workspace, settings)
        try:
            yield gw, ws
        finally:
            await ws.close()
            await conn.close()


@pytest.fixture
async def scoring(
    services: None, client_settings: Settings, client: Client
) -> AsyncIterator[tuple[Gateway, AsyncWorkspace]]:
    """A gateway of the test's own and a workspace whose scoring address is that gateway."""
    async with _scoring(client_settings, client.workspace) as found:
        yield found


async def _register(ws: AsyncWorkspace, tmp_path: Path) -> tuple[Any, np.ndarray]:
    model, X = _model(tmp_path / "model")
    staging, path = await ws.models.upload(tmp_path / "model" / "model.pkl")
    await ws.models.register("iris-like", path, staging_id=staging)
    return model, X


async def _deploy(
    ws: AsyncWorkspace, source: Path, deployment: str, *, all_traffic: bool = True, **kw: Any
) -> dict[str, Any]:
    await ws.endpoints.deploy(
        "ep",
        deployment,
        entry_script="score.py",
        source_directory=source,
        models=[("iris-like", 1)],
        all_traffic=all_traffic,
        **kw,
    )
    return await ws.endpoints.wait("ep", deployment, timeout=90)


async def _post(http: httpx.AsyncClient, url: str, body: Any, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return await http.post(url, content=content, headers=headers, timeout=60)


@dataclass
class Served:
    """The module's one deployment, ``blue`` of endpoint ``ep`` (model iris-like 1, one
    replica, all the traffic), for the tests that only score it."""

    ws: AsyncWorkspace
    keys: dict[str, str]
    model: Any
    X: np.ndarray
    row: dict[str, Any]


@pytest.fixture(scope="module")
async def served(
    services: None,
    client_conn: Connection,
    client_settings: Settings,
    agent_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Served]:
    """One workspace, gateway, agent and deployment for the tests that score it and change
    nothing another test checks (each replica start takes seconds). The test of the keys
    runs first (it counts the replica's requests); the test that kills the replica last."""
    tmp = tmp_path_factory.mktemp("served")
    workspace = "t" + uuid.uuid4().hex[:12]
    await Client(client_conn, workspace).send(
        CreateWorkspace(command_id=uuid.uuid4().hex, name=workspace)
    )
    async with _scoring(client_settings, workspace) as (_, ws):
        agents = Agents(
            msgspec.structs.replace(
                agent_settings, workspace=workspace, state_dir=str(tmp / "agent-state")
            )
        )
        try:
            model, X = await _register(ws, tmp)
            await agents.start()
            keys = await ws.endpoints.create("ep")
            row = await _deploy(ws, _source(tmp / "src", "blue"), "blue")
            yield Served(ws=ws, keys=keys, model=model, X=X, row=row)
        finally:
            await agents.close()


async def test_a_deployed_model_answers_with_its_key_only(served: Served) -> None:
    ws, keys, model, X = served.ws, served.keys, served.model, served.X
    assert served.row["status"] == "Succeeded", served.row
    url = ws.endpoints.scoring_uri("ep")
    async with httpx.AsyncClient() as http:
        reply = await _post(http, url, {"data": X.tolist()}, keys["primary"])
        assert reply.status_code == 200, reply.text
        assert reply.json()["predictions"] == model.predict(X).tolist()
        assert (await _post(http, url, {"data": X.tolist()}, keys["secondary"])).status_code == 200
        assert (await _post(http, url, {"data": []}, None)).status_code == 401
        assert (await _post(http, url, {"data": []}, "not-the-key")).status_code == 401
        # run() raising: 500 with its message, and the replica serves the next request
        failed = await _post(http, url, {"boom": True}, keys["primary"])
        assert failed.status_code == 500 and "boom was asked for" in failed.json()["error"]
        again = await _post(http, url, {"data": X[:2].tolist()}, keys["primary"])
        assert again.status_code == 200
        assert (await _post(http, url, "{not json", keys["primary"])).status_code == 400
        assert (
            await _post(http, url, "[" + "1," * 4000 + "1]", keys["primary"])
        ).status_code == 413
        # a new primary key: the old one is refused at once, the new one and the other work
        new = await ws.endpoints.regen_key("ep", "primary")
        assert (
            await _post(http, url, {"data": X[:1].tolist()}, keys["primary"])
        ).status_code == 401
        assert (await _post(http, url, {"data": X[:1].tolist()}, new)).status_code == 200
        assert await ws.endpoints.keys("ep") == (new, keys["secondary"])
        swagger = url.removesuffix("/score") + "/swagger.json"
        assert (await http.get(swagger, headers={"Authorization": f"Bearer {new}"})).json()["paths"]
        assert (await http.get(swagger)).status_code == 401
    # the SDK's own call goes the same way
    got = await ws.endpoints.invoke("ep", json.dumps({"data": X[:3].tolist()}))
    assert got["predictions"] == model.predict(X[:3]).tolist()
    # what reached the replica (not the 400, 401 and 413 the gateway answered itself), as its
    # agent logged it: five answered, one raised
    for _ in range(100):
        metrics = (await ws.endpoints.request_metrics("ep"))["blue"]
        if metrics["requests"] >= 6:
            break
        await asyncio.sleep(0.2)
    assert metrics["requests"] == 6 and metrics["status_codes"] == {"200": 5, "500": 1}
    assert metrics["latency_ms_mean"] > 0


async def test_answers_larger_than_a_nats_message_come_back_whole(served: Served) -> None:
    """3 MiB, and 12 MiB (over the servers' 8 MB max_payload: the agent sends it in chunks
    that the gateway puts back together)."""
    ws = served.ws
    assert served.row["status"] == "Succeeded", served.row
    url = ws.endpoints.scoring_uri("ep")
    async with httpx.AsyncClient() as http:
        for size in (3 * 1024 * 1024, 12 * 1024 * 1024):
            reply = await _post(http, url, {"big": size}, served.keys["secondary"])
            assert reply.status_code == 200, reply.text[:200]
            assert reply.json()["x"] == "a" * size


async def test_a_members_token_scores_and_anothers_is_refused(
    served: Served, nats_server: NatsServer
) -> None:
    """Beside the keys, a Cairn API token of a member of the workspace scores (the route is
    asked over that person's own connection); one of a person who is not a member is 403."""
    ws, model, X = served.ws, served.model, served.X
    assert served.row["status"] == "Succeeded", served.row
    made = [create_token(nats_server.home, person, "scoring") for person in (None, "dana")]
    try:
        (_, member, _), (_, stranger, _) = made
        url = ws.endpoints.scoring_uri("ep")
        async with httpx.AsyncClient() as http:
            reply = await _post(http, url, {"data": X[:2].tolist()}, member)
            assert reply.status_code == 200, reply.text
            assert reply.json()["predictions"] == model.predict(X[:2]).tolist()
            assert (await _post(http, url, {"data": []}, stranger)).status_code == 403
    finally:
        for row, _, _ in made:
            revoke_token(nats_server.home, row["id"])


async def test_a_killed_replica_is_replaced_and_requests_resume(served: Served) -> None:
    """(The last test on the module's deployment: it kills its replica.)"""
    ws, key = served.ws, served.keys["secondary"]
    assert served.row["status"] == "Succeeded", served.row
    url = ws.endpoints.scoring_uri("ep")
    async with httpx.AsyncClient() as http:
        first = (await _post(http, url, {"pid": True}, key)).json()["pid"]
        os.kill(first, signal.SIGKILL)
        for _ in range(60):  # the gateway retries while no replica listens
            reply = await _post(http, url, {"pid": True}, key)
            if reply.status_code == 200 and reply.json()["pid"] != first:
                break
            await asyncio.sleep(0.5)
        assert reply.status_code == 200, reply.text
        assert reply.json()["pid"] != first
    row = await ws.endpoints.deployment("ep", "blue")
    assert len(row["replicas"]) == 1 and row["ready"][row["replicas"][0]] == 2  # attempt 2


@pytest.mark.timeout(300)  # two deployments' starts and 1,200 requests, on a busy machine
async def test_a_mirrored_share_is_not_answered_and_traffic_is_split_by_weight(
    scoring: tuple[Gateway, AsyncWorkspace], agents: Agents, tmp_path: Path
) -> None:
    """Two deployments of one endpoint: first blue takes all the traffic and half of it is
    mirrored to green (which gets its copies, whose answers are dropped); then the traffic
    is split 90/10 per request and a caller may name a deployment."""
    _, ws = scoring
    await _register(ws, tmp_path)
    await agents.start(slots=2)
    keys = await ws.endpoints.create("ep")
    assert (await _deploy(ws, _source(tmp_path / "blue", "blue"), "blue"))["status"] == "Succeeded"
    green = await _deploy(ws, _source(tmp_path / "green", "green"), "green", all_traffic=False)
    assert green["status"] == "Succeeded"
    url = ws.endpoints.scoring_uri("ep")
    # a mirrored share reaches its deployment and is not answered from it
    await ws.endpoints.update("ep", mirror_traffic={"green": 50})
    assert (await ws.endpoints.get("ep"))["mirror_traffic"] == {"green": 50}
    async with httpx.AsyncClient() as http:
        names = [
            (await _post(http, url, {"data": [[0, 0, 0, 0]]}, keys["primary"])).json()["name"]
            for _ in range(200)
        ]
    assert set(names) == {"blue"}  # the mirror's answers are dropped
    for _ in range(100):
        counted = await ws.endpoints.request_metrics("ep")
        if counted["blue"]["requests"] == 200 and counted["green"]["requests"] >= 70:
            break
        await asyncio.sleep(0.2)
    assert counted["blue"]["requests"] == 200
    assert 70 <= counted["green"]["requests"] <= 130, counted
    # traffic split by weight per request (no mirror: green takes live traffic now)
    await ws.endpoints.update("ep", traffic={"blue": 90, "green": 10}, mirror_traffic={})
    seen: Counter[str] = Counter()
    async with httpx.AsyncClient() as http:
        for _ in range(1000):
            reply = await _post(http, url, {"data": [[0, 0, 0, 0]]}, keys["primary"])
            assert reply.status_code == 200, reply.text
            seen[reply.json()["name"]] += 1
    assert seen["blue"] + seen["green"] == 1000
    assert 70 <= seen["green"] <= 130, seen  # 10 % within 3 points
    # a caller may name the deployment (Azure's header), whatever the traffic
    for _ in range(5):
        got = await ws.endpoints.invoke("ep", '{"data": [[0, 0, 0, 0]]}', deployment="green")
        assert got["name"] == "green"
    with pytest.raises(NotFound, match="no deployment red"):
        await ws.endpoints.invoke("ep", "{}", deployment="red")


async def test_an_init_that_raises_fails_the_deployment_with_its_traceback(
    scoring: tuple[Gateway, AsyncWorkspace], agents: Agents, tmp_path: Path
) -> None:
    _, ws = scoring
    await _register(ws, tmp_path)
    await agents.start()
    await ws.endpoints.create("ep")
    row = await _deploy(ws, _source(tmp_path / "src", "blue", FAILING), "blue")
    assert row["status"] == "Failed"
    assert "Traceback" in row["error"] and "missing on purpose" in row["error"]
    logs = await ws.endpoints.logs("ep", "blue")
    assert "RuntimeError: the model file is missing on purpose" in logs


async def test_a_new_spec_rolls_out_while_the_old_replicas_serve(
    scoring: tuple[Gateway, AsyncWorkspace], agents: Agents, tmp_path: Path
) -> None:
    _, ws = scoring
    await _register(ws, tmp_path)
    await agents.start(slots=2)
    keys = await ws.endpoints.create("ep")
    assert (await _deploy(ws, _source(tmp_path / "v1", "v1"), "blue"))["status"] == "Succeeded"
    old = (await ws.endpoints.deployment("ep", "blue"))["replicas"]
    url = ws.endpoints.scoring_uri("ep")
    answers: list[tuple[int, str]] = []
    stop = asyncio.Event()

    async def keep_asking() -> None:
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                reply = await _post(http, url, {"data": [[0, 0, 0, 0]]}, keys["primary"])
                answers.append((reply.status_code, reply.json().get("name", reply.text)))

    asking = asyncio.create_task(keep_asking())
    row = await _deploy(ws, _source(tmp_path / "v2", "v2"), "blue")
    assert row["status"] == "Succeeded" and row["retired"] == old
    for _ in range(100):  # the old replica is stopped once the new one is ready
        details = await ws.run(old[0]).details()
        if details["status"] == "Canceled":
            break
        await asyncio.sleep(0.2)
    assert details["status"] == "Canceled"
    seen = len(answers)
    for _ in range(600):  # 20 more answers, all from the new replica
        if len(answers) >= seen + 20 or asking.done():
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(asking, 30)  # raises what the asking raised
    assert len(answers) >= seen + 20
    assert {status for status, _ in answers} == {200}, answers[-5:]
    names = [name for _, name in answers]
    assert names[0] == "v1" and set(names[seen:]) == {"v2"}


async def test_a_run_past_its_time_is_504_and_its_replica_replaced(
    scoring: tuple[Gateway, AsyncWorkspace], agents: Agents, tmp_path: Path
) -> None:
    _, ws = scoring
    await _register(ws, tmp_path)
    await agents.start()
    keys = await ws.endpoints.create("ep")
    row = await _deploy(ws, _source(tmp_path / "src", "blue"), "blue", request_timeout_s=1.0)
    assert row["status"] == "Succeeded"
    url = ws.endpoints.scoring_uri("ep")
    async with httpx.AsyncClient() as http:
        first = (await _post(http, url, {"pid": True}, keys["primary"])).json()["pid"]
        slow = await _post(http, url, {"sleep": 5}, keys["primary"])
        assert slow.status_code == 504 and "longer than 1 s" in slow.json()["error"]
        for _ in range(60):  # a new attempt takes over
            reply = await _post(http, url, {"pid": True}, keys["primary"])
            if reply.status_code == 200 and reply.json()["pid"] != first:
                break
            await asyncio.sleep(0.5)
        assert reply.status_code == 200 and reply.json()["pid"] != first


PLAIN = """
import json
import os

from cairn.sdk import Model


def init():
    global weights
    with open(Model.get_model_path("plain")) as f:
        weights = json.load(f)


def run(raw_data):
    rows = json.loads(raw_data)["data"]
    return {
        "scores": [sum(w * x for w, x in zip(weights, row)) for row in rows],
        "model_dir": os.environ["AZUREML_MODEL_DIR"],
        "cwd": os.getcwd(),
    }
"""


@pytest.mark.timeout(1200)  # a first run installs docker.io and debootstraps the base image
async def test_a_replica_serves_from_a_container_on_the_docker_backend(
    docker_engine: None, scoring: tuple[Gateway, AsyncWorkspace], agents: Agents, tmp_path: Path
) -> None:
    """The channel beside the gate reaches a replica in a container too (the gate's folder is
    mounted at /run/cairn), and its model is under its folder, /workspace."""
    _, ws = scoring
    (tmp_path / "plain.json").write_text("[1.0, 2.0, -1.0]")
    staging, path = await ws.models.upload(tmp_path / "plain.json")
    await ws.models.register("plain", path, staging_id=staging)
    await agents.start(backend="docker")
    keys = await ws.endpoints.create("ep")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(PLAIN)
    await ws.endpoints.deploy(
        "ep",
        "blue",
        entry_script="score.py",
        source_directory=tmp_path / "src",
        models=[("plain", 1)],
        all_traffic=True,
    )
    row = await ws.endpoints.wait("ep", "blue", timeout=600)
    assert row["status"] == "Succeeded", await ws.endpoints.logs("ep", "blue")
    async with httpx.AsyncClient() as http:
        reply = await _post(
            http, ws.endpoints.scoring_uri("ep"), {"data": [[1, 1, 1], [0, 1, 2]]}, keys["primary"]
        )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "scores": [2.0, 0.0],
        "model_dir": "/workspace/azureml-models/plain/1",
        "cwd": "/workspace",
    }


async def test_a_deployment_timeout_out_of_range_is_refused_naming_it(
    scoring: tuple[Gateway, AsyncWorkspace], client: Client
) -> None:
    """The scheduler refuses a ``request_timeout_s`` past ``MAX_REQUEST_TIMEOUT_S`` (the
    agent's reply permission expires soon after it) and a ``rollout_timeout_s`` out of its
    range, whatever client sent them."""
    _, ws = scoring
    await ws.endpoints.create("ep")
    for spec, named in [
        (DeploymentSpec(entry_script="score.py", request_timeout_s=301.0), "request_timeout_s"),
        (DeploymentSpec(entry_script="score.py", rollout_timeout_s=0.0), "rollout_timeout_s"),
    ]:
        command = DeployModel(
            command_id=uuid.uuid4().hex, endpoint="ep", deployment="blue", spec=spec
        )
        with pytest.raises(InvalidInput, match=named):
            await client.send(command)
