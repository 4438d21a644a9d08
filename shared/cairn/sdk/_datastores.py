"""``Datastore`` with the Azure ML v1 names (a facade over ``ws.assets`` and
``ws.datastores``), and ``DataReference``/``DataBinding``: a datastore path or dataset version
bound to a job.

The bytes move between this process and the datastore directly (a local directory, or S3
through aiobotocore, see :mod:`cairn.data`): the registry hands this process the datastore's
*sealed* credentials, which it opens with the workspace key (``keys_dir``), so clear
credentials exist only where data moves.
"""

from __future__ import annotations

import builtins
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from cairn.errors import InvalidInput
from cairn.proto.assets import DatastoreSpec
from cairn.proto.jobs import JobInput, JobOutput
from cairn.proto.paths import validate_run_path
from cairn.proto.subjects import validate_token
from cairn.sdk._runtime import WorkspaceBase

__all__ = ["DataBinding", "DataReference", "Datastore"]

BindingMode = Literal["download", "mount", "upload"]


class DatasetVersion(Protocol):
    """A registered dataset version, as a job's input names it."""

    @property
    def name(self) -> str | None: ...

    @property
    def version(self) -> int | None: ...


class DataBinding:
    """A datastore path or dataset version bound to a job: read (``download``/``mount``) or
    written (``upload``). In a job's arguments it stands for the local path it becomes on the
    agent."""

    def __init__(
        self,
        name: str,
        mode: BindingMode,
        path_on_compute: str | None,
        *,
        reference: DataReference | None = None,
        dataset: DatasetVersion | None = None,
        as_dataset: bool = False,
    ) -> None:
        self.name = validate_token(name, "data reference name")
        self.mode, self.reference, self.dataset = mode, reference, dataset
        #: the job gets the dataset itself as ``run.input_datasets[name]``, not its path
        self.as_dataset = as_dataset
        self.path_on_compute = validate_run_path(path_on_compute) if path_on_compute else None

    def job_binding(self) -> JobInput | JobOutput:
        """The job input or output this binding declares."""
        ref, ds, where = self.reference, self.dataset, self.path_on_compute
        if self.mode == "upload":
            assert ref is not None, "only a datastore path takes a job's output"
            return JobOutput(
                name=self.name,
                datastore=ref.datastore.name,
                path=ref.path_on_datastore,
                path_on_compute=where,
            )
        if ds is not None:
            return JobInput(
                name=self.name,
                mode=self.mode,
                dataset=ds.name,
                version=ds.version,
                path_on_compute=where,
                as_dataset=self.as_dataset,
            )
        assert ref is not None, "a binding reads a datastore path or a dataset"
        return JobInput(
            name=self.name,
            mode=self.mode,
            datastore=ref.datastore.name,
            path=ref.path_on_datastore,
            path_on_compute=where,
        )

    def __str__(self) -> str:
        kind = "outputs" if self.mode == "upload" else "inputs"
        return f"${{{{{kind}.{self.name}}}}}"


def _reference_name(path: str) -> str:
    return (re.sub(r"[^A-Za-z0-9_-]+", "_", path).strip("_") or "root")[:64]


class DataReference:
    """A path in a datastore (``datastore.path('data/files')``); ``as_download()``,
    ``as_mount()`` and ``as_upload()`` bind it to a job."""

    def __init__(
        self,
        datastore: Datastore,
        path_on_datastore: str | None,
        data_reference_name: str | None = None,
    ) -> None:
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
        self,
        workspace: WorkspaceBase,
        name: str,
        _data: dict[str, Any] | None = None,
        *,
        as_of: datetime | int | None = None,
    ) -> None:
        self.workspace, self.name = workspace, name
        if _data is None:
            found = workspace.core.assets.get("datastore", name, as_of=as_of)
            _data = workspace._run(found)
        spec = _data["spec"]
        self.datastore_type = spec["kind"]
        self.local_path, self.bucket_name = spec.get("path"), spec.get("bucket")
        self.endpoint, self.prefix = spec.get("endpoint_url"), spec.get("prefix", "")
        self.has_credentials = bool(spec.get("has_credentials"))

    @staticmethod
    def get(
        workspace: WorkspaceBase, datastore_name: str, *, as_of: datetime | int | None = None
    ) -> Datastore:
        """Datastore ``datastore_name``; ``as_of`` (a time, or a stream sequence): as the log
        held it then."""
        return Datastore(workspace, datastore_name, as_of=as_of)

    @staticmethod
    def _register(
        workspace: WorkspaceBase,
        name: str,
        spec: DatastoreSpec,
        credentials: dict[str, str] | None,
    ) -> Datastore:
        registered = workspace.core.assets.register_datastore(name, spec, credentials)
        return Datastore(workspace, name, _data=workspace._run(registered))

    @staticmethod
    def register_local(workspace: WorkspaceBase, datastore_name: str, path: str) -> Datastore:
        spec = DatastoreSpec(kind="local", path=str(Path(path).resolve()))
        return Datastore._register(workspace, datastore_name, spec, None)

    @staticmethod
    def register_s3(
        workspace: WorkspaceBase,
        datastore_name: str,
        bucket_name: str,
        endpoint_url: str | None = None,
        prefix: str = "",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str | None = None,
    ) -> Datastore:
        spec = DatastoreSpec(
            kind="s3", bucket=bucket_name, endpoint_url=endpoint_url, prefix=prefix, region=region
        )
        creds = None
        if access_key_id or secret_access_key:
            creds = {
                "access_key_id": access_key_id or "",
                "secret_access_key": secret_access_key or "",
            }
        return Datastore._register(workspace, datastore_name, spec, creds)

    @staticmethod
    def list(
        workspace: WorkspaceBase, *, as_of: datetime | int | None = None
    ) -> dict[str, Datastore]:
        """Every datastore, the built-in ones too; ``as_of``: those the log held then."""
        rows = workspace._run(workspace.core.assets.list("datastore", as_of=as_of))
        return {r["name"]: Datastore(workspace, r["name"], _data=r) for r in rows}

    # -- moving files ---------------------------------------------------------------------

    def upload(
        self,
        src_dir: str | os.PathLike[str],
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool | None = None,
    ) -> DataReference:
        """Every file below ``src_dir`` to ``target_path/<relative path>``. A bar of the bytes
        shows on a terminal, or anywhere with ``show_progress=True``."""
        root = Path(src_dir)
        if not root.is_dir():
            raise InvalidInput(f"{root} is not a directory")
        base = (target_path or "").strip("/")
        files = [p for p in sorted(root.rglob("*")) if p.is_file()]
        pairs = [(p, f"{base}/{p.relative_to(root).as_posix()}".lstrip("/")) for p in files]
        self._upload(pairs, overwrite, show_progress)
        return DataReference(self, base)

    def upload_files(
        self,
        files: builtins.list[str],
        relative_root: str | None = None,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool | None = None,
    ) -> DataReference:
        """Each file to ``target_path/<its path relative to relative_root>`` (default: its
        name)."""
        base = (target_path or "").strip("/")
        root = Path(relative_root).resolve() if relative_root else None
        pairs = []
        for name in files:
            path = Path(name)
            if not path.is_file():
                raise InvalidInput(f"{path} is not a file")
            rel = path.resolve().relative_to(root).as_posix() if root else path.name
            pairs.append((path, f"{base}/{rel}".lstrip("/")))
        self._upload(pairs, overwrite, show_progress)
        return DataReference(self, base)

    def _upload(
        self, pairs: builtins.list[tuple[Path, str]], overwrite: bool, show: bool | None
    ) -> None:
        ws = self.workspace
        upload = ws.core.datastores.upload(
            self.name, pairs, overwrite=overwrite, show_progress=show
        )
        ws._run(upload)

    def download(
        self,
        target_path: str | os.PathLike[str],
        prefix: str | None = None,
        overwrite: bool = False,
        show_progress: bool | None = None,
    ) -> int:
        """Files under ``prefix`` to ``target_path/<their path>``; returns how many."""
        ws = self.workspace
        download = ws.core.datastores.download(
            self.name,
            Path(target_path),
            prefix or "",
            overwrite=overwrite,
            show_progress=show_progress,
        )
        return len(ws._run(download))

    def list_files(self, prefix: str = "") -> builtins.list[dict[str, Any]]:
        """``path``, ``size`` (and ``etag`` for S3) of every file under ``prefix``."""
        entries = self.workspace._run(self.workspace.core.datastores.list_files(self.name, prefix))
        return [{"path": e.path, "size": e.size, "etag": e.etag} for e in entries]

    def path(
        self, path: str | None = None, data_reference_name: str | None = None
    ) -> DataReference:
        return DataReference(self, path, data_reference_name)

    def __repr__(self) -> str:
        return f"Datastore(name={self.name!r}, type={self.datastore_type!r})"
