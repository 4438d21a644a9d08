"""Connecting to NATS: a bounded first connect that names its cause, reconnects with backoff,
and permission errors made visible.

A client (a CLI command, the SDK) tries for ``settings.connect_timeout_s``, retrying a server
that does not answer yet, then raises one error that names the URL, the cause and the fix::

    nothing answers (refused, timeout, DNS, not NATS)  Unavailable      start one with `cairn up`
    the server refused the credentials                 Unauthenticated  check the credentials
    the credentials file is missing                    Unauthenticated  check nats_creds
    the server's certificate is not signed by our CA   Unavailable      set tls_ca
    the server's certificate does not name the host    Unavailable      fix the URL or the SANs
    the server requires a client certificate           Unauthenticated  set tls_cert, tls_key
    the server refused the client certificate          Unauthenticated  check tls_cert
    TLS is configured but the server offers none       Unavailable      check the URL
    a TLS file is missing or unreadable                InvalidInput     check tls_ca, ...

TLS: ``tls_ca`` (a CA file) is what the server's certificate is verified against, with the
host name or address of the URL; without it a server that asks for TLS (or a ``tls://`` URL)
is verified against the system's store. ``tls_cert`` and ``tls_key`` are presented to a server
that requires mutual TLS. Once TLS is configured (any of the three, or a ``tls://`` URL), a
server that does not offer TLS is refused rather than spoken to in plain text.

A long-running process (``connect(..., wait=True)``: services, agents) retries an unreachable
server with backoff until it answers, logging that once; refused credentials stop it at once.

Once connected, every connection reconnects with backoff for as long as it lives and logs each
outage once: a warning when it begins, ``nats_reconnected`` with its length when it ends.
nats-py reports each failed attempt to ``error_cb``; those go to the debug log.

nats-py reports a permissions violation only to ``error_cb`` while the request itself times
out; :class:`Connection` remembers recent violations so a timeout on that subject becomes
``PermissionDenied`` instead of a bare timeout.

Each user reads replies on its own inbox prefix, ``_INBOX_<user>`` (the server lets it
subscribe there only). A person's account has no JetStream of its own: it reaches the
services' streams through imports under ``$JS.CAIRN.API``, which the connection finds by
asking ``$JS.API.INFO`` once (an account without JetStream answers "not enabled").

Inside a job (``agent_socket`` set by its agent) there is no NATS connection at all: the
connection is the agent's socket (``_link.py``), which forwards what the job may send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import socket
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.client import Server
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from cairn.bus._link import AgentLink
from cairn.errors import CairnError, InvalidInput, Unauthenticated, Unavailable
from cairn.log import get_logger
from cairn.settings import Settings

__all__ = [
    "PEOPLE_JS_PREFIX",
    "PING_INTERVAL_S",
    "RECONNECT_MAX_S",
    "Connection",
    "LinkLost",
    "connect",
    "per_client",
]

log = get_logger("cairn.bus")
T = TypeVar("T")
#: what the parts of one process share per NATS client (a ``Connection`` is a value; its
#: client is the connection itself)
_PER_CLIENT: weakref.WeakKeyDictionary[NATS, dict[Any, Any]] = weakref.WeakKeyDictionary()
_VIOLATION = re.compile(r'permissions violation for (?:publish|subscription) to "?([^"\s]+)"?')
#: errors of the link itself (the server went away); the outage is logged, not each of these
_LINK_ERRORS = (OSError, asyncio.TimeoutError, nats.errors.StaleConnectionError)
#: reconnect and first-connect backoff: first delay, cap (seconds); after an outage a client
#: is back at most ``RECONNECT_MAX_S`` after its server is
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = RECONNECT_MAX_S = 5.0
#: a connection whose server left ``_MAX_PINGS_OUT`` pings, sent every ``PING_INTERVAL_S``,
#: unanswered is stale: the client reconnects (to another node of a cluster) within
#: ``PING_INTERVAL_S * (_MAX_PINGS_OUT + 1)``, 15 s
PING_INTERVAL_S = 5.0
_MAX_PINGS_OUT = 2
#: how long closing a failed attempt may take
_DISCARD_S = 0.5
#: where an account without JetStream (people's) imports the services' JetStream API
PEOPLE_JS_PREFIX = "$JS.CAIRN.API"
#: the gateway's scoring user (request/reply to deployments, nothing of JetStream: its
#: connection does not ask which JetStream it has)
SCORER_USER = "cairn-scorer"
_JS_NOT_ENABLED = 10039
#: a user name that can prefix an inbox: a person's, the stack's, an API token's
#: (``<person>~<id>``, :mod:`cairn.tokens`)
_USER = re.compile(r"[A-Za-z0-9_~-]{1,64}")


def _not_eof_noise(record: logging.LogRecord) -> bool:
    """nats-py reads a TLS link through a ``StreamReaderProtocol``, whose ``eof_received``
    returns True; asyncio's SSL layer warns about that each time a TLS connection closes
    (harmless: the connection is closed either way). That one warning is dropped."""
    return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_not_eof_noise)


class LinkLost(TimeoutError):
    """A request's link was lost before its answer came (``Connection.request``)."""


@dataclass
class Connection:
    nc: NATS
    js: JetStreamContext
    settings: Settings
    #: False for a user whose account has no JetStream (people): it reads the services'
    #: streams through imports, and may not write them
    own_jetstream: bool = True
    #: local monotonic time of the link's last loss or recovery (0: none since it opened),
    #: stamped by the client's own callbacks, so an outage that ends before anyone looks at
    #: ``nc.is_connected`` is still seen
    link_changed: float = 0.0
    _violations: dict[str, float] = field(default_factory=dict)
    #: requests waiting on the link now: told when it is lost (``request``)
    _on_link: set[asyncio.Future[None]] = field(default_factory=set)

    def link_lost(self) -> None:
        """The link went down: every request waiting on it gives up now (its answer, if any,
        went to the link that is gone), rather than at the end of its timeout."""
        self.link_changed = time.monotonic()
        for waiter in self._on_link:
            if not waiter.done():
                waiter.set_result(None)
        self._on_link.clear()

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> Msg:
        """``nc.request``, given up with ``LinkLost`` (a ``TimeoutError``) as soon as the link
        it was sent on is lost: in a cluster the client is on another node within a fraction
        of a second, and a caller that retries does so then, not ``timeout`` later. A request
        sent while the link is down waits in the client's buffer and is sent on the next
        link, so it is not given up when that one opens."""
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_link.add(lost)
        ask = asyncio.ensure_future(
            self.nc.request(subject, payload, timeout=timeout, headers=headers)
        )
        try:
            await asyncio.wait((ask, lost), return_when=asyncio.FIRST_COMPLETED)
            if ask.done():
                return ask.result()
            raise LinkLost(f"the link was lost while waiting for an answer on {subject}")
        finally:
            self._on_link.discard(lost)
            if not ask.done():
                ask.cancel()

    def note_error(self, err: Exception) -> None:
        match = _VIOLATION.search(str(err))
        if match:  # nats-py reports the subject in lower case
            self._violations[match.group(1).lower()] = time.monotonic()

    def denied(self, subject: str, within_s: float = 60.0) -> bool:
        at = self._violations.get(subject.lower())
        return at is not None and time.monotonic() - at < within_s

    def denied_matching(self, fragment: str, within_s: float = 60.0) -> str | None:
        """A subject the server reported a permissions violation on within ``within_s`` that
        contains ``fragment`` (compared in lower case), if any: for requests whose exact
        subject the client library builds (a consumer's create, a KV read)."""
        now, wanted = time.monotonic(), fragment.lower()
        for subject, at in self._violations.items():
            if wanted in subject and now - at < within_s:
                return subject
        return None

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    async def close(self) -> None:
        """Drain (finish in-flight work) when connected; otherwise just close."""
        if self.nc.is_closed:
            return
        try:
            if self.nc.is_connected:
                await self.nc.drain()
                return
        except Exception as exc:  # lost mid-drain: nothing left to flush
            log.debug("drain_failed", error=repr(exc))
        try:
            await self.nc.close()
        except Exception as exc:  # the transport is already gone
            log.debug("close_failed", error=repr(exc))


async def connect(
    settings: Settings,
    *,
    name: str = "cairn",
    wait: bool = False,
    stop: asyncio.Event | None = None,
) -> Connection:
    """Connect with the settings' URL and credentials.

    Raises ``Unavailable`` when no server answers within ``settings.connect_timeout_s``, and
    ``Unauthenticated`` at once when the server refuses the credentials. ``wait=True`` (for
    long-running processes) retries an unreachable server with backoff until it answers, or
    until ``stop`` is set (then it raises ``Unavailable``).
    """
    if settings.agent_socket:
        return await _through_agent(settings)
    options = _options(settings, name)
    started = time.monotonic()
    deadline = None if wait else started + settings.connect_timeout_s
    attempt = 0
    while True:
        budget = settings.connect_timeout_s
        if deadline is not None:
            budget = max(deadline - time.monotonic(), 0.05)
        try:
            conn = await _connect_once(settings, options, budget)
        except _Failed as failed:
            error = failed.error(settings, time.monotonic() - started)
            if not failed.retry or (deadline is not None and time.monotonic() >= deadline):
                raise error from failed.cause
            if wait and attempt == 0:
                log.warning(
                    "nats_unreachable_retrying",
                    name=name,
                    url=settings.nats_url,
                    cause=failed.detail,
                )
            delay = _backoff(attempt)
            if deadline is not None:
                delay = min(delay, max(deadline - time.monotonic(), 0.0))
            if await _stopped(stop, delay):
                raise error from failed.cause
            attempt += 1
            continue
        if wait and attempt > 0:
            log.info("nats_connected", name=name, url=settings.nats_url, attempts=attempt + 1)
        return conn


async def _through_agent(settings: Settings) -> Connection:
    """Inside a job: the agent's socket for this attempt, as a connection (``_link.py``)."""
    link = AgentLink(settings.agent_socket or "")
    await link.open()
    return Connection(nc=link, js=link.jetstream(), settings=settings, own_jetstream=False)


async def _stopped(stop: asyncio.Event | None, delay: float) -> bool:
    """Sleep ``delay`` seconds; True at once if ``stop`` is (or gets) set."""
    if stop is None:
        await asyncio.sleep(delay)
        return False
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        return False
    return True


def per_client(conn: Connection, key: Any, make: Callable[[], T]) -> T:
    """The one value under ``key`` for ``conn``'s NATS client, made on first use: how the
    services of one process share an aggregate cache or a read-model feed."""
    shared = _PER_CLIENT.setdefault(conn.nc, {})
    if key not in shared:
        shared[key] = make()
    value: T = shared[key]
    return value


def _backoff(attempt: int) -> float:
    """Exponential, capped, with jitter so that many clients do not retry in step."""
    return min(_BACKOFF_FIRST_S * 2.0 ** min(attempt, 16), _BACKOFF_MAX_S) * random.uniform(0.5, 1)


def _options(settings: Settings, name: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "servers": [u.strip() for u in settings.nats_url.split(",") if u.strip()],
        "name": name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        # the reconnect handler sets the delays; this only bounds how long close() waits
        # for a reconnect in progress
        "reconnect_time_wait": 0.5,
        # a server that hangs (a paused process, a partition that drops packets) keeps the
        # socket open: only unanswered pings tell, after ping_interval x (max + 1) s, and
        # the client moves to another node (nats-py's default, 2 min x 3, leaves it stuck)
        "ping_interval": PING_INTERVAL_S,
        "max_outstanding_pings": _MAX_PINGS_OUT,
    }
    tls = _tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    if settings.nats_creds:
        creds = Path(settings.nats_creds).expanduser()
        if not creds.is_file():
            raise Unauthenticated(
                f"cannot connect to NATS at {settings.nats_url}: the credentials file {creds}"
                f" does not exist; check {_setting(settings, 'nats_creds')}"
            )
        options["user_credentials"] = str(creds)
    elif settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password or ""
        if _USER.fullmatch(settings.nats_user):
            options["inbox_prefix"] = f"_INBOX_{settings.nats_user}"
    return options


def _tls_wanted(settings: Settings) -> bool:
    """Whether this client must speak TLS: a TLS setting is given or a URL says ``tls://``."""
    urls = [u.strip().lower() for u in settings.nats_url.split(",")]
    return bool(
        settings.tls_ca
        or settings.tls_cert
        or settings.tls_key
        or any(u.startswith("tls://") for u in urls)
    )


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The client's ``SSLContext`` from ``tls_ca``, ``tls_cert``, ``tls_key`` (None when no TLS
    is configured: nats-py then still upgrades, with the system's store, a server that asks)."""
    from cairn.settings import check_tls_pair
    from cairn.tls import client_context

    if not _tls_wanted(settings):
        return None
    check_tls_pair(settings)
    paths: dict[str, str | None] = {}
    for name in ("tls_ca", "tls_cert", "tls_key"):
        value = getattr(settings, name)
        if value is None:
            paths[name] = None
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            raise InvalidInput(
                f"cannot connect to NATS at {settings.nats_url}: the file {path} does not"
                f" exist; check {_setting(settings, name)}"
            )
        paths[name] = str(path)
    try:
        return client_context(paths["tls_ca"], paths["tls_cert"], paths["tls_key"])
    except (ssl.SSLError, OSError, ValueError) as exc:
        named = [f"{n}={p}" for n, p in paths.items() if p is not None]
        raise InvalidInput(
            f"cannot connect to NATS at {settings.nats_url}: cannot load the TLS files"
            f" ({', '.join(named)}): {exc}"
        ) from exc


def _speaks_tls(nc: NATS) -> bool:
    """Whether ``nc``'s link is TLS (nats-py upgrades only when the server asks for it)."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    if writer is not None:
        return writer.get_extra_info("ssl_object") is not None
    return bool(getattr(nc, "_server_info", {}).get("tls_required"))


class _Client(NATS):
    """nats-py's client, which with TLS configured never sends CONNECT (the credentials) over
    a link that is not TLS: nats-py upgrades only when the server's INFO asks for it, so a
    server without TLS (or someone between who strips it) would otherwise get the password in
    plain text. The refusal is a ``SecureConnWantedError``: the first connect fails with it,
    a reconnect tries again later (and succeeds once TLS is offered again). It also closes a
    failed attempt's socket before the next one."""

    def __init__(self, *, require_tls: bool) -> None:
        super().__init__()
        self.require_tls = require_tls

    def _connect_command(self) -> bytes:
        if self.require_tls and not _speaks_tls(self):
            raise nats.errors.SecureConnWantedError()
        return super()._connect_command()

    async def _connect_to_server(self, s: Any) -> None:
        """nats-py reuses its transport for every attempt and replaces the stream of a failed
        one without closing it (a reconnect the server refused, as it refuses a removed user
        or a revoked API token): closed here, before the next attempt, so no socket leaks."""
        transport: Any = self._transport  # nats-py's transports are not annotated
        if transport is not None:
            transport.close()
        await super()._connect_to_server(s)


async def _own_jetstream(nc: NATS, settings: Settings) -> bool:
    """Whether this user's account has JetStream of its own; people's has not, and reaches
    the services' API imported under ``PEOPLE_JS_PREFIX``."""
    if settings.nats_user == SCORER_USER:  # may not ask: it uses no JetStream
        return True
    try:
        msg = await nc.request("$JS.API.INFO", b"", timeout=min(settings.request_timeout, 2.0))
        error = json.loads(msg.data).get("error") or {}
    except (nats.errors.Error, ValueError, TimeoutError) as exc:  # no JetStream here at all
        log.debug("jetstream_info_failed", error=repr(exc))
        return True
    return bool(error.get("err_code") != _JS_NOT_ENABLED)


async def _connect_once(settings: Settings, options: dict[str, Any], budget: float) -> Connection:
    """One pass over the servers; ``_Failed`` with the most telling cause if none takes us."""
    nc = _Client(require_tls="tls" in options)
    watch = _Watch(nc, settings.nats_url, options["name"], len(options["servers"]))
    watch.client_cert = settings.tls_cert is not None
    # nats-py types connect_timeout as int but waits with it as a float; it bounds each step
    # of a connect, asyncio.timeout all of them together
    per_step: dict[str, Any] = {"connect_timeout": budget}
    try:
        async with asyncio.timeout(budget):
            await nc.connect(
                **options,
                **per_step,
                error_cb=watch.error,
                disconnected_cb=watch.disconnected,
                reconnected_cb=watch.reconnected,
                reconnect_to_server_handler=watch.next_server,
            )
    except BaseException as exc:
        await watch.discard()
        if isinstance(exc, TimeoutError):
            raise _Failed("unreachable", f"no answer within {budget:.1f}s", exc) from exc
        if isinstance(exc, (nats.errors.Error, ValueError)):  # raised before any server
            raise InvalidInput(f"cannot connect to NATS at {settings.nats_url}: {exc}") from exc
        raise
    conn = Connection(nc=nc, js=nc.jetstream(timeout=settings.request_timeout), settings=settings)
    watch.opened(conn)
    try:
        if not await _own_jetstream(nc, settings):
            conn.own_jetstream = False
            conn.js = nc.jetstream(timeout=settings.request_timeout, prefix=PEOPLE_JS_PREFIX)
    except BaseException:
        await watch.discard()
        raise
    return conn


class _Failed(Exception):
    """Why a connect attempt failed, in Cairn's terms; carried out of nats-py's connect loop
    by ``_Watch.error``."""

    RANK: ClassVar[dict[str, int]] = {
        "unreachable": 0,
        "plaintext": 1,
        "tls": 1,
        "tls_untrusted": 1,
        "tls_name": 1,
        "tls_client_required": 2,
        "tls_client_refused": 2,
        "refused": 2,
    }

    def __init__(self, kind: str, detail: str, cause: BaseException) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.cause = kind, " ".join(detail.split()), cause

    @property
    def retry(self) -> bool:
        """Only a server that does not answer may answer later; a refusal stays a refusal."""
        return self.kind == "unreachable"

    def error(self, settings: Settings, elapsed_s: float) -> CairnError:
        head = f"cannot connect to NATS at {settings.nats_url}"
        if self.kind == "refused":
            return Unauthenticated(f"{head}: {_refusal(settings, self.detail)}")
        if self.kind.startswith("tls") or self.kind == "plaintext":
            return _tls_error(self.kind, head, self.detail, settings)
        cause = f"no server answers ({self.detail}; tried for {elapsed_s:.1f}s)"
        if settings.config_file:
            fix = f"start one with `cairn up`, or fix nats_url in {settings.config_file}"
            return Unavailable(f"{head}: {cause}; {fix}")
        return Unavailable(
            f"{head}: {cause}, and no settings file was read ({_written_by_up(settings)});"
            " start one with `cairn up`, or set CAIRN_CONFIG or CAIRN_NATS_URL"
        )


def _tls_error(kind: str, head: str, detail: str, settings: Settings) -> CairnError:
    """One line for a failed TLS handshake: what the server or this client refused, and which
    setting fixes it."""
    made_by = "`cairn cluster certs` makes them; `cairn up --tls` writes them under <home>/tls"
    if kind == "tls_untrusted":
        if settings.tls_ca:
            fix = (
                f"its certificate is not signed by the CA in {settings.tls_ca}; check"
                f" {_setting(settings, 'tls_ca')}"
            )
        else:
            fix = (
                "no CA file is set, so the system's store was used; set"
                f" {_setting(settings, 'tls_ca')} to the server's CA file ({made_by})"
            )
        return Unavailable(f"{head}: the server's certificate is not trusted ({detail}): {fix}")
    if kind == "tls_name":
        return Unavailable(
            f"{head}: the server's certificate does not name the host of the URL ({detail}):"
            " connect with a name the certificate holds, or make the server's certificate"
            " again with that name (`cairn cluster certs --host NAME --force`)"
        )
    if kind == "tls_client_required":
        return Unauthenticated(
            f"{head}: the server requires a client certificate (mutual TLS) and none was"
            f" given ({detail}); set tls_cert and tls_key ({made_by}, --client NAME)"
        )
    if kind == "tls_client_refused":
        return Unauthenticated(
            f"{head}: the server refused the client certificate {settings.tls_cert} ({detail});"
            f" it must be signed by the server's CA: check {_setting(settings, 'tls_cert')}"
        )
    if kind == "plaintext":
        return Unavailable(f"{head}: {detail}; check nats_url and the server's tls block")
    return Unavailable(
        f"{head}: TLS failed ({detail}); check the server's certificate and"
        f" {_setting(settings, 'tls_ca')}"
    )


def _refusal(settings: Settings, detail: str) -> str:
    if not (settings.nats_creds or settings.nats_user):
        refused = f"the server wants credentials and none were given ({detail})"
        if settings.config_file:
            return f"{refused}; add nats_user and nats_password to {settings.config_file}"
        return (
            f"{refused}, and no settings file was read ({_written_by_up(settings)}); wait for"
            " `cairn up` to be ready, or set CAIRN_CONFIG"
        )
    if settings.nats_creds:
        refused, names = f"the credentials in {settings.nats_creds}", "CAIRN_NATS_CREDS"
    else:
        refused = f"the password of user {settings.nats_user!r}"
        names = "CAIRN_NATS_USER and CAIRN_NATS_PASSWORD"
    refused = f"the server refused {refused} ({detail})"
    if settings.config_file:
        return f"{refused}; check the credentials in {settings.config_file}"
    return f"{refused}; check {names} (no settings file was read; {_written_by_up(settings)})"


def _written_by_up(settings: Settings) -> str:
    return f"`cairn up` writes {settings.home_path / 'config.json'}"


def _setting(settings: Settings, name: str) -> str:
    """Where to fix one setting: the file it was read from, else its variable."""
    if settings.config_file:
        return f"{name} in {settings.config_file}"
    return f"CAIRN_{name.upper()} (no settings file was read; {_written_by_up(settings)})"


def _classify(err: BaseException, nc: NATS, client_cert: bool = False) -> _Failed:
    """A failed attempt, by the class of what nats-py raised."""
    tls = _classify_tls(err, nc, client_cert)
    if tls is not None:
        return tls
    if isinstance(err, ConnectionRefusedError):
        return _Failed("unreachable", "connection refused", err)
    if isinstance(err, socket.gaierror):
        return _Failed("unreachable", f"cannot resolve the host: {err.strerror}", err)
    if isinstance(err, TimeoutError):
        return _Failed("unreachable", "no answer in time", err)
    if isinstance(err, OSError):
        return _Failed("unreachable", err.strerror or str(err), err)
    if isinstance(err, nats.errors.StaleConnectionError):
        return _Failed("unreachable", "the server closed the connection", err)
    if isinstance(err, nats.errors.AuthorizationError):
        return _Failed("refused", str(err), err)
    if isinstance(err, nats.errors.Error) and nc.connected_server_version.major > 0:
        # the server introduced itself, then answered CONNECT with -ERR: it refused us
        return _Failed("refused", str(err), err)
    return _Failed("unreachable", f"not a NATS server? {err}", err)


def _classify_tls(err: BaseException, nc: NATS, client_cert: bool) -> _Failed | None:
    """A failed TLS handshake, by what OpenSSL reported; None if ``err`` is none."""
    if isinstance(err, ssl.SSLCertVerificationError):
        message = str(err.verify_message)
        if "mismatch" in message.lower():  # "Hostname mismatch", "IP address mismatch"
            return _Failed("tls_name", message, err)
        return _Failed("tls_untrusted", message, err)
    if isinstance(err, ssl.SSLError):
        reason = str(getattr(err, "reason", "") or "")
        if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED" or "PEER_DID_NOT_RETURN" in reason:
            return _Failed("tls_client_required", reason.lower().replace("_", " "), err)
        if reason in _CLIENT_CERT_REFUSED:
            return _Failed("tls_client_refused", reason.lower().replace("_", " "), err)
    if isinstance(err, (ConnectionResetError, BrokenPipeError)) and _speaks_tls(nc):
        # under TLS 1.3 a server checks the client's certificate (or its absence) after the
        # client saw the handshake complete: the client sees an alert, or only the
        # connection drop, whichever comes first
        detail = "the server closed the connection after the TLS handshake"
        return _Failed("tls_client_refused" if client_cert else "tls_client_required", detail, err)
    if isinstance(err, nats.errors.SecureConnWantedError):
        detail = (
            "TLS is configured (tls_ca, tls_cert, tls_key or a tls:// URL) but the server does"
            " not offer it; the credentials were not sent in plain text"
        )
        return _Failed("plaintext", detail, err)
    secure = (
        nats.errors.SecureConnRequiredError,
        nats.errors.SecureConnWantedError,
        nats.errors.SecureConnFailedError,
    )
    if isinstance(err, (ssl.SSLError, *secure)):
        return _Failed("tls", str(err) or type(err).__name__, err)
    return None


#: OpenSSL's names for a server's alert that it refuses the client's certificate
_CLIENT_CERT_REFUSED = {
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "TLSV1_ALERT_DECRYPT_ERROR",
}


class _Watch:
    """nats-py's callbacks for one client. While it connects, a failed attempt on every
    server ends ``connect`` with ``_Failed``; once open, an outage is logged when it begins
    and when it ends, each failed reconnect attempt only at debug level."""

    def __init__(self, nc: NATS, url: str, name: str, servers: int) -> None:
        self.nc, self.url, self.name, self.servers = nc, url, name, servers
        self.state = "connecting"
        self.failed: list[_Failed] = []
        self.conn: Connection | None = None
        self.down_since: float | None = None
        self.last_failure: type[BaseException] | None = None
        #: this client presents a certificate (mutual TLS)
        self.client_cert = False
        #: host:port of the server whose link was lost last
        self.lost: str | None = None

    def opened(self, conn: Connection) -> None:
        self.state, self.conn = "open", conn

    async def discard(self) -> None:
        """Close what the failed attempt opened. Bounded: after a failed TLS upgrade, nats-py
        waits for a stream that never reports itself closed (its socket is closed by then)."""
        self.state = "discarded"
        try:
            async with asyncio.timeout(_DISCARD_S):
                await self.nc.close()
        except Exception as exc:  # nothing was open, or the wait above
            log.debug("close_failed", error=repr(exc))

    async def error(self, err: Exception) -> None:
        if self.state == "connecting":
            self.failed.append(_classify(err, self.nc, self.client_cert))
            if len(self.failed) >= self.servers:
                raise max(self.failed, key=lambda f: _Failed.RANK[f.kind])
            return
        if self.conn is None:
            return
        self.conn.note_error(err)
        if self.down_since is None and not isinstance(err, _LINK_ERRORS):
            log.warning("nats_error", name=self.name, error=str(err))
            return
        if self.down_since is not None and not isinstance(err, _LINK_ERRORS):
            if type(err) is not self.last_failure:  # e.g. the server is back, refusing us
                log.warning("nats_reconnect_failing", name=self.name, error=str(err))
            self.last_failure = type(err)
        log.debug("nats_link_error", name=self.name, error=repr(err))

    async def disconnected(self) -> None:
        if self.state != "open" or self.nc.is_closed or self.nc.is_draining:
            return
        if self.conn is not None:
            self.conn.link_lost()
        # nats-py's pool has no public name for the server just lost; it is tried last
        lost = getattr(getattr(self.nc, "_current_server", None), "uri", None)
        self.lost = getattr(lost, "netloc", None)
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("nats_disconnected", name=self.name, url=self.url)

    async def reconnected(self) -> None:
        if self.conn is not None:
            self.conn.link_changed = time.monotonic()
        if self.down_since is not None:
            outage = round(time.monotonic() - self.down_since, 1)
            log.info("nats_reconnected", name=self.name, url=self.url, outage_s=outage)
        self.down_since, self.last_failure = None, None

    def next_server(
        self, servers: list[Server], info: dict[str, Any]
    ) -> tuple[Server | None, float]:
        """Reconnect to the server tried least since it last failed, after a backoff; among
        those, one other than the server just lost (in a cluster the client is on a live node
        after one backoff of 0.05-0.1 s, not after first trying the one that went away)."""
        server = min(servers, key=lambda s: (s.reconnects, s.uri.netloc == self.lost))
        return server, _backoff(server.reconnects)
