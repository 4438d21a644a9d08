"""Idempotent provisioning of Cairn's streams and KV buckets through the JetStream API."""

from __future__ import annotations

import json
from typing import Any

from nats.js.api import KeyValueConfig
from nats.js.errors import BadRequestError

from cairn.bus._connect import Connection
from cairn.errors import CairnError
from cairn.proto.streams import KV_BUCKETS, STREAMS, ConsumerConfig, StreamConfig

__all__ = ["ensure_consumer", "ensure_stream", "provision"]

_STREAM_NOT_FOUND = 10059


async def _api(
    conn: Connection, subject: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    payload = json.dumps(body).encode() if body is not None else b""
    msg = await conn.nc.request(subject, payload, timeout=conn.settings.request_timeout)
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


async def ensure_stream(conn: Connection, definition: StreamConfig) -> str:
    """Create the stream, or update it where its settings drifted. Returns what was done."""
    name, body = definition.name, definition.to_api()
    info = await _api(conn, f"$JS.API.STREAM.INFO.{name}")
    error = info.get("error")
    if error and error.get("err_code") == _STREAM_NOT_FOUND:
        action, reply = "created", await _api(conn, f"$JS.API.STREAM.CREATE.{name}", body)
    elif error:
        raise CairnError(f"stream {name}: {error.get('description')}")
    elif all(info["config"].get(k) == v for k, v in body.items()):
        return "unchanged"
    else:
        action, reply = "updated", await _api(conn, f"$JS.API.STREAM.UPDATE.{name}", body)
    if "error" in reply:
        raise CairnError(f"cannot provision stream {name}: {reply['error'].get('description')}")
    return action


async def ensure_consumer(conn: Connection, stream: str, config: ConsumerConfig) -> None:
    """Create the durable consumer, or update it to ``config``; safe to repeat."""
    name = config.durable_name
    body = {"stream_name": stream, "config": config.to_api()}
    reply = await _api(conn, f"$JS.API.CONSUMER.CREATE.{stream}.{name}", body)
    if "error" in reply:
        raise CairnError(f"cannot provision consumer {name}: {reply['error'].get('description')}")


async def provision(conn: Connection) -> dict[str, str]:
    """Make every stream and bucket exist with the contract's settings; safe to repeat."""
    done = {d.name: await ensure_stream(conn, d) for d in STREAMS}
    for bucket in KV_BUCKETS:
        config = KeyValueConfig(
            bucket=bucket.bucket,
            history=bucket.history,
            ttl=bucket.ttl_s,
            description=bucket.description,
            direct=True,
        )
        try:
            await conn.js.create_key_value(config)
            done[bucket.bucket] = "ready"
        except BadRequestError as exc:
            raise CairnError(f"cannot provision bucket {bucket.bucket}: {exc}") from exc
    return done
