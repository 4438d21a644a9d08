"""Operational metrics and health of a Cairn process.

Metrics live in prometheus-client's default registry (with its process and platform
collectors); :func:`render` gives them in the Prometheus text format. :data:`readiness` is
what ``/readyz`` answers: the services of the process mark themselves ready (``run_services``
does it for them) and every running projection must have caught up with its stream.

The HTTP side (Litestar and uvicorn, imported only when used): :func:`ops_routes` are the
handlers of ``GET /metrics``, ``/healthz`` and ``/readyz``; :func:`ops_server` serves them
from a service process. docs/operations.md lists every metric.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from cairn.telemetry._metrics import (
    AGENT_BUSY_SLOTS,
    AGENT_SLOTS,
    MIRROR_DROPPED,
    PROJECTION_APPLIED,
    PROJECTION_LAG,
    REQUEST_SECONDS,
    REQUESTS,
    SCHEDULER_QUEUED,
    SCHEDULER_RUNNING,
    WEBHOOK_ATTEMPTS,
    Readiness,
    RequestMetrics,
    forget,
    read_through,
    readiness,
    render,
)

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.handlers import HTTPRouteHandler

__all__ = [
    "AGENT_BUSY_SLOTS",
    "AGENT_SLOTS",
    "MIRROR_DROPPED",
    "PROJECTION_APPLIED",
    "PROJECTION_LAG",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SCHEDULER_QUEUED",
    "SCHEDULER_RUNNING",
    "WEBHOOK_ATTEMPTS",
    "Readiness",
    "RequestMetrics",
    "forget",
    "ops_app",
    "ops_routes",
    "ops_server",
    "read_through",
    "readiness",
    "render",
]


def ops_routes() -> list[HTTPRouteHandler]:
    """The Litestar handlers of ``GET /metrics``, ``/healthz`` and ``/readyz`` (no guard of
    their own: the app that mounts them decides who may ask)."""
    from cairn.telemetry._http import ops_routes as routes

    return routes()


def ops_app() -> Litestar:
    """A Litestar app with the ops routes alone."""
    from cairn.telemetry._http import ops_app as app

    return app()


def ops_server(host: str, port: int) -> AbstractAsyncContextManager[None]:
    """Serve the ops routes on ``host:port`` while the ``async with`` block runs."""
    from cairn.telemetry._http import ops_server as server

    return server(host, port)
