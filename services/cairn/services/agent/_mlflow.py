"""The MLflow endpoint of an agent's jobs: the MLflow API (``cairn.services.mlflow``) on one
loopback port of the agent, each request acting through the gate of the attempt whose token
it carries (``_gate.py``).

``mlflow`` speaks HTTP, not the gate's socket; so the agent serves the same routes as the
gateway on ``127.0.0.1:<port>`` and gives each job ``MLFLOW_TRACKING_URI``, a random token of
its attempt (``MLFLOW_TRACKING_TOKEN``: the client sends it as ``Authorization: Bearer``) and
``MLFLOW_RUN_ID`` (its run). Every request with a token is turned into the same commands and
queries as at the gateway, each checked by that attempt's gate exactly as the job's own SDK
requests are (its own run and its children, its experiment, its workspace's queries); a
refusal is MLflow's 403 ``PERMISSION_DENIED``. A request without a live token gets 401 and
reaches nothing: loopback ports are open to every process of the machine, which is why the
token is there. An attempt's token is dropped when its gate closes: from then on it is
refused like any other. The job never holds its person's token nor any NATS credential.

One server for all of an agent's attempts, started with its first job: an app and a uvicorn
server per attempt cost ≈ 6 ms of CPU to build, and stopping one waited for uvicorn's 0.1 s
tick while the attempt still held its slot (docs/benchmarks.md, pipelines).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import secrets
import socket
from typing import Any

import uvicorn
from litestar import Litestar, Request
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from cairn.bus import Connection
from cairn.bus._link import LinkRequest
from cairn.errors import Unauthenticated
from cairn.log import get_logger
from cairn.rpc import Client
from cairn.services.agent._gate import JobGate
from cairn.services.mlflow import Tracker, mlflow_routes
from cairn.settings import Settings
from cairn.telemetry._http import KEEP_ALIVE_S, LoopServer, bind_socket, log_unexpected

__all__ = ["MlflowEndpoint", "MlflowServer"]

log = get_logger("cairn.agent")
_MAX_PAYLOAD = 1024 * 1024


class GateClient(NATS):
    """The request half of a NATS client whose every request passes the attempt's gate, as
    if the job had sent it through its socket."""

    def __init__(self, gate: JobGate) -> None:
        super().__init__()
        self._gate = gate
        self._ids = itertools.count(1)

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,
        old_style: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> Msg:
        sent = {str(k): str(v) for k, v in headers.items()} if headers else None
        answer = await self._gate.handle(
            LinkRequest(next(self._ids), subject, payload, sent, timeout)
        )
        if answer.failure == "timeout":
            raise NatsTimeout
        if answer.failure == "no_responders":
            raise NoRespondersError
        return Msg(_client=self, subject=subject, data=answer.data, headers=answer.headers)

    @property
    def is_connected(self) -> bool:
        return True

    @property
    def max_payload(self) -> int:
        return _MAX_PAYLOAD


class MlflowEndpoint:
    """One attempt's way into the agent's MLflow server, until :meth:`close`."""

    def __init__(self, server: MlflowServer, key: bytes, token: str, tracker: Tracker) -> None:
        self._server, self._key = server, key
        self.token, self.tracker = token, tracker

    def environ(self) -> dict[str, str]:
        """What the job's process is given to log with ``mlflow`` into its own run."""
        return {
            "MLFLOW_TRACKING_URI": self._server.url,
            "MLFLOW_TRACKING_TOKEN": self.token,
            "MLFLOW_RUN_ID": self.tracker.job_run or "",
        }

    async def close(self) -> None:
        """The token means nothing from now on."""
        self._server.trackers.pop(self._key, None)


class MlflowServer:
    """The MLflow API of an agent's attempts on one loopback port, started by the first
    :meth:`open` and stopped by :meth:`close`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: SHA-256 of a live token -> its attempt's tracker (looked up by the digest, so the
        #: lookup's time says nothing about the token)
        self.trackers: dict[bytes, Tracker] = {}
        self.url = ""
        self._socket: socket.socket | None = None
        self._server: LoopServer | None = None
        self._task: asyncio.Task[None] | None = None

    def _start(self) -> None:
        app = Litestar(
            route_handlers=mlflow_routes(self._resolve),
            openapi_config=None,
            logging_config=None,  # the default starts a thread per app, never stopped
            after_exception=[log_unexpected],
        )
        self._socket = bind_socket("127.0.0.1", 0, "the jobs' MLflow endpoint")
        host, port = self._socket.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_keep_alive=KEEP_ALIVE_S,  # a script logs once an epoch: keep its connection
        )
        self._server = LoopServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))

    def open(self, gate: JobGate) -> MlflowEndpoint:
        """A token for the attempt of ``gate``: its requests act through that gate."""
        if self._server is None:
            self._start()
        nc = GateClient(gate)
        conn = Connection(nc=nc, js=nc.jetstream(), settings=self.settings, own_jetstream=False)
        tracker = Tracker(
            Client(conn, gate.workspace),
            job_run=gate.run_id,
            attempt=gate.attempt,
            job_experiment=gate.experiment,
        )
        token = secrets.token_urlsafe(32)
        key = _digest(token)
        self.trackers[key] = tracker
        return MlflowEndpoint(self, key, token, tracker)

    async def _resolve(self, request: Request[Any, Any, Any]) -> Tracker:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        tracker = self.trackers.get(_digest(given.strip())) if scheme.lower() == "bearer" else None
        if tracker is None:
            raise Unauthenticated("this endpoint answers its jobs alone (MLFLOW_TRACKING_TOKEN)")
        return tracker

    async def close(self) -> None:
        """Stop serving; every token is dropped."""
        self.trackers.clear()
        server, task, sock = self._server, self._task, self._socket
        self._server, self._task, self._socket = None, None, None
        if server is not None and task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await task
        if sock is not None:
            sock.close()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
