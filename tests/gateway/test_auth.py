"""Who may reach the gateway: nothing but the login page and the probes without signing in;
sessions are sealed cookies whose unsafe requests need their CSRF token."""

from __future__ import annotations

import re

import httpx

from cairn.rpc import Client
from cairn.services.gateway import Gateway
from cairn.services.gateway._app import routes
from cairn.services.gateway._auth import OPEN_PATHS
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
            for method in methods - {"OPTIONS", "HEAD"}:
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
