"""A workspace's registered datastores, opened by name, and files moved into and out of them.

The registry hands out a datastore's spec and its *sealed* credentials; :class:`Datastores`
opens them with the workspace key that ``settings`` point at (``keys_dir``), so clear
credentials exist only in the process that moves the data. Each upload is recorded in the log
(``DatastoreFilesUploaded``: path, size, digest or ETag).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from cairn.data._progress import Progress
from cairn.data._stores import Entry, Store, local_target, open_store, sha256_hex
from cairn.proto.assets import MAX_UPLOAD_RECORD, DataFile, DatastoreSpec, GetAsset, RecordUpload
from cairn.proto.paths import validate_run_path
from cairn.rpc import Client
from cairn.secrets import unseal
from cairn.settings import Settings

__all__ = [
    "Datastores",
    "Uploaded",
    "download_entries",
    "download_prefix",
    "list_entries",
    "open_datastore",
    "upload_pairs",
]

PARALLEL = 8


async def _open(
    client: Client, name: str, settings: Settings | None, *, ambient: bool = True
) -> Store:
    q = GetAsset(asset_kind="datastore", name=name, sealed=True)
    data = (await client.ask(q)).data
    spec = data["spec"]
    store_spec = DatastoreSpec(
        kind=spec.get("kind"),
        path=spec.get("path"),
        endpoint_url=spec.get("endpoint_url"),
        bucket=spec.get("bucket"),
        region=spec.get("region"),
        prefix=spec.get("prefix") or "",
    )
    token = data.get("sealed_credentials")
    keys = settings or client.conn.settings
    creds = unseal(keys, client.workspace, token) if token else None
    return await open_store(name, store_spec, creds, ambient=ambient)


class Datastores:
    """The store factory of a loop over files of several datastores: each opened once (opening
    one asks the registry, opens its credentials and builds a client), all closed on exit."""

    def __init__(self, client: Client, settings: Settings | None = None) -> None:
        self.client, self.settings = client, settings
        self.opened: dict[str, Store] = {}

    async def get(self, name: str) -> Store:
        if name not in self.opened:
            self.opened[name] = await _open(self.client, name, self.settings)
        return self.opened[name]

    async def close(self) -> None:
        while self.opened:
            _, store = self.opened.popitem()
            await store.close()

    async def __aenter__(self) -> Datastores:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


@contextlib.asynccontextmanager
async def open_datastore(
    client: Client, name: str, settings: Settings | None = None, *, ambient: bool = True
) -> AsyncIterator[Store]:
    """Datastore ``name`` of the client's workspace, open for the ``async with`` block, its
    credentials opened with the key of ``settings`` (default: the connection's). Without
    ``ambient``, an S3 datastore registered without credentials is read unsigned rather than
    with whatever credentials this machine has."""
    store = await _open(client, name, settings, ambient=ambient)
    try:
        yield store
    finally:
        await store.close()


@dataclass(frozen=True)
class Uploaded:
    """What an upload wrote (and recorded), and the highest event sequence the records got."""

    files: list[DataFile]
    seq: int = 0


async def _record(client: Client, datastore: str, files: list[DataFile]) -> int:
    seq = 0
    for i in range(0, len(files), MAX_UPLOAD_RECORD):
        chunk = files[i : i + MAX_UPLOAD_RECORD]
        cmd = RecordUpload(command_id=uuid.uuid4().hex, name=datastore, files=chunk)
        reply = await client.send(cmd)
        seq = max(seq, reply.seq)
    return seq


async def upload_pairs(
    client: Client,
    datastore: str,
    pairs: list[tuple[Path, str]],
    *,
    overwrite: bool,
    show_progress: bool | None = None,
    settings: Settings | None = None,
) -> Uploaded:
    """Write local files to datastore paths, ``PARALLEL`` at a time; existing files are kept
    unless ``overwrite`` (their bytes are where the bar starts: a repeated upload resumes).
    Returns (and records) what was written."""
    for _, target in pairs:
        validate_run_path(target)
    sizes = await asyncio.to_thread(lambda: {p: p.stat().st_size for p, _ in pairs})
    written: list[DataFile] = []
    async with open_datastore(client, datastore, settings) as store:
        gate = asyncio.Semaphore(PARALLEL)
        todo = pairs if overwrite else await _absent(store, pairs, gate)
        total = sum(sizes.values())
        kept = total - sum(sizes[source] for source, _ in todo)
        with Progress(total, f"upload to {datastore}", show=show_progress, initial=kept) as bar:

            async def one(source: Path, target: str) -> None:
                async with gate:
                    entry = await store.put(target, source, progress=bar.update)
                    etag = entry.etag or await asyncio.to_thread(sha256_hex, source)
                    written.append(DataFile(datastore, target, entry.size, etag))

            await asyncio.gather(*(one(s, t) for s, t in todo))
    written.sort(key=lambda f: f.path)
    seq = await _record(client, datastore, written) if written else 0
    return Uploaded(written, seq)


async def _absent(
    store: Store, pairs: list[tuple[Path, str]], gate: asyncio.Semaphore
) -> list[tuple[Path, str]]:
    """The pairs whose datastore path holds no file yet."""

    async def exists(target: str) -> bool:
        async with gate:
            return await store.stat(target) is not None

    found = await asyncio.gather(*(exists(t) for _, t in pairs))
    return [pair for pair, there in zip(pairs, found, strict=True) if not there]


async def list_entries(
    client: Client, datastore: str, prefix: str = "", *, settings: Settings | None = None
) -> list[Entry]:
    """The files of ``datastore`` under ``prefix``."""
    async with open_datastore(client, datastore, settings) as store:
        return await store.list(prefix.strip("/"))


async def download_prefix(
    client: Client,
    datastore: str,
    prefix: str,
    target: Path,
    *,
    overwrite: bool,
    show_progress: bool | None = None,
    settings: Settings | None = None,
) -> list[Path]:
    """The files of ``datastore`` under ``prefix`` into ``target/<their path>``."""
    async with open_datastore(client, datastore, settings) as store:
        entries = await store.list(prefix)
        return await download_entries(
            store, entries, target, overwrite=overwrite, show=show_progress
        )


async def download_entries(
    store: Store,
    entries: list[Entry],
    target: Path,
    *,
    overwrite: bool,
    show: bool | None = False,
) -> list[Path]:
    """The listed files of ``store`` under ``target/<their path>``, ``PARALLEL`` at a time;
    local files are kept unless ``overwrite`` (their bytes are where the bar starts)."""
    gate = asyncio.Semaphore(PARALLEL)
    local = [(e, local_target(target, e.path)) for e in entries]  # a key may not climb out
    todo = local if overwrite else [(e, p) for e, p in local if not p.exists()]
    total = sum(e.size for e in entries)
    kept = total - sum(e.size for e, _ in todo)
    with Progress(total, f"download from {store.name}", show=show, initial=kept) as bar:

        async def one(entry: Entry, path: Path) -> None:
            async with gate:
                await store.get(entry.path, path, progress=bar.update)

        await asyncio.gather(*(one(e, p) for e, p in todo))
    return sorted(p for _, p in local)
