"""A dataset version's files: fingerprinted at registration, copied into the artifact store
for a snapshot, and made local (checked against the fingerprint) when read.

Reading a registered version reads exactly the files it recorded and checks each first: a
file changed or gone since is a ``DataChanged`` error naming it, unless the version is a
snapshot, whose copies in the artifact store do not change.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path, PurePosixPath

from cairn.data._access import Datastores
from cairn.data._progress import Progress
from cairn.data._stores import local_target, match
from cairn.data._transfer import download_blob, upload_file
from cairn.errors import DataChanged, NotFound
from cairn.proto.assets import DataFile, DatasetSpec
from cairn.rpc import Client
from cairn.settings import Settings
from cairn.storage import digest_of_file

__all__ = ["common_dir", "fingerprint", "materialise", "snapshot_files"]


async def fingerprint(
    client: Client, spec: DatasetSpec, *, settings: Settings | None = None
) -> list[DataFile]:
    """Every file the dataset's paths match now, with its digest or ETag (in the order of the
    paths, each pattern's files sorted)."""
    found: dict[tuple[str, str], DataFile] = {}
    async with Datastores(client, settings) as stores:
        for path in spec.paths:
            store = await stores.get(path.datastore)
            entries = sorted(await match(store, path.pattern), key=lambda e: e.path)
            for entry in await asyncio.gather(*(store.fingerprint(e) for e in entries)):
                key = (path.datastore, entry.path)
                found[key] = DataFile(path.datastore, entry.path, entry.size, entry.etag)
    if not found:
        shown = ", ".join(f"{p.datastore}:{p.pattern}" for p in spec.paths)
        raise NotFound(f"no file matches {shown}")
    return list(found.values())


async def snapshot_files(
    client: Client,
    files: list[DataFile],
    *,
    settings: Settings | None = None,
    show: bool | None = False,
) -> list[DataFile]:
    """Copy every file into the artifact store (a staging area of its own); returns the files
    with the digests of their copies. The bar (``show``) counts the bytes uploaded."""
    area = f"dataset-{uuid.uuid4().hex}"
    out = []
    total = sum(f.size for f in files)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(total, "dataset snapshot", show=show) as bar,
    ):
        async with Datastores(client, settings) as stores:
            for i, f in enumerate(files):
                local = Path(tmp) / str(i)
                await (await stores.get(f.datastore)).get(f.path, local)
                await upload_file(client, area, str(i), local, staging=True, progress=bar)
                blob = await asyncio.to_thread(digest_of_file, local)
                out.append(DataFile(f.datastore, f.path, f.size, f.etag, blob))
    return out


async def materialise(
    client: Client,
    spec: DatasetSpec,
    target: Path,
    *,
    label: str,
    show: bool | None = False,
    settings: Settings | None = None,
) -> list[Path]:
    """The dataset's files under ``target`` (paths relative to their common folder), checked
    against the version's fingerprint when it has one. The bar (``show``) starts at the bytes
    of snapshot files already there (kept from an earlier download)."""
    files = spec.files or await fingerprint(client, spec, settings=settings)
    base = common_dir([f.path for f in files])
    placed = [(f, local_target(target, f.path[len(base) :].lstrip("/"))) for f in files]
    kept = sum(f.size for f, local in placed if f.blob is not None and local.exists())
    total = sum(f.size for f in files)
    out = []
    with Progress(total, label, show=show, initial=kept) as bar:
        async with Datastores(client, settings) as stores:
            for f, local in placed:
                if f.blob is not None:  # a snapshot: the copy in the artifact store
                    if not local.exists():
                        await download_blob(client, f.blob, f.size, local, progress=bar)
                    out.append(local)
                    continue
                store = await stores.get(f.datastore)
                if spec.files:
                    now = await store.stat(f.path)
                    now = await store.fingerprint(now) if now is not None else None
                    if now is None or (now.size, now.etag) != (f.size, f.etag):
                        what = "is gone" if now is None else "changed"
                        where = f"{f.datastore}:{f.path}"
                        raise DataChanged(f"{label}: {where} {what} since it was registered")
                await store.get(f.path, local, progress=bar.update)
                out.append(local)
    return out


def common_dir(paths: list[str]) -> str:
    """The folder the paths share ("" for none), which reading a dataset strips."""
    parents = [str(PurePosixPath(p).parent) for p in paths]
    common = os.path.commonpath(parents) if parents else ""
    return "" if common in (".", "/") else common
