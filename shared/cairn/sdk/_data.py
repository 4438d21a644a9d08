"""``Datastore`` and ``Dataset`` with the Azure ML v1 names: files into and out of datastores,
tabular and file datasets over them, and versions that mean the same bytes forever.

The bytes move between this process and the datastore directly (a local directory, or S3
through aiobotocore); the registry hands this process the datastore's *sealed* credentials,
which it opens with the workspace key (``keys_dir``), so clear credentials exist only where
data moves. Each upload is recorded in the log (``DatastoreFilesUploaded``: path, size,
digest or ETag).

Registering a dataset records the fingerprint of every file its paths match. Reading a
registered version reads exactly those files and checks them first: a file changed or gone
since is a ``DataChanged`` error naming it — unless the version was registered with
``snapshot=True``, which copied the bytes into the artifact store, where they stay.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from cairn.data import Entry, Store, match, open_store
from cairn.errors import DataChanged, InvalidInput, NotFound
from cairn.proto.assets import (
    MAX_UPLOAD_RECORD,
    DataFile,
    DataPath,
    DatasetSpec,
    DatastoreSpec,
    GetAsset,
    RecordUpload,
    RegisterDataset,
    RegisterDatastore,
)
from cairn.proto.paths import validate_run_path
from cairn.sdk._assets import _get, _id, _rows

if TYPE_CHECKING:
    from cairn.sdk._async import AsyncWorkspace
    from cairn.sdk._sync import Workspace

__all__ = [
    "DataBinding",
    "DataReference",
    "Dataset",
    "Datastore",
    "FileDataset",
    "TabularDataset",
    "bindings_of",
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


def _bar(total: int, show: bool, what: str) -> tqdm[Any]:
    return tqdm(total=total, unit="B", unit_scale=True, desc=what, disable=not show, leave=False)


async def _record(ws: AsyncWorkspace, datastore: str, files: builtins.list[DataFile]) -> None:
    for i in range(0, len(files), MAX_UPLOAD_RECORD):
        cmd = RecordUpload(command_id=_id(), name=datastore,
                           files=files[i : i + MAX_UPLOAD_RECORD])  # fmt: skip
        ws._saw(await ws.client.send(cmd))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


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
                    etag = entry.etag or await asyncio.to_thread(_digest, source)
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
        return await _download(store, entries, target, overwrite=overwrite, show=show_progress)


async def _download(
    store: Store, entries: builtins.list[Entry], target: Path, *, overwrite: bool, show: bool,
    strip: str = "",
) -> builtins.list[Path]:  # fmt: skip
    gate = asyncio.Semaphore(_PARALLEL)
    done: builtins.list[Path] = []
    with _bar(sum(e.size for e in entries), show, f"download from {store.name}") as bar:

        async def one(entry: Entry) -> None:
            local = target / entry.path[len(strip) :].lstrip("/")
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


# -- datasets -------------------------------------------------------------------------------


def _data_paths(path: Any) -> builtins.list[DataPath]:
    """``(datastore, 'pattern')`` or a list of them; a datastore given by object or name."""
    items = path if isinstance(path, builtins.list) else [path]
    out = []
    for item in items:
        if isinstance(item, DataReference):
            item = (item.datastore, item.path_on_datastore)
        if not (isinstance(item, tuple) and len(item) == 2):
            raise InvalidInput("a dataset path is (datastore, 'path/with/*.wildcards')")
        store, pattern = item
        out.append(DataPath(str(getattr(store, "name", store)), validate_run_path(str(pattern))))
    return out


async def _fingerprint(ws: AsyncWorkspace, spec: DatasetSpec) -> builtins.list[DataFile]:
    """Every file the dataset's paths match now, with its digest or ETag."""
    found: dict[tuple[str, str], DataFile] = {}
    for path in spec.paths:
        async with _store(ws, path.datastore) as store:
            entries = await match(store, path.pattern)
            entries = sorted(entries, key=lambda e: e.path)
            for entry in await asyncio.gather(*(store.fingerprint(e) for e in entries)):
                found[(path.datastore, entry.path)] = DataFile(path.datastore, entry.path,
                                                               entry.size, entry.etag)  # fmt: skip
    if not found:
        shown = ", ".join(f"{p.datastore}:{p.pattern}" for p in spec.paths)
        raise NotFound(f"no file matches {shown}")
    return list(found.values())  # in the order of the paths, each pattern's files sorted


async def _snapshot(ws: AsyncWorkspace, files: builtins.list[DataFile]) -> builtins.list[DataFile]:
    """Copy every file into the artifact store (a staging area of its own)."""
    from cairn.sdk._files import upload_file

    area, out = f"dataset-{_id()}", []
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate(files):
            local = Path(tmp) / str(i)
            async with _store(ws, f.datastore) as store:
                await store.get(f.path, local)
            await upload_file(ws.client, area, f"{i}", local, staging=True, show_progress=False)
            out.append(DataFile(f.datastore, f.path, f.size, f.etag,
                                "sha256:" + await asyncio.to_thread(_digest, local)))  # fmt: skip
    return out


async def materialise(
    ws: AsyncWorkspace, spec: DatasetSpec, target: Path, *, label: str, show: bool = False
) -> builtins.list[Path]:
    """The dataset's files under ``target`` (paths relative to their common folder), checked
    against the version's fingerprint when it has one."""
    from cairn.sdk._files import download_blob

    files = spec.files or await _fingerprint(ws, spec)
    base = _common_dir([f.path for f in files])
    out = []
    for f in files:
        local = target / f.path[len(base) :].lstrip("/")
        if f.blob is not None:  # a snapshot: the copy in the artifact store
            if not local.exists():
                await download_blob(ws.client, f.blob, f.size, local, show_progress=show)
        else:
            async with _store(ws, f.datastore) as store:
                if spec.files:
                    now = await store.stat(f.path)
                    now = await store.fingerprint(now) if now is not None else None
                    if now is None or (now.size, now.etag) != (f.size, f.etag):
                        what = "is gone" if now is None else "changed"
                        raise DataChanged(
                            f"{label}: {f.datastore}:{f.path} {what} since it was registered"
                        )
                await store.get(f.path, local)
        out.append(local)
    return out


def _common_dir(paths: builtins.list[str]) -> str:
    parents = [str(PurePosixPath(p).parent) for p in paths]
    common = os.path.commonpath(parents) if parents else ""
    return "" if common in (".", "/") else common


class _Dataset:
    KIND: str = ""

    def __init__(self, spec: DatasetSpec, data: dict[str, Any] | None = None,
                 workspace: Workspace | None = None) -> None:  # fmt: skip
        self.spec = spec
        self.name: str | None = data["name"] if data else None
        self.version: int | None = data["version"] if data else None
        self.description: str = data.get("description", "") if data else ""
        self.workspace = workspace

    def _ws(self) -> Workspace:
        if self.workspace is None:
            from cairn.sdk._sync import Workspace

            self.workspace = Workspace()
        return self.workspace

    @property
    def _label(self) -> str:
        return f"dataset {self.name!r} version {self.version}" if self.name else "dataset"

    def register(
        self,
        workspace: Workspace,
        name: str,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        create_new_version: bool = False,
        snapshot: bool = False,
    ) -> _Dataset:
        """Record this definition and the fingerprint of the files it matches now (with
        ``snapshot``, copies of them too) as a version of ``name``."""
        core = workspace.core
        files = workspace._run(_fingerprint(core, self.spec))
        if snapshot:
            files = workspace._run(_snapshot(core, files))
        spec = DatasetSpec(kind=self.spec.kind, paths=self.spec.paths,
                           separator=self.spec.separator, header=self.spec.header,
                           infer_column_types=self.spec.infer_column_types, files=files,
                           snapshot=snapshot)  # fmt: skip
        cmd = RegisterDataset(command_id=_id(), name=name, spec=spec,
                              description=description or "",
                              create_new_version=create_new_version)  # fmt: skip
        reply = workspace._run(core.client.send(cmd))
        return Dataset.get_by_name(workspace, name, min_seq=reply.seq)

    def download(
        self, target_path: str | os.PathLike[str] | None = None, overwrite: bool = False
    ) -> builtins.list[str]:
        """The version's files into ``target_path`` (relative to their common folder)."""
        target = Path(target_path or tempfile.mkdtemp(prefix="cairn-dataset-"))
        existing = [p for p in target.rglob("*") if p.is_file()] if target.exists() else []
        if existing and not overwrite:
            raise InvalidInput(f"{target} is not empty (pass overwrite=True)")
        return [str(p) for p in self._local_files(target)]

    def as_named_input(self, name: str) -> _NamedInput:
        """This registered version as input ``name`` of a job (``run.input_datasets[name]``)."""
        if self.name is None or self.version is None:
            raise InvalidInput("register the dataset before using it as a job's input")
        return _NamedInput(self, name)

    def _local_files(self, target: Path) -> builtins.list[Path]:
        ws = self._ws()
        return ws._run(materialise(ws.core, self.spec, target, label=self._label))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version})"


class TabularDataset(_Dataset):
    """Delimited files read as one table; ``take``/``skip``/``keep_columns``/``drop_columns``
    return new (unregistered) datasets that apply them when read."""

    def __init__(self, spec: DatasetSpec, data: dict[str, Any] | None = None,
                 workspace: Workspace | None = None,
                 steps: builtins.list[tuple[str, Any]] | None = None) -> None:  # fmt: skip
        super().__init__(spec, data, workspace)
        self.steps = list(steps or [])

    def _then(self, step: str, arg: Any) -> TabularDataset:
        return TabularDataset(self.spec, None, self.workspace, [*self.steps, (step, arg)])

    def take(self, count: int) -> TabularDataset:
        return self._then("take", int(count))

    def skip(self, count: int) -> TabularDataset:
        return self._then("skip", int(count))

    def keep_columns(self, columns: str | builtins.list[str], **_: Any) -> TabularDataset:
        return self._then("keep", [columns] if isinstance(columns, str) else list(columns))

    def drop_columns(self, columns: str | builtins.list[str]) -> TabularDataset:
        return self._then("drop", [columns] if isinstance(columns, str) else list(columns))

    def to_pandas_dataframe(self, **_: Any) -> Any:
        import pandas as pd  # type: ignore[import-untyped]

        with tempfile.TemporaryDirectory() as tmp:
            paths = self._local_files(Path(tmp))
            frames = [
                pd.read_csv(p, sep=self.spec.separator, header=0 if self.spec.header else None,
                            dtype=None if self.spec.infer_column_types else str)
                for p in paths
            ]  # fmt: skip
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        for step, arg in self.steps:
            if step == "take":
                df = df.head(arg)
            elif step == "skip":
                df = df.iloc[arg:]
            elif step == "keep":
                df = df[arg]
            else:
                df = df.drop(columns=arg)
        return df.reset_index(drop=True)


class FileDataset(_Dataset):
    """Files: ``to_path()``, ``download(target_path)``, ``mount()``."""

    def to_path(self) -> builtins.list[str]:
        files = self.spec.files
        if not files:
            ws = self._ws()
            files = ws._run(_fingerprint(ws.core, self.spec))
        base = _common_dir([f.path for f in files])
        return ["/" + f.path[len(base) :].lstrip("/") for f in files]

    @contextlib.contextmanager
    def mount(self, mount_point: str | os.PathLike[str] | None = None) -> Iterator[_Mount]:
        """A read-only local copy of the files, with the same relative paths, removed on
        exit. Unlike a FUSE mount it reads every file up front: fine for what fits on the
        local disk, wrong for a dataset far larger than it."""
        point = Path(mount_point or tempfile.mkdtemp(prefix="cairn-mount-"))
        self._local_files(point)
        for folder, dirs, files in os.walk(point):
            for f in files:
                os.chmod(os.path.join(folder, f), 0o444)
            for d in dirs:
                os.chmod(os.path.join(folder, d), 0o555)
        try:
            yield _Mount(point)
        finally:
            for folder, dirs, _ in os.walk(point):
                os.chmod(folder, 0o755)
                for d in dirs:
                    os.chmod(os.path.join(folder, d), 0o755)
            shutil.rmtree(point, ignore_errors=True)


class _NamedInput:
    def __init__(self, dataset: _Dataset, name: str) -> None:
        self.dataset, self.name = dataset, name

    def as_download(self, path_on_compute: str | None = None) -> DataBinding:
        return DataBinding(self.name, "download", path_on_compute, dataset=self.dataset)

    def as_mount(self, path_on_compute: str | None = None) -> DataBinding:
        return DataBinding(self.name, "mount", path_on_compute, dataset=self.dataset)


class _Mount:
    def __init__(self, mount_point: Path) -> None:
        self.mount_point = str(mount_point)


class _Tabular:
    @staticmethod
    def from_delimited_files(
        path: Any, separator: str = ",", header: bool = True, infer_column_types: bool = True,
        **_: Any,
    ) -> TabularDataset:  # fmt: skip
        spec = DatasetSpec(kind="tabular", paths=_data_paths(path), separator=separator,
                           header=bool(header), infer_column_types=infer_column_types)  # fmt: skip
        return TabularDataset(spec, workspace=_workspace_of(path))


class _File:
    @staticmethod
    def from_files(path: Any, **_: Any) -> FileDataset:
        spec = DatasetSpec(kind="file", paths=_data_paths(path))
        return FileDataset(spec, workspace=_workspace_of(path))


def _workspace_of(path: Any) -> Workspace | None:
    items = path if isinstance(path, builtins.list) else [path]
    for item in items:
        store = item.datastore if isinstance(item, DataReference) else item[0]
        if isinstance(store, Datastore):
            return store.workspace
    return None


class Dataset:
    """``Dataset.Tabular.from_delimited_files(...)``, ``Dataset.File.from_files(...)``,
    ``Dataset.get_by_name(ws, name, version='latest')``."""

    Tabular = _Tabular
    File = _File

    @staticmethod
    def get_by_name(
        workspace: Workspace, name: str, version: int | str = "latest", min_seq: int = 0
    ) -> _Dataset:
        import msgspec

        number = None if version == "latest" else int(version)
        data = _get(workspace, "dataset", name, version=number, min_seq=min_seq)
        spec = msgspec.convert(data["spec"], DatasetSpec)
        cls = TabularDataset if spec.kind == "tabular" else FileDataset
        return cls(spec, data, workspace)

    @staticmethod
    def list(workspace: Workspace) -> dict[str, _Dataset]:
        rows = _rows(workspace, "dataset")
        return {r["name"]: Dataset.get_by_name(workspace, r["name"]) for r in rows}


def bindings_of(arguments: builtins.list[Any]) -> tuple[builtins.list[Any], builtins.list[Any]]:
    """The job inputs and outputs that ``arguments`` bind (as ``JobInput``/``JobOutput``)."""
    from cairn.proto.jobs import JobInput, JobOutput

    inputs, outputs = [], []
    for arg in arguments:
        if not isinstance(arg, DataBinding):
            continue
        ref, ds = arg.reference, arg.dataset
        if arg.mode == "upload":
            assert ref is not None
            outputs.append(JobOutput(name=arg.name, datastore=ref.datastore.name,
                                     path=ref.path_on_datastore,
                                     path_on_compute=arg.path_on_compute))  # fmt: skip
        elif ds is not None:
            inputs.append(JobInput(name=arg.name, mode=arg.mode,  # type: ignore[arg-type]
                                   dataset=ds.name, version=ds.version,
                                   path_on_compute=arg.path_on_compute))  # fmt: skip
        else:
            assert ref is not None
            inputs.append(JobInput(name=arg.name, mode=arg.mode,  # type: ignore[arg-type]
                                   datastore=ref.datastore.name, path=ref.path_on_datastore,
                                   path_on_compute=arg.path_on_compute))  # fmt: skip
    return inputs, outputs
