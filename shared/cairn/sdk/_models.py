"""``Model``: the registry as the Azure ML v1 SDK shows it (a facade over ``ws.models``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cairn.sdk._refusals import refuses
from cairn.sdk._runtime import WorkspaceBase
from cairn.sdk._webservice import (
    DeploymentConfiguration,
    InferenceConfig,
    Webservice,
    deploy,
    model_path,
)

__all__ = ["Model"]


class Model:
    """A registered model version: ``Model(ws, name)`` is the latest, ``version=`` or
    ``alias=`` pick another, ``as_of=`` (a datetime, or a stream sequence) looks back in time
    (``as_of_seq=``: a sequence, as earlier releases took it)."""

    def __init__(
        self,
        workspace: WorkspaceBase,
        name: str,
        version: int | None = None,
        *,
        alias: str | None = None,
        as_of: datetime | int | None = None,
        as_of_seq: int | None = None,
        _data: dict[str, Any] | None = None,
    ) -> None:
        self.workspace = workspace
        if _data is None:
            found = workspace.core.models.get(
                name, version, alias=alias, as_of=as_of, as_of_seq=as_of_seq
            )
            _data = workspace._run(found)
        self._data = _data
        self.name: str = _data["name"]
        self.version: int = _data["version"]
        self.description: str = _data.get("description", "")
        self.tags: dict[str, str] = _data.get("tags", {})
        self.properties: dict[str, str] = _data.get("properties", {})
        self.model_framework: str | None = _data.get("framework")
        self.model_framework_version: str | None = _data.get("framework_version")
        self.run_id: str | None = _data.get("run_id")
        self.aliases: list[str] = _data.get("aliases", [])
        self.archived: bool = _data.get("archived", False)
        self.id = f"{self.name}:{self.version}"

    @staticmethod
    @refuses(
        datasets="a model's datasets are the ones its run read: register it from the run"
        " (run.register_model) and see model.lineage()",
        sample_input_dataset="a model version records no sample data",
        sample_output_dataset="a model version records no sample data",
        resource_configuration="a deployment sizes its replicas, not the model",
    )
    def register(
        workspace: WorkspaceBase,
        model_path: str | os.PathLike[str],
        model_name: str,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
        model_framework: str | None = None,
        model_framework_version: str | None = None,
        show_progress: bool | None = None,
        datasets: list[Any] | None = None,
        sample_input_dataset: Any = None,
        sample_output_dataset: Any = None,
        resource_configuration: Any = None,
    ) -> Model:
        """Upload a local file or folder (a bar of its bytes on a terminal, or anywhere with
        ``show_progress=True``) and register it as the next version of the name."""
        models = workspace.core.models
        upload = models.upload(Path(model_path), show_progress=show_progress)
        staging, path = workspace._run(upload)
        registered = models.register(
            model_name,
            path,
            staging_id=staging,
            tags=tags,
            properties=properties,
            description=description,
            framework=model_framework,
            framework_version=model_framework_version,
        )
        return Model(workspace, model_name, _data=workspace._run(registered))

    @staticmethod
    def list(
        workspace: WorkspaceBase,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        run_id: str | None = None,
        latest: bool = False,
        model_framework: str | None = None,
        *,
        as_of: datetime | int | None = None,
    ) -> list[Model]:
        """The model versions, filtered as Azure ML v1 does (``tags``, ``properties``: every
        ``{key: value}`` given; ``run_id``: registered from that run; ``model_framework``);
        ``as_of`` (a time, or a stream sequence): the versions the log held then."""
        listing = workspace.core.models.list(name, tags=tags, latest=latest, as_of=as_of)
        rows = workspace._run(listing)
        wanted = {k: str(v) for k, v in (properties or {}).items()}
        return [
            Model(workspace, r["name"], _data=r)
            for r in rows
            if run_id in (None, r.get("run_id"))
            and model_framework in (None, r.get("framework"))
            and all(r.get("properties", {}).get(k) == v for k, v in wanted.items())
        ]

    @staticmethod
    @refuses(show_output="call service.wait_for_deployment(show_output=True)")
    def deploy(
        workspace: WorkspaceBase,
        name: str,
        models: Sequence[Model],
        inference_config: InferenceConfig | None = None,
        deployment_config: DeploymentConfiguration | None = None,
        deployment_target: Any = None,
        overwrite: bool = False,
        show_output: bool = False,
    ) -> Webservice:
        """Deploy ``models`` as service ``name`` (an online endpoint with one deployment),
        its replicas on ``deployment_target`` (a compute target or its name; default
        ``local``) as ``deployment_config`` says; ``overwrite`` replaces a service of that
        name. Returns at once: ``service.wait_for_deployment()`` waits for it."""
        return deploy(
            workspace,
            name,
            models,
            inference_config,
            deployment_config,
            deployment_target,
            overwrite,
        )

    @staticmethod
    @refuses(_workspace="a model's path is known only inside a deployment's replica")
    def get_model_path(model_name: str, version: int | None = None, _workspace: Any = None) -> str:
        """Inside a deployment's replica (an entry script's ``init()``): where model
        ``model_name``'s files are (its one file, or its folder), under
        ``AZUREML_MODEL_DIR``."""
        return model_path(model_name, version)

    def serialize(self) -> dict[str, Any]:
        """The version's record as the registry keeps it (the files only when this object
        was looked up by name, not listed)."""
        return dict(self._data)

    def _record(self) -> dict[str, Any]:
        if "files" not in self._data:  # rows from list() carry no file list
            self._data = Model(self.workspace, self.name, self.version)._data
        return self._data

    def download(
        self,
        target_dir: str = ".",
        exist_ok: bool = False,
        show_progress: bool | None = None,
    ) -> str:
        """Download this version's files under ``target_dir``; returns the model's path."""
        models = self.workspace.core.models
        fetch = models.download(
            self._record(), Path(target_dir), exist_ok=exist_ok, show_progress=show_progress
        )
        return str(self.workspace._run(fetch))

    def set_alias(self, alias: str) -> None:
        self.workspace._run(self.workspace.core.models.set_alias(self.name, alias, self.version))

    def archive(self, restore: bool = False) -> None:
        models = self.workspace.core.models
        self.workspace._run(models.archive(self.name, self.version, restore=restore))

    def lineage(self) -> dict[str, Any]:
        return self.workspace._run(self.workspace.core.models.lineage(self.name, self.version))

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version})"
