"""A gateway serving in the test process, over the session's server and services, and HTTP
clients signed in to it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cairn.embedded._server import NatsServer
from cairn.rpc import Client
from cairn.services.gateway import Gateway


def login_password(nats_server: NatsServer, user: str | None = None) -> tuple[str, str]:
    creds = nats_server.credentials
    assert creds is not None
    name = user or creds.client_user
    return name, creds.people[name].password


async def sign_in(http: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    """Sign in through the login form, as a browser does (its CSRF token included)."""
    page = await http.get("/login")
    csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    return await http.post(
        "/login",
        data={"username": user, "password": password, "_csrf": csrf.group(1), "next": "/"},
    )


@pytest.fixture
async def browser_http(
    gateway: Gateway, nats_server: NatsServer, client: Client
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client signed in as the local person (a member of the test's workspace)."""
    async with httpx.AsyncClient(base_url=gateway.url, follow_redirects=False) as http:
        reply = await sign_in(http, *login_password(nats_server))
        assert reply.status_code == 303, reply.text
        yield http


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """One headless chromium for the session (tests/gateway/browser.py)."""
    from playwright.async_api import async_playwright

    from tests.gateway.browser import ARGS, CHROMIUM, ensure_chromium

    reason = ensure_chromium()
    if reason is not None:
        pytest.skip(f"no browser: {reason}")
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A page in a fresh context (no cookies) of the session's browser."""
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    tab = await context.new_page()
    yield tab
    await context.close()
