"""JetStream's own stream snapshots and restores, which nats-py has no helper for.

A snapshot (``$JS.API.STREAM.SNAPSHOT.<stream>``) is the stream's store as the server holds
it: an s2-compressed tar of its message blocks and (unless ``no_consumers``) its durable
consumers' state. Restoring it (``$JS.API.STREAM.RESTORE.<stream>``) makes the stream again
with the same sequences, server timestamps, headers (``Nats-Msg-Id`` included) and consumers,
which re-publishing the messages could not.

The protocol, as nats-server (``server/jetstream_api.go``: ``jsStreamSnapshotRequest``,
``streamSnapshot``, ``processStreamRestore``) speaks it:

- **Snapshot.** The client subscribes to an inbox, then asks with ``{"deliver_subject":
  inbox, "chunk_size": n, "jsck": true}`` (``jsck``: the server checks every message's
  checksum first). The answer carries the stream's ``config`` and its ``state`` when the
  snapshot began (first and last sequence, message count). The chunks then arrive on the
  inbox, each with a reply subject the client answers with an empty message: the server stops
  sending while more than its window (32 MiB) is unanswered. An empty message ends it.
- **Restore.** The client asks with ``{"config": ..., "state": ...}``; the stream must not
  exist. The answer names a ``deliver_subject``; every chunk is a request to it, answered
  empty (or ``-ERR ...``); a last, empty request makes the server build the stream from what
  it staged and answer with the stream's info (or an error). The server unpacks each chunk
  before it answers and gives the restore up when nothing completes for 5 s, so chunks are
  small (``RESTORE_CHUNK_BYTES``).

Both are the admin's alone (``cairn-admin``): the server refuses them to every other user
(:mod:`cairn.embedded._auth`, docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, BinaryIO, NamedTuple

import nats.errors

from cairn.bus._connect import Connection
from cairn.errors import AlreadyExists, CairnError, NotFound, PermissionDenied, Unavailable

__all__ = [
    "CHUNK_BYTES",
    "RESTORE_CHUNK_BYTES",
    "Restored",
    "Snapshot",
    "delete_stream",
    "restore_stream",
    "snapshot_stream",
    "stream_info",
    "stream_names",
]

#: bytes per snapshot chunk the server sends (well under the 1 MiB a server takes by default)
CHUNK_BYTES = 128 * 1024
#: bytes per restore chunk: the server unpacks each chunk into the stream's files before it
#: answers, and gives the restore up when one takes 5 s. A snapshot of repetitive messages
#: unpacks to a hundred times its size: with ``sync_interval: always`` on a shared test
#: machine, a 128 KiB chunk of one (24 MB of blocks in 200 KB) took longer than that, 16 KiB
#: chunks about 0.45 s each
RESTORE_CHUNK_BYTES = 16 * 1024
_STREAM_NOT_FOUND = 10059
_STREAM_NAME_IN_USE = 10130  # "stream name already in use, cannot restore"
_ADMIN_ONLY = (
    "no answer: snapshots, restores and stream deletion are the admin's alone (cairn-admin,"
    " admin.json), or the server is unreachable"
)


class Snapshot(NamedTuple):
    """A snapshot written out: the stream's configuration and its state when the snapshot
    began (what the server answered), and the bytes written with their SHA-256."""

    config: dict[str, Any]
    state: dict[str, Any]
    size: int
    sha256: str


class Restored(NamedTuple):
    """A stream made again from a snapshot: its state as the server reports it."""

    state: dict[str, Any]
    sent: int


async def _api(conn: Connection, subject: str, body: dict[str, Any] | None, what: str) -> Any:
    payload = json.dumps(body).encode() if body is not None else b""
    try:
        msg = await conn.nc.request(subject, payload, timeout=conn.settings.request_timeout)
    except nats.errors.TimeoutError as exc:
        raise PermissionDenied(f"{what}: {_ADMIN_ONLY}") from exc
    except nats.errors.NoRespondersError as exc:
        raise Unavailable(f"{what}: JetStream does not answer (no responders)") from exc
    return json.loads(msg.data)


def _raise_for(reply: dict[str, Any], what: str) -> None:
    error = reply.get("error")
    if not error:
        return
    text = f"{what}: {error.get('description')} (err_code {error.get('err_code')})"
    code = error.get("err_code")
    if code == _STREAM_NOT_FOUND:
        raise NotFound(text)
    if code == _STREAM_NAME_IN_USE:
        raise AlreadyExists(text)
    raise CairnError(text)


async def stream_names(conn: Connection) -> list[str]:
    """Every stream of the connection's account, sorted."""
    names: list[str] = []
    while True:
        reply = await _api(conn, "$JS.API.STREAM.NAMES", {"offset": len(names)}, "stream names")
        _raise_for(reply, "stream names")
        page = reply.get("streams") or []
        names += page
        if not page or len(names) >= int(reply.get("total", 0)):
            return sorted(names)


async def stream_info(conn: Connection, stream: str) -> dict[str, Any] | None:
    """The stream's info (``config``, ``state``), or None when it does not exist."""
    reply = await _api(conn, f"$JS.API.STREAM.INFO.{stream}", None, f"stream {stream}")
    error = reply.get("error")
    if error and error.get("err_code") == _STREAM_NOT_FOUND:
        return None
    _raise_for(reply, f"stream {stream}")
    info: dict[str, Any] = reply
    return info


async def delete_stream(conn: Connection, stream: str) -> None:
    """Delete the stream and everything in it (the admin's alone)."""
    what = f"delete stream {stream}"
    reply = await _api(conn, f"$JS.API.STREAM.DELETE.{stream}", None, what)
    _raise_for(reply, what)


async def snapshot_stream(
    conn: Connection,
    stream: str,
    out: BinaryIO,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    check_messages: bool = True,
    idle_timeout_s: float = 60.0,
) -> Snapshot:
    """Write a snapshot of ``stream`` (with its durable consumers) to ``out``.

    ``idle_timeout_s`` bounds the wait for each chunk (the server's check of every message,
    ``check_messages``, comes before the first). A stream that does not exist is ``NotFound``;
    a user other than the admin gets ``PermissionDenied``."""
    nc = conn.nc
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, pending_bytes_limit=256 * 1024 * 1024)
    what = f"snapshot of stream {stream}"
    try:
        body = {"deliver_subject": inbox, "chunk_size": chunk_bytes, "jsck": check_messages}
        reply = await _api(conn, f"$JS.API.STREAM.SNAPSHOT.{stream}", body, what)
        _raise_for(reply, what)
        digest, size = hashlib.sha256(), 0
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_timeout_s)
            except nats.errors.TimeoutError as exc:
                raise Unavailable(f"{what} stalled: no chunk for {idle_timeout_s:g} s") from exc
            if not msg.data:
                _check_end(msg, what)
                break
            out.write(msg.data)
            digest.update(msg.data)
            size += len(msg.data)
            if msg.reply:  # flow control: the server waits for these past its window
                await nc.publish(msg.reply, b"")
        return Snapshot(reply["config"], reply["state"], size, digest.hexdigest())
    finally:
        await sub.unsubscribe()


def _check_end(msg: Any, what: str) -> None:
    """The empty message that ends a snapshot; one with an error status is a failure."""
    status = (msg.headers or {}).get("Status", "")
    if status and not status.startswith("2"):
        description = (msg.headers or {}).get("Description", "")
        raise CairnError(f"{what} failed: status {status} {description}".rstrip())


async def restore_stream(
    conn: Connection,
    config: dict[str, Any],
    state: dict[str, Any],
    source: BinaryIO,
    *,
    chunk_bytes: int = RESTORE_CHUNK_BYTES,
    finish_timeout_s: float = 600.0,
) -> Restored:
    """Make the stream ``config["name"]`` from a snapshot read from ``source``. The stream
    must not exist (``AlreadyExists``). ``finish_timeout_s`` bounds the server's work after
    the last chunk (it rebuilds the stream from the staged snapshot)."""
    name = config["name"]
    what = f"restore of stream {name}"
    nc = conn.nc
    reply = await _api(
        conn, f"$JS.API.STREAM.RESTORE.{name}", {"config": config, "state": state}, what
    )
    _raise_for(reply, what)
    deliver = reply["deliver_subject"]
    sent = 0
    try:
        while chunk := source.read(chunk_bytes):
            ack = await nc.request(deliver, chunk, timeout=conn.settings.request_timeout)
            if ack.data:
                raise CairnError(f"{what}: the server refused a chunk: {ack.data.decode()!r}")
            sent += len(chunk)
        done = await nc.request(deliver, b"", timeout=finish_timeout_s)
    except nats.errors.TimeoutError as exc:
        raise Unavailable(f"{what}: the server stopped answering after {sent} bytes") from exc
    answer = json.loads(done.data)
    _raise_for(answer, what)
    return Restored(answer["state"], sent)
