"""``Environment``, ``CondaDependencies`` and ``ComputeTarget`` with the Azure ML v1 names; each
call is one registry command or query (datastores and datasets: ``_data``)."""

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
    DeleteCompute,
    EnvironmentSpec,
    GetAsset,
    ListAssets,
    RegisterEnvironment,
)

if TYPE_CHECKING:
    from cairn.sdk._sync import Workspace

__all__ = ["ComputeTarget", "CondaDependencies", "Environment"]


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
