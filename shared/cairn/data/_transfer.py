"""Run files and blobs over NATS: chunked, pipelined, digest-checked uploads and downloads.

Each function takes the RPC :class:`~cairn.rpc.Client` of a workspace: the SDK and the agent
move bytes the same way, and neither needs the other. Progress is counted in bytes as they are
acknowledged (upload) or arrive (download), on a bar of its own (``show_progress``, see
:mod:`cairn.data._progress`) or on one a caller shares between files (``progress``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from nats.errors import TimeoutError as NatsTimeout

from cairn.data._progress import Progress
from cairn.errors import CairnError, InvalidInput, Unavailable, error_for_code
from cairn.proto.artifacts import INLINE_BYTES, CommitUpload, GetRunFile, OpenUpload, ReadBlob
from cairn.proto.commands import Accepted, ErrorReply, Opened, Reply
from cairn.proto.paths import validate_run_path
from cairn.proto.subjects import query
from cairn.rpc import Client

__all__ = ["blob_chunks", "download_blob", "download_file", "upload_file"]

WINDOW = 8
READ_BYTES = 512 * 1024
_reply = msgspec.json.Decoder(Reply)
_encoder = msgspec.json.Encoder()


def _check(reply_data: bytes) -> Reply:
    reply: Reply = _reply.decode(reply_data)
    if isinstance(reply, ErrorReply):
        raise error_for_code(reply.code, reply.message)
    return reply


def _own_or_shared(
    progress: Progress | None, size: int, name: str, show: bool | None
) -> contextlib.AbstractContextManager[Progress]:
    """The caller's shared bar (left open), or a bar of this file's own."""
    if progress is not None:
        return contextlib.nullcontext(progress)
    return Progress(size, name, show=show)


def _size_of(path: Path) -> int:
    """The size of a local file to upload (one ``stat``: cheaper than a thread hop)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    if info is None or not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"{path} is not a file")
    return info.st_size


class _Sent:
    """The bytes of one try that its bar counted (taken back if the try fails)."""

    def __init__(self, bar: Progress) -> None:
        self.bar, self.n = bar, 0

    def add(self, n: int) -> None:
        self.n += n
        self.bar.update(n)

    def take_back(self) -> None:
        self.bar.update(-self.n)
        self.n = 0


async def _send_chunks(client: Client, opened: Opened, path: Path, sent: _Sent) -> str:
    nc, timeout = client.conn.nc, client.timeout
    digest = hashlib.sha256()
    in_flight: deque[tuple[asyncio.Task[Any], int]] = deque()

    async def acknowledged() -> None:
        task, n = in_flight.popleft()
        _check((await task).data)
        sent.add(n)

    try:
        # read in chunks of at most 512 KiB: a thread hop per chunk costs more than the read
        with open(path, "rb") as f:  # noqa: ASYNC230
            offset = 0
            while chunk := f.read(opened.chunk_bytes):
                digest.update(chunk)
                headers = {"Cairn-Offset": str(offset)}
                request = nc.request(opened.subject, chunk, timeout, headers=headers)
                in_flight.append((asyncio.ensure_future(request), len(chunk)))
                offset += len(chunk)
                if len(in_flight) >= WINDOW:
                    await acknowledged()
        while in_flight:
            await acknowledged()
    finally:
        for task, _ in in_flight:  # a failed chunk: the others' answers are not waited for
            task.cancel()
    return "sha256:" + digest.hexdigest()


async def upload_file(
    client: Client,
    run_id: str,
    name: str,
    path: Path,
    *,
    show_progress: bool | None = None,
    staging: bool = False,
    attempt: int = 0,
    progress: Progress | None = None,
) -> Accepted:
    """Upload ``path`` as run file ``name`` (or into staging area ``run_id``); returns when
    ``ArtifactCommitted`` is stored. Its bytes count on ``progress`` when given (a bar shared
    by several files), else on a bar of its own as ``show_progress`` says."""
    validate_run_path(name)
    size = _size_of(path)
    commit_id = uuid.uuid4().hex  # one id for every attempt: a retried commit takes effect once
    with _own_or_shared(progress, size, name, show_progress) as bar:
        if size <= INLINE_BYTES:  # one request: the bytes travel in the command
            data = await asyncio.to_thread(path.read_bytes)
            inline = OpenUpload(
                command_id=commit_id,
                run_id=run_id,
                path=name,
                size=len(data),
                staging=staging,
                attempt=attempt,
                data=data,
            )
            reply = await client.send_any(inline)
            if not isinstance(reply, Accepted):
                raise CairnError(f"unexpected reply {type(reply).__name__} to an upload")
            bar.update(len(data))
            return reply
        return await _upload_chunked(
            client, run_id, name, path, commit_id, _Sent(bar), staging=staging, attempt=attempt
        )


async def _upload_chunked(
    client: Client,
    run_id: str,
    name: str,
    path: Path,
    commit_id: str,
    sent: _Sent,
    *,
    staging: bool,
    attempt: int,
) -> Accepted:
    """Three tries of an upload session; each starts over from the first byte (and its bar
    with it: what a failed try counted is taken back)."""
    last: Exception | None = None
    for _ in range(3):
        opened = await client.send_any(
            OpenUpload(
                command_id=uuid.uuid4().hex,
                run_id=run_id,
                path=name,
                size=_size_of(path),
                staging=staging,
                attempt=attempt,
            )
        )
        if not isinstance(opened, Opened):
            raise CairnError(f"unexpected reply {type(opened).__name__} to an upload")
        try:
            digest = await _send_chunks(client, opened, path, sent)
            commit = CommitUpload(command_id=commit_id, digest=digest)
            msg = await client.conn.nc.request(
                opened.subject + ".commit",
                _encoder.encode(commit),
                client.timeout,
                headers=client.headers,
            )
        except (TimeoutError, NatsTimeout, Unavailable) as exc:
            last = exc
            sent.take_back()
            continue
        reply = _check(msg.data)
        if not isinstance(reply, Accepted):
            raise CairnError(f"unexpected reply {type(reply).__name__} to a commit")
        return reply
    raise Unavailable(f"upload of {name} failed three times: {last!r}")


async def download_file(
    client: Client,
    run_id: str,
    name: str,
    target: Path,
    *,
    min_seq: int = 0,
    show_progress: bool | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download run file ``name`` to ``target``, verifying its digest; returns ``target``."""
    info = (await client.ask(GetRunFile(run_id=run_id, path=name, min_seq=min_seq))).data
    return await download_blob(
        client,
        info["digest"],
        int(info["size"]),
        target,
        name=name,
        show_progress=show_progress,
        progress=progress,
    )


async def blob_chunks(client: Client, digest: str, size: int) -> AsyncIterator[bytes]:
    """The bytes of blob ``digest`` in order, read in ranges (several in flight); raises
    ``CairnError`` after the last chunk when they do not hash to ``digest`` (a reader that
    streams them on, as the gateway does to a browser, then breaks off its response)."""
    subject = query(client.workspace, ReadBlob.NAME)
    h = hashlib.sha256()
    nc = client.conn.nc
    offsets = deque(range(0, size, READ_BYTES))
    in_flight: deque[asyncio.Future[Any]] = deque()
    try:
        while offsets or in_flight:
            while offsets and len(in_flight) < WINDOW:
                body = _encoder.encode(
                    ReadBlob(digest=digest, offset=offsets.popleft(), length=READ_BYTES)
                )
                in_flight.append(asyncio.ensure_future(nc.request(subject, body, client.timeout)))
            msg = await in_flight.popleft()
            if (msg.headers or {}).get("Cairn-Reply") != "raw":
                _check(msg.data)
                raise CairnError("unexpected reply to a blob read")
            h.update(msg.data)
            yield msg.data
    finally:
        for pending in in_flight:
            pending.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
    if "sha256:" + h.hexdigest() != digest:
        raise CairnError(f"the bytes read of {digest} do not match that digest")


async def download_blob(
    client: Client,
    digest: str,
    size: int,
    target: Path,
    *,
    name: str = "",
    show_progress: bool | None = None,
    progress: Progress | None = None,
) -> Path:
    """Read blob ``digest`` (:func:`blob_chunks`) into ``target``, checked; its bytes count on
    ``progress`` when given, else on a bar of its own."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with _own_or_shared(progress, size, name or digest[:19], show_progress) as bar:
            with open(partial, "wb") as out:  # noqa: ASYNC230 - written chunk by chunk
                async for chunk in blob_chunks(client, digest, size):
                    out.write(chunk)
                    bar.update(len(chunk))
            os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


async def read_blob_head(client: Client, digest: str, limit: int) -> bytes:
    """The first ``limit`` bytes of blob ``digest`` (all of a shorter one), read in ranges."""
    subject = query(client.workspace, ReadBlob.NAME)
    out = bytearray()
    while len(out) < limit:
        length = min(READ_BYTES, limit - len(out))
        body = _encoder.encode(ReadBlob(digest=digest, offset=len(out), length=length))
        msg = await client.conn.nc.request(subject, body, client.timeout)
        if (msg.headers or {}).get("Cairn-Reply") != "raw":
            _check(msg.data)
            raise CairnError("unexpected reply to a blob read")
        out += msg.data[:length]
        if len(msg.data) < length:  # the blob ends here
            break
    return bytes(out)
