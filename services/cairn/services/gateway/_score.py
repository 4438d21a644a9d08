"""An online endpoint's public address: ``POST /endpoints/<workspace>/<endpoint>/score``.

The caller shows one of the endpoint's keys (``Authorization: Bearer <key>``) or a Cairn API
token (or a studio session) of a member of the workspace. The gateway asks the endpoint's
traffic (``endpoint.route``): with a key, over its scoring connection (the scheduler checks
the key's digest and answers 401 otherwise); with a token, over that person's own
connection (the membership check). It picks a deployment by weight for each request (or takes
the one the ``azureml-model-deployment`` header names) and sends
the body, unchanged, to that deployment's queue group over NATS request/reply; whichever
replica takes it answers. A mirrored deployment (``mirror_traffic``) gets a copy of its
share of requests, sent alongside and its answer dropped; at most
``gateway_mirror_max_inflight`` copies are on their way at once, and one beyond them is dropped
and counted (``Scorer.mirrors_dropped``, ``cairn_gateway_mirror_dropped_total`` on /metrics),
so a slow mirrored deployment cannot exhaust the gateway. The replica's status
(``Cairn-Status``: 200, 400 for a body its ``run()`` cannot read, 500 when ``run()`` raised)
and body come back as they are; an answer larger than a NATS message (the server's
``max_payload``) comes in chunks (``Cairn-Chunk``/``Cairn-Chunks``) on the request's own
inbox and is put back together here, up to the replica's limit of 64 MiB. Each request
carries ``Cairn-Timeout-Ms``, how long the gateway still waits for its answer: a replica
drops one whose caller has given up instead of computing it.

Limits: a body over ``gateway_score_max_bytes`` is 413 before anything is asked; a body that
is not JSON is 400 (once the caller is known). **Retry budget**: when no replica of the
chosen deployment is subscribed (none ready yet, or one being replaced by the scheduler),
the request is sent again after 0.05 s, doubling up to 1 s, until ``gateway_score_retry_s``
(10 s by default) has passed, then answered 503; one the replica took but did not answer
within the deployment's ``request_timeout_s`` is 504 and is not sent again (``run()`` may
have had effects). A replica that is busy (its workers and its queue full, or restarting:
429, nothing ran, which its agent alone says with ``Cairn-Unrun: 1``; a replica's own status
cannot say it) is asked again within the same budget, as the queue group may pick another
replica: as soon as an answer of that deployment comes back through this gateway (a place
may be free; the longest waiting request first), at most after the same delays; past it, the
caller gets the 429. An endpoint's route asked with a key is kept a short while (``_routes``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from cairn.bus import Connection, connect
from cairn.errors import Unavailable
from cairn.log import get_logger
from cairn.proto import subjects
from cairn.proto.serving import RouteEndpoint
from cairn.rpc import SCORER_USER, Client
from cairn.services.gateway._pool import Principal
from cairn.services.gateway._routes import RouteCache, route_key
from cairn.serving import MAX_ANSWER_BYTES, MAX_ANSWER_CHUNKS
from cairn.settings import Settings
from cairn.telemetry import MIRROR_DROPPED

__all__ = ["SCORE_PATH", "EndpointKey", "Scorer", "score", "swagger"]

log = get_logger("cairn.gateway")
#: the scoring route's pattern (its bearer value may be an endpoint's key, not a token)
SCORE_PATH = r"^/endpoints/[^/]+/[^/]+/(score|swagger\.json)$"
STATUS_HEADER = "Cairn-Status"
#: an answer larger than a NATS message comes in chunks: the chunk's index, how many there are
CHUNK_HEADER = "Cairn-Chunk"
CHUNKS_HEADER = "Cairn-Chunks"
#: the server's own status header, and its status when no one listens
NATS_STATUS = "Status"
NO_RESPONDERS = "503"
#: how many milliseconds the gateway still waits for a request's answer (a replica drops a
#: request whose caller has given up)
TIMEOUT_HEADER = "Cairn-Timeout-Ms"
#: the answer header (``1``) with which a replica's agent says that nothing ran (its own 429):
#: only such an answer is asked again of the deployment
UNRUN_HEADER = "Cairn-Unrun"
#: the endpoints' aggregate kind (their events' subjects: ``cairn.ev.<ws>.endpoint.<name>``)
ENDPOINT_KIND = "endpoint"


class _Unrun(Exception):
    """An answer of a replica's agent that nothing ran (``Cairn-Unrun``): the request may
    go to another replica."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status, self.body = status, body


@dataclass(frozen=True)
class EndpointKey:
    """A scoring request's bearer value that is no Cairn token: an endpoint's key, which
    only the scheduler can check (it holds the digests)."""

    key: str


class Scorer:
    """The gateway's scoring connection, as ``cairn-scorer``: it may send requests to
    deployments and ask an endpoint's traffic with a key, nothing else. Opened on first use;
    without its password (``scorer_password``, or the home's ``credentials.json``) scoring
    answers 503 and the rest of the gateway is unaffected."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.gateway_route_seed)
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        #: copies of requests on their way to a mirrored deployment (answers dropped)
        self._mirrors: set[asyncio.Task[None]] = set()
        #: copies not sent because ``gateway_mirror_max_inflight`` were on their way
        self.mirrors_dropped = 0
        #: requests answered 429 (their replica busy), waiting to be asked again, by subject
        self._waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}
        #: routes asked with a key, dropped on their endpoint's events (``_routes``)
        self.routes = RouteCache(settings.gateway_route_cache_s)
        #: the link's ``link_changed`` when the endpoints' events were last subscribed to;
        #: None: not subscribed (no route is kept)
        self._watching: float | None = None

    def _password(self) -> str | None:
        if self.settings.scorer_password:
            return self.settings.scorer_password
        path = self.settings.home_path / "credentials.json"
        try:
            found = json.loads(path.read_text()).get("scorer_password")
        except (OSError, ValueError):
            return None
        return found if isinstance(found, str) and found else None

    async def connection(self) -> Connection:
        async with self._lock:
            if self._conn is not None and self._conn.nc.is_connected:
                return self._conn
            password = self._password()
            if password is None:
                raise Unavailable(
                    "this gateway has no scoring credentials (scorer_password): it cannot"
                    " reach deployments"
                )
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
            settings = msgspec.structs.replace(
                self.settings, nats_user=SCORER_USER, nats_password=password
            )
            self._conn = await connect(settings, name="cairn-gateway-scorer")
            await self._watch(self._conn)
            return self._conn

    async def _watch(self, conn: Connection) -> None:
        """Follow the endpoints' events, so that a cached route is dropped when its endpoint
        changes; when the server refuses the subscription, routes are not cached."""
        self.routes.clear()
        self._watching = None
        if self.settings.gateway_route_cache_s <= 0:
            return
        watched = subjects.events_of_kind(ENDPOINT_KIND)
        await conn.nc.subscribe(watched, cb=self._changed)
        await conn.nc.flush()
        if conn.denied(watched):
            log.warning("route_cache_off", reason=f"the scoring user may not read {watched}")
            return
        self._watching = conn.link_changed

    async def _changed(self, msg: Msg) -> None:
        tokens = msg.subject.split(".")  # cairn.ev.<ws>.endpoint.<endpoint>
        if len(tokens) == 5:
            self.routes.invalidate(tokens[2], tokens[4])
        else:
            self.routes.clear()

    async def route(
        self, workspace: str, endpoint: str, key: str, deployment: str | None
    ) -> dict[str, Any]:
        """The endpoint's route for a caller with ``key``: kept from an earlier answer while
        no event of the endpoint came (``_routes``), else asked of the scheduler."""
        conn = await self.connection()
        if self._watching is not None and conn.link_changed != self._watching:
            self.routes.clear()  # events may have been lost while the link was down
            if conn.nc.is_connected:
                self._watching = conn.link_changed
        cached = self._watching is not None and conn.nc.is_connected
        ck = route_key(workspace, endpoint, key, deployment)
        if cached:
            found = self.routes.get(ck)
            if found is not None:
                return found
        generation = self.routes.generation
        query = RouteEndpoint(endpoint=endpoint, key=key, deployment=deployment)
        route: dict[str, Any] = (await Client(conn, workspace).ask(query)).data
        if cached:
            self.routes.put(ck, route, generation)
        return route

    async def close(self) -> None:
        for task in list(self._mirrors):
            task.cancel()
        if self._mirrors:
            await asyncio.gather(*self._mirrors, return_exceptions=True)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    def mirror(self, mirror: dict[str, int], subject_of: Any, body: bytes, timeout: float) -> None:
        """Send a copy of the request to the mirrored deployment, for its share of requests;
        its answer (or its absence) is dropped, and the caller does not wait for it. Beyond
        ``gateway_mirror_max_inflight`` copies on their way, a copy is dropped and counted."""
        for deployment, percent in mirror.items():
            if self.rng.random() * 100 >= percent:
                continue
            if len(self._mirrors) >= self.settings.gateway_mirror_max_inflight:
                self.mirrors_dropped += 1
                MIRROR_DROPPED.inc()
                log.warning(
                    "mirror_copy_dropped", deployment=deployment, total=self.mirrors_dropped
                )
                continue
            task = asyncio.create_task(self._copy(subject_of(deployment), body, timeout))
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)

    async def _copy(self, subject: str, body: bytes, timeout: float) -> None:
        conn = await self.connection()
        with contextlib.suppress(Exception):  # a mirror's failures are its own
            await conn.nc.request(subject, body, timeout=timeout, headers=_deadline(timeout))

    def choose(self, traffic: dict[str, int]) -> str:
        names = sorted(traffic)
        return self.rng.choices(names, weights=[traffic[n] for n in names])[0]

    async def forward(self, subject: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        """The chosen deployment's answer, retried while no replica listens or the one asked
        was busy (the budget)."""
        conn = await self.connection()
        deadline = time.monotonic() + self.settings.gateway_score_retry_s
        delay = 0.05
        woken = False
        while True:
            try:
                status, answer = await _ask_replica(conn.nc, subject, body, timeout)
            except NoRespondersError:
                if time.monotonic() + delay > deadline:
                    budget = self.settings.gateway_score_retry_s
                    return 503, _error(f"no replica answered within {budget:g} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except NatsTimeout:
                return 504, _error(f"no answer within {timeout:g} s")
            except _Unrun as unrun:  # its agent says nothing ran: another replica may
                if time.monotonic() + delay <= deadline:
                    woken = await self._room(subject, delay, first=woken)
                    delay = min(delay * 2, 1.0)
                    continue
                status, answer = unrun.status, unrun.body
            self._answered(subject)
            return status, answer

    async def _room(self, subject: str, delay: float, *, first: bool = False) -> bool:
        """Until an answer of ``subject``'s deployment comes back through this gateway (its
        replica may have a place again: the first request waiting is woken), at most
        ``delay`` seconds; True when woken. ``first``: at the head of the line (a request
        woken that found no place after all)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(subject, collections.deque())
        if first:
            waiters.appendleft(waiter)
        else:
            waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, delay)
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            if not waiters and self._waiting.get(subject) is waiters:
                del self._waiting[subject]

    def _answered(self, subject: str) -> None:
        waiters = self._waiting.get(subject)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


async def _ask_replica(nc: NATS, subject: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    """A replica's answer (status, body), put back together when it came in chunks; raises
    ``NoRespondersError`` when no replica listens, nats' ``TimeoutError`` past ``timeout``,
    ``_Unrun`` when its agent says nothing ran."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, pending_bytes_limit=2 * MAX_ANSWER_BYTES)
    try:
        await nc.publish(subject, body, reply=inbox, headers=_deadline(timeout))
        until = time.monotonic() + timeout
        parts: dict[int, bytes] = {}
        expected, size = 0, 0
        while True:
            msg = await sub.next_msg(timeout=max(until - time.monotonic(), 0.001))
            headers = msg.headers or {}
            if headers.get(NATS_STATUS) == NO_RESPONDERS and not msg.data:
                raise NoRespondersError
            raw = headers.get(STATUS_HEADER, "200")
            status = int(raw) if raw.isdigit() else 502
            count, index = headers.get(CHUNKS_HEADER), headers.get(CHUNK_HEADER, "")
            if count is None:
                if headers.get(UNRUN_HEADER) == "1":
                    raise _Unrun(status, msg.data)
                return status, msg.data
            # every chunk names the same count, within the bounds the replicas keep to, and
            # the whole stays within MAX_ANSWER_BYTES: a replica cannot make the gateway hold more
            fits = count.isdigit() and index.isdigit() and int(index) < int(count)
            fits = fits and int(count) <= MAX_ANSWER_CHUNKS and expected in (0, int(count))
            if fits and int(index) not in parts:
                size += len(msg.data)
            if not fits or size > MAX_ANSWER_BYTES:
                return 502, _error("a replica's answer came in chunks that do not fit together")
            expected = int(count)
            parts.setdefault(int(index), msg.data)
            if len(parts) == expected:
                return status, b"".join(parts[i] for i in range(expected))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _deadline(timeout: float) -> dict[str, str]:
    return {TIMEOUT_HEADER: str(int(timeout * 1000))}


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def _body(request: Request[Any, Any, Any], limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = await request.body()
    return None if len(body) > limit else body


@post("/endpoints/{workspace:str}/{endpoint:str}/score", status_code=200)
async def score(
    request: Request[Any, Any, Any], workspace: FromPath[str], endpoint: FromPath[str]
) -> Response[bytes]:
    scorer: Scorer = request.app.state.scorer
    settings: Settings = request.app.state.settings
    body = await _body(request, settings.gateway_score_max_bytes)
    if body is None:
        limit = settings.gateway_score_max_bytes
        return _json(413, _error(f"the body is over {limit} bytes"))
    named = request.headers.get(DEPLOYMENT_HEADER) or None
    route = await _route(request, workspace, endpoint, named)
    try:
        json.loads(body)
    except ValueError as exc:
        return _json(400, _error(f"the body is not JSON: {exc}"))
    traffic = {str(k): int(v) for k, v in route["traffic"].items() if int(v) > 0}
    if named is not None:  # the caller's choice (a deployment's test before its traffic)
        deployment = named
    elif not traffic:
        return _json(503, _error(f"endpoint {endpoint} sends no traffic to any deployment"))
    else:
        deployment = scorer.choose(traffic)
    timeout = float(route["timeouts"].get(deployment, 60.0)) + 1.0
    subject = subjects.serve(workspace, endpoint, deployment)
    mirror = {str(k): int(v) for k, v in route.get("mirror", {}).items()}
    if mirror and named is None:
        scorer.mirror(mirror, lambda d: subjects.serve(workspace, endpoint, d), body, timeout)
    status, answer = await scorer.forward(subject, body, timeout)
    return _json(status, answer, deployment)


#: the request header naming the deployment to score with (Azure's), whatever the traffic
DEPLOYMENT_HEADER = "azureml-model-deployment"


async def _route(
    request: Request[Any, Any, Any], workspace: str, endpoint: str, deployment: str | None = None
) -> dict[str, Any]:
    """The endpoint's traffic, asked as the caller: with its key over the scoring
    connection, or as the signed-in member (401 otherwise)."""
    scorer: Scorer = request.app.state.scorer
    user = request.scope.get("user")
    if isinstance(user, EndpointKey):
        return await scorer.route(workspace, endpoint, user.key, deployment)
    if not isinstance(user, Principal):
        raise NotAuthorizedException("show the endpoint's key: Authorization: Bearer <key>")
    query = RouteEndpoint(endpoint=endpoint, deployment=deployment)
    route: dict[str, Any] = (await Client(user.conn, workspace).ask(query)).data
    return route


@get("/endpoints/{workspace:str}/{endpoint:str}/swagger.json")
async def swagger(
    request: Request[Any, Any, Any], workspace: FromPath[str], endpoint: FromPath[str]
) -> dict[str, Any]:
    """The scoring address as an OpenAPI document (for the same callers as the address)."""
    await _route(request, workspace, endpoint)
    return {
        "openapi": "3.0.1",
        "info": {"title": endpoint, "version": "1.0"},
        "paths": {
            f"/endpoints/{workspace}/{endpoint}/score": {
                "post": {
                    "summary": "the entry script's run() on the request's JSON body",
                    "security": [{"bearer": []}],
                    "requestBody": {"content": {"application/json": {"schema": {}}}},
                    "responses": {
                        "200": {"description": "run()'s answer, as JSON"},
                        "400": {"description": "the body is not JSON"},
                        "401": {"description": "no valid key or token"},
                        "413": {"description": "the body is too large"},
                        "429": {"description": "every replica asked was busy"},
                        "500": {"description": "run() raised: {error}"},
                        "503": {
                            "description": "no replica answered within the retry budget, or"
                            " none had a free worker within max_queue_wait"
                        },
                        "504": {"description": "run() took longer than the deployment allows"},
                    },
                }
            }
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _json(status: int, body: bytes, deployment: str | None = None) -> Response[bytes]:
    headers = {"azureml-model-deployment": deployment} if deployment else None
    return Response(body, status_code=status, media_type="application/json", headers=headers)
