"""``Dataset`` with the Azure ML v1 names (a facade over ``ws.datasets``): tabular and file
datasets over datastores, and versions that mean the same bytes forever.

Registering a dataset records the fingerprint of every file its paths match. Reading a
registered version reads exactly those files and checks them first: a file changed or gone
since is a ``DataChanged`` error naming it — unless the version was registered with
``snapshot=True``, which copied the bytes into the artifact store, where they stay.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from cairn.data import check_url, common_dir, is_url, read_only_tree, writable_tree
from cairn.errors import InvalidInput
from cairn.proto.assets import DataPath, DatasetSpec
from cairn.proto.paths import validate_run_path
from cairn.sdk._datastores import DataBinding, DataReference, Datastore
from cairn.sdk._refusals import inherent, refuses
from cairn.sdk._runtime import WorkspaceBase

__all__ = ["Dataset", "FileDataset", "TabularDataset"]


def _data_paths(path: Any) -> tuple[builtins.list[DataPath], builtins.list[str]]:
    """``(datastore, 'pattern')``, a URL, or a list of them; a datastore given by object or
    name. URLs (``https://``, ``s3://``, any fsspec scheme installed) are kept as given."""
    items = path if isinstance(path, builtins.list) else [path]
    out, urls = [], []
    for item in items:
        if isinstance(item, DataReference):
            item = (item.datastore, item.path_on_datastore)
        if isinstance(item, str) and is_url(item):
            urls.append(check_url(item, "dataset path"))
            continue
        if not (isinstance(item, tuple) and len(item) == 2):
            raise InvalidInput(
                "a dataset path is (datastore, 'path/with/*.wildcards') or a URL"
                " (https://, s3://, or a scheme whose fsspec filesystem is installed)"
            )
        store, pattern = item
        out.append(DataPath(str(getattr(store, "name", store)), validate_run_path(str(pattern))))
    return out, urls


class _Dataset:
    KIND: str = ""

    def __init__(
        self,
        spec: DatasetSpec,
        data: dict[str, Any] | None = None,
        workspace: WorkspaceBase | None = None,
    ) -> None:
        self.spec = spec
        self.name: str | None = data["name"] if data else None
        self.version: int | None = data["version"] if data else None
        self.description: str = data.get("description", "") if data else ""
        self.tags: dict[str, str] = dict(data.get("tags", {})) if data else {}
        self.workspace = workspace
        #: inside a job, the folder its agent copied this version into (read from there)
        self.local_copy: Path | None = None

    def _ws(self) -> WorkspaceBase:
        if self.workspace is None:
            self.workspace = WorkspaceBase()
        return self.workspace

    @property
    def _label(self) -> str:
        return f"dataset {self.name!r} version {self.version}" if self.name else "dataset"

    def register(
        self,
        workspace: WorkspaceBase,
        name: str,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        create_new_version: bool = False,
        snapshot: bool = False,
        show_progress: bool | None = None,
    ) -> _Dataset:
        """Record this definition and the fingerprint of the files it matches now (with
        ``snapshot``, copies of them too, a bar of their bytes on a terminal) as a version of
        ``name``."""
        registered = workspace.core.datasets.register(
            name,
            self.spec,
            description=description or "",
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            create_new_version=create_new_version,
            snapshot=snapshot,
            show_progress=show_progress,
        )
        return Dataset._from(workspace, workspace._run(registered))

    def download(
        self,
        target_path: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        show_progress: bool | None = None,
    ) -> builtins.list[str]:
        """The version's files into ``target_path`` (relative to their common folder), with a
        bar of their bytes on a terminal (or anywhere with ``show_progress=True``)."""
        target = Path(target_path or tempfile.mkdtemp(prefix="cairn-dataset-"))
        existing = [p for p in target.rglob("*") if p.is_file()] if target.exists() else []
        if existing and not overwrite:
            raise InvalidInput(f"{target} is not empty (pass overwrite=True)")
        return [str(p) for p in self._local_files(target, show_progress)]

    def as_named_input(self, name: str) -> _NamedInput:
        """This registered version as input ``name`` of a job: on its own (in ``arguments``
        or an ``Estimator``'s ``inputs``), ``run.input_datasets[name]`` is the dataset itself
        inside the job; ``.as_download()``/``.as_mount()`` make it a local path."""
        if self.name is None or self.version is None:
            raise InvalidInput("register the dataset before using it as a job's input")
        return _NamedInput(self, name)

    def _local_files(self, target: Path, show: bool | None = None) -> builtins.list[Path]:
        if self.local_copy is not None:  # inside a job: the agent's copy
            files = sorted(
                p for p in self.local_copy.rglob("*") if p.is_file() and p.name != ".ready"
            )
            copies = []
            for f in files:
                dest = target / f.relative_to(self.local_copy)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
                copies.append(dest)
            return copies
        ws = self._ws()
        made = ws.core.datasets.materialise(self.spec, target, label=self._label, show=show)
        return ws._run(made)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version})"


class TabularDataset(_Dataset):
    """Delimited files read as one table; ``take``/``skip``/``keep_columns``/``drop_columns``
    return new (unregistered) datasets that apply them when read."""

    def __init__(
        self,
        spec: DatasetSpec,
        data: dict[str, Any] | None = None,
        workspace: WorkspaceBase | None = None,
        steps: builtins.list[tuple[str, Any]] | None = None,
    ) -> None:
        super().__init__(spec, data, workspace)
        self.steps = list(steps or [])

    def _then(self, step: str, arg: Any) -> TabularDataset:
        return TabularDataset(self.spec, None, self.workspace, [*self.steps, (step, arg)])

    def take(self, count: int) -> TabularDataset:
        return self._then("take", int(count))

    def skip(self, count: int) -> TabularDataset:
        return self._then("skip", int(count))

    def keep_columns(self, columns: str | builtins.list[str]) -> TabularDataset:
        return self._then("keep", [columns] if isinstance(columns, str) else list(columns))

    def drop_columns(self, columns: str | builtins.list[str]) -> TabularDataset:
        return self._then("drop", [columns] if isinstance(columns, str) else list(columns))

    def to_pandas_dataframe(self) -> Any:
        pd: Any = importlib.import_module("pandas")  # optional, and without type stubs

        spec = self.spec
        header = 0 if spec.header else None
        dtype = None if spec.infer_column_types else str
        with tempfile.TemporaryDirectory() as tmp:
            paths = self._local_files(Path(tmp))
            frames = [pd.read_csv(p, sep=spec.separator, header=header, dtype=dtype) for p in paths]
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
        spec = self.spec
        if not spec.files and (spec.paths or not spec.url_files):
            ws = self._ws()
            spec = ws._run(ws.core.datasets.resolved(spec))
        base = common_dir([f.path for f in spec.files])
        paths = ["/" + f.path[len(base) :].lstrip("/") for f in spec.files]
        return paths + ["/" + f.path for f in spec.url_files]

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


class _NamedInput(DataBinding):
    """A registered dataset version bound to a job as input ``name``: on its own the job
    gets the dataset (``run.input_datasets[name]``), and in its arguments the local path of
    its files; ``as_download``/``as_mount`` give the job a path only."""

    def __init__(self, dataset: _Dataset, name: str) -> None:
        super().__init__(name, "download", None, dataset=dataset, as_dataset=True)
        self.dataset: _Dataset = dataset

    def as_download(self, path_on_compute: str | None = None) -> DataBinding:
        return DataBinding(self.name, "download", path_on_compute, dataset=self.dataset)

    def as_mount(self, path_on_compute: str | None = None) -> DataBinding:
        return DataBinding(self.name, "mount", path_on_compute, dataset=self.dataset)


class _Mount:
    def __init__(self, mount_point: Path) -> None:
        self.mount_point = str(mount_point)


class _Tabular:
    @staticmethod
    @inherent(
        validate="Cairn checks the paths when the dataset is registered, whatever validate= says"
    )
    @refuses(
        include_path="a table holds the files' columns only; read paths with Dataset.File",
        set_column_types="columns are read as pandas infers them (infer_column_types=True)"
        " or as strings",
        partition_format="paths are (datastore, 'pattern') with * and ? wildcards",
        support_multi_line="quoted values spanning lines are read as pandas reads them",
        empty_as_string="empty values are read as pandas reads them (missing)",
        encoding="files are read as UTF-8",
    )
    def from_delimited_files(
        path: Any,
        validate: bool = True,
        include_path: bool = False,
        infer_column_types: bool = True,
        set_column_types: Any = None,
        partition_format: str | None = None,
        separator: str = ",",
        header: bool = True,
        support_multi_line: bool = False,
        empty_as_string: bool = False,
        encoding: str = "utf8",
    ) -> TabularDataset:
        paths, urls = _data_paths(path)
        spec = DatasetSpec(
            kind="tabular",
            paths=paths,
            urls=urls,
            separator=separator,
            header=bool(header),
            infer_column_types=infer_column_types,
        )
        return TabularDataset(spec, workspace=_workspace_of(path))


class _File:
    @staticmethod
    @inherent(
        validate="Cairn checks the paths when the dataset is registered, whatever validate= says"
    )
    @refuses(
        partition_format="paths are (datastore, 'pattern') with * and ? wildcards",
        is_file="a path matches files and folders alike",
    )
    def from_files(
        path: Any, validate: bool = True, partition_format: str | None = None, is_file: bool = False
    ) -> FileDataset:
        paths, urls = _data_paths(path)
        spec = DatasetSpec(kind="file", paths=paths, urls=urls)
        return FileDataset(spec, workspace=_workspace_of(path))


def _workspace_of(path: Any) -> WorkspaceBase | None:
    items = path if isinstance(path, builtins.list) else [path]
    for item in items:
        if isinstance(item, str):
            continue
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
        workspace: WorkspaceBase,
        name: str,
        version: int | str = "latest",
        min_seq: int = 0,
        *,
        as_of: datetime | int | None = None,
    ) -> TabularDataset | FileDataset:
        """Version ``version`` of dataset ``name``; ``as_of`` (a time, or a stream sequence):
        the dataset as the log held it then ("latest" is the latest version then)."""
        number = None if version == "latest" else int(version)
        found = workspace.core.datasets.get(name, number, min_seq=min_seq, as_of=as_of)
        return Dataset._from(workspace, workspace._run(found))

    @staticmethod
    def _from(workspace: WorkspaceBase, data: dict[str, Any]) -> TabularDataset | FileDataset:
        spec = msgspec.convert(data["spec"], DatasetSpec)
        cls = TabularDataset if spec.kind == "tabular" else FileDataset
        return cls(spec, data, workspace)

    @staticmethod
    def list(
        workspace: WorkspaceBase, *, as_of: datetime | int | None = None
    ) -> dict[str, TabularDataset | FileDataset]:
        """The latest version of each dataset; ``as_of`` (a time, or a stream sequence): those
        the log held then, at their latest version then."""
        rows = workspace._run(workspace.core.datasets.list(as_of=as_of))
        return {r["name"]: Dataset.get_by_name(workspace, r["name"], as_of=as_of) for r in rows}
