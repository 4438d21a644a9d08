"""Gateway apps built and stopped in one process leave no thread behind (Litestar's default
logging config started one per app, never stopped), and an unexpected error still leaves a
log line, without its traceback reaching the client."""

from __future__ import annotations

import threading

import httpx
import msgspec
import structlog
from litestar import get

from cairn.embedded._server import NatsServer
from cairn.errors import CairnError, NotFound
from cairn.services.gateway import Gateway
from cairn.services.gateway._app import running
from tests.gateway.conftest import login_password, sign_in


@get("/test/broken")
async def broken() -> str:
    raise RuntimeError("a bug in a route")


@get("/test/internal")
async def internal() -> str:
    raise CairnError("unexpected reply b'?' to cairn.q.ws.run.get")


@get("/test/missing")
async def missing() -> str:
    raise NotFound("no run r1")


def _threads() -> set[threading.Thread]:
    # the event loop's default executor is one shared, bounded pool: not an app's
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


async def _serve_once(gateway: Gateway, nats_server: NatsServer) -> list[dict[str, object]]:
    settings = msgspec.structs.replace(gateway.settings, gateway_port=0)
    with structlog.testing.capture_logs() as logs:
        async with running(settings) as gw:
            gw.app.register(broken)
            async with httpx.AsyncClient(base_url=gw.url) as http:
                assert (await sign_in(http, *login_password(nats_server))).status_code == 303
                reply = await http.get("/test/broken", headers={"accept": "application/json"})
    assert reply.status_code == 500, reply.text
    assert "Traceback" not in reply.text and "a bug in a route" not in reply.text
    return [e for e in logs if e["event"] == "http_unhandled_error"]


async def test_gateway_apps_leave_no_thread_and_log_unexpected_errors(
    gateway: Gateway, nats_server: NatsServer
) -> None:
    await _serve_once(gateway, nats_server)  # anything started once per process, started
    before = _threads()
    logged = [await _serve_once(gateway, nats_server) for _ in range(3)]
    assert _threads() - before == set()
    for errors in logged:
        assert len(errors) == 1, errors
        assert errors[0]["path"] == "/test/broken" and errors[0]["error"] == "RuntimeError"


async def test_a_bare_cairn_error_is_a_500_with_a_log_line_and_a_typed_one_is_not(
    gateway: Gateway, nats_server: NatsServer
) -> None:
    """A bare ``CairnError`` (an internal error, an unexpected reply) is answered 500 and,
    being unexpected, logged; a typed one (404 here) is the client's answer alone."""
    settings = msgspec.structs.replace(gateway.settings, gateway_port=0)
    with structlog.testing.capture_logs() as logs:
        async with running(settings) as gw:
            gw.app.register(internal)
            gw.app.register(missing)
            async with httpx.AsyncClient(base_url=gw.url) as http:
                assert (await sign_in(http, *login_password(nats_server))).status_code == 303
                json_only = {"accept": "application/json"}
                failed = await http.get("/test/internal", headers=json_only)
                absent = await http.get("/test/missing", headers=json_only)
    assert (failed.status_code, absent.status_code) == (500, 404)
    logged = [e for e in logs if e["event"] == "http_unhandled_error"]
    assert [(e["path"], e["error"]) for e in logged] == [("/test/internal", "CairnError")]
