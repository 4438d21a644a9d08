"""Whole-store backups (``cairn backup DIR``) and their restore (``cairn restore DIR``).

A backup is a folder::

    DIR/manifest.json                 what is in it (written last: no manifest, no backup)
    DIR/streams/<STREAM>.tar.s2       one JetStream snapshot per stream (cairn.bus._snapshot)
    DIR/artifacts/index.json          the artifact store's index: every blob, digest and size
    DIR/artifacts/sha256/ab/cd/<hex>  the blobs themselves (local artifact store only)

Streams: METRICS, LOGS and every key-value bucket (``KV_*``), then EVENTS last, so that
everything the other streams refer to (a metric batch's run) is in the EVENTS taken after
them. Each is taken at one position, the state the server answered when its snapshot began
(``last_seq``, ``messages``), recorded with the stream's configuration and the SHA-256 of its
file. Writes that race a snapshot may leave messages past that position in the file (the
server copies the block being written as it is then); the recorded position is the one
guaranteed, and the one the read models' hashes are taken at. JOBS is not taken: its
tickets are derived from the log, and the scheduler publishes a queued run's ticket again
(deduplicated) on its next pass.

The artifact store's index is the list of blobs the store holds. Blobs are content-addressed
(their name is their SHA-256) and referenced by events; the artifact service keeps no other
metadata. With the local store the blobs are copied too; with S3 only the index is written
(the bucket is backed up with S3's own tools, and ``restore`` reports indexed blobs it lacks).

``read_models`` records each read model's content hash (``cairn replay``'s) rebuilt up to the
backed-up position of its stream; ``restore --verify`` rebuilds them from the restored store
to the same positions and compares.

Restore refuses a backup whose manifest is missing or unreadable, or whose files do not
match their checksums, before it touches the server; it refuses a stream that exists with
data (``StreamNotEmpty``) unless forced, which deletes it first. An existing empty stream
(provisioned by services that were started) is replaced. Both need the admin (``cairn-admin``):
only it may snapshot, restore or delete a stream.

Errors: ``BackupError`` (an ``InvalidInput``) and below it ``ManifestMissing``,
``ChecksumMismatch`` (naming the stream or file), ``BackupDirNotEmpty``; ``StreamNotEmpty``
is an ``AlreadyExists`` naming the stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import msgspec

from cairn.bus import Connection
from cairn.bus._snapshot import (
    delete_stream,
    restore_stream,
    snapshot_stream,
    stream_info,
    stream_names,
)
from cairn.errors import AlreadyExists, InvalidInput, NotFound
from cairn.proto.streams import EVENTS, LOGS, METRICS
from cairn.settings import Settings
from cairn.storage import blob_key, digest_of_file

__all__ = [
    "FORMAT",
    "MANIFEST",
    "ArtifactsEntry",
    "BackupDirNotEmpty",
    "BackupError",
    "ChecksumMismatch",
    "Manifest",
    "ManifestMissing",
    "ReadModelEntry",
    "StreamEntry",
    "StreamNotEmpty",
    "backup",
    "read_manifest",
    "restore",
    "verify_files",
    "verify_read_models",
]

MANIFEST = "manifest.json"
#: the manifest's format; a restore refuses any other
FORMAT = 1
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_HEX = re.compile(r"[0-9a-f]{64}")


class BackupError(InvalidInput):
    """A backup that cannot be taken or restored as it is."""


class ManifestMissing(BackupError):
    """The folder holds no (readable) manifest: no backup, or one that never finished."""


class ChecksumMismatch(BackupError):
    """A file of the backup is not the one the manifest describes."""

    def __init__(self, message: str, stream: str | None = None) -> None:
        super().__init__(message)
        self.stream = stream


class BackupDirNotEmpty(BackupError):
    """A backup is written into a new or empty folder only."""


class StreamNotEmpty(AlreadyExists):
    """The target already holds this stream with messages; restore replaces it only forced."""

    def __init__(self, message: str, stream: str) -> None:
        super().__init__(message)
        self.stream = stream


class StreamEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One stream's snapshot: its file, checksum, configuration and the position it was
    taken at (the server's state when the snapshot began)."""

    name: str
    file: str
    sha256: str
    size: int
    first_seq: int
    last_seq: int
    messages: int
    config: dict[str, Any]
    state: dict[str, Any]
    taken_at: str


class ArtifactsEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["local", "s3"]
    index: str
    sha256: str
    blobs: int
    size: int
    #: the blobs' files are in the backup (``artifacts/sha256/...``): the local store only
    copied: bool


class ReadModelEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    stream: str
    last_seq: int
    hash: str


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: int
    cairn_version: str
    server_version: str
    created_at: str
    streams: tuple[StreamEntry, ...]
    #: streams of the account not in the backup (JOBS: derived from the log)
    skipped: tuple[str, ...] = ()
    artifacts: ArtifactsEntry | None = None
    read_models: dict[str, ReadModelEntry] = {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version() -> str:
    try:
        return metadata.version("cairn")
    except metadata.PackageNotFoundError:
        return "unknown"


def _server_version(conn: Connection) -> str:
    v = conn.nc.connected_server_version
    return f"{v.major}.{v.minor}.{v.patch}"


def _sha256(path: Path) -> str:
    return digest_of_file(path).removeprefix("sha256:")


def _order(names: list[str]) -> tuple[list[str], list[str]]:
    """The streams a backup takes, in the order it takes them, and those it skips."""
    wanted = [n for n in (METRICS.name, LOGS.name) if n in names]
    wanted += sorted(n for n in names if n.startswith("KV_"))
    if EVENTS.name not in names:
        raise NotFound("the server has no EVENTS stream: nothing to back up (wrong server?)")
    wanted.append(EVENTS.name)
    return wanted, [n for n in names if n not in wanted]


def _prepare_dir(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BackupDirNotEmpty(
            f"{folder} exists and is not an empty folder: a backup goes into a new or empty one"
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / "streams").mkdir(mode=0o700)


async def backup(
    conn: Connection,
    folder: Path,
    settings: Settings,
    *,
    read_models: dict[str, Callable[[], Any]] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Manifest:
    """Write a backup of the connection's store into ``folder`` (new or empty), as the admin.

    ``read_models`` (name -> projection factory, as :func:`cairn.embedded._up.read_models`):
    the read models whose content hashes at the backed-up positions go into the manifest."""
    _prepare_dir(folder)
    names, skipped = _order(await stream_names(conn))
    entries = []
    for name in names:
        entries.append(await _take(conn, folder, name))
        entry = entries[-1]
        say(f"{name}: {entry.messages} messages up to seq {entry.last_seq}, {entry.size} bytes")
    artifacts = await _artifacts_out(folder, settings)
    if artifacts is not None:
        say(f"artifacts ({artifacts.backend}): {artifacts.blobs} blobs, {artifacts.size} bytes")
    hashes = {}
    if read_models:
        positions = {e.name: e.last_seq for e in entries}
        hashes = await _hashes(conn, read_models, positions)
    manifest = Manifest(
        format=FORMAT,
        cairn_version=_version(),
        server_version=_server_version(conn),
        created_at=_now(),
        streams=tuple(entries),
        skipped=tuple(skipped),
        artifacts=artifacts,
        read_models=hashes,
    )
    staged = folder / (MANIFEST + ".part")
    staged.write_bytes(msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
    os.chmod(staged, 0o600)
    os.replace(staged, folder / MANIFEST)
    return manifest


async def _take(conn: Connection, folder: Path, name: str) -> StreamEntry:
    relative = f"streams/{name}.tar.s2"
    staged = folder / (relative + ".part")
    taken_at = _now()
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        snap = await snapshot_stream(conn, name, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(staged, folder / relative)
    state = snap.state
    return StreamEntry(
        name=name,
        file=relative,
        sha256=snap.sha256,
        size=snap.size,
        first_seq=int(state.get("first_seq", 0)),
        last_seq=int(state.get("last_seq", 0)),
        messages=int(state.get("messages", 0)),
        config=snap.config,
        state=state,
        taken_at=taken_at,
    )


# -- the artifact store's index -------------------------------------------------------------


def _local_blobs(root: Path) -> Iterator[tuple[str, Path]]:
    base = root / "sha256"
    if not base.is_dir():
        return
    for path in sorted(base.glob("??/??/*")):
        if path.is_file() and _HEX.fullmatch(path.name):
            yield "sha256:" + path.name, path


async def _s3_index(settings: Settings) -> list[dict[str, Any]]:
    from cairn.storage import S3BlobStore

    assert settings.artifact_s3 is not None
    config = settings.artifact_s3
    store = await S3BlobStore.open(config)
    rows = []
    try:
        pages = store.client.get_paginator("list_objects_v2")
        async for page in pages.paginate(Bucket=config.bucket, Prefix=config.prefix + "sha256/"):
            for item in page.get("Contents", []):
                name = str(item["Key"]).rsplit("/", 1)[-1]
                if _HEX.fullmatch(name):
                    rows.append({"digest": "sha256:" + name, "size": int(item["Size"])})
    finally:
        await store.close()
    return sorted(rows, key=lambda r: r["digest"])


async def _artifacts_out(folder: Path, settings: Settings) -> ArtifactsEntry | None:
    out = folder / "artifacts"
    backend: Literal["local", "s3"] = "local" if settings.artifact_s3 is None else "s3"
    if backend == "s3":
        rows = await _s3_index(settings)
    else:
        root = settings.artifacts_path
        if not root.is_dir():
            return None
        rows = []
        for digest, path in _local_blobs(root):
            target = out / blob_key(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            if "sha256:" + _sha256(target) != digest:  # a blob that is not its name
                raise ChecksumMismatch(f"artifact store: {path} does not hash to its name")
            rows.append({"digest": digest, "size": target.stat().st_size})
    out.mkdir(mode=0o700, exist_ok=True)
    index = out / "index.json"
    index.write_text(json.dumps(rows, indent=1) + "\n")
    return ArtifactsEntry(
        backend=backend,
        index="artifacts/index.json",
        sha256=_sha256(index),
        blobs=len(rows),
        size=sum(r["size"] for r in rows),
        copied=backend == "local",
    )


# -- read models ----------------------------------------------------------------------------


async def _hashes(
    conn: Connection, read_models: dict[str, Callable[[], Any]], positions: dict[str, int]
) -> dict[str, ReadModelEntry]:
    """Each read model rebuilt from sequence 1 up to its stream's position (``cairn replay``'s
    machinery, into a temporary folder): its content hash."""
    from cairn.projection import replay

    found = {}
    with tempfile.TemporaryDirectory(prefix="cairn-backup-") as tmp:
        for name, make in sorted(read_models.items()):
            projection = make()
            stream = projection.source.stream
            if stream not in positions:
                continue
            until = positions[stream]
            done = await replay(conn, projection, Path(tmp) / f"{name}.sqlite", until)
            done.db.close()
            found[name] = ReadModelEntry(stream=stream, last_seq=until, hash=done.hash)
    return found


async def verify_read_models(
    conn: Connection, manifest: Manifest, read_models: dict[str, Callable[[], Any]]
) -> list[dict[str, Any]]:
    """Rebuild every read model the manifest names up to its recorded position, from the
    store ``conn`` reaches, and compare its content hash with the recorded one."""
    wanted = {n: m for n, m in read_models.items() if n in manifest.read_models}
    unknown = sorted(set(manifest.read_models) - set(read_models))
    positions = {e.stream: e.last_seq for e in manifest.read_models.values()}
    now = await _hashes(conn, wanted, positions)
    rows = []
    for name, recorded in sorted(manifest.read_models.items()):
        got = now.get(name)
        rows.append(
            {
                "read_model": name,
                "last_seq": recorded.last_seq,
                "recorded_hash": recorded.hash,
                "hash": got.hash if got else None,
                "same": got is not None and got.hash == recorded.hash,
            }
        )
    for name in unknown:  # a read model this version no longer has
        next(r for r in rows if r["read_model"] == name)["hash"] = "unknown read model"
    return rows


# -- restore --------------------------------------------------------------------------------


def read_manifest(folder: Path) -> Manifest:
    """The backup's manifest, checked for shape and for file names that stay in ``folder``."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ManifestMissing(f"{folder} is not a folder: no backup there")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestMissing(
            f"{path} is missing: {folder} holds no backup, or one that never finished"
            " (the manifest is written last)"
        ) from None
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.ValidationError as exc:
        raise BackupError(f"{path} is not a backup manifest: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BackupError(f"{path} is not JSON: {exc}") from exc
    if manifest.format != FORMAT:
        raise BackupError(f"{path}: format {manifest.format}, this version reads {FORMAT}")
    for entry in manifest.streams:
        if not _STREAM_NAME.fullmatch(entry.name) or entry.file != f"streams/{entry.name}.tar.s2":
            raise BackupError(f"{path}: stream entry {entry.name!r} names file {entry.file!r}")
        if entry.config.get("name") != entry.name:
            raise BackupError(f"{path}: stream {entry.name}'s configuration names another")
    if manifest.artifacts is not None and manifest.artifacts.index != "artifacts/index.json":
        raise BackupError(f"{path}: the artifact index is {manifest.artifacts.index!r}")
    return manifest


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest names is there with its size and SHA-256, and every copied
    blob hashes to its name; else ``ChecksumMismatch`` naming the stream or the file."""
    for entry in manifest.streams:
        path = folder / entry.file
        if not path.is_file():
            raise ChecksumMismatch(f"stream {entry.name}: {path} is missing", entry.name)
        size, digest = path.stat().st_size, _sha256(path)
        if size != entry.size or digest != entry.sha256:
            raise ChecksumMismatch(
                f"stream {entry.name}: {path} does not match the manifest (sha256 {digest},"
                f" {size} bytes; recorded {entry.sha256}, {entry.size} bytes)",
                entry.name,
            )
    for digest, path in _indexed_blobs(folder, manifest):
        if manifest.artifacts is not None and manifest.artifacts.copied:
            if not path.is_file() or "sha256:" + _sha256(path) != digest:
                raise ChecksumMismatch(f"artifact {digest}: {path} is missing or changed")


def _indexed_blobs(folder: Path, manifest: Manifest) -> list[tuple[str, Path]]:
    entry = manifest.artifacts
    if entry is None:
        return []
    index = folder / entry.index
    if not index.is_file() or _sha256(index) != entry.sha256:
        raise ChecksumMismatch(f"artifact index: {index} is missing or does not match")
    rows = json.loads(index.read_text())
    return [(str(r["digest"]), folder / "artifacts" / blob_key(str(r["digest"]))) for r in rows]


async def _check_targets(conn: Connection, manifest: Manifest, force: bool) -> list[str]:
    """Refuse (``StreamNotEmpty``) a stream that exists with messages unless ``force``;
    return the streams that exist and must be deleted first."""
    existing = []
    for entry in manifest.streams:
        info = await stream_info(conn, entry.name)
        if info is None:
            continue
        held = int(info.get("state", {}).get("messages", 0))
        if held and not force:
            raise StreamNotEmpty(
                f"stream {entry.name} already holds {held} messages: restore does not replace"
                " data (restore into a fresh home, or --force to delete it first)",
                entry.name,
            )
        existing.append(entry.name)
    return existing


async def restore(
    conn: Connection,
    folder: Path,
    settings: Settings,
    *,
    force: bool = False,
    replicas: int | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Manifest:
    """Restore the backup in ``folder`` into the store ``conn`` reaches, as the admin.

    Checks everything first (manifest, checksums, targets), then deletes the streams that
    exist (empty ones always, ones with data only with ``force``), restores each stream with
    the configuration it was taken with (``replicas``: another ``num_replicas``, e.g. an R1
    backup into a three-node cluster), checks each restored stream holds at least the
    recorded position, and puts back the local artifact store's blobs."""
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    existing = await _check_targets(conn, manifest, force)
    for name in existing:
        await delete_stream(conn, name)
        say(f"{name}: deleted the existing stream")
    for entry in manifest.streams:
        config = dict(entry.config)
        if replicas is not None:
            config["num_replicas"] = replicas
        t0 = time.monotonic()
        source = await asyncio.to_thread(open, folder / entry.file, "rb")
        with source:
            done = await restore_stream(conn, config, entry.state, source)
        _check_restored(entry, done.state)
        say(
            f"{entry.name}: {done.state.get('messages')} messages up to seq"
            f" {done.state.get('last_seq')} in {time.monotonic() - t0:.1f}s"
        )
    await _artifacts_in(folder, manifest, settings, say)
    return manifest


def _check_restored(entry: StreamEntry, state: dict[str, Any]) -> None:
    """The restored stream reaches the recorded position (messages past it were written while
    the snapshot was taken; the first sequence may have moved on by the stream's age limit,
    as in a bucket with a TTL)."""
    last = int(state.get("last_seq", 0))
    if last < entry.last_seq:
        raise ChecksumMismatch(
            f"stream {entry.name}: restored up to seq {last}, the backup recorded {entry.last_seq}",
            entry.name,
        )


async def _artifacts_in(
    folder: Path, manifest: Manifest, settings: Settings, say: Callable[[str], None]
) -> None:
    entry = manifest.artifacts
    if entry is None:
        return
    blobs = _indexed_blobs(folder, manifest)
    if entry.copied and settings.artifact_s3 is None:
        root = settings.artifacts_path
        added = 0
        for digest, path in blobs:
            target = root / blob_key(digest)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name(target.name + ".part")
            shutil.copyfile(path, staged)
            os.chmod(staged, 0o444)
            os.replace(staged, target)
            added += 1
        say(f"artifacts: {added} blobs put back into {root} ({len(blobs) - added} were there)")
        return
    missing = await _missing_blobs(settings, [d for d, _ in blobs])
    said = f"{len(missing)} of {len(blobs)} indexed blobs are not in the artifact store"
    say(f"artifacts: {said}" + (f", e.g. {missing[0]}" if missing else ""))


async def _missing_blobs(settings: Settings, digests: list[str]) -> list[str]:
    from cairn.storage import LocalBlobStore, S3BlobStore

    store: Any = (
        await S3BlobStore.open(settings.artifact_s3)
        if settings.artifact_s3 is not None
        else LocalBlobStore(settings.artifacts_path)
    )
    try:
        return [d for d in digests if await store.size(d) is None]
    finally:
        await store.close()
