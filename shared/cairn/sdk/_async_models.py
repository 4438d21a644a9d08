"""The async core of the model registry: register (from local files or a run's files), look
up (by version, alias or point in time), list, alias, archive, lineage, download."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from cairn.data import Progress, download_blob, local_target, upload_file
from cairn.errors import AlreadyExists, InvalidInput
from cairn.proto.registry import (
    ArchiveModelVersion,
    GetModel,
    ListModels,
    ModelLineage,
    RegisterModelVersion,
    SetModelAlias,
)
from cairn.sdk._session import Session, as_of_fields, new_id

__all__ = ["AsyncModels"]


def _strings(values: dict[str, Any] | None) -> dict[str, str]:
    return {k: str(v) for k, v in (values or {}).items()}


class AsyncModels:
    """``ws.models``: records are the registry's dicts (``name``, ``version``, ``files``...)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def get(
        self,
        name: str,
        version: int | None = None,
        *,
        alias: str | None = None,
        as_of: datetime | int | None = None,
        as_of_seq: int | None = None,
    ) -> dict[str, Any]:
        """A version: the latest, ``version``, the one ``alias`` names, or the one it was as
        of a moment: ``as_of`` a time or a stream sequence (``as_of_seq``: a sequence, as
        earlier releases took it)."""
        when = as_of_fields(as_of)
        if as_of_seq is not None:
            if "as_of_seq" in when:
                raise InvalidInput("give the sequence once: as_of= or as_of_seq=, not both")
            when |= as_of_fields(as_of_seq)
        q = GetModel(name=name, version=version, alias=alias, **when)
        data: dict[str, Any] = (await self._session.client.ask(q)).data
        return data

    async def list(
        self,
        name: str | None = None,
        *,
        tags: dict[str, str] | None = None,
        latest: bool = False,
        as_of: datetime | int | None = None,
    ) -> list[dict[str, Any]]:
        """The model versions (``name``: of that model; ``tags``: with all of them;
        ``latest``: the latest of each name); ``as_of``: as the log held them then."""
        q = ListModels(name=name, tags=tags or {}, latest=latest, **as_of_fields(as_of))
        rows: list[dict[str, Any]] = (await self._session.client.ask(q)).data
        return rows

    async def register(
        self,
        name: str,
        path: str,
        *,
        run_id: str | None = None,
        staging_id: str | None = None,
        description: str | None = None,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        framework: str | None = None,
        framework_version: str | None = None,
    ) -> dict[str, Any]:
        """Register ``path`` (a file or folder of run ``run_id``, or of staging area
        ``staging_id``) as the next version of ``name``; returns the new version's record."""
        cmd = RegisterModelVersion(
            command_id=new_id(),
            name=name,
            path=path,
            run_id=run_id,
            staging_id=staging_id,
            description=description or "",
            tags=_strings(tags),
            properties=_strings(properties),
            framework=framework,
            framework_version=framework_version,
        )
        reply = await self._session.send(cmd)
        # the version this command made is the latest as of its own event
        return await self.get(name, as_of_seq=reply.seq)

    async def upload(self, local: Path, *, show_progress: bool | None = None) -> tuple[str, str]:
        """Upload a local file or folder into a staging area of its own, with one bar for all
        its bytes (``show_progress``); returns the area and the model's path in it (to
        :meth:`register` with ``staging_id``)."""
        if not local.exists():
            raise InvalidInput(f"{local} does not exist")
        staging = new_id()
        prefix = local.name or "model"
        if local.is_file():
            named = [(prefix, local)]
        else:
            files = sorted(p for p in local.rglob("*") if p.is_file())
            named = [(f"{prefix}/{f.relative_to(local).as_posix()}", f) for f in files]
        total = sum(file.stat().st_size for _, file in named)
        with Progress(total, f"model {prefix}", show=show_progress) as bar:
            for name, file in named:
                client = self._session.client
                await upload_file(client, staging, name, file, staging=True, progress=bar)
        return staging, prefix

    async def download(
        self,
        record: dict[str, Any],
        target_dir: Path,
        *,
        exist_ok: bool = False,
        show_progress: bool | None = None,
    ) -> Path:
        """The files of the version ``record`` (as :meth:`get` returns it) under
        ``target_dir``, with one bar for all their bytes; returns the model's local path."""
        base = Path(record["source_path"]).parent
        files = record["files"]
        total = sum(int(f["size"]) for f in files)
        desc = f"model {record.get('name', '')}:{record.get('version', '')}"
        with Progress(total, desc, show=show_progress) as bar:
            for f in files:
                target = local_target(target_dir, Path(f["path"]).relative_to(base).as_posix())
                if target.exists() and not exist_ok:
                    raise AlreadyExists(f"{target} exists (pass exist_ok=True to overwrite)")
                client = self._session.client
                size = int(f["size"])
                await download_blob(client, f["digest"], size, target, progress=bar)
        return target_dir / Path(record["source_path"]).relative_to(base)

    async def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` of model ``name`` at ``version``."""
        cmd = SetModelAlias(command_id=new_id(), name=name, alias=alias, version=version)
        await self._session.send(cmd)

    async def archive(self, name: str, version: int, *, restore: bool = False) -> None:
        cmd = ArchiveModelVersion(command_id=new_id(), name=name, version=version, restore=restore)
        await self._session.send(cmd)

    async def lineage(self, name: str, version: int) -> dict[str, Any]:
        """The run, datasets and environment a version came from."""
        q = ModelLineage(name=name, version=version)
        data: dict[str, Any] = (await self._session.client.ask(q)).data
        return data
