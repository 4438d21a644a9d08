"""Idempotent provisioning of Cairn's streams and KV buckets through the JetStream API.

How many replicas: the ``stream_replicas`` setting (``cairn cluster init`` writes the
cluster's into the settings it makes); without it, 3 when the server the connection reached
has cluster peers, 1 alone (:func:`cluster_replicas`; docs/design.md says why). A store whose
streams have fewer replicas than that (a single-node home brought onto a cluster) is refused
with ``UnderReplicated`` before anything is created or changed: the admin moves it with
``cairn cluster migrate`` (:func:`migrate_replicas`), which scales each stream up and waits
until its new replicas hold every message.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgspec
import nats.errors
from nats.js.api import KeyValueConfig
from nats.js.errors import BadRequestError, ServiceUnavailableError

from cairn.bus._connect import Connection, _backoff, _stopped
from cairn.errors import CairnError, PermissionDenied, Unavailable, UnderReplicated
from cairn.log import get_logger
from cairn.proto.streams import (
    AGENTS_BUCKET,
    JOBS,
    KV_BUCKETS,
    STREAMS,
    BucketConfig,
    ConsumerConfig,
    StreamConfig,
)

__all__ = [
    "AGENT_STREAMS",
    "CLUSTER_REPLICAS",
    "cluster_replicas",
    "ensure_bucket",
    "ensure_consumer",
    "ensure_stream",
    "migrate_replicas",
    "provision",
    "stream_names",
    "wait_for_streams",
]

_STREAM_NOT_FOUND = 10059
_CONSUMER_NOT_FOUND = 10014
#: the streams an agent uses (its compute target's tickets, its heartbeat bucket), which it
#: may not create: it waits for a service to provision them
AGENT_STREAMS = (JOBS.name, f"KV_{AGENTS_BUCKET.bucket}")
#: the consumer a stream is asked about to learn whether the stream exists (none has this
#: name: the answer is "consumer not found" when it does, "stream not found" when it does not)
_PROBE_CONSUMER = "cairn-stream-probe"
#: the replicas of every stream and bucket on a cluster: one node may be lost (or be down for
#: maintenance) without losing a write or the quorum
CLUSTER_REPLICAS = 3
MIGRATE_COMMAND = "cairn cluster migrate"
#: "no suitable peers for placement": a cluster still forming (a peer not yet known to the
#: meta leader, or restarting) cannot place the replicas now; it can once the peer is back
_NO_PEERS = 10005


class _NoPeersYet(Exception):
    """JetStream answered that it cannot place a stream's replicas now."""


#: no answer in time, nobody to answer, "temporarily unavailable" or no peers yet: JetStream is
#: busy or has no quorum yet; asked again later (never a refusal of what was asked)
_NOT_NOW = (TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError, _NoPeersYet)

log = get_logger("cairn.bus")


async def _api(
    conn: Connection, subject: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    payload = json.dumps(body).encode() if body is not None else b""
    try:
        msg = await conn.nc.request(subject, payload, timeout=conn.settings.request_timeout)
    except TimeoutError as exc:
        if conn.denied(subject):  # the server said so only to the error callback
            who = conn.settings.nats_user or "this user"
            raise PermissionDenied(f"{who} may not publish to {subject}") from exc
        raise
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


def cluster_replicas(conn: Connection) -> int:
    """How many replicas each stream and bucket keeps: the ``stream_replicas`` setting when it
    is given (``cairn cluster init`` writes it), else a guess from the INFO of the server
    ``conn`` reached: ``CLUSTER_REPLICAS`` when it announced cluster peers to connect to
    (``connect_urls``), 1 otherwise.

    The INFO's ``cluster`` field alone says nothing: a single server with a leafnode remote
    reports ``"leaf"``, and a server whose routes are configured but not (yet) connected names
    its cluster too; ``$JS.API.INFO`` reports no cluster size at all (nats-server 2.15.1). The
    guess depends on the routes being up when the client connected, and a cluster whose
    servers set ``no_advertise`` announces no peers: hence the explicit setting."""
    if conn.settings.stream_replicas is not None:
        return conn.settings.stream_replicas
    info: dict[str, Any] = getattr(conn.nc, "_server_info", None) or {}
    return CLUSTER_REPLICAS if info.get("connect_urls") else 1


def stream_names() -> list[str]:
    """Cairn's streams and the streams under its KV buckets (``KV_<bucket>``)."""
    return [s.name for s in STREAMS] + [f"KV_{b.bucket}" for b in KV_BUCKETS]


async def _stream_info(conn: Connection, name: str) -> dict[str, Any] | None:
    """The stream's info, None when it does not exist."""
    info = await _api(conn, f"$JS.API.STREAM.INFO.{name}")
    error = info.get("error")
    if error and error.get("err_code") == _STREAM_NOT_FOUND:
        return None
    if error:
        raise CairnError(f"stream {name}: {error.get('description')}")
    return info


async def ensure_stream(
    conn: Connection, definition: StreamConfig, *, replicas: int | None = None
) -> str:
    """Create the stream, or update it where its settings drifted. Returns what was done.
    ``replicas`` (default: the contract's) is what a new stream gets; an existing stream
    with more keeps them (an operator's R5 is not scaled down)."""
    info = await _stream_info(conn, definition.name)
    return await _ensure(conn, definition, info, replicas)


async def _ensure(
    conn: Connection, definition: StreamConfig, info: dict[str, Any] | None, replicas: int | None
) -> str:
    name = definition.name
    want = replicas if replicas is not None else definition.num_replicas
    have = _replicas(info) if info is not None else 0
    definition = msgspec.structs.replace(definition, num_replicas=max(want, have))
    body = definition.to_api()
    if info is None:
        action, reply = "created", await _api(conn, f"$JS.API.STREAM.CREATE.{name}", body)
    elif all(info["config"].get(k) == v for k, v in body.items()):
        return "unchanged"
    else:
        action, reply = "updated", await _api(conn, f"$JS.API.STREAM.UPDATE.{name}", body)
    if "error" in reply:
        text = f"cannot provision stream {name}: {reply['error'].get('description')}"
        if reply["error"].get("err_code") == _NO_PEERS:
            raise _NoPeersYet(text)
        raise CairnError(text)
    return action


def _replicas(info: dict[str, Any]) -> int:
    return int(info["config"].get("num_replicas") or 1)


async def ensure_bucket(
    conn: Connection, bucket: BucketConfig, *, replicas: int | None = None
) -> str:
    """Create the KV bucket, or update its stream (``KV_<bucket>``) where the contract's
    settings drifted or it has fewer than ``replicas`` (default 1); one with more keeps them
    (a store migrated to R5 still starts). Returns what was done."""
    name = f"KV_{bucket.bucket}"
    info = await _stream_info(conn, name)
    want = replicas if replicas is not None else 1
    if info is None:
        config = KeyValueConfig(
            bucket=bucket.bucket,
            history=bucket.history,
            ttl=bucket.ttl_s,
            description=bucket.description,
            direct=True,
            replicas=want,
        )
        try:
            await conn.js.create_key_value(config)
        except BadRequestError as exc:
            text = f"cannot provision bucket {bucket.bucket}: {exc}"
            if exc.err_code == _NO_PEERS:
                raise _NoPeersYet(text) from exc
            raise CairnError(text) from exc
        return "created"
    contract = {
        "num_replicas": max(want, _replicas(info)),
        "max_msgs_per_subject": bucket.history,
        "max_age": int(bucket.ttl_s * 1_000_000_000),
        "description": bucket.description,
        "allow_direct": True,
    }
    if all(info["config"].get(k) == v for k, v in contract.items()):
        return "unchanged"
    reply = await _api(conn, f"$JS.API.STREAM.UPDATE.{name}", {**info["config"], **contract})
    if "error" in reply:
        raise CairnError(
            f"cannot provision bucket {bucket.bucket}: {reply['error'].get('description')}"
        )
    return "updated"


async def ensure_consumer(conn: Connection, stream: str, config: ConsumerConfig) -> None:
    """Create the durable consumer, or update it to ``config``; safe to repeat."""
    name = config.durable_name
    body = {"stream_name": stream, "config": config.to_api()}
    reply = await _api(conn, f"$JS.API.CONSUMER.CREATE.{stream}.{name}", body)
    if "error" in reply:
        raise CairnError(f"cannot provision consumer {name}: {reply['error'].get('description')}")


async def _under_replicated(conn: Connection, wanted: int) -> dict[str, int]:
    """The existing streams (and buckets' streams) with fewer than ``wanted`` replicas."""
    short = {}
    for name in stream_names():
        info = await _stream_info(conn, name)
        have = _replicas(info) if info is not None else wanted
        if have < wanted:
            short[name] = have
    return short


async def provision(
    conn: Connection,
    *,
    replicas: int | None = None,
    stop: asyncio.Event | None = None,
    patience_s: float = 60.0,
) -> dict[str, str]:
    """Make every stream and bucket exist with the contract's settings; safe to repeat.

    ``replicas`` (default :func:`cluster_replicas`) is how many copies each keeps. An existing
    stream with fewer is ``UnderReplicated``, checked before anything is created or changed.

    A request JetStream does not answer in time is asked again (the whole pass: each step is
    create-or-update) with backoff until it is answered, logged once, or until ``stop`` is
    set (a service: it waits as long as it runs), or, without ``stop`` (a command, a test: a
    cluster just started may not answer its first requests), until ``patience_s`` have passed
    since the first: then it is ``Unavailable``. Error replies are raised at once.
    """
    attempt = 0
    give_up = asyncio.get_running_loop().time() + patience_s
    while True:
        try:
            done = await _provision_once(conn, replicas)
        except _NOT_NOW as exc:
            cause = f"{type(exc).__name__}: {exc}".rstrip(": ")
            error = Unavailable(
                f"JetStream did not answer the provisioning of the streams ({cause})"
            )
            if stop is None and asyncio.get_running_loop().time() >= give_up:
                raise error from exc
            if attempt == 0:
                log.warning("provision_retrying", cause=cause)
            if await _stopped(stop, _backoff(attempt)):
                raise error from exc
            attempt += 1
            continue
        if attempt:
            log.info("provisioned", attempts=attempt + 1)
        return done


async def _provision_once(conn: Connection, replicas: int | None) -> dict[str, str]:
    wanted = replicas if replicas is not None else cluster_replicas(conn)
    short = await _under_replicated(conn, wanted)
    if short:
        listed = ", ".join(f"{name} ({have})" for name, have in short.items())
        if replicas is not None:
            why = f"{wanted} replicas per stream were asked for"
        elif conn.settings.stream_replicas is not None:
            where = f" ({conn.settings.config_file})" if conn.settings.config_file else ""
            why = f"the stream_replicas setting{where} asks for {wanted} replicas per stream"
        else:
            why = f"the server has cluster peers, so its streams keep {wanted} replicas"
        raise UnderReplicated(
            f"{why}, but these have fewer: {listed}. Cairn does not run a cluster on fewer"
            " copies than it was set up with; as the"
            f" admin, run `{MIGRATE_COMMAND}` (ops/README.md, 'Moving a single-node home onto"
            " a cluster') to give each stream its replicas, then start the services again"
        )
    done = {}
    for definition in STREAMS:
        info = await _stream_info(conn, definition.name)
        done[definition.name] = await _ensure(conn, definition, info, wanted)
    for bucket in KV_BUCKETS:
        done[bucket.bucket] = await ensure_bucket(conn, bucket, replicas=wanted)
    return done


async def migrate_replicas(
    conn: Connection, *, replicas: int | None = None, timeout: float = 120.0
) -> dict[str, tuple[int, int]]:
    """Scale every existing Cairn stream (and bucket) with fewer than ``replicas`` (default
    :func:`cluster_replicas`) up to that count (``$JS.API.STREAM.UPDATE``: the admin's alone),
    then wait until each new replica is current (holds every message), and so are the
    replicas of every durable consumer on it (a consumer follows its stream's replicas; its
    acknowledged positions would be lost with a node otherwise). Returns, per stream,
    its replicas before and after; a stream that had enough is (n, n). Safe to repeat."""
    wanted = replicas if replicas is not None else cluster_replicas(conn)
    done: dict[str, tuple[int, int]] = {}
    for name in stream_names():
        info = await _stream_info(conn, name)
        if info is None:
            continue
        have = int(info["config"].get("num_replicas", 1))
        if have < wanted:
            config = {**info["config"], "num_replicas": wanted}
            reply = await _api(conn, f"$JS.API.STREAM.UPDATE.{name}", config)
            if "error" in reply:
                raise CairnError(
                    f"cannot give stream {name} {wanted} replicas:"
                    f" {reply['error'].get('description')}"
                )
        done[name] = (have, max(have, wanted))
    deadline = time.monotonic() + timeout
    for name, (_, after) in done.items():
        await _wait_current(conn, name, after, deadline)
    for name, (_, after) in done.items():
        for consumer, replicas in (await _durables(conn, name, after)).items():
            await _wait_current(conn, f"{name}.{consumer}", replicas, deadline, consumer=True)
    return done


async def _durables(conn: Connection, stream: str, stream_replicas: int) -> dict[str, int]:
    """The durable consumers of ``stream`` and the replicas each has (its own
    ``num_replicas``, else the stream's)."""
    found: dict[str, int] = {}
    offset = 0
    while True:
        reply = await _api(conn, f"$JS.API.CONSUMER.LIST.{stream}", {"offset": offset})
        if "error" in reply:
            raise CairnError(
                f"cannot list the consumers of {stream}: {reply['error'].get('description')}"
            )
        consumers = reply.get("consumers") or []
        for info in consumers:
            config = info.get("config") or {}
            if config.get("durable_name"):
                found[info["name"]] = int(config.get("num_replicas") or stream_replicas)
        offset += len(consumers)
        if not consumers or offset >= int(reply.get("total", 0)):
            return found


async def _wait_current(
    conn: Connection, name: str, replicas: int, deadline: float, *, consumer: bool = False
) -> None:
    """Until stream ``name`` (``consumer``: consumer ``<stream>.<durable>``) has a leader and
    ``replicas - 1`` followers, each current."""
    why = "not asked yet"
    what = "consumer" if consumer else "stream"
    while time.monotonic() < deadline:
        try:
            info = await (_consumer_info(conn, name) if consumer else _stream_info(conn, name))
        except (CairnError, TimeoutError, nats.errors.NoRespondersError) as exc:  # an election
            info, why = None, str(exc)
        else:
            if info is None and consumer:  # deleted meanwhile: nothing to wait for
                return
        cluster = (info or {}).get("cluster") or {}
        followers = cluster.get("replicas") or []
        if replicas == 1 and info is not None:
            return
        if cluster.get("leader") and len(followers) == replicas - 1:
            behind = [f["name"] for f in followers if not f.get("current") or f.get("offline")]
            if not behind:
                return
            why = f"replicas not current yet: {', '.join(behind)}"
        elif info is not None:
            why = f"{len(followers) + 1 if cluster.get('leader') else 0} of {replicas} placed"
        await asyncio.sleep(0.2)
    raise Unavailable(f"{what} {name} did not reach {replicas} current replicas: {why}")


async def _consumer_info(conn: Connection, name: str) -> dict[str, Any] | None:
    """Consumer ``<stream>.<durable>``'s info; None when it no longer exists."""
    info = await _api(conn, f"$JS.API.CONSUMER.INFO.{name}")
    error = info.get("error")
    if error and error.get("code") == 404:
        return None
    if error:
        raise CairnError(f"consumer {name}: {error.get('description')}")
    return info


async def _stream_exists(conn: Connection, name: str) -> bool:
    """Whether stream ``name`` exists, asked as a consumer's info (the one question about a
    stream an agent may ask: it may not read a stream's info); False while JetStream does not
    answer in time. A refusal is raised."""
    try:
        reply = await _api(conn, f"$JS.API.CONSUMER.INFO.{name}.{_PROBE_CONSUMER}")
    except _NOT_NOW:
        return False
    error = reply.get("error")
    if error is None or error.get("err_code") == _CONSUMER_NOT_FOUND:
        return True
    if error.get("err_code") == _STREAM_NOT_FOUND or error.get("code") == 503:
        return False
    raise CairnError(f"cannot ask about stream {name}: {error.get('description')}")


async def wait_for_streams(
    conn: Connection, names: tuple[str, ...] = AGENT_STREAMS, *, stop: asyncio.Event
) -> bool:
    """Until every stream of ``names`` exists (a process that may not create them: an agent
    started before the services), asked with backoff and logged once (``streams_missing_waiting``,
    then ``streams_found``). True once they do; False when ``stop`` is set first."""
    attempt = 0
    while True:
        missing = [name for name in names if not await _stream_exists(conn, name)]
        if not missing:
            if attempt:
                log.info("streams_found", streams=list(names), attempts=attempt + 1)
            return True
        if attempt == 0:
            log.warning("streams_missing_waiting", missing=missing)
        if await _stopped(stop, _backoff(attempt)):
            return False
        attempt += 1
