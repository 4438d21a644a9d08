"""``cairn export``: one workspace's events, metric batches and audit checkpoints, as stored,
into a folder of JSON lines or Parquet files (:mod:`cairn.portable._format`), with the blobs
its events name when asked."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Protocol

import msgspec

from cairn.audit import GENESIS, chain_step, event_digest, parse_public_key, split_subject
from cairn.audit._read import MAX_BATCH_BYTES
from cairn.bus import Connection, EventStore, Stored
from cairn.errors import InvalidInput, NotFound
from cairn.portable._format import (
    ARTIFACTS_DIR,
    CHECKPOINTS_FILE,
    ENCODINGS,
    EVENTS_FILE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    METRICS_FILE,
    ArtifactEntry,
    EventsPart,
    Line,
    Manifest,
    Part,
    artifact_file,
    blob_refs,
    check_checkpoints,
    load_export,
    part_file,
)
from cairn.proto import subjects
from cairn.proto.events import EVENT_TYPES
from cairn.proto.streams import EVENTS, METRICS
from cairn.storage import BlobStore

__all__ = ["export_workspace"]

_CHUNK = 1 << 20
_encoder = msgspec.json.Encoder()


class _Sink(Protocol):
    """Where one part's lines go: a JSON lines file or a Parquet file."""

    def write(self, line: Line) -> None: ...

    def close(self) -> None: ...

    def sha256(self) -> str:
        """The file's SHA-256 (hex), once closed."""
        ...


class _JsonLines:
    def __init__(self, path: Path) -> None:
        self.out: IO[bytes] = open(path, "wb")
        self.sha = hashlib.sha256()

    def write(self, line: Line) -> None:
        body = _encoder.encode(line) + b"\n"
        self.out.write(body)
        self.sha.update(body)

    def close(self) -> None:
        self.out.close()

    def sha256(self) -> str:
        return self.sha.hexdigest()


class _Parquet:
    def __init__(self, path: Path) -> None:
        from cairn.portable._parquet import ParquetPart

        self.path = path
        self.part = ParquetPart(path)

    def write(self, line: Line) -> None:
        self.part.write(
            line.seq, line.subject, line.msg_id, line.digest, line.chain, bytes(line.data)
        )

    def close(self) -> None:
        self.part.close()

    def sha256(self) -> str:
        sha = hashlib.sha256()
        with open(self.path, "rb") as f:
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
        return sha.hexdigest()


def _sink(dest: Path, file: str, encoding: str) -> _Sink:
    path = dest / part_file(file, encoding)
    return _Parquet(path) if encoding == "parquet" else _JsonLines(path)


@dataclass
class _File:
    """One part being written: its lines, and what came before them."""

    out: _Sink
    count: int = 0
    prev_count: int = 0
    prev_last: str = ""
    prev_chain: str = GENESIS
    chain: str = GENESIS
    #: whether the lines began (``--since``: from the first message stored after it on)
    started: bool = False

    def write(self, line: Line) -> None:
        self.out.write(line)
        self.count += 1

    def part(self) -> Part:
        """What the manifest says of it, once closed."""
        return Part(
            count=self.count,
            prev_count=self.prev_count,
            prev_last=self.prev_last,
            sha256=self.out.sha256(),
        )


async def _pages(conn: Connection, stream: str, subject_filter: str) -> AsyncIterator[list[Stored]]:
    """The messages on ``subject_filter`` of ``stream`` as they are while reading, oldest
    first, with the server's time, a page at a time (never an empty one)."""
    store = EventStore(conn, stream=stream)
    start = 1
    while True:
        got, more = await store.batch(subject_filter, start, limit=256, max_bytes=MAX_BATCH_BYTES)
        if got:
            yield got
        if not got or not more:
            return
        start = got[-1].seq + 1


async def _stored(conn: Connection, stream: str, subject_filter: str) -> list[Stored]:
    """Every message on ``subject_filter`` of ``stream``, oldest first, in one list."""
    return [m async for page in _pages(conn, stream, subject_filter) for m in page]


def _raw(m: Stored) -> msgspec.Raw:
    """A stored message's bytes as one line's JSON value, unchanged (the digest covers them):
    refused when they are not one JSON value on one line."""
    try:
        msgspec.json.decode(m.data)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"seq {m.seq} on {m.subject} is not JSON: {exc}") from exc
    if b"\n" in m.data or b"\r" in m.data:
        raise InvalidInput(f"seq {m.seq} on {m.subject} spans lines: it cannot be one line")
    return msgspec.Raw(m.data)


def _after(since: datetime | None, message: Stored, started: bool) -> bool:
    """Whether ``message`` is exported: everything without ``since``; otherwise from the first
    one stored after it on (the ones before are the history the target already holds)."""
    if since is None or started:
        return True
    return message.time is not None and message.time > since


def _write_events(
    messages: list[Stored],
    since: datetime | None,
    events: _File,
    checkpoints: _File,
    refs: dict[str, None],
) -> None:
    """Events (chained) and checkpoints into their files, going on from where ``events``
    stands; the blobs the events name into ``refs``."""
    for m in messages:
        if split_subject(m.subject) is None:  # the workspace's checkpoints (audit kind)
            if _after(since, m, events.started):
                digest = event_digest(m.subject, m.msg_id, m.data)
                data = _raw(m)
                checkpoints.write(
                    Line(seq=m.seq, subject=m.subject, msg_id=m.msg_id, digest=digest, data=data)
                )
            continue
        digest = event_digest(m.subject, m.msg_id, m.data)
        events.chain = chain_step(events.chain, m.seq, digest)
        events.started = _after(since, m, events.started)
        if not events.started:
            events.prev_count += 1
            events.prev_last, events.prev_chain = digest, events.chain
            continue
        line = Line(
            seq=m.seq,
            subject=m.subject,
            msg_id=m.msg_id,
            digest=digest,
            chain=events.chain,
            data=_raw(m),
        )
        events.write(line)
        blob_refs(msgspec.json.decode(m.data).get("data"), refs)


def _write_metrics(messages: list[Stored], since: datetime | None, metrics: _File) -> None:
    for m in messages:
        digest = event_digest(m.subject, m.msg_id, m.data)
        metrics.started = _after(since, m, metrics.started)
        if not metrics.started:
            metrics.prev_count += 1
            metrics.prev_last = digest
            continue
        metrics.write(
            Line(
                seq=m.seq,
                subject=m.subject,
                msg_id=m.msg_id,
                digest=digest,
                data=_raw(m),
            )
        )


async def _copy_blob(blobs: BlobStore, digest: str, dest: Path) -> int | None:
    """The blob ``digest`` into ``dest``, checked against its digest; its size, or None when
    the store does not hold it."""
    size = await blobs.size(digest)
    if size is None:
        return None
    sha = hashlib.sha256()
    out = await asyncio.to_thread(open, dest, "wb")
    offset = 0
    try:
        while offset < size:
            chunk = await blobs.read(digest, offset, min(_CHUNK, size - offset))
            if not chunk:
                break
            await asyncio.to_thread(out.write, chunk)
            sha.update(chunk)
            offset += len(chunk)
    finally:
        out.close()
    if offset != size or "sha256:" + sha.hexdigest() != digest:
        raise InvalidInput(f"the artifact store's blob {digest} does not match its digest")
    return size


async def _write_artifacts(
    blobs: BlobStore, refs: dict[str, None], root: Path
) -> tuple[list[ArtifactEntry], list[str]]:
    await asyncio.to_thread((root / ARTIFACTS_DIR).mkdir)
    written: list[ArtifactEntry] = []
    missing: list[str] = []
    for digest in refs:
        file = artifact_file(digest)
        size = await _copy_blob(blobs, digest, root / file)
        if size is None:
            missing.append(digest)
        else:
            written.append(ArtifactEntry(digest=digest, size=size, file=file))
    return written, missing


async def export_workspace(
    conn: Connection,
    workspace: str,
    dest: Path,
    *,
    now: datetime,
    since: datetime | None = None,
    blobs: BlobStore | None = None,
    audit_key: str = "",
    encoding: str = "jsonl",
) -> Manifest:
    """Write workspace ``workspace``'s history into the new (or empty) folder ``dest``: with
    ``since``, only what was stored after it; with ``blobs``, the blobs its events name; its
    parts as JSON lines or, with ``encoding="parquet"``, as Parquet files. The manifest is
    written last, so a folder without one is an export that did not finish."""
    subjects.validate_token(workspace, "workspace")
    if encoding not in ENCODINGS:
        raise InvalidInput(f"no export format {encoding!r}: one of {', '.join(ENCODINGS)}")
    event_pages = _pages(conn, EVENTS.name, subjects.events_of_workspace(workspace))
    first = await anext(event_pages, None)
    if first is None:
        raise NotFound(f"workspace {workspace} has no events in this log")
    _make_empty(dest)
    events, checkpoints, metrics, refs = await _write_lines(
        dest,
        first,
        event_pages,
        _pages(conn, METRICS.name, f"cairn.metrics.{workspace}.>"),
        since,
        encoding,
    )
    artifacts: list[ArtifactEntry] | None = None
    missing: list[str] = []
    if blobs is not None:
        artifacts, missing = await _write_artifacts(blobs, refs, dest)
    base = events.part()
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        workspace=workspace,
        exported_at=now.isoformat(),
        since=None if since is None else since.isoformat(),
        events=EventsPart(
            count=base.count,
            prev_count=base.prev_count,
            prev_last=base.prev_last,
            sha256=base.sha256,
            prev_chain=events.prev_chain,
            chain=events.chain,
        ),
        metrics=metrics.part(),
        checkpoints=checkpoints.part(),
        audit_key=audit_key,
        schema_versions={name: cls.VERSION for name, cls in sorted(EVENT_TYPES.items())},
        artifacts=artifacts,
        missing_artifacts=missing,
        encoding=msgspec.UNSET if encoding == "jsonl" else encoding,
    )
    _write_manifest(dest, manifest, audit_key)
    return manifest


def _make_empty(dest: Path) -> None:
    """The export's folder, new or empty, readable by its owner only (it holds the whole
    history of a workspace)."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInput(f"{dest} is not an empty folder")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest.chmod(0o700)


async def _write_lines(
    dest: Path,
    first: list[Stored],
    event_pages: AsyncIterator[list[Stored]],
    metric_pages: AsyncIterator[list[Stored]],
    since: datetime | None,
    encoding: str,
) -> tuple[_File, _File, _File, dict[str, None]]:
    """The parts, written a page at a time as the log is read (the export never holds more
    of the log than a page, or a Parquet row group; what it keeps is the blobs' names)."""
    refs: dict[str, None] = {}
    with contextlib.ExitStack() as files:
        sinks = []
        for name in (EVENTS_FILE, CHECKPOINTS_FILE, METRICS_FILE):
            sink = await asyncio.to_thread(_sink, dest, name, encoding)
            files.callback(sink.close)
            sinks.append(sink)
        events, checkpoints, metrics = (_File(sink) for sink in sinks)
        _write_events(first, since, events, checkpoints, refs)
        async for page in event_pages:
            _write_events(page, since, events, checkpoints, refs)
        async for page in metric_pages:
            _write_metrics(page, since, metrics)
    return events, checkpoints, metrics, refs


def _write_manifest(dest: Path, manifest: Manifest, audit_key: str) -> None:
    """The manifest, once what it describes reads back whole and the source's checkpoints
    agree with the events written (signed by ``audit_key`` when one is named): an export
    that would be refused on import is not finished."""
    staged = dest / (MANIFEST_FILE + ".tmp")
    staged.write_bytes(msgspec.json.format(_encoder.encode(manifest), indent=2) + b"\n")
    os.replace(staged, dest / MANIFEST_FILE)
    try:
        loaded = load_export(dest, data=False)
        key = parse_public_key(audit_key, "the audit key") if audit_key else None
        check_checkpoints(loaded, key)
    except InvalidInput:
        (dest / MANIFEST_FILE).unlink()
        raise
