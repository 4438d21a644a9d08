"""Who a request is: a session cookie (the studio) or a bearer token (API clients), each
turned into a connection as that user (:mod:`._pool`). Unsafe requests of a session must carry
its CSRF token. Login and logout live here too.

The session cookie is sealed (AES-GCM, Litestar's client-side sessions) with the gateway's
key: it holds the user, their password, the session's CSRF token and when it was issued, so
any gateway holding the key can serve it and a restart signs no one out. It is HttpOnly,
SameSite=Lax, Secure when the studio is served over HTTPS, and lasts at most
:data:`SESSION_S`; signing out clears it in the browser (a copy taken before keeps working
until it expires: the price of holding no session state, as with any sealed cookie).
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.response import Redirect, Template
from litestar.types import Receive, Scope, Send

from cairn.errors import Unauthenticated, Unavailable
from cairn.services.gateway._pool import Pool, Principal
from cairn.services.gateway._score import SCORE_PATH, EndpointKey
from cairn.tokens import parse_token

__all__ = [
    "OPEN_PATHS",
    "SESSION_S",
    "Authenticate",
    "after_response",
    "csrf_guard",
    "login_page",
    "login_submit",
    "logout",
    "principal_of",
    "session_of",
]

#: how long a studio session lasts (a new login starts a new one)
SESSION_S = 12 * 3600
#: the only routes served to no one in particular: the login page, and the probes (which say
#: "ok" and nothing else)
OPEN_PATHS = ("/login", "/healthz", "/readyz")
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"


def session_of(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
    """The request's session (empty when it has none)."""
    session = connection.scope.get("session")
    return session if isinstance(session, dict) else {}


_AFTER = "cairn_after_response"


def after_response(request: ASGIConnection[Any, Any, Any, Any], done: Callable[[], None]) -> None:
    """Call ``done`` once ``request``'s response is over: sent whole, or its client gone."""
    request.scope.setdefault("state", {}).setdefault(_AFTER, []).append(done)


def principal_of(request: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    user = request.scope.get("user")
    if not isinstance(user, Principal):  # only open routes run without one
        raise NotAuthorizedException("sign in first")
    return user


class Authenticate(AbstractAuthenticationMiddleware):
    """A bearer token if the request has an ``Authorization`` header, else the session. The
    request holds its user's connection until its response has been sent whole (a stream's
    or a download's last byte included): the pool closes no connection in use."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            state = scope.get("state") or {}
            for done in state.get(_AFTER, ()):
                done()
            principal = scope.get("user")
            if isinstance(principal, Principal):
                pool: Pool = scope["litestar_app"].state.pool
                pool.release(principal)

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        pool: Pool = connection.app.state.pool
        header = connection.headers.get("authorization")
        try:
            if header is not None:
                scheme, _, value = header.partition(" ")
                if scheme.lower() != "bearer" or not value.strip():
                    raise NotAuthorizedException("use Authorization: Bearer <token>")
                try:
                    user, secret = parse_token(value.strip())
                except Unauthenticated:
                    if not re.match(SCORE_PATH, connection.url.path):
                        raise
                    # not a token: an endpoint's key, which the scheduler checks
                    return AuthenticationResult(user=EndpointKey(value.strip()), auth="key")
                principal = await pool.principal(user, secret, "token", hold=True)
                return AuthenticationResult(user=principal, auth="token")
            session = session_of(connection)
            if not {"u", "p", "t"} <= session.keys():
                raise NotAuthorizedException("sign in first")
            if not isinstance(session["t"], (int, float)) or time.time() - session["t"] > SESSION_S:
                raise NotAuthorizedException("the session has expired: sign in again")
            principal = await pool.principal(
                str(session["u"]), str(session["p"]), "session", hold=True
            )
            return AuthenticationResult(user=principal, auth="session")
        except Unauthenticated as exc:
            raise NotAuthorizedException(exc.message) from None
        except Unavailable as exc:
            raise exc from None


def _same_origin(request: Request[Any, Any, Any]) -> bool:
    """The ``Origin`` header (or, without one, ``Referer``) names this host. A request with
    neither is accepted (older clients and some privacy settings send none): the CSRF token
    alone stands for it. ``Origin: null`` is refused."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def csrf_guard(request: Request[Any, Any, Any]) -> None:
    """Refuse an unsafe request made with the session cookie that lacks the session's CSRF
    token (form field ``_csrf`` or header ``X-CSRF-Token``), or that another site sent. A
    bearer token (or an endpoint's key) is not sent by browsers on their own: those requests
    need neither."""
    if request.method in _SAFE or request.scope.get("auth") in ("token", "key"):
        return
    expected = session_of(request).get("csrf")
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type[0] in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        given = (await request.form()).get(CSRF_FIELD)
    if (
        not isinstance(expected, str)
        or not isinstance(given, str)
        or not hmac.compare_digest(expected, given)
        or not _same_origin(request)
    ):
        raise PermissionDeniedException("refused: the form's CSRF token is missing or wrong")


def _local(target: str | None) -> str:
    """``target`` if it is a path of this site (never another site: no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_template(
    request: Request[Any, Any, Any], error: str = "", status: int = 200
) -> Template:
    csrf = session_of(request).get("csrf")
    if not isinstance(csrf, str):
        csrf = secrets.token_urlsafe(24)
        request.set_session({"csrf": csrf})
    return Template(
        template_name="login.html",
        context={
            "csrf": csrf,
            "error": error,
            "next": _local(request.query_params.get("next")),
        },
        status_code=status,
    )


@get("/login", sync_to_thread=False)
def login_page(request: Request[Any, Any, Any]) -> Template:
    return _login_template(request)


@post("/login")
async def login_submit(request: Request[Any, Any, Any]) -> Any:
    form = await request.form()
    user = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    target = _local(str(form.get("next", "/")))
    pool: Pool = request.app.state.pool
    if not user or not password:
        return _login_template(request, "enter your user name and password", 400)
    try:
        await pool.principal(user, password, "session")
    except Unauthenticated as exc:  # wrong, or too many failed sign-ins of late
        return _login_template(request, exc.message, 401)
    request.set_session(
        {"u": user, "p": password, "t": time.time(), "csrf": secrets.token_urlsafe(24)}
    )
    return Redirect(path=target, status_code=303)


@post("/logout")
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    request.clear_session()
    return Redirect(path="/login", status_code=303)
