"""``Environment`` and ``CondaDependencies`` with the Azure ML v1 names: a facade over
``ws.assets`` (datastores: :mod:`cairn.sdk._datastores`, compute: :mod:`cairn.sdk._compute`)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from cairn.errors import InvalidInput, Unsupported
from cairn.proto.assets import EnvironmentSpec
from cairn.sdk._refusals import inherent, refuses
from cairn.sdk._runtime import WorkspaceBase

__all__ = ["CondaDependencies", "Environment"]


class CondaDependencies:
    def __init__(self) -> None:
        self.pip_packages: list[str] = []
        self.conda_packages: list[str] = []
        self.channels: list[str] = []
        self.python_version: str | None = None

    @staticmethod
    @refuses(pip_indexurl="packages install from the index the agent is configured with")
    @inherent(pin_sdk_version="Cairn adds no SDK package to an environment: nothing to pin")
    def create(
        pip_packages: list[str] | None = None,
        conda_packages: list[str] | None = None,
        python_version: str | None = None,
        pin_sdk_version: bool = True,
        pip_indexurl: str | None = None,
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

    def add_channel(self, channel: str) -> None:
        self.channels.append(channel)

    def serialize_to_string(self) -> str:
        """The conda ``environment.yml`` these dependencies make (what
        ``Environment.from_conda_specification`` reads back)."""
        deps: list[Any] = [f"python={self.python_version}"] if self.python_version else []
        deps += self.conda_packages
        if self.pip_packages:
            deps.append({"pip": list(self.pip_packages)})
        doc: dict[str, Any] = {"name": "project_environment", "dependencies": deps}
        if self.channels:
            doc["channels"] = list(self.channels)
        return str(yaml.safe_dump(doc, sort_keys=False))

    def save(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write :meth:`serialize_to_string` to ``path`` (default ``conda_dependencies.yml``
        in the current folder); returns the path."""
        target = Path(path or "conda_dependencies.yml")
        target.write_text(self.serialize_to_string())
        return str(target)


class _Guarded:
    """Settings objects that refuse, by name, an Azure attribute that nothing reads."""

    _KNOWN: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._KNOWN:
            known = ", ".join(sorted(self._KNOWN))
            raise Unsupported(
                f"{type(self).__name__.strip('_')}.{name} is not supported; Cairn reads {known}"
            )
        object.__setattr__(self, name, value)


class _Python(_Guarded):
    _KNOWN = frozenset({"conda_dependencies", "user_managed_dependencies"})

    def __init__(self) -> None:
        self.conda_dependencies = CondaDependencies()
        #: run on the agent's own interpreter, installing nothing
        self.user_managed_dependencies = False


class _Docker(_Guarded):
    _KNOWN = frozenset({"base_image", "enabled"})

    def __init__(self) -> None:
        self.base_image: str | None = None
        #: Azure's switch; a job always runs isolated by its agent, so only True is taken
        self.enabled = True

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "enabled" and value is not True:
            raise Unsupported(
                "docker.enabled= is not supported as False; every job runs confined by its"
                " agent: in a container when the agent runs with `cairn agent --backend docker`,"
                " else as a confined process"
            )
        super().__setattr__(name, value)


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
        workspace: WorkspaceBase,
        name: str,
        version: int | None = None,
        min_seq: int = 0,
        *,
        as_of: datetime | int | None = None,
    ) -> Environment:
        """Version ``version`` (default: the latest) of environment ``name``; ``as_of`` (a
        time, or a stream sequence): as the log held it then."""
        assets = workspace.core.assets
        found = assets.get("environment", name, version, min_seq=min_seq, as_of=as_of)
        return Environment._from(workspace._run(found))

    @staticmethod
    def list(
        workspace: WorkspaceBase, *, as_of: datetime | int | None = None
    ) -> dict[str, Environment]:
        """The latest version of each environment; ``as_of``: those the log held then."""
        rows = workspace._run(workspace.core.assets.list("environment", as_of=as_of))
        return {r["name"]: Environment._from(r) for r in rows}

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version})"
