"""``Environment``, ``CondaDependencies``, ``Datastore`` and ``ComputeTarget`` with the Azure ML v1
names; each call is one registry command or query."""

from __future__ import annotations

import builtins
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cairn.errors import InvalidInput
from cairn.proto.assets import (
    ComputeSpec,
    CreateCompute,
    DataPath,
    DatasetSpec,
    DatastoreSpec,
    DeleteCompute,
    EnvironmentSpec,
    GetAsset,
    ListAssets,
    RegisterDataset,
    RegisterDatastore,
    RegisterEnvironment,
)

if TYPE_CHECKING:
    from cairn.sdk._sync import Workspace

__all__ = [
    "ComputeTarget",
    "CondaDependencies",
    "Dataset",
    "Datastore",
    "Environment",
    "FileDataset",
    "TabularDataset",
]


def _id() -> str:
    return uuid.uuid4().hex


def _get(workspace: Workspace, kind: str, name: str, **query: Any) -> dict[str, Any]:
    q = GetAsset(asset_kind=kind, name=name, **query)  # type: ignore[arg-type]
    data: dict[str, Any] = workspace._run(workspace.core.client.ask(q)).data
    return data


def _rows(workspace: Workspace, kind: str) -> builtins.list[dict[str, Any]]:
    rows: builtins.list[dict[str, Any]] = workspace._run(
        workspace.core.client.ask(ListAssets(asset_kind=kind))  # type: ignore[arg-type]
    ).data
    return rows


class CondaDependencies:
    def __init__(self) -> None:
        self.pip_packages: list[str] = []
        self.conda_packages: list[str] = []
        self.channels: list[str] = []
        self.python_version: str | None = None

    @staticmethod
    def create(
        pip_packages: list[str] | None = None,
        conda_packages: list[str] | None = None,
        python_version: str | None = None,
        **_: Any,
    ) -> CondaDependencies:
        deps = CondaDependencies()
        deps.pip_packages = list(pip_packages or [])
        deps.conda_packages = list(conda_packages or [])
        deps.python_version = python_version
        return deps

    def add_pip_package(self, package: str) -> None:
        self.pip_packages.append(package)

    def add_conda_package(self, package: str) -> None:
        self.conda_packages.append(package)


class _Python:
    def __init__(self) -> None:
        self.conda_dependencies = CondaDependencies()
        #: run on the agent's own interpreter, installing nothing
        self.user_managed_dependencies = False


class _Docker:
    def __init__(self) -> None:
        self.base_image: str | None = None


class Environment:
    """An environment spec: pip and conda packages, a Python version, variables, a base image."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.version: int | None = None
        self.python = _Python()
        self.docker = _Docker()
        self.environment_variables: dict[str, str] = {}

    @staticmethod
    def from_pip_requirements(name: str, file_path: str | os.PathLike[str]) -> Environment:
        env = Environment(name)
        lines = Path(file_path).read_text().splitlines()
        env.python.conda_dependencies.pip_packages = [
            line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()
        ]
        return env

    @staticmethod
    def from_conda_specification(name: str, file_path: str | os.PathLike[str]) -> Environment:
        """From a conda ``environment.yml``: channels, conda packages (``python=X`` sets the
        Python version) and the ``pip:`` list."""
        doc = yaml.safe_load(Path(file_path).read_text()) or {}
        if not isinstance(doc, dict):
            raise InvalidInput(f"{file_path} is not a conda environment specification")
        env = Environment(name)
        deps = env.python.conda_dependencies
        deps.channels = [str(c) for c in doc.get("channels") or []]
        for item in doc.get("dependencies") or []:
            if isinstance(item, dict):
                deps.pip_packages += [str(p) for p in item.get("pip") or []]
            elif str(item).startswith("python=") or str(item).startswith("python=="):
                deps.python_version = str(item).split("=")[-1]
            else:
                deps.conda_packages.append(str(item))
        env.environment_variables = {
            str(k): str(v) for k, v in (doc.get("variables") or {}).items()
        }
        return env

    def spec(self) -> EnvironmentSpec:
        deps = self.python.conda_dependencies
        return EnvironmentSpec(
            python=deps.python_version, pip=deps.pip_packages, conda=deps.conda_packages,
            channels=deps.channels, env_vars=self.environment_variables,
            docker_image=self.docker.base_image,
            user_managed=self.python.user_managed_dependencies,
        )  # fmt: skip

    def register(self, workspace: Workspace) -> Environment:
        cmd = RegisterEnvironment(command_id=_id(), name=self.name, spec=self.spec())
        reply = workspace._run(workspace.core.client.send(cmd))
        return Environment.get(workspace, self.name, min_seq=reply.seq)

    @staticmethod
    def _from(data: dict[str, Any]) -> Environment:
        env = Environment(data["name"])
        env.version = data["version"]
        spec = data["spec"]
        deps = env.python.conda_dependencies
        deps.python_version, deps.pip_packages = spec.get("python"), spec.get("pip", [])
        deps.conda_packages, deps.channels = spec.get("conda", []), spec.get("channels", [])
        env.environment_variables = spec.get("env_vars", {})
        env.docker.base_image = spec.get("docker_image")
        env.python.user_managed_dependencies = bool(spec.get("user_managed", False))
        return env

    @staticmethod
    def get(
        workspace: Workspace, name: str, version: int | None = None, min_seq: int = 0
    ) -> Environment:
        return Environment._from(
            _get(workspace, "environment", name, version=version, min_seq=min_seq)
        )

    @staticmethod
    def list(workspace: Workspace) -> dict[str, Environment]:
        rows = _rows(workspace, "environment")
        return {r["name"]: Environment._from(r) for r in rows}

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version})"


class Datastore:
    """A registered place data lives: a local directory or an S3 bucket. Credentials are
    sealed by the registry; this object never holds them."""

    def __init__(
        self, workspace: Workspace, name: str, _data: dict[str, Any] | None = None
    ) -> None:
        self.workspace, self.name = workspace, name
        spec = (_data or _get(workspace, "datastore", name))["spec"]
        self.datastore_type = spec["kind"]
        self.path, self.bucket_name = spec.get("path"), spec.get("bucket")
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

    def __repr__(self) -> str:
        return f"Datastore(name={self.name!r}, type={self.datastore_type!r})"


class ComputeTarget:
    """A compute target: ``local``, a cluster (a pool of agents), an instance, an attached
    machine. Creating and deleting needs the compute-operator role."""

    def __init__(
        self, workspace: Workspace, name: str, _data: dict[str, Any] | None = None
    ) -> None:
        self.workspace, self.name = workspace, name
        spec = (_data or _get(workspace, "compute", name))["spec"]
        self.type, self.vm_size, self.labels = spec["kind"], spec.get("vm_size"), spec["labels"]
        self.min_nodes, self.max_nodes = spec["min_nodes"], spec["max_nodes"]

    @staticmethod
    def create(
        workspace: Workspace,
        name: str,
        kind: str = "cluster",
        min_nodes: int = 0,
        max_nodes: int = 1,
        vm_size: str | None = None,
        labels: builtins.list[str] | None = None,
    ) -> ComputeTarget:
        spec = ComputeSpec(kind=kind, min_nodes=min_nodes, max_nodes=max_nodes,  # type: ignore[arg-type]
                           vm_size=vm_size, labels=labels or [])  # fmt: skip
        workspace._run(
            workspace.core.client.send(CreateCompute(command_id=_id(), name=name, spec=spec))
        )
        return ComputeTarget(workspace, name)

    def delete(self) -> None:
        cmd = DeleteCompute(command_id=_id(), name=self.name)
        self.workspace._run(self.workspace.core.client.send(cmd))

    @staticmethod
    def list(workspace: Workspace) -> dict[str, ComputeTarget]:
        rows = _rows(workspace, "compute")
        return {r["name"]: ComputeTarget(workspace, r["name"], _data=r) for r in rows}

    def __repr__(self) -> str:
        return f"ComputeTarget(name={self.name!r}, type={self.type!r})"


def _data_paths(path: Any) -> builtins.list[DataPath]:
    """``(datastore, 'pattern')`` or a list of them; a datastore given by object or name."""
    items = path if isinstance(path, builtins.list) else [path]
    out = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise InvalidInput("a dataset path is (datastore, 'path/with/*.wildcards')")
        store, pattern = item
        out.append(DataPath(str(getattr(store, "name", store)), str(pattern)))
    return out


class _Dataset:
    KIND: str = ""

    def __init__(self, spec: DatasetSpec, data: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.name: str | None = data["name"] if data else None
        self.version: int | None = data["version"] if data else None
        self.description: str = data.get("description", "") if data else ""

    def register(
        self,
        workspace: Workspace,
        name: str,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        create_new_version: bool = False,
    ) -> _Dataset:
        cmd = RegisterDataset(command_id=_id(), name=name, spec=self.spec,
                              description=description or "",
                              create_new_version=create_new_version)  # fmt: skip
        reply = workspace._run(workspace.core.client.send(cmd))
        return Dataset.get_by_name(workspace, name, min_seq=reply.seq)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version})"


class TabularDataset(_Dataset):
    pass


class FileDataset(_Dataset):
    pass


class _Tabular:
    @staticmethod
    def from_delimited_files(
        path: Any, separator: str = ",", header: bool = True, infer_column_types: bool = True,
        **_: Any,
    ) -> TabularDataset:  # fmt: skip
        spec = DatasetSpec(kind="tabular", paths=_data_paths(path), separator=separator,
                           header=bool(header), infer_column_types=infer_column_types)  # fmt: skip
        return TabularDataset(spec)


class _File:
    @staticmethod
    def from_files(path: Any, **_: Any) -> FileDataset:
        return FileDataset(DatasetSpec(kind="file", paths=_data_paths(path)))


class Dataset:
    """``Dataset.Tabular.from_delimited_files(...)``, ``Dataset.File.from_files(...)``,
    ``Dataset.get_by_name(ws, name, version='latest')``. This registers definitions and their
    versions; reading the data is the data work's."""

    Tabular = _Tabular
    File = _File

    @staticmethod
    def get_by_name(
        workspace: Workspace, name: str, version: int | str = "latest", min_seq: int = 0
    ) -> _Dataset:
        number = None if version == "latest" else int(version)
        data = _get(workspace, "dataset", name, version=number, min_seq=min_seq)
        spec = DatasetSpec(
            kind=data["spec"]["kind"],
            paths=[DataPath(*p) for p in data["spec"]["paths"]],
            separator=data["spec"]["separator"],
            header=data["spec"]["header"],
            infer_column_types=data["spec"]["infer_column_types"],
        )
        cls = TabularDataset if spec.kind == "tabular" else FileDataset
        return cls(spec, data)

    @staticmethod
    def list(workspace: Workspace) -> dict[str, _Dataset]:
        rows = _rows(workspace, "dataset")
        return {r["name"]: Dataset.get_by_name(workspace, r["name"]) for r in rows}
