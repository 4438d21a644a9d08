"""The gateway's ASGI application: the studio's pages, the JSON API under ``/api``, the ops
routes; and the uvicorn server that runs it inside a Cairn process.

Every route but the login page and the probes acts as the signed-in user, over that user's
own NATS connection, through the same commands and queries as the SDK (:func:`ask`,
:func:`send`): the gateway reads no read model and holds no state but its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import ipaddress
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import uvicorn
from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from cairn.errors import (
    CairnError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from cairn.log import get_logger
from cairn.proto.commands import Accepted, Command, Query, QueryResult
from cairn.proto.metrics import CompareMetric, GetMetrics, LogMetrics, MetricHistory
from cairn.rpc import Client
from cairn.services.gateway._auth import (
    OPEN_PATHS,
    SESSION_S,
    Authenticate,
    csrf_guard,
    login_page,
    login_submit,
    logout,
    principal_of,
)
from cairn.services.gateway._pool import Pool
from cairn.services.gateway._score import Scorer, score, swagger
from cairn.services.mlflow import Tracker, mlflow_routes
from cairn.settings import Settings
from cairn.telemetry import ops_routes, readiness
from cairn.telemetry._http import KEEP_ALIVE_S, LoopServer, bind_socket, log_unexpected

__all__ = ["Gateway", "ask", "create_app", "gateway_key", "send"]

log = get_logger("cairn.gateway")
HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"


def gateway_key(settings: Settings) -> bytes:
    """The key sealing session cookies: from ``gateway_key_file``, else ``<home>/gateway.key``
    (made, 0600, on first use)."""
    path = Path(settings.gateway_key_file or settings.home_path / "gateway.key").expanduser()
    if not path.exists() and settings.gateway_key_file is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path} must hold the gateway's key: 64 hex digits") from exc
    if len(key) != 32:
        raise InvalidInput(f"{path} must hold the gateway's key: 64 hex digits")
    return key


#: queries and commands whose sequences are those of METRICS, not EVENTS: what a user wrote
#: to EVENTS is no ``min_seq`` of theirs
_METRICS = (GetMetrics, MetricHistory, CompareMetric, LogMetrics)


async def ask(request: Request[Any, Any, Any], workspace: str, query: Query) -> QueryResult:
    """``query`` in ``workspace`` as the signed-in user, after what they did themselves."""
    principal = principal_of(request)
    seen = 0 if isinstance(query, _METRICS) else principal.seen.get(workspace, 0)
    if seen > query.min_seq:
        query = msgspec.structs.replace(query, min_seq=seen)
    return await Client(principal.conn, workspace).ask(query)


async def send(request: Request[Any, Any, Any], workspace: str, command: Command) -> Accepted:
    """``command`` in ``workspace`` as the signed-in user; later queries wait for it."""
    principal = principal_of(request)
    accepted = await Client(principal.conn, workspace).send(command)
    if not isinstance(command, _METRICS):
        principal.seen[workspace] = max(principal.seen.get(workspace, 0), accepted.seq)
    return accepted


async def mlflow_tracker(request: Request[Any, Any, Any]) -> Tracker:
    """The MLflow API's tracker for a request: the caller's connection, in the workspace the
    path names (``/mlflow/<workspace>/api/2.0/mlflow/...``) or the gateway's default one."""
    principal = principal_of(request)
    workspace = request.path_params.get("workspace") or request.app.state.settings.workspace
    return Tracker(
        Client(principal.conn, str(workspace)),
        events_seen=principal.seen,
        metrics_seen=principal.metrics_seen,
        renewed=principal.renewed,
    )


_STATUS = {
    NotFound: 404,
    Unauthenticated: 401,
    PermissionDenied: 403,
    InvalidInput: 400,
    Unavailable: 503,
}


def _status_of(exc: CairnError) -> int:
    for kind, status in _STATUS.items():
        if isinstance(exc, kind):
            return status
    # the base class: an error the service did not expect ("internal"); its subclasses left
    # (exists, conflicts, transitions) are conflicts with the state
    return 500 if type(exc) is CairnError else 409


def _wants_html(request: Request[Any, Any, Any]) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", ""
    )


def _on_cairn_error(request: Request[Any, Any, Any], exc: CairnError) -> Response[Any]:
    status = _status_of(exc)
    if _wants_html(request):
        return Template(
            template_name="error.html",
            context={"status": status, "code": exc.code, "message": exc.message},
            status_code=status,
        )
    return Response({"code": exc.code, "message": exc.message}, status_code=status)


def _on_unauthorized(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    if _wants_html(request) and request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Redirect(path=f"/login?next={quote(target)}", status_code=303)
    return Response(
        {"code": "unauthenticated", "message": exc.detail},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="cairn"'},
    )


def _on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if _wants_html(request):
        return Template(
            template_name="error.html",
            context={"status": exc.status_code, "code": "", "message": exc.detail},
            status_code=exc.status_code,
        )
    return Response({"code": "http", "message": exc.detail}, status_code=exc.status_code)


def path_part(name: Any) -> str:
    """``name`` as one segment of a link's path: every ``/`` escaped too (a model or dataset
    name may hold ``/``; its page takes the name from the raw path)."""
    return quote(str(name), safe="")


def _template_filters(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters["path_part"] = path_part


def _plotly_js() -> Path:
    """The folder of the installed plotly package's ``plotly.min.js`` (served, no CDN)."""
    return Path(str(importlib.resources.files("plotly") / "package_data"))


def create_app(
    settings: Settings, pool: Pool, route_handlers: Sequence[Any] = (), *, secure: bool = False
) -> Litestar:
    """The application, over ``pool``'s connections. ``secure``: served over HTTPS (the
    cookie is then sent over HTTPS only)."""
    from cairn.services.gateway._api import API_ROUTES
    from cairn.services.gateway._assets import ASSET_PAGES
    from cairn.services.gateway._batch import BATCH_ROUTES
    from cairn.services.gateway._flows import FLOW_PAGES
    from cairn.services.gateway._live import LIVE_ROUTES
    from cairn.services.gateway._pages import PAGES
    from cairn.services.gateway._pipelines import PIPELINE_ROUTES
    from cairn.services.gateway._runs import RUN_PAGES

    sessions = CookieBackendConfig(
        secret=gateway_key(settings),
        key="cairn_session",
        max_age=SESSION_S,
        httponly=True,
        samesite="lax",
        secure=secure,
    )
    # OPTIONS too: no method reaches a route unauthenticated (the studio needs no CORS)
    auth = DefineMiddleware(
        Authenticate, exclude=[f"^{p}$" for p in OPEN_PATHS], exclude_http_methods=()
    )
    app = Litestar(
        route_handlers=[
            login_page,
            login_submit,
            logout,
            *ops_routes(),
            create_static_files_router(path="/static", directories=[STATIC]),
            create_static_files_router(path="/static/vendor", directories=[_plotly_js()]),
            *PAGES,
            *RUN_PAGES,
            *ASSET_PAGES,
            *FLOW_PAGES,
            *API_ROUTES,
            *PIPELINE_ROUTES,
            *LIVE_ROUTES,
            score,
            swagger,
            *BATCH_ROUTES,
            *mlflow_routes(mlflow_tracker),
            *mlflow_routes(mlflow_tracker, "/mlflow/{workspace:str}"),
            *route_handlers,
        ],
        middleware=[sessions.middleware, auth],
        before_request=csrf_guard,
        template_config=TemplateConfig(
            directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_template_filters
        ),
        exception_handlers={
            CairnError: _on_cairn_error,
            NotAuthorizedException: _on_unauthorized,
            HTTPException: _on_http_error,
        },
        openapi_config=None,
        debug=False,
        # Litestar's default starts a logging thread per app and never stops it
        logging_config=None,
        after_exception=[log_unexpected],
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.scorer = Scorer(settings)
    return app


def routes(app: Litestar) -> Iterable[tuple[str, set[str], BaseRouteHandler]]:
    """Every route of ``app``: its path, its methods, its handler (for the tests that walk
    them)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            methods = set(getattr(handler, "http_methods", ()) or ())
            yield route.path, methods, handler


def _loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine's alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Gateway:
    """The gateway of one process: its application on one socket until ``stop``."""

    name = "gateway"

    def __init__(self, settings: Settings, route_handlers: Sequence[Any] = ()) -> None:
        if settings.nats_user or settings.nats_password or settings.nats_creds:
            raise InvalidInput(
                "the gateway holds no NATS credentials: it connects as each signed-in user"
                " with theirs (unset nats_user, nats_password and nats_creds for it)"
            )
        self.settings = settings
        self.pool = Pool(settings)
        self.app = create_app(settings, self.pool, route_handlers, secure=settings.gateway_https)
        self.socket = bind_socket(settings.gateway_host, settings.gateway_port, "the gateway")
        host, port = self.socket.getsockname()[:2]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        readiness.expect(self.name, self)

    async def run(self, stop: asyncio.Event) -> None:
        config = uvicorn.Config(
            self.app,
            http="httptools",  # uvicorn's C parser: h11's pure-Python one doubled a page's time
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=KEEP_ALIVE_S,  # a client's next call reuses its connection
        )
        server = LoopServer(config)
        serving = asyncio.create_task(server.serve(sockets=[self.socket]))
        log.info("gateway_started", url=self.url, https=self.settings.gateway_https)
        if not self.settings.gateway_https and not _loopback(self.settings.gateway_host):
            log.warning(
                "gateway_plain_http",
                host=self.settings.gateway_host,
                message="the studio is served over plain HTTP beyond this machine: passwords"
                " and session cookies travel in the clear. Serve it behind a TLS proxy and set"
                " gateway_https (CAIRN_GATEWAY_HTTPS=1)",
            )
        readiness.mark_ready(self.name, self)
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([serving, stopping], return_when="FIRST_COMPLETED")
            readiness.mark_not_ready(self.name, self)
            server.should_exit = True
            await serving
        finally:
            readiness.withdraw(self.name, self)
            stopping.cancel()
            await self.pool.close()
            await self.app.state.scorer.close()
            self.socket.close()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Gateway]:
    """A gateway serving in the background of this block (tests, ``cairn up``)."""
    stop = asyncio.Event()
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run(stop))
    try:
        yield gateway
    finally:
        stop.set()
        await task
