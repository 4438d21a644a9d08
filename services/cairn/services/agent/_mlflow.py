"""A job's MLflow endpoint: the MLflow API (``cairn.services.mlflow``) for one attempt, on a
loopback port of its agent, acting through the attempt's gate (``_gate.py``).

``mlflow`` speaks HTTP, not the gate's socket; so for each attempt the agent serves the same
routes as the gateway on ``127.0.0.1:<port>`` and gives the job ``MLFLOW_TRACKING_URI``, a
random token of the attempt (``MLFLOW_TRACKING_TOKEN``: the client sends it as
``Authorization: Bearer``) and ``MLFLOW_RUN_ID`` (its run). Every request with that token is
turned into the same commands and queries as at the gateway, each checked by the attempt's
gate exactly as the job's own SDK requests are (its own run and its children, its
experiment, its workspace's queries); a refusal is MLflow's 403 ``PERMISSION_DENIED``. A
request without the token gets 401 and reaches nothing: loopback ports are open to every
process of the machine, which is why the token is there. The endpoint closes with the gate,
which revokes the token. The job never holds its person's token nor any NATS credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import secrets
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

__all__ = ["MlflowEndpoint"]

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
    """The MLflow API of one attempt, on a loopback port, until :meth:`close`."""

    def __init__(self, gate: JobGate, settings: Settings) -> None:
        nc = GateClient(gate)
        conn = Connection(nc=nc, js=nc.jetstream(), settings=settings, own_jetstream=False)
        self.token = secrets.token_urlsafe(32)
        self.tracker = Tracker(
            Client(conn, gate.workspace),
            job_run=gate.run_id,
            attempt=gate.attempt,
            job_experiment=gate.experiment,
        )
        app = Litestar(
            route_handlers=mlflow_routes(self._resolve),
            openapi_config=None,
            logging_config=None,  # the default starts a thread per app, never stopped
            after_exception=[log_unexpected],
        )
        self.socket = bind_socket("127.0.0.1", 0, "a job's MLflow endpoint")
        host, port = self.socket.getsockname()[:2]
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
        self._task = asyncio.create_task(self._server.serve(sockets=[self.socket]))

    def environ(self) -> dict[str, str]:
        """What the job's process is given to log with ``mlflow`` into its own run."""
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_TOKEN": self.token,
            "MLFLOW_RUN_ID": self.tracker.job_run or "",
        }

    async def _resolve(self, request: Request[Any, Any, Any]) -> Tracker:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.token):
            raise Unauthenticated("this endpoint answers its job alone (MLFLOW_TRACKING_TOKEN)")
        return self.tracker

    async def close(self) -> None:
        """Stop serving: the token means nothing from now on."""
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await self._task
        self.socket.close()
