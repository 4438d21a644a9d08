"""A dataset version's files: fingerprinted at registration, copied into the artifact store
for a snapshot, and made local (checked against the fingerprint) when read.

A dataset defined from URLs keeps them as references (``spec.urls``): an ``s3://`` URL
becomes a path of its bucket's registered datastore (:func:`resolve_urls`), fingerprinted
like any; the file of any other URL (or every file below an fsspec folder URL) is recorded
with its validator (``spec.url_files``) and checked against it when read.

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

import msgspec

from cairn.data._access import Datastores
from cairn.data._progress import Progress
from cairn.data._stores import local_target, match
from cairn.data._transfer import download_blob, upload_file
from cairn.data._urls import Remote, check_url, fetch_remote, list_url, resolve_s3_url
from cairn.errors import DataChanged, InvalidInput, NotFound
from cairn.proto.assets import DataFile, DataPath, DatasetSpec, UrlFile
from cairn.rpc import Client
from cairn.settings import Settings
from cairn.storage import digest_of_file

__all__ = [
    "common_dir",
    "fingerprint",
    "materialise",
    "resolve_urls",
    "snapshot_files",
    "snapshot_url_files",
]


async def resolve_urls(
    client: Client, spec: DatasetSpec, *, allow_private: bool = False
) -> DatasetSpec:
    """``spec`` with its URLs resolved: each ``s3://`` one a path of its bucket's datastore,
    the files of the others (with their validators) in ``url_files``. A spec without URLs,
    or one resolved already, is returned as it is."""
    if not spec.urls or spec.url_files or spec.files:
        return spec
    paths, remotes = list(spec.paths), []
    for url in spec.urls:
        check_url(url, "dataset URL")
        if url.lower().startswith("s3://"):
            store, path = await resolve_s3_url(client, url, "dataset URL")
            if not path:
                raise InvalidInput(f"{url!r:.200}: name a key or prefix of the bucket")
            if DataPath(store, path) not in paths:
                paths.append(DataPath(store, path))
        else:
            remotes += await list_url(url, allow_private=allow_private)
    seen: dict[str, str] = {}
    for r in remotes:
        if r.path in seen:
            raise InvalidInput(f"{seen[r.path]} and {r.url} both land as {r.path!r}")
        seen[r.path] = r.url
    url_files = [UrlFile(r.url, r.path, max(r.size, 0), r.validator) for r in remotes]
    return msgspec.structs.replace(spec, paths=paths, url_files=url_files)


async def fingerprint(
    client: Client, spec: DatasetSpec, *, settings: Settings | None = None
) -> list[DataFile]:
    """Every file the dataset's paths match now, with its digest or ETag (in the order of the
    paths, each pattern's files sorted)."""
    found: dict[tuple[str, str], DataFile] = {}
    if not spec.paths:
        return []
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


async def snapshot_url_files(
    client: Client,
    files: list[UrlFile],
    *,
    show: bool | None = False,
    allow_private: bool = False,
) -> list[UrlFile]:
    """Copy every URL file into the artifact store; the files with their copies' digests."""
    area = f"dataset-{uuid.uuid4().hex}"
    out = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(sum(f.size for f in files), "dataset snapshot", show=show) as bar,
    ):
        for i, f in enumerate(files):
            remote = Remote(f.url, str(i), f.size, f.validator)
            local = await fetch_remote(remote, Path(tmp), allow_private=allow_private)
            await upload_file(client, area, str(i), local, staging=True, progress=bar)
            blob = await asyncio.to_thread(digest_of_file, local)
            out.append(msgspec.structs.replace(f, blob=blob))
    return out


async def _url_files(
    client: Client, spec: DatasetSpec, target: Path, label: str, allow_private: bool
) -> list[Path]:
    out = []
    for f in spec.url_files:
        local = local_target(target, f.path)
        if f.blob is not None:  # a snapshot: the copy in the artifact store
            if not local.exists():
                await download_blob(client, f.blob, f.size, local)
        else:
            try:
                remote = Remote(f.url, f.path, f.size, f.validator)
                await fetch_remote(remote, target, allow_private=allow_private)
            except DataChanged as e:
                raise DataChanged(f"{label}: {e} since it was registered") from e
        out.append(local)
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
    allow_private = settings is not None and settings.url_allow_private_hosts
    spec = await resolve_urls(client, spec, allow_private=allow_private)
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
    return out + await _url_files(client, spec, target, label, allow_private)


def common_dir(paths: list[str]) -> str:
    """The folder the paths share ("" for none), which reading a dataset strips."""
    parents = [str(PurePosixPath(p).parent) for p in paths]
    common = os.path.commonpath(parents) if parents else ""
    return "" if common in (".", "/") else common
