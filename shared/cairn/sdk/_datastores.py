"""``Datastore`` with the Azure ML v1 names: files into and out of datastores, and
``DataReference``/``DataBinding``, a datastore path bound to a job.

The bytes move between this process and the datastore directly (a local directory, or S3
through aiobotocore); the registry hands this process the datastore's *sealed* credentials,
which it opens with the workspace key (``keys_dir``), so clear credentials exist only where
data moves. Each upload is recorded in the log (``DatastoreFilesUploaded``: path, size,
digest or ETag).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from cairn.data import Entry, Store, open_store, sha256_hex
from cairn.errors import InvalidInput
from cairn.proto.assets import (
    MAX_UPLOAD_RECORD,
    DataFile,
    DatastoreSpec,
    GetAsset,
    RecordUpload,
    RegisterDatastore,
)
from cairn.proto.paths import validate_run_path
from cairn.sdk._assets import _get, _id, _rows

if TYPE_CHECKING:
    from cairn.sdk._async import AsyncWorkspace
    from cairn.sdk._datasets import _Dataset
    from cairn.sdk._sync import Workspace

__all__ = [
    "DataBinding",
    "DataReference",
    "Datastore",
    "download_entries",
    "download_prefix",
    "upload_pairs",
]

_PARALLEL = 8


# -- datastores -----------------------------------------------------------------------------


async def _open(ws: AsyncWorkspace, name: str) -> Store:
    from cairn.secrets import unseal

    data = (await ws.client.ask(GetAsset(asset_kind="datastore", name=name, sealed=True))).data
    spec = data["spec"]
    fields = {k: spec.get(k) for k in ("kind", "path", "endpoint_url", "bucket", "region")}
    store_spec = DatastoreSpec(**fields, prefix=spec.get("prefix") or "")
    token = data.get("sealed_credentials")
    creds = unseal(ws.settings, ws.name, token) if token else None
    return await open_store(name, store_spec, creds)


@contextlib.asynccontextmanager
async def _store(ws: AsyncWorkspace, name: str) -> Any:
    store = await _open(ws, name)
    try:
        yield store
    finally:
        await store.close()


class _Stores:
    """The stores of a loop over files of several datastores, each opened once (opening one
    asks the registry, opens its credentials and builds a client)."""

    def __init__(self, ws: AsyncWorkspace) -> None:
        self.ws = ws
        self.opened: dict[str, Store] = {}

    async def get(self, name: str) -> Store:
        if name not in self.opened:
            self.opened[name] = await _open(self.ws, name)
        return self.opened[name]

    async def __aenter__(self) -> _Stores:
        return self

    async def __aexit__(self, *_: object) -> None:
        for store in self.opened.values():
            await store.close()


def _bar(total: int, show: bool, what: str) -> tqdm[Any]:
    return tqdm(total=total, unit="B", unit_scale=True, desc=what, disable=not show, leave=False)


async def _record(ws: AsyncWorkspace, datastore: str, files: builtins.list[DataFile]) -> None:
    for i in range(0, len(files), MAX_UPLOAD_RECORD):
        cmd = RecordUpload(command_id=_id(), name=datastore,
                           files=files[i : i + MAX_UPLOAD_RECORD])  # fmt: skip
        ws._saw(await ws.client.send(cmd))


async def upload_pairs(
    ws: AsyncWorkspace, datastore: str, pairs: builtins.list[tuple[Path, str]], *,
    overwrite: bool, show_progress: bool,
) -> builtins.list[DataFile]:  # fmt: skip
    """Write local files to datastore paths, ``_PARALLEL`` at a time; existing files are kept
    unless ``overwrite``. Returns (and records) what was written."""
    for _, target in pairs:
        validate_run_path(target)
    total = sum(p.stat().st_size for p, _ in pairs)
    written: builtins.list[DataFile] = []
    async with _store(ws, datastore) as store:
        gate = asyncio.Semaphore(_PARALLEL)
        with _bar(total, show_progress, f"upload to {datastore}") as bar:

            async def one(source: Path, target: str) -> None:
                async with gate:
                    if not overwrite and await store.stat(target) is not None:
                        bar.update(source.stat().st_size)
                        return
                    entry = await store.put(target, source)
                    etag = entry.etag or await asyncio.to_thread(sha256_hex, source)
                    written.append(DataFile(datastore, target, entry.size, etag))
                    bar.update(entry.size)

            await asyncio.gather(*(one(s, t) for s, t in pairs))
    if written:
        await _record(ws, datastore, sorted(written, key=lambda f: f.path))
    return written


async def download_prefix(
    ws: AsyncWorkspace, datastore: str, prefix: str, target: Path, *, overwrite: bool,
    show_progress: bool,
) -> builtins.list[Path]:  # fmt: skip
    async with _store(ws, datastore) as store:
        entries = await store.list(prefix)
        return await download_entries(
            store, entries, target, overwrite=overwrite, show=show_progress
        )


async def download_entries(
    store: Store, entries: builtins.list[Entry], target: Path, *, overwrite: bool, show: bool
) -> builtins.list[Path]:
    """The listed files of ``store`` under ``target/<their path>``, 8 at a time."""
    gate = asyncio.Semaphore(_PARALLEL)
    done: builtins.list[Path] = []
    with _bar(sum(e.size for e in entries), show, f"download from {store.name}") as bar:

        async def one(entry: Entry) -> None:
            local = target / validate_run_path(entry.path)  # a key may not climb out
            async with gate:
                if overwrite or not local.exists():
                    await store.get(entry.path, local)
                bar.update(entry.size)
                done.append(local)

        await asyncio.gather(*(one(e) for e in entries))
    return sorted(done)


class DataBinding:
    """A datastore path or dataset version bound to a job: read (``download``/``mount``) or
    written (``upload``). In a job's arguments it stands for the local path it becomes on the
    agent."""

    def __init__(self, name: str, mode: str, path_on_compute: str | None, *,
                 reference: DataReference | None = None,
                 dataset: _Dataset | None = None) -> None:  # fmt: skip
        from cairn.proto.subjects import validate_token

        self.name = validate_token(name, "data reference name")
        self.mode, self.reference, self.dataset = mode, reference, dataset
        self.path_on_compute = validate_run_path(path_on_compute) if path_on_compute else None

    def __str__(self) -> str:
        kind = "outputs" if self.mode == "upload" else "inputs"
        return f"${{{{{kind}.{self.name}}}}}"


def _reference_name(path: str) -> str:
    import re

    return (re.sub(r"[^A-Za-z0-9_-]+", "_", path).strip("_") or "root")[:64]


class DataReference:
    """A path in a datastore (``datastore.path('data/files')``); ``as_download()``,
    ``as_mount()`` and ``as_upload()`` bind it to a job."""

    def __init__(self, datastore: Datastore, path_on_datastore: str | None,
                 data_reference_name: str | None = None) -> None:  # fmt: skip
        if path_on_datastore:
            validate_run_path(path_on_datastore.strip("/"))
        self.datastore, self.path_on_datastore = datastore, path_on_datastore or ""
        self.data_reference_name = data_reference_name or _reference_name(self.path_on_datastore)

    def as_download(self, path_on_compute: str | None = None) -> DataBinding:
        return DataBinding(self.data_reference_name, "download", path_on_compute, reference=self)

    def as_mount(self) -> DataBinding:
        return DataBinding(self.data_reference_name, "mount", None, reference=self)

    def as_upload(self, path_on_compute: str | None = None) -> DataBinding:
        return DataBinding(self.data_reference_name, "upload", path_on_compute, reference=self)

    def __repr__(self) -> str:
        return f"DataReference({self.datastore.name}:{self.path_on_datastore or '/'})"


class Datastore:
    """A registered place data lives: a local directory or an S3 bucket. Credentials are
    sealed by the registry; this object never holds them."""

    def __init__(
        self, workspace: Workspace, name: str, _data: dict[str, Any] | None = None
    ) -> None:
        self.workspace, self.name = workspace, name
        spec = (_data or _get(workspace, "datastore", name))["spec"]
        self.datastore_type = spec["kind"]
        self.local_path, self.bucket_name = spec.get("path"), spec.get("bucket")
        self.endpoint, self.prefix = spec.get("endpoint_url"), spec.get("prefix", "")
        self.has_credentials = bool(spec.get("has_credentials"))

    @staticmethod
    def get(workspace: Workspace, datastore_name: str) -> Datastore:
        return Datastore(workspace, datastore_name)

    @staticmethod
    def _register(workspace: Workspace, name: str, spec: DatastoreSpec, creds: Any) -> Datastore:
        cmd = RegisterDatastore(command_id=_id(), name=name, spec=spec, credentials=creds)
        workspace._run(workspace.core.client.send(cmd))
        return Datastore(workspace, name)

    @staticmethod
    def register_local(workspace: Workspace, datastore_name: str, path: str) -> Datastore:
        spec = DatastoreSpec(kind="local", path=str(Path(path).resolve()))
        return Datastore._register(workspace, datastore_name, spec, None)

    @staticmethod
    def register_s3(
        workspace: Workspace,
        datastore_name: str,
        bucket_name: str,
        endpoint_url: str | None = None,
        prefix: str = "",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str | None = None,
        **_: Any,
    ) -> Datastore:
        spec = DatastoreSpec(kind="s3", bucket=bucket_name, endpoint_url=endpoint_url,
                             prefix=prefix, region=region)  # fmt: skip
        creds = None
        if access_key_id or secret_access_key:
            creds = {
                "access_key_id": access_key_id or "",
                "secret_access_key": secret_access_key or "",
            }
        return Datastore._register(workspace, datastore_name, spec, creds)

    @staticmethod
    def list(workspace: Workspace) -> dict[str, Datastore]:
        rows = _rows(workspace, "datastore")
        return {r["name"]: Datastore(workspace, r["name"], _data=r) for r in rows}

    # -- moving files ---------------------------------------------------------------------

    def upload(
        self, src_dir: str | os.PathLike[str], target_path: str | None = None,
        overwrite: bool = False, show_progress: bool = True,
    ) -> DataReference:  # fmt: skip
        """Every file below ``src_dir`` to ``target_path/<relative path>``."""
        root = Path(src_dir)
        if not root.is_dir():
            raise InvalidInput(f"{root} is not a directory")
        base = (target_path or "").strip("/")
        pairs = [(p, f"{base}/{p.relative_to(root).as_posix()}".lstrip("/"))
                 for p in sorted(root.rglob("*")) if p.is_file()]  # fmt: skip
        self._upload(pairs, overwrite, show_progress)
        return DataReference(self, base)

    def upload_files(
        self, files: builtins.list[str], relative_root: str | None = None,
        target_path: str | None = None, overwrite: bool = False, show_progress: bool = True,
    ) -> DataReference:  # fmt: skip
        """Each file to ``target_path/<its path relative to relative_root>`` (default: its
        name)."""
        base = (target_path or "").strip("/")
        pairs = []
        for name in files:
            path = Path(name)
            if not path.is_file():
                raise InvalidInput(f"{path} is not a file")
            rel = (path.resolve().relative_to(Path(relative_root).resolve()).as_posix()
                   if relative_root else path.name)  # fmt: skip
            pairs.append((path, f"{base}/{rel}".lstrip("/")))
        self._upload(pairs, overwrite, show_progress)
        return DataReference(self, base)

    def _upload(self, pairs: builtins.list[tuple[Path, str]], overwrite: bool, show: bool) -> None:
        ws = self.workspace
        ws._run(upload_pairs(ws.core, self.name, pairs, overwrite=overwrite, show_progress=show))

    def download(
        self, target_path: str | os.PathLike[str], prefix: str | None = None,
        overwrite: bool = False, show_progress: bool = True,
    ) -> int:  # fmt: skip
        """Files under ``prefix`` to ``target_path/<their path>``; returns how many."""
        ws = self.workspace
        got = ws._run(download_prefix(ws.core, self.name, (prefix or "").strip("/"),
                                      Path(target_path), overwrite=overwrite,
                                      show_progress=show_progress))  # fmt: skip
        return len(got)

    def list_files(self, prefix: str = "") -> builtins.list[dict[str, Any]]:
        """``path``, ``size`` (and ``etag`` for S3) of every file under ``prefix``."""

        async def go() -> builtins.list[Entry]:
            async with _store(self.workspace.core, self.name) as store:
                listed: builtins.list[Entry] = await store.list(prefix.strip("/"))
                return listed

        return [{"path": e.path, "size": e.size, "etag": e.etag}
                for e in self.workspace._run(go())]  # fmt: skip

    def path(
        self, path: str | None = None, data_reference_name: str | None = None
    ) -> DataReference:
        return DataReference(self, path)

    def __repr__(self) -> str:
        return f"Datastore(name={self.name!r}, type={self.datastore_type!r})"
