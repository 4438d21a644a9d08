"""Taking a backup: the streams' snapshots, the artifact store's index, the read models'
hashes, then the manifest."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec

from cairn.backup._manifest import (
    FORMAT,
    HEX_DIGEST,
    MANIFEST,
    STREAM_NAME,
    ArtifactsEntry,
    BackupDirNotEmpty,
    ChecksumMismatch,
    Manifest,
    ReadModelEntry,
    StreamEntry,
    now,
    server_version,
    sha256_of,
    version,
)
from cairn.bus import Connection
from cairn.bus._snapshot import snapshot_stream, stream_names
from cairn.errors import NotFound
from cairn.proto.streams import EVENTS, LOGS, METRICS
from cairn.settings import Settings
from cairn.storage import blob_key

__all__ = ["backup", "verify_read_models"]


def _order(names: list[str]) -> tuple[list[str], list[str]]:
    """The streams a backup takes, in the order it takes them, and those it skips."""
    wanted = [n for n in (METRICS.name, LOGS.name) if n in names]
    wanted += sorted(n for n in names if n.startswith("KV_") and STREAM_NAME.fullmatch(n))
    if EVENTS.name not in names:
        raise NotFound("the server has no EVENTS stream: nothing to back up (wrong server?)")
    wanted.append(EVENTS.name)
    return wanted, [n for n in names if n not in wanted]


def _prepare_dir(folder: Path) -> bool:
    """Make ``folder`` (0700) with its ``streams``; whether it was made (else it was empty)."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BackupDirNotEmpty(
            f"{folder} exists and is not an empty folder: a backup goes into a new or empty one"
        )
    made = not folder.exists()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    (folder / "streams").mkdir(mode=0o700)
    return made


def _undo(folder: Path, made: bool) -> None:
    """Remove what a failed backup wrote: the folder it made, or the contents of the empty
    one it was given."""
    if made:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _sync_dirs(folder: Path) -> None:
    """Every folder under ``folder`` (its files' names) on disk."""
    for path, _, _ in os.walk(folder):
        _sync_dir(Path(path))


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    made = _prepare_dir(folder)
    try:
        manifest = await _write(conn, folder, settings, read_models, say)
    except BaseException:
        _undo(folder, made)
        raise
    _sync_dir(folder)
    return manifest


async def _write(
    conn: Connection,
    folder: Path,
    settings: Settings,
    read_models: dict[str, Callable[[], Any]] | None,
    say: Callable[[str], None],
) -> Manifest:
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
        wanted = {}
        for name, make in read_models.items():
            stream = make().source.stream
            if stream in positions:
                wanted[name] = (make, positions[stream])
        hashes = await _hashes(conn, wanted)
    manifest = Manifest(
        format=FORMAT,
        cairn_version=version(),
        server_version=server_version(conn),
        created_at=now(),
        streams=tuple(entries),
        skipped=tuple(skipped),
        artifacts=artifacts,
        read_models=hashes,
    )
    _sync_dirs(folder)  # every file is synced as written; now their names
    _write_synced(folder / MANIFEST, msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
    return manifest


def _write_synced(path: Path, data: bytes) -> None:
    """``data`` at ``path`` (0600), on disk before its name appears."""
    staged = path.with_name(path.name + ".part")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(staged, path)


async def _take(conn: Connection, folder: Path, name: str) -> StreamEntry:
    relative = f"streams/{name}.tar.s2"
    staged = folder / (relative + ".part")
    taken_at = now()
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            snap = await snapshot_stream(conn, name, out)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)  # a part of a snapshot is no snapshot
        raise
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
        if path.is_file() and HEX_DIGEST.fullmatch(path.name):
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
                if HEX_DIGEST.fullmatch(name):
                    rows.append({"digest": "sha256:" + name, "size": int(item["Size"])})
    finally:
        await store.close()
    return sorted(rows, key=lambda r: r["digest"])


def _copy_synced(source: Path, target: Path) -> None:
    """``source``'s bytes at ``target`` (0600), on disk."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        shutil.copyfileobj(src, out, 1024 * 1024)
        out.flush()
        os.fsync(out.fileno())


async def _artifacts_out(folder: Path, settings: Settings) -> ArtifactsEntry | None:
    out = folder / "artifacts"
    backend: Literal["local", "s3"] = "local" if settings.artifact_s3 is None else "s3"
    if backend == "s3":
        rows = await _s3_index(settings)
    else:
        root = settings.artifacts_path
        if not root.is_dir():
            return None
        out.mkdir(mode=0o700)
        rows = []
        for digest, path in _local_blobs(root):
            target = out / blob_key(digest)
            for part in reversed(Path(blob_key(digest)).parents[:-1]):  # each one 0700
                (out / part).mkdir(mode=0o700, exist_ok=True)
            _copy_synced(path, target)
            if "sha256:" + sha256_of(target) != digest:  # a blob that is not its name
                raise ChecksumMismatch(f"artifact store: {path} does not hash to its name")
            rows.append({"digest": digest, "size": target.stat().st_size})
    out.mkdir(mode=0o700, exist_ok=True)
    index = out / "index.json"
    _write_synced(index, msgspec.json.format(msgspec.json.encode(rows), indent=1) + b"\n")
    return ArtifactsEntry(
        backend=backend,
        index="artifacts/index.json",
        sha256=sha256_of(index),
        blobs=len(rows),
        size=sum(r["size"] for r in rows),
        copied=backend == "local",
    )


# -- read models ----------------------------------------------------------------------------


async def _hashes(
    conn: Connection, read_models: dict[str, tuple[Callable[[], Any], int]]
) -> dict[str, ReadModelEntry]:
    """Each read model (name -> its factory and a position of its stream) rebuilt from
    sequence 1 up to that position (``cairn replay``'s machinery, into a temporary folder):
    its content hash."""
    from cairn.projection import replay

    found = {}
    with tempfile.TemporaryDirectory(prefix="cairn-backup-") as tmp:
        for name, (make, until) in sorted(read_models.items()):
            projection = make()
            done = await replay(conn, projection, Path(tmp) / f"{name}.sqlite", until)
            done.db.close()
            stream = projection.source.stream
            found[name] = ReadModelEntry(stream=stream, last_seq=until, hash=done.hash)
    return found


async def verify_read_models(
    conn: Connection, manifest: Manifest, read_models: dict[str, Callable[[], Any]]
) -> list[dict[str, Any]]:
    """Rebuild every read model the manifest names up to its own recorded position, from the
    store ``conn`` reaches, and compare its content hash with the recorded one."""
    wanted = {
        name: (make, manifest.read_models[name].last_seq)
        for name, make in read_models.items()
        if name in manifest.read_models
    }
    unknown = sorted(set(manifest.read_models) - set(read_models))
    now = await _hashes(conn, wanted)
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
