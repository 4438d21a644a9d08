"""Who may reach the gateway: nothing but the login page and the probes without signing in;
sessions are sealed cookies whose unsafe requests need their CSRF token."""

from __future__ import annotations

import re

import httpx
import msgspec

from cairn.embedded._server import NatsServer
from cairn.rpc import Client
from cairn.services.gateway import Gateway
from cairn.services.gateway._app import _loopback, routes, running
from cairn.services.gateway._auth import OPEN_PATHS
from cairn.settings import Settings
from tests.gateway.conftest import login_password, sign_in


def _concrete(path: str) -> str:
    """A path of the route table with its parameters filled in."""
    return re.sub(r"\{[^}]+\}", "x1", path)


async def test_every_route_needs_a_user(gateway: Gateway) -> None:
    walked = 0
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for path, methods, _ in routes(gateway.app):
            if path in OPEN_PATHS:
                continue
            for method in (methods | {"OPTIONS"}) - {"HEAD"}:
                walked += 1
                api = await http.request(method, _concrete(path))
                assert api.status_code == 401, (method, path, api.status_code)
                browser = await http.request(
                    method, _concrete(path), headers={"accept": "text/html"}
                )
                if method == "GET" and not path.startswith("/api/"):
                    assert browser.status_code == 303, (path, browser.status_code)
                    assert browser.headers["location"].startswith("/login?next=")
                else:  # the JSON API answers a browser as it answers a script
                    assert browser.status_code in (401, 403), (method, path)
    assert walked >= 5


async def test_open_routes_are_only_login_and_probes(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await http.get("/healthz")).text.strip() == "ok"
        assert (await http.get("/readyz")).status_code == 200
        page = await http.get("/login")
        assert page.status_code == 200 and 'name="password"' in page.text


async def test_login_then_pages_and_logout(gateway: Gateway, nats_server, client: Client) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        user, password = login_password(nats_server)
        bad = await sign_in(http, user, password + "x")
        assert bad.status_code == 401 and "wrong user name or password" in bad.text
        good = await sign_in(http, user, password)
        assert good.status_code == 303
        cookie = good.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        page = await http.get(f"/w/{client.workspace}/experiments")
        assert page.status_code == 200 and "No experiments" in page.text
        csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
        assert csrf
        out = await http.post("/logout", data={"_csrf": csrf.group(1)})
        assert out.status_code == 303
        again = await http.get(f"/w/{client.workspace}/experiments")
        assert again.status_code == 401


async def test_cross_site_post_without_csrf_is_refused(
    browser_http: httpx.AsyncClient,
) -> None:
    refused = await browser_http.post("/logout", data={})
    assert refused.status_code == 403
    page = await browser_http.get("/login")  # the session still holds its token
    forged = await browser_http.post(
        "/logout",
        data={"_csrf": "not-the-token"},
        headers={"origin": "http://evil.example"},
    )
    assert forged.status_code == 403
    del page


async def test_the_session_cookie_is_secure_when_the_studio_is_served_over_https(
    gateway: Gateway, nats_server: NatsServer, client_settings: Settings
) -> None:
    login = login_password(nats_server)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        plain = (await sign_in(http, *login)).headers["set-cookie"]
    assert "cairn_session=" in plain and "secure" not in plain.lower()
    settings = msgspec.structs.replace(
        client_settings, nats_user=None, nats_password=None, gateway_port=0, gateway_https=True
    )
    async with running(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        # a client sends a Secure cookie over HTTPS alone: this one is passed by hand
        form = await http.get("/login")
        session = form.headers["set-cookie"].split(";")[0]
        csrf = re.search(r'name="_csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed_in = await http.post(
            "/login",
            data={"username": login[0], "password": login[1], "_csrf": csrf.group(1)},
            headers={"cookie": session},
        )
        assert signed_in.status_code == 303, signed_in.text
        for reply in (form, signed_in):
            cookie = reply.headers["set-cookie"]
            assert "cairn_session=" in cookie
            assert "secure" in [part.strip().lower() for part in cookie.split(";")]


def test_only_loopback_hosts_count_as_this_machine() -> None:
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("localhost")
    assert not _loopback("0.0.0.0") and not _loopback("10.0.0.5") and not _loopback("example.org")
