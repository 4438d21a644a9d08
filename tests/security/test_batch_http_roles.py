"""The gateway's batch endpoint routes in the role matrix (docs/security.md, the table of
gateway routes), cell by cell: each person, with an API token of theirs, invokes a batch
endpoint and polls a job over HTTP in a workspace they are a member of and in another that
exists. ``allowed``: past the permissions and the membership check (an invocation queued on a
compute target no agent serves, so nothing runs, and cancelled after; a real queued job read,
or 404 in the workspace that does not have it); ``denied``: 403."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cairn.bus import Connection
from cairn.embedded import NatsServer
from cairn.embedded._users import create_token, revoke_token
from cairn.errors import AlreadyExists
from cairn.proto.assets import ComputeSpec, CreateCompute
from cairn.proto.batch import BatchDeploymentSpec, CreateBatchEndpoint, SetBatchDeployment
from cairn.proto.commands import CancelRun, CreateWorkspace
from cairn.proto.jobs import JobSpec
from cairn.rpc import Client
from cairn.services.gateway import Gateway
from cairn.services.gateway._app import routes
from cairn.services.gateway._batch import BATCH_ROUTES
from tests.conftest import MATRIX_WS, add_people

MATRIX = Path(__file__).parents[2] / "docs" / "security.md"
HEADER = "| role | gateway route | own workspace | other workspace |"
ROLE_USERS = {"data scientist": "mx-ds", "compute operator": "mx-co", "auditor": "mx-aud"}
ENDPOINT = "mx-batch"
#: a compute target no agent serves: an invocation that gets through stays queued
COMPUTE = "mx-batch-queue"
BODY = {
    "properties": {
        "InputData": {"input": {"JobInputType": "UriFile", "Uri": "https://example.invalid/a"}}
    }
}


def read_table() -> list[tuple[str, str, str, str]]:
    lines = MATRIX.read_text().splitlines()
    start = lines.index(HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        role, route, own, other = (c.strip() for c in line.strip("|").split("|"))
        rows.append((role, route, own, other))
    return rows


def test_the_table_covers_every_role_and_batch_route(gateway: Gateway) -> None:
    rows = read_table()
    batch = {
        f"{method} {re.sub(r':[a-z]+}', '}', path)}"
        for path, methods, _ in routes(gateway.app)
        if path.startswith("/batch-endpoints/")
        for method in methods - {"OPTIONS"}  # litestar's own, refused unauthenticated too
    }
    assert len(batch) == len(BATCH_ROUTES)
    assert {(role, route) for role, route, _, _ in rows} == {
        (r, b) for r in ROLE_USERS for b in batch
    }
    assert len(rows) == len(ROLE_USERS) * len(batch)
    for _, _, own, other in rows:
        assert {own, other} <= {"allowed", "denied"}


@contextlib.contextmanager
def _tokens(server: NatsServer) -> Iterator[dict[str, str]]:
    made = {name: create_token(server.home, name, "batch-matrix") for name in ROLE_USERS.values()}
    try:
        yield {name: token for name, (_, token, _) in made.items()}
    finally:
        for row, _, _ in made.values():
            revoke_token(server.home, row["id"])


async def test_every_cell_of_the_batch_routes(
    gateway: Gateway,
    people: dict[str, Connection],
    client_conn: Connection,
    admin_conn: Connection,
    nats_server: NatsServer,
) -> None:
    other_ws = "mx" + uuid.uuid4().hex[:10]
    for ws in (MATRIX_WS, other_ws):
        with contextlib.suppress(AlreadyExists):
            await Client(client_conn, ws).send(
                CreateWorkspace(command_id=uuid.uuid4().hex, name=ws)
            )
    await add_people(admin_conn, MATRIX_WS, *ROLE_USERS.values())
    for ws in (MATRIX_WS, other_ws):  # the same endpoint in both, on a compute no agent serves
        operator = Client(people["mx-co"] if ws == MATRIX_WS else client_conn, ws)
        compute = CreateCompute(
            command_id=uuid.uuid4().hex, name=COMPUTE, spec=ComputeSpec(kind="cluster")
        )
        with contextlib.suppress(AlreadyExists):
            await operator.send(compute)
        owner = Client(people["mx-ds"] if ws == MATRIX_WS else client_conn, ws)
        with contextlib.suppress(AlreadyExists):
            await owner.send(CreateBatchEndpoint(command_id=uuid.uuid4().hex, name=ENDPOINT))
        spec = BatchDeploymentSpec(job=JobSpec(command=[]), scoring_script="s.py", compute=COMPUTE)
        await owner.send(
            SetBatchDeployment(command_id=uuid.uuid4().hex, endpoint=ENDPOINT, name="v1", spec=spec)
        )
    wrong: list[str] = []
    queued: list[str] = []
    try:
        with _tokens(nats_server) as tokens:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
                # a real (queued) job of the endpoint, for the GET cells to read
                auth = {"authorization": f"Bearer {tokens['mx-ds']}"}
                reply = await http.post(
                    f"/batch-endpoints/{MATRIX_WS}/{ENDPOINT}/jobs", json=BODY, headers=auth
                )
                assert reply.status_code == 200, reply.text
                job = reply.json()["name"]
                queued.append(job)
                for role, route, own, other in read_table():
                    auth = {"authorization": f"Bearer {tokens[ROLE_USERS[role]]}"}
                    for ws, expected in ((MATRIX_WS, own), (other_ws, other)):
                        actual = await _cell(http, route, ws, job, auth, queued)
                        if actual != expected:
                            wrong.append(f"{role} / {route} in {ws}: {actual}")
    finally:  # no invocation stays queued for the rest of the session
        owner = Client(people["mx-ds"], MATRIX_WS)
        for run_id in queued:
            await owner.send(CancelRun(command_id=uuid.uuid4().hex, run_id=run_id))
    assert not wrong, "\n".join(wrong)


async def _cell(
    http: httpx.AsyncClient,
    route: str,
    ws: str,
    job: str,
    auth: dict[str, str],
    queued: list[str],
) -> str:
    """One cell: ``allowed`` (an invocation queued, or the job read: 200 in the workspace
    that has it, 404 in the other) or ``denied`` (403)."""
    method, path = route.split(" ", 1)
    url = path.format(workspace=ws, endpoint=ENDPOINT, job=job)
    if method == "POST":
        reply = await http.post(url, json=BODY, headers=auth)
    else:
        reply = await http.get(url, headers=auth)
    assert reply.status_code != 401, reply.text
    if reply.status_code == 403:
        return "denied"
    ok = 200 if method == "POST" or ws == MATRIX_WS else 404
    assert reply.status_code == ok, (route, ws, reply.text)
    if method == "POST" and ws == MATRIX_WS:
        queued.append(reply.json()["name"])
    return "allowed"


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Basic eDp5"])
async def test_batch_endpoints_take_no_keys(gateway: Gateway, header: str) -> None:
    """A bearer value that is no Cairn token is no key here (batch endpoints have none)."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        reply = await http.post(
            f"/batch-endpoints/{MATRIX_WS}/{ENDPOINT}/jobs",
            json=BODY,
            headers={"authorization": header},
        )
    assert reply.status_code == 401, reply.text
