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
  checksum first, before it answers, so the answer can take as long as reading the whole
  stream). The answer carries the stream's ``config`` and its ``state`` when the snapshot
  began (first and last sequence, message count). The chunks then arrive on the inbox, each
  but the last with a reply subject ``$JS.SNAPSHOT.ACK.<stream>.<id>.<bytes>.<index>``
  (the chunk's size, its number from 1) the client answers with an empty message: the server
  stops sending while more than its window is unanswered. An empty message (status 204) ends
  it. Nothing marks a lost chunk but a gap in the numbers or a size that differs, so a
  snapshot during which the connection dropped is refused whole.
- **Restore.** The client asks with ``{"config": ..., "state": ...}``; the stream must not
  exist. The answer names a ``deliver_subject`` (``$JS.SNAPSHOT.RESTORE.<stream>.<id>``);
  every chunk is a request to it, answered empty (or with an error); a last, empty request
  makes the server finish the stream and answer with its info (or an error). The server
  unpacks each chunk as it arrives (measured on 2.15.1: 24 MB of repetitive messages packed
  in 210 KB took 14 s in 16 KiB chunks, most of it in the chunks, 0.1 s after the last), and
  gives the restore up when a chunk takes 5 s, so chunks are small (``RESTORE_CHUNK_BYTES``)
  and sent one at a time.

Both are the admin's alone (``cairn-admin``): the server refuses them, and the
``$JS.SNAPSHOT.>`` subjects their chunks travel on, to every other user
(:mod:`cairn.embedded._auth`, docs/security.md). A request the server refuses for want of
permission is ``PermissionDenied`` (the connection saw the violation); one nobody answers is
``Unavailable``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable
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
    "purge_stream",
    "restore_stream",
    "snapshot_stream",
    "stream_info",
    "stream_names",
]

#: bytes per snapshot chunk the server sends (well under the 1 MiB a server takes by default)
CHUNK_BYTES = 128 * 1024
#: bytes per restore chunk: the server unpacks each chunk into the stream's files before it
#: answers, and gives the restore up when one takes 5 s (nats-server 2.15.1, measured). A
#: snapshot of repetitive messages unpacks to a hundred times its size: with
#: ``sync_interval: always`` on a shared test machine, a 128 KiB chunk of one (24 MB of
#: blocks in 210 KB) took longer than that, 16 KiB chunks up to 2 s each; 50 MB of
#: incompressible messages restore in 2 s
RESTORE_CHUNK_BYTES = 16 * 1024
_STREAM_NOT_FOUND = 10059
_STREAM_NAME_IN_USE = 10130  # "stream name already in use, cannot restore"
#: a snapshot chunk's reply subject: its size and its number (from 1)
_CHUNK_ACK = re.compile(r"\$JS\.SNAPSHOT\.ACK\.[^.]+\.[^.]+\.(\d+)\.(\d+)")
#: how often a long wait for an answer looks for a permissions violation of its request
_DENIED_POLL_S = 0.2
_ADMIN_ONLY = (
    "snapshots, restores and stream deletion are the admin's alone (cairn-admin, admin.json)"
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


async def _request(
    conn: Connection, subject: str, payload: bytes, what: str, timeout: float | None = None
) -> Any:
    """The answer to one request; a refused one is ``PermissionDenied`` (as soon as the
    connection sees the violation, however long the wait allowed), an unanswered one
    ``Unavailable``."""
    wait = conn.settings.request_timeout if timeout is None else timeout
    asked = asyncio.ensure_future(conn.nc.request(subject, payload, timeout=wait))
    try:
        while not asked.done() and not conn.denied(subject):
            await asyncio.wait({asked}, timeout=_DENIED_POLL_S)
        if not asked.done():
            raise PermissionDenied(f"{what}: {_ADMIN_ONLY}")
        return asked.result()
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        if conn.denied(subject):
            raise PermissionDenied(f"{what}: {_ADMIN_ONLY}") from exc
        cause = "no responders" if isinstance(exc, nats.errors.NoRespondersError) else "timeout"
        raise Unavailable(f"{what}: no answer within {wait:g} s ({cause})") from exc
    finally:
        if not asked.done():
            asked.cancel()
            await asyncio.gather(asked, return_exceptions=True)


async def _api(
    conn: Connection,
    subject: str,
    body: dict[str, Any] | None,
    what: str,
    timeout: float | None = None,
) -> Any:
    payload = json.dumps(body).encode() if body is not None else b""
    msg = await _request(conn, subject, payload, what, timeout)
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


async def purge_stream(conn: Connection, stream: str) -> None:
    """Remove every message of the stream (the admin's alone)."""
    what = f"purge stream {stream}"
    reply = await _api(conn, f"$JS.API.STREAM.PURGE.{stream}", None, what)
    _raise_for(reply, what)


async def snapshot_stream(
    conn: Connection,
    stream: str,
    out: BinaryIO,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    check_messages: bool = True,
    idle_timeout_s: float = 60.0,
    check_timeout_s: float = 3600.0,
) -> Snapshot:
    """Write a snapshot of ``stream`` (with its durable consumers) to ``out``.

    The server checks every message (``check_messages``) before it answers the request:
    ``check_timeout_s`` bounds that answer (``request_timeout`` without the check);
    ``idle_timeout_s`` bounds the wait for each chunk after it. A chunk missing or of
    another size than announced, or a reconnect while the snapshot runs, is ``Unavailable``
    (the snapshot is incomplete). A stream that does not exist is ``NotFound``; a user other
    than the admin gets ``PermissionDenied``."""
    nc = conn.nc
    inbox = nc.new_inbox()
    # far above the server's window of unanswered chunks: nothing is dropped as slow
    sub = await nc.subscribe(inbox, pending_bytes_limit=256 * 1024 * 1024)
    what = f"snapshot of stream {stream}"
    reconnects = nc.stats["reconnects"]
    try:
        body = {"deliver_subject": inbox, "chunk_size": chunk_bytes, "jsck": check_messages}
        wait = check_timeout_s if check_messages else None
        reply = await _api(conn, f"$JS.API.STREAM.SNAPSHOT.{stream}", body, what, wait)
        _raise_for(reply, what)
        digest, size, index = hashlib.sha256(), 0, 0
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_timeout_s)
            except nats.errors.TimeoutError as exc:
                raise Unavailable(f"{what} stalled: no chunk for {idle_timeout_s:g} s") from exc
            if not msg.data:
                _check_end(msg, what)
                break
            index += 1
            _check_chunk(msg, index, what)
            out.write(msg.data)
            digest.update(msg.data)
            size += len(msg.data)
            if msg.reply:  # flow control: the server waits for these past its window
                await nc.publish(msg.reply, b"")
        if nc.stats["reconnects"] != reconnects:
            raise Unavailable(f"{what}: the connection dropped while it ran; chunks may be lost")
        return Snapshot(reply["config"], reply["state"], size, digest.hexdigest())
    finally:
        await sub.unsubscribe()


def _check_chunk(msg: Any, index: int, what: str) -> None:
    """The chunk is the next one, of the size its reply subject announces (the last chunk
    comes without a reply subject)."""
    if not msg.reply:
        return
    match = _CHUNK_ACK.fullmatch(msg.reply)
    if match is None:
        raise CairnError(f"{what}: a chunk with the reply subject {msg.reply!r}")
    announced, number = int(match.group(1)), int(match.group(2))
    if number != index or announced != len(msg.data):
        raise Unavailable(
            f"{what}: chunk {number} of {len(msg.data)} bytes where chunk {index} of"
            f" {announced} bytes was due: chunks were lost"
        )


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
    check_sent: Callable[[int, str], None] = lambda size, sha256: None,
) -> Restored:
    """Make the stream ``config["name"]`` from a snapshot read from ``source``. The stream
    must not exist (``AlreadyExists``). ``check_sent`` sees the size and SHA-256 of every
    byte sent before the server is told to finish: an error it raises leaves the stream
    unmade (the server drops what it staged). ``finish_timeout_s`` bounds the server's work
    after the last chunk."""
    name = config["name"]
    what = f"restore of stream {name}"
    reply = await _api(
        conn, f"$JS.API.STREAM.RESTORE.{name}", {"config": config, "state": state}, what
    )
    _raise_for(reply, what)
    deliver = reply["deliver_subject"]
    sent, digest = 0, hashlib.sha256()
    while chunk := source.read(chunk_bytes):
        ack = await _request(conn, deliver, chunk, f"{what} after {sent} bytes")
        if ack.data:
            raise CairnError(f"{what}: the server refused a chunk: {ack.data.decode()!r}")
        sent += len(chunk)
        digest.update(chunk)
    check_sent(sent, digest.hexdigest())
    try:
        done = await _request(conn, deliver, b"", what, finish_timeout_s)
    except Unavailable as exc:
        info = await stream_info(conn, name)
        now = "not there" if info is None else f"there up to seq {info['state']['last_seq']}"
        raise Unavailable(
            f"{what}: all {sent} bytes sent, but the server did not finish within"
            f" {finish_timeout_s:g} s; the stream is {now} (the server may still be building it)"
        ) from exc
    answer = json.loads(done.data)
    _raise_for(answer, what)
    return Restored(answer["state"], sent)
