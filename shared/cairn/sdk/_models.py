"""``Model``: the registry as the Azure ML v1 SDK shows it."""

from __future__ import annotations

import builtins
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn.errors import AlreadyExists, InvalidInput
from cairn.proto.registry import (
    ArchiveModelVersion,
    GetModel,
    ListModels,
    ModelLineage,
    RegisterModelVersion,
    SetModelAlias,
)
from cairn.sdk._files import download_blob, upload_file

if TYPE_CHECKING:
    from cairn.sdk._sync import Workspace

__all__ = ["Model"]


def _new_id() -> str:
    return uuid.uuid4().hex


class Model:
    """A registered model version: ``Model(ws, name)`` is the latest, ``version=`` or
    ``alias=`` pick another, ``as_of=`` (a datetime) or ``as_of_seq=`` look back in time."""

    def __init__(
        self,
        workspace: Workspace,
        name: str,
        version: int | None = None,
        *,
        alias: str | None = None,
        as_of: datetime | None = None,
        as_of_seq: int | None = None,
        _data: dict[str, Any] | None = None,
    ) -> None:
        self.workspace = workspace
        if _data is None:
            q = GetModel(name=name, version=version, alias=alias, as_of_time=as_of,
                         as_of_seq=as_of_seq)  # fmt: skip
            _data = workspace._run(workspace.core.client.ask(q)).data
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
    def register(
        workspace: Workspace,
        model_path: str | os.PathLike[str],
        model_name: str,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
        model_framework: str | None = None,
        model_framework_version: str | None = None,
        **_: Any,
    ) -> Model:
        """Upload a local file or folder and register it as the next version of the name."""
        local = Path(model_path)
        if not local.exists():
            raise InvalidInput(f"{local} does not exist")
        staging = _new_id()
        prefix = local.name or "model"
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        client = workspace.core.client
        for file in files:
            name = prefix if local.is_file() else f"{prefix}/{file.relative_to(local).as_posix()}"
            workspace._run(upload_file(client, staging, name, file, staging=True))
        return Model._register(
            workspace, model_name, prefix, staging_id=staging, tags=tags, properties=properties,
            description=description, framework=model_framework,
            framework_version=model_framework_version,
        )  # fmt: skip

    @staticmethod
    def _register(workspace: Workspace, name: str, path: str, **fields: Any) -> Model:
        clean = {k: v for k, v in fields.items() if v is not None}
        for key in ("tags", "properties"):
            if key in clean:
                clean[key] = {k: str(v) for k, v in clean[key].items()}
        cmd = RegisterModelVersion(command_id=_new_id(), name=name, path=path, **clean)
        reply = workspace._run(workspace.core.client.send(cmd))
        # the version this command made is the latest as of its own event
        return Model(workspace, name, as_of_seq=reply.seq)

    @staticmethod
    def list(
        workspace: Workspace,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        latest: bool = False,
        **_: Any,
    ) -> list[Model]:
        q = ListModels(name=name, tags=tags or {}, latest=latest)
        rows = workspace._run(workspace.core.client.ask(q)).data
        return [Model(workspace, r["name"], _data=r) for r in rows]

    def _files(self) -> builtins.list[dict[str, Any]]:
        if "files" not in self._data:  # rows from list() carry no file list
            self._data = Model(self.workspace, self.name, self.version)._data
        files: builtins.list[dict[str, Any]] = self._data["files"]
        return files

    def download(self, target_dir: str = ".", exist_ok: bool = False, **_: Any) -> str:
        """Download this version's files under ``target_dir``; returns the model's path."""
        root = Path(target_dir)
        files = self._files()  # loads the full record when this came from list()
        base = Path(self._data["source_path"]).parent
        client = self.workspace.core.client
        for f in files:
            target = root / Path(f["path"]).relative_to(base)
            if target.exists() and not exist_ok:
                raise AlreadyExists(f"{target} exists (pass exist_ok=True to overwrite)")
            blob = download_blob(client, f["digest"], int(f["size"]), target, name=f["path"])
            self.workspace._run(blob)
        return str(root / Path(self._data["source_path"]).relative_to(base))

    def set_alias(self, alias: str) -> None:
        cmd = SetModelAlias(command_id=_new_id(), name=self.name, alias=alias, version=self.version)
        self.workspace._run(self.workspace.core.client.send(cmd))

    def archive(self, restore: bool = False) -> None:
        cmd = ArchiveModelVersion(
            command_id=_new_id(), name=self.name, version=self.version, restore=restore
        )
        self.workspace._run(self.workspace.core.client.send(cmd))

    def lineage(self) -> dict[str, Any]:
        q = ModelLineage(name=self.name, version=self.version)
        result: dict[str, Any] = self.workspace._run(self.workspace.core.client.ask(q)).data
        return result

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version})"
