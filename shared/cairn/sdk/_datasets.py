"""``Dataset`` with the Azure ML v1 names: tabular and file datasets over datastores, and
versions that mean the same bytes forever.

Registering a dataset records the fingerprint of every file its paths match. Reading a
registered version reads exactly those files and checks them first: a file changed or gone
since is a ``DataChanged`` error naming it — unless the version was registered with
``snapshot=True``, which copied the bytes into the artifact store, where they stay.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cairn.data import match, read_only_tree, writable_tree
from cairn.errors import DataChanged, InvalidInput, NotFound
from cairn.proto.assets import (
    DataFile,
    DataPath,
    DatasetSpec,
    RegisterDataset,
)
from cairn.proto.paths import validate_run_path
from cairn.sdk._assets import _get, _id, _rows
from cairn.sdk._datastores import DataBinding, DataReference, Datastore, _store, _Stores
from cairn.storage import digest_of_file

if TYPE_CHECKING:
    from cairn.sdk._async import AsyncWorkspace
    from cairn.sdk._sync import Workspace

__all__ = [
    "Dataset",
    "FileDataset",
    "TabularDataset",
    "bindings_of",
    "materialise",
]


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
        async with _Stores(ws) as stores:
            for i, f in enumerate(files):
                local = Path(tmp) / str(i)
                await (await stores.get(f.datastore)).get(f.path, local)
                await upload_file(ws.client, area, f"{i}", local, staging=True,
                                  show_progress=False)  # fmt: skip
                out.append(DataFile(f.datastore, f.path, f.size, f.etag,
                                    await asyncio.to_thread(digest_of_file, local)))  # fmt: skip
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
    async with _Stores(ws) as stores:
        for f in files:
            local = target / f.path[len(base) :].lstrip("/")
            if f.blob is not None:  # a snapshot: the copy in the artifact store
                if not local.exists():
                    await download_blob(ws.client, f.blob, f.size, local, show_progress=show)
                out.append(local)
                continue
            store = await stores.get(f.datastore)
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
        read_only_tree(point)
        try:
            yield _Mount(point)
        finally:
            writable_tree(point)
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
