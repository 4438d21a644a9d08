"""The ops routes (``/metrics``, ``/healthz``, ``/readyz``) and the small HTTP server that
serves them from a service process (``cairn serve <service> --ops-port N``).

The routes carry no authentication: the server binds loopback unless told otherwise and
belongs behind the network boundary. The gateway mounts the same routes on its own app, behind
its own guard. Handlers are ``async`` so they run on the event loop's thread, where the gauges
read through functions (projection positions, busy slots) are safe to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn
from litestar import Litestar, MediaType, Response, get
from litestar.handlers import HTTPRouteHandler

from cairn.errors import CairnError, InvalidInput
from cairn.log import get_logger
from cairn.telemetry._metrics import readiness, render

__all__ = [
    "KEEP_ALIVE_S",
    "LoopServer",
    "bind_socket",
    "log_unexpected",
    "ops_app",
    "ops_routes",
    "ops_server",
]

log = get_logger("cairn.telemetry")
#: how long the gateway and an agent's MLflow endpoint keep an idle HTTP/1.1 connection open
#: for its client's next request. API clients (mlflow's requests session, scripts) keep their
#: connection between calls; uvicorn's default of 5 s closed it between the epochs of most
#: training loops, and each call paid for a new connection (behind TLS, a handshake too).
KEEP_ALIVE_S = 75


def ops_routes() -> list[HTTPRouteHandler]:
    """The route handlers of ``GET /metrics``, ``/healthz`` and ``/readyz``, to mount on an
    app (the gateway puts them behind its own guard); new ones at each call, so two apps never
    share a handler."""

    @get("/metrics", media_type=MediaType.TEXT, include_in_schema=False)
    async def metrics() -> Response[bytes]:
        body, content_type = render()
        return Response(body, media_type=content_type)

    @get("/healthz", media_type=MediaType.TEXT, include_in_schema=False)
    async def healthz() -> str:
        return "ok\n"

    @get("/readyz", include_in_schema=False)
    async def readyz() -> Response[dict[str, Any]]:
        ready = readiness.ready
        body = {"ready": ready, "parts": readiness.state()}
        return Response(body, status_code=200 if ready else 503)

    return [metrics, healthz, readyz]


async def log_unexpected(exc: BaseException, scope: Any) -> None:
    """An ``after_exception`` hook for our Litestar apps, which are built with
    ``logging_config=None``: Litestar's default logging config starts a ``QueueListener``
    thread for each app and never stops it. An error the app answers as expected (a typed
    ``CairnError`` subclass, an HTTP error under 500) is the client's answer and no log line;
    any other, the bare ``CairnError`` among them (an internal error or an unexpected reply,
    answered 500), leaves one line with its traceback here, while the client gets a plain 500
    without it."""
    from litestar.exceptions import HTTPException

    expected = isinstance(exc, CairnError) and type(exc) is not CairnError
    if expected or (isinstance(exc, HTTPException) and exc.status_code < 500):
        return
    log.error(
        "http_unhandled_error",
        method=scope.get("method"),
        path=scope.get("path"),
        error=type(exc).__name__,
        exc_info=exc,
    )


def ops_app() -> Litestar:
    """An app with the ops routes alone."""
    return Litestar(
        route_handlers=ops_routes(),
        openapi_config=None,
        logging_config=None,
        after_exception=[log_unexpected],
    )


class LoopServer(uvicorn.Server):
    """uvicorn inside a process that handles its own signals (its stop event)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(host: str, port: int, what: str = "the ops routes") -> socket.socket:
    """A listening socket on ``host:port``, bound before anything else starts so that a port
    in use fails at once (``InvalidInput`` naming ``what``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # inherited by every accepted connection: uvicorn writes a response's head and body
        # separately, and with Nagle on the body waited for the client's delayed ACK (40 ms
        # on Linux): every response took ~44 ms, /healthz included; 0.7 ms without
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot serve {what} on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def ops_server(host: str, port: int) -> AsyncIterator[None]:
    """Serve the ops routes on ``host:port`` (bound before anything else starts, so a port in
    use fails fast) until the block ends."""
    sock = bind_socket(host, port)
    config = uvicorn.Config(
        ops_app(), log_config=None, access_log=False, lifespan="off", server_header=False
    )
    server = LoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="ops-server")
    try:
        log.info("ops_serving", host=host, port=port)
        yield
    finally:
        server.should_exit = True
        try:
            await task
        finally:
            sock.close()
