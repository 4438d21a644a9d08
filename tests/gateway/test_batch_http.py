"""A batch endpoint invoked over HTTP (the Azure ML v2 REST shape), against the real server,
services, gateway and an agent: a member's API token invokes it, the job is polled until it
completes and its predictions, read through the gateway, are those of the same endpoint
invoked from the command line; a missing or wrong token is 401, a malformed body 400 naming
the field, an unknown endpoint, datastore or dataset 404, a path leaving its datastore 400."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from cairn.embedded._server import NatsServer
from cairn.embedded._users import create_token, revoke_token
from cairn.errors import CairnError, NotFound
from cairn.proto.assets import ComputeSpec, CreateCompute
from cairn.proto.batch import BatchDeploymentSpec, CreateBatchEndpoint, SetBatchDeployment
from cairn.proto.commands import CancelRun, CreateExperiment, GetExperiment, ListRuns
from cairn.proto.jobs import JobSpec
from cairn.proto.parallel import parallel_run_id
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.sdk._async_parallel import get_batch_endpoint
from cairn.services.gateway import Gateway
from cairn.settings import Settings
from tests.conftest import Agents
from tests.gateway.conftest import login_password, sign_in
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli, cli_json
from tests.test_cli_batch import _ended, _files


@pytest.fixture
async def token(nats_server: NatsServer) -> AsyncIterator[str]:
    """An API token of the local person (a member of the test's workspace), revoked after."""
    user, _ = login_password(nats_server)
    row, secret, _ = create_token(nats_server.home, user, "batch")
    yield secret
    revoke_token(nats_server.home, row["id"])


def _body(uri: str, kind: str = "UriFolder") -> dict[str, Any]:
    return {"properties": {"InputData": {"input": {"JobInputType": kind, "Uri": uri}}}}


async def _completed(http: httpx.AsyncClient, url: str, auth: dict[str, str]) -> dict[str, Any]:
    for _ in range(1200):
        reply = await http.get(url, headers=auth)
        assert reply.status_code == 200, reply.text
        job = reply.json()
        if job["status"] in ("Completed", "Failed", "Canceled"):
            return job
        await asyncio.sleep(0.25)
    raise AssertionError(f"job {url} did not end")


@pytest.mark.timeout(300)
async def test_a_batch_endpoint_invoked_over_http_scores_as_from_the_cli(
    client: Client,
    client_settings: Settings,
    agents: Agents,
    ws: AsyncWorkspace,
    gateway: Gateway,
    token: str,
    tmp_path: Path,
) -> None:
    await agents.start(slots=3)
    _files(tmp_path)
    env = {
        **sdk_env(client_settings, client.workspace, tmp_path / "home"),
        "CAIRN_GATEWAY_URL": gateway.url,
    }
    await cli_json("batch-endpoint", "create", "--file", "endpoint.yml", env=env, cwd=tmp_path)
    await cli_json("batch-deployment", "create", "--file", "deployment.yml", env=env, cwd=tmp_path)
    shown = await cli_json("batch-endpoint", "show", "--name", "scorer", env=env, cwd=tmp_path)
    scoring_uri = shown["scoring_uri"]
    assert scoring_uri == f"{gateway.url}/batch-endpoints/{client.workspace}/scorer/jobs"
    lake = tmp_path / "lake"
    (lake / "items").mkdir(parents=True)
    for i in range(6):
        (lake / "items" / f"d{i}.txt").write_text("z" * (i + 1))
    await cli("datastore", "create", "lake", "--path", str(lake), env=env, cwd=tmp_path)
    await cli("dataset", "create", "items", "--path", "lake:items/*.txt", env=env, cwd=tmp_path)
    invoke = ["batch-endpoint", "invoke", "--name", "scorer", "--input", "azureml:items:1"]
    by_cli = await cli_json(*invoke, env=env, cwd=tmp_path)
    auth = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=60) as http:
        # the endpoint's default deployment over a datastore folder, as the token's person
        reply = await http.post(
            scoring_uri, json=_body("azureml://datastores/lake/paths/items/"), headers=auth
        )
        assert reply.status_code == 200, reply.text
        invoked = reply.json()
        assert invoked["name"] == invoked["id"] and invoked["status"]
        assert invoked["properties"]["deploymentName"] == "v1"
        poll = gateway.url + reply.headers["location"]
        # a registered dataset, the deployment named as Azure ML's header does
        reply = await http.post(
            scoring_uri,
            json=_body("azureml:items:1"),
            headers={**auth, "azureml-model-deployment": "v1"},
        )
        assert reply.status_code == 200, reply.text
        second = gateway.url + reply.headers["location"]
        job = await _completed(http, poll, auth)
        assert job["status"] == "Completed", job
        assert (await _completed(http, second, auth))["status"] == "Completed"
        output_run = job["properties"]["outputs"]["predictions"]["run_id"]
        assert output_run == parallel_run_id(invoked["name"], "score")
        listing = job["properties"]["outputs"]["predictions"]["files"]
        files = await http.get(gateway.url + listing, headers=auth)
        assert files.status_code == 200, files.text
        names = [f["path"] for f in files.json() if f["path"].endswith("predictions.csv")]
        assert names, files.text
        got = await http.get(
            f"{gateway.url}/api/w/{client.workspace}/runs/{output_run}/file",
            params={"path": names[0]},
            headers=auth,
        )
        assert got.status_code == 200, got.text
        # what is not there is 404, once the body is good
        for body, headers, named in [
            (_body("azureml://datastores/nolake/paths/items"), auth, "nolake"),
            (_body("azureml:noitems:1"), auth, "noitems"),
            (_body("azureml:items:7"), auth, "items"),
            (_body("azureml:items:1"), {**auth, "azureml-model-deployment": "v9"}, "'v9'"),
        ]:
            reply = await http.post(scoring_uri, json=body, headers=headers)
            assert reply.status_code == 404, (body, reply.text)
            assert named in reply.json()["message"], (body, reply.text)
        # a header's value is echoed cut short
        long_name = {**auth, "azureml-model-deployment": "v" * 5000}
        reply = await http.post(scoring_uri, json=_body("azureml:items:1"), headers=long_name)
        assert reply.status_code == 404 and len(reply.json()["message"]) < 300, reply.text
        # JobInputType UriFile is one file: a dataset of six is refused naming both
        reply = await http.post(scoring_uri, json=_body("azureml:items:1", "UriFile"), headers=auth)
        assert reply.status_code == 400, reply.text
        assert "UriFile names one file: dataset items:1 has 6" in reply.json()["message"]
    assert (await _ended(ws, by_cli["run_id"]))["status"] == "Completed"
    gather = parallel_run_id(by_cli["run_id"], "score")
    listed = [f["path"] for f in await ws.run(gather).files()]
    found = [n for n in listed if n.endswith("predictions.csv")]
    expected = await ws.run(gather).download_file(found[0], tmp_path / "cli.csv")
    assert got.text.splitlines() == expected.read_text().splitlines()
    rows = [line.split() for line in got.text.splitlines()]
    assert [(r[0], int(r[1])) for r in rows] == [(f"d{i}.txt", i + 1) for i in range(6)]


async def test_refusals_are_typed(
    client: Client, gateway: Gateway, token: str, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    """No token 401, a wrong one 401; a malformed body 400 naming the field; an unknown
    endpoint, datastore or dataset 404; a path leaving its datastore 400. Nothing runs."""
    url = f"{gateway.url}/batch-endpoints/{client.workspace}/scorer2/jobs"
    auth = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=60) as http:
        reply = await http.post(url, json=_body("azureml:items:1"))
        assert reply.status_code == 401 and reply.json()["code"] == "unauthenticated"
        for wrong in ("Bearer not-a-token", "Basic abc", f"Bearer {token}x"):
            reply = await http.post(
                url, json=_body("azureml:items:1"), headers={"authorization": wrong}
            )
            assert reply.status_code == 401, (wrong, reply.text)
        reply = await http.get(f"{url}/abc", headers={})
        assert reply.status_code == 401
        # an unknown endpoint
        reply = await http.post(url, json=_body("azureml:items:1"), headers=auth)
        assert reply.status_code == 404 and "no batch endpoint 'scorer2'" in reply.json()["message"]
        # malformed bodies, each refused naming what is wrong
        for body, named in [
            (b"not json", "not JSON"),
            (b"", "empty"),
            (b"[1]", "the body must be a JSON object"),
            (b'{"props": {}}', "props"),
            (b'{"properties": {}}', "properties.InputData"),
            (b'{"properties": {"InputData": {}}}', "properties.InputData"),
            (b'{"properties": {"InputData": {"a": {"Uri": "azureml:x:1"}}}}', "JobInputType"),
            (b'{"properties": {"InputData": {"a": {"JobInputType": "UriFolder"}}}}', ".Uri"),
            (
                b'{"properties": {"InputData": {"a": {"JobInputType": "Table", "Uri": "x"}}}}',
                "JobInputType",
            ),
            (
                b'{"properties": {"InputData": {"a": {"JobInputType": "UriFile", "Uri": "x",'
                b' "Extra": 1}}}}',
                "properties.InputData.a.Extra",
            ),
            (b'{"properties": {"InputData": {"a": 1}}}', "properties.InputData.a"),
        ]:
            reply = await http.post(
                url, content=body, headers={**auth, "content-type": "application/json"}
            )
            assert reply.status_code == 400, (body, reply.text)
            assert named in reply.json()["message"], (body, reply.text)
        for uri in (
            "azureml://datastores/lake/paths/../secret",
            "azureml://datastores/lake/paths/a/%2e%2e/b",
            "azureml://datastores/lake/paths//etc/passwd",
            "azureml://datastores/lake/paths/",
            "azureml://datastores/../paths/x",
            "file:///etc/passwd",
            "/etc/passwd",
            "azureml://subscriptions/s/datastores/lake/paths/x",
        ):
            reply = await http.post(url, json=_body(uri), headers=auth)
            assert reply.status_code == 400, (uri, reply.text)
            assert "properties.InputData.input" in reply.json()["message"], (uri, reply.text)
        reply = await http.post(url, json=_body("https://example.invalid/x"), headers=auth)
        assert reply.status_code == 400 and "UriFile" in reply.json()["message"]
        # a folder (trailing /) named as one file
        folder = _body("azureml://datastores/lake/paths/items/", "UriFile")
        reply = await http.post(url, json=folder, headers=auth)
        assert reply.status_code == 400 and "UriFile names one file" in reply.json()["message"]
        # a job that is no invocation of this endpoint
        reply = await http.get(f"{url}/nosuchjob", headers=auth)
        assert reply.status_code == 404, reply.text


#: a compute target no agent serves: an invocation stays queued, nothing runs
_QUEUE = "batch-http-queue"
_URL_BODY = _body("https://example.invalid/a.csv", "UriFile")


@pytest.fixture
async def cancelled_after(client: Client) -> AsyncIterator[None]:
    """Cancels the runs the test queued (on a compute no agent serves), so no job ticket
    stays queued for the rest of the session."""
    yield
    for run in await _runs(client):
        with contextlib.suppress(CairnError):  # ended already, or cancelled with its pipeline
            await client.send(CancelRun(command_id=uuid.uuid4().hex, run_id=run["run_id"]))


async def _queued_endpoints(client: Client, *names: str) -> None:
    """Batch endpoints ``names`` with a default deployment on a compute no agent serves."""
    await client.send(
        CreateCompute(command_id=uuid.uuid4().hex, name=_QUEUE, spec=ComputeSpec(kind="cluster"))
    )
    spec = BatchDeploymentSpec(job=JobSpec(command=[]), scoring_script="s.py", compute=_QUEUE)
    for name in names:
        await client.send(CreateBatchEndpoint(command_id=uuid.uuid4().hex, name=name))
        await client.send(
            SetBatchDeployment(command_id=uuid.uuid4().hex, endpoint=name, name="v1", spec=spec)
        )


async def _runs(client: Client) -> list[dict[str, Any]]:
    """Every run of the workspace, as read after a command sent now (so after every command
    the test's requests sent before)."""
    marker = await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="marker"))
    return list((await client.ask(ListRuns(min_seq=marker.seq))).data["runs"])


async def test_names_that_need_encoding_round_trip(
    client: Client, gateway: Gateway, token: str, ws: AsyncWorkspace, cancelled_after: None
) -> None:
    """An endpoint named with a space, Latin-1, other Unicode or URL punctuation is invoked at
    its percent-encoded address; ``Location`` is ASCII and polls the same job. A name no route
    can match (``/`` in it) advertises no address."""
    names = ["a b", "scörer", "日本", "p?q#r&s=t"]
    await _queued_endpoints(client, *names, "a/b", "a%2Fb")
    auth = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        for name in names:
            scoring_uri = (await get_batch_endpoint(ws, name))["scoring_uri"]
            assert scoring_uri is not None and scoring_uri.isascii(), name
            path = f"/batch-endpoints/{client.workspace}/{quote(name, safe='')}/jobs"
            assert scoring_uri.endswith(path), (scoring_uri, path)
            reply = await http.post(path, json=_URL_BODY, headers=auth)
            assert reply.status_code == 200, (name, reply.text)
            job = reply.json()
            assert job["properties"]["endpointName"] == name
            location = reply.headers["location"]
            assert location.isascii() and location == job["properties"]["jobUri"]
            polled = await http.get(location, headers=auth)
            assert polled.status_code == 200, (name, polled.text)
            assert polled.json()["name"] == job["name"]
            assert polled.json()["properties"]["endpointName"] == name
    for unroutable in ("a/b", "a%2Fb"):
        assert (await get_batch_endpoint(ws, unroutable))["scoring_uri"] is None


async def test_a_job_is_polled_only_at_its_own_endpoint(
    client: Client, gateway: Gateway, token: str, cancelled_after: None
) -> None:
    """A job of endpoint A polled at endpoint B's address is 404, as is a run that is no
    batch invocation at all."""
    await _queued_endpoints(client, "ep-a", "ep-b")
    auth = {"authorization": f"Bearer {token}"}
    base = f"/batch-endpoints/{client.workspace}"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        reply = await http.post(f"{base}/ep-a/jobs", json=_URL_BODY, headers=auth)
        assert reply.status_code == 200, reply.text
        job = reply.json()["name"]
        assert (await http.get(f"{base}/ep-a/jobs/{job}", headers=auth)).status_code == 200
        other = await http.get(f"{base}/ep-b/jobs/{job}", headers=auth)
        assert other.status_code == 404, other.text
        assert "ep-b" in other.json()["message"]


async def test_a_retried_post_with_its_key_answers_the_same_job(
    client: Client, gateway: Gateway, token: str, cancelled_after: None
) -> None:
    """The same idempotency key (``Idempotency-Key`` or ``x-ms-client-request-id``) answers
    the job the first POST made, and queues nothing more; another key, or the same key at
    another endpoint, is another job."""
    await _queued_endpoints(client, "idem-a", "idem-b")
    auth = {"authorization": f"Bearer {token}"}
    base = f"/batch-endpoints/{client.workspace}"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:

        async def invoke(endpoint: str, headers: dict[str, str]) -> str:
            reply = await http.post(
                f"{base}/{endpoint}/jobs", json=_URL_BODY, headers={**auth, **headers}
            )
            assert reply.status_code == 200, reply.text
            return str(reply.json()["name"])

        first = await invoke("idem-a", {"Idempotency-Key": "k1"})
        assert await invoke("idem-a", {"Idempotency-Key": "k1"}) == first
        assert await invoke("idem-a", {"x-ms-client-request-id": "k1"}) == first
        assert await invoke("idem-a", {"Idempotency-Key": "k2"}) != first
        assert await invoke("idem-b", {"Idempotency-Key": "k1"}) != first
        assert await invoke("idem-a", {}) != await invoke("idem-a", {})
    invocations = [r for r in await _runs(client) if r["parent_run_id"] is None]
    assert sum(1 for r in invocations if r["tags"].get("batch_endpoint") == "idem-a") == 4
    assert sum(1 for r in invocations if r["run_id"] == first) == 1


async def test_a_refused_post_queues_nothing(
    client: Client, gateway: Gateway, token: str, nats_server: NatsServer, cancelled_after: None
) -> None:
    """Refusals (a bad body, an unknown dataset, a session POST without its CSRF token)
    happen before any command: no experiment and no run exist afterwards. With the token the
    session's POST goes through."""
    await _queued_endpoints(client, "refusing")
    url = f"/batch-endpoints/{client.workspace}/refusing/jobs"
    auth = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        for body in (_body("azureml:noitems:1"), _body("azureml://datastores/x/paths/../y")):
            reply = await http.post(url, json=body, headers=auth)
            assert reply.status_code in (400, 404), reply.text
        signed = await sign_in(http, *login_password(nats_server))
        assert signed.status_code == 303, signed.text
        refused = await http.post(url, json=_URL_BODY)
        assert refused.status_code == 403, refused.text
        assert await _runs(client) == []
        with pytest.raises(NotFound):
            await client.ask(GetExperiment(name="refusing"))
        page = await http.get(f"/w/{client.workspace}/experiments")
        csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
        assert csrf, page.text
        allowed = await http.post(url, json=_URL_BODY, headers={"x-csrf-token": csrf.group(1)})
        assert allowed.status_code == 200, allowed.text
