"""``Environment``, ``CondaDependencies`` and ``ComputeTarget`` with the Azure ML v1 names: a
facade over ``ws.assets`` (datastores: :mod:`cairn.sdk._datastores`)."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any, Literal

import yaml

from cairn.errors import InvalidInput
from cairn.proto.assets import ComputeSpec, EnvironmentSpec
from cairn.sdk._runtime import WorkspaceBase

__all__ = ["ComputeTarget", "CondaDependencies", "Environment"]

ComputeKind = Literal["local", "cluster", "instance", "attached"]


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
            python=deps.python_version,
            pip=deps.pip_packages,
            conda=deps.conda_packages,
            channels=deps.channels,
            env_vars=self.environment_variables,
            docker_image=self.docker.base_image,
            user_managed=self.python.user_managed_dependencies,
        )

    def register(self, workspace: WorkspaceBase) -> Environment:
        registered = workspace.core.assets.register_environment(self.name, self.spec())
        return Environment._from(workspace._run(registered))

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
        workspace: WorkspaceBase, name: str, version: int | None = None, min_seq: int = 0
    ) -> Environment:
        found = workspace.core.assets.get("environment", name, version, min_seq=min_seq)
        return Environment._from(workspace._run(found))

    @staticmethod
    def list(workspace: WorkspaceBase) -> dict[str, Environment]:
        rows = workspace._run(workspace.core.assets.list("environment"))
        return {r["name"]: Environment._from(r) for r in rows}

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version})"


class ComputeTarget:
    """A compute target: ``local``, a cluster (a pool of agents), an instance, an attached
    machine. Creating and deleting needs the compute-operator role."""

    def __init__(
        self, workspace: WorkspaceBase, name: str, _data: dict[str, Any] | None = None
    ) -> None:
        self.workspace, self.name = workspace, name
        if _data is None:
            _data = workspace._run(workspace.core.assets.get("compute", name))
        spec = _data["spec"]
        self.type, self.vm_size, self.labels = spec["kind"], spec.get("vm_size"), spec["labels"]
        self.min_nodes, self.max_nodes = spec["min_nodes"], spec["max_nodes"]

    @staticmethod
    def create(
        workspace: WorkspaceBase,
        name: str,
        kind: ComputeKind = "cluster",
        min_nodes: int = 0,
        max_nodes: int = 1,
        vm_size: str | None = None,
        labels: builtins.list[str] | None = None,
    ) -> ComputeTarget:
        spec = ComputeSpec(
            kind=kind,
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            vm_size=vm_size,
            labels=labels or [],
        )
        created = workspace._run(workspace.core.assets.create_compute(name, spec))
        return ComputeTarget(workspace, name, _data=created)

    def delete(self) -> None:
        self.workspace._run(self.workspace.core.assets.delete_compute(self.name))

    @staticmethod
    def list(workspace: WorkspaceBase) -> dict[str, ComputeTarget]:
        rows = workspace._run(workspace.core.assets.list("compute"))
        return {r["name"]: ComputeTarget(workspace, r["name"], _data=r) for r in rows}

    def __repr__(self) -> str:
        return f"ComputeTarget(name={self.name!r}, type={self.type!r})"
