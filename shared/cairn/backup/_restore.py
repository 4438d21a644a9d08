"""Restoring a backup: everything checked first, then the streams, then the blobs."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cairn.backup._manifest import (
    ChecksumMismatch,
    Manifest,
    StreamEntry,
    StreamNotEmpty,
    indexed_blobs,
    read_manifest,
    server_version,
    verify_files,
)
from cairn.bus import Connection, cluster_replicas
from cairn.bus._snapshot import delete_stream, purge_stream, restore_stream, stream_info
from cairn.proto.streams import JOBS
from cairn.settings import Settings
from cairn.storage import blob_key

__all__ = ["restore"]


async def _check_targets(conn: Connection, manifest: Manifest, force: bool) -> set[str]:
    """Refuse (``StreamNotEmpty``) a stream that exists with history (a last sequence, even
    with no messages left) unless ``force``; return the streams that exist."""
    existing = set()
    for entry in manifest.streams:
        info = await stream_info(conn, entry.name)
        if info is None:
            continue
        last = int(info.get("state", {}).get("last_seq", 0))
        if last and not force:
            raise StreamNotEmpty(
                f"stream {entry.name} already holds messages up to seq {last}: restore does"
                " not replace data (restore into a fresh home, or --force to delete it first)",
                entry.name,
            )
        existing.add(entry.name)
    return existing


async def restore(
    conn: Connection,
    folder: Path,
    settings: Settings,
    *,
    force: bool = False,
    replicas: int | None = None,
    checked: Manifest | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Manifest:
    """Restore the backup in ``folder`` into the store ``conn`` reaches, as the admin.

    Checks everything first (manifest, checksums, targets), then, stream by stream, deletes it
    where it exists (an empty one always, one with data only with ``force``) and restores it
    with the configuration it was taken with, but with ``replicas`` copies (default: the
    target's, :func:`cairn.bus.cluster_replicas`: an R1 backup restored into a three-node
    cluster gets 3, an R3 one restored onto a single server 1), sending only the bytes whose
    checksum the manifest records, and checks it holds at least the recorded position; then puts
    back the local artifact store's blobs. ``force`` also purges JOBS (its tickets belong to the
    log that was replaced). A restore that fails part-way leaves the streams before the failing
    one restored: run it again with ``force``. ``checked``: the manifest as the caller read it
    and checked the files against it (``read_manifest``, ``verify_files``)."""
    manifest = checked
    if manifest is None:
        manifest = read_manifest(folder)
        verify_files(folder, manifest)
    if manifest.server_version != (here := server_version(conn)):
        taken = manifest.server_version
        say(f"warning: the backup was taken from nats-server {taken}; this one is {here}")
    replicas = replicas if replicas is not None else cluster_replicas(conn)
    existing = await _check_targets(conn, manifest, force)
    if force and await stream_info(conn, JOBS.name) is not None:
        await purge_stream(conn, JOBS.name)
        say(f"{JOBS.name}: purged (its tickets were the replaced log's)")
    for entry in manifest.streams:
        if entry.name in existing:
            await delete_stream(conn, entry.name)
            say(f"{entry.name}: deleted the existing stream")
        await _restore_one(conn, folder, entry, replicas, say)
    await _artifacts_in(folder, manifest, settings, say)
    return manifest


async def _restore_one(
    conn: Connection,
    folder: Path,
    entry: StreamEntry,
    replicas: int,
    say: Callable[[str], None],
) -> None:
    config = {**entry.config, "num_replicas": replicas}

    def check_sent(size: int, sha256: str) -> None:
        if (size, sha256) != (entry.size, entry.sha256):
            raise ChecksumMismatch(
                f"stream {entry.name}: {folder / entry.file} changed while it was restored"
                f" (sent sha256 {sha256}, {size} bytes; recorded {entry.sha256}, {entry.size}"
                " bytes); the stream was not made",
                entry.name,
            )

    t0 = time.monotonic()
    source = await asyncio.to_thread(open, folder / entry.file, "rb")
    with source:
        done = await restore_stream(conn, config, entry.state, source, check_sent=check_sent)
    _check_restored(entry, done.state)
    say(
        f"{entry.name}: {done.state.get('messages')} messages up to seq"
        f" {done.state.get('last_seq')} in {time.monotonic() - t0:.1f}s"
    )


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
    blobs = indexed_blobs(folder, manifest)
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
