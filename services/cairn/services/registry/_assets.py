"""Environments, datastores and compute targets in the registry service."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from cairn.bus import AggregateCache, EventStore, Recorded, execute
from cairn.domain import asset
from cairn.errors import AlreadyExists, InvalidInput
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.assets import (
    CURATED_PREFIX,
    MAX_UPLOAD_RECORD,
    AssetSpec,
    CreateCompute,
    DatasetSpec,
    DatastoreSpec,
    DeleteCompute,
    GetAsset,
    ListAssets,
    RecordUpload,
    RegisterDataset,
    RegisterDatastore,
    RegisterEnvironment,
)
from cairn.proto.commands import Accepted
from cairn.proto.events import DatastoreFilesUploaded
from cairn.proto.paths import validate_run_path
from cairn.rpc import Request
from cairn.secrets import require_role, seal
from cairn.services.registry._projection import public_spec
from cairn.settings import Settings

__all__ = ["ASSET_COMMANDS", "AssetHandlers", "builtin_assets"]

ASSET_COMMANDS = (
    RegisterEnvironment,
    RegisterDatastore,
    RecordUpload,
    CreateCompute,
    DeleteCompute,
    RegisterDataset,
)
COMPUTE_OPERATORS = "compute_operators"


def builtin_assets(settings: Settings, ws: str, kind: str) -> dict[str, AssetSpec]:
    return asset.builtin_assets(settings.home_path, ws, kind)


def _view(
    name: str, version: int, spec: AssetSpec, builtin: bool, description: str = ""
) -> dict[str, Any]:
    return {"name": name, "version": version, "spec": public_spec(spec),
            "description": description, "builtin": builtin}  # fmt: skip


class AssetHandlers:
    def __init__(self, store: EventStore, cache: AggregateCache, settings: Settings) -> None:
        self.store, self.cache, self.settings = store, cache, settings

    async def command(self, req: Request) -> Accepted:
        cmd: Any = req.body
        kind = cmd.VERB.split(".")[0]
        spec = await self._checked_spec(req, cmd)
        aggregate_id = subjects.name_to_id(cmd.name)
        ctx = req.context()

        def decide(history: list[Recorded]) -> list[Any]:
            state = asset.fold(r.envelope.data for r in history)
            if isinstance(cmd, DeleteCompute):
                return asset.decide_delete(state, cmd.name)
            if isinstance(cmd, RecordUpload):
                return [DatastoreFilesUploaded(name=cmd.name, files=cmd.files)]
            if isinstance(cmd, RegisterDataset) and state.latest and not cmd.create_new_version:
                if state.latest.spec_hash != asset.spec_hash(cmd.spec):
                    raise AlreadyExists(
                        f"dataset {cmd.name!r} exists; register with create_new_version=True"
                    )
            assert spec is not None
            return asset.decide_register(state, cmd.name, spec, cmd.description)

        return await execute(
            self.store, ctx, kind=kind, aggregate_id=aggregate_id,
            subject=subjects.event(req.workspace, kind, aggregate_id), decide=decide,
            cache=self.cache,
        )  # fmt: skip

    async def _checked_spec(self, req: Request, cmd: Any) -> AssetSpec | None:
        """Refuse what may not be registered; the spec as it will be stored."""
        spec: AssetSpec | None = getattr(cmd, "spec", None)
        if isinstance(cmd, RegisterEnvironment) and cmd.name.startswith(CURATED_PREFIX):
            raise InvalidInput(
                f"the {CURATED_PREFIX!r} prefix is reserved for curated environments"
            )
        if isinstance(cmd, (CreateCompute, DeleteCompute)):
            require_role(self.settings, req.actor, COMPUTE_OPERATORS)
        if isinstance(cmd, RegisterDatastore):
            if cmd.spec.kind == "s3" and not cmd.spec.bucket:
                raise InvalidInput("an S3 datastore needs a bucket")
            if cmd.spec.kind == "local" and not cmd.spec.path:
                raise InvalidInput("a local datastore needs a path")
            sealed = (
                seal(self.settings, req.workspace, cmd.credentials) if cmd.credentials else None
            )
            spec = DatastoreSpec(**{**_fields(cmd.spec), "sealed_credentials": sealed})
        if isinstance(cmd, RegisterDataset):
            await self._check_dataset_paths(req.workspace, cmd.spec)
        if isinstance(cmd, RecordUpload):
            await self._require_datastore(req.workspace, cmd.name)
            if not 0 < len(cmd.files) <= MAX_UPLOAD_RECORD:
                raise InvalidInput(f"record 1 to {MAX_UPLOAD_RECORD} files at a time")
            for f in cmd.files:
                validate_run_path(f.path)
        return spec

    async def _check_dataset_paths(self, ws: str, spec: DatasetSpec) -> None:
        """Every path names a known datastore and stays inside it (wildcards allowed)."""
        if not spec.paths:
            raise InvalidInput("a dataset needs at least one path")
        for f in spec.files:
            validate_run_path(f.path)
            if f.size < 0 or f.datastore not in {p.datastore for p in spec.paths}:
                raise InvalidInput(f"dataset file {f.path!r} is outside the dataset's paths")
        for path in spec.paths:
            validate_run_path(path.pattern)
            await self._require_datastore(ws, path.datastore)

    async def _require_datastore(self, ws: str, name: str) -> None:
        subject = subjects.event(ws, "datastore", subjects.name_to_id(name))
        history = await self.cache.read(subject, bool)
        builtin = builtin_assets(self.settings, ws, "datastore").get(name)
        asset.resolve(
            asset.fold(r.envelope.data for r in history), builtin, "datastore", name, None
        )

    async def get(self, req: Request) -> tuple[dict[str, Any], int]:
        q: GetAsset = req.body
        subject = subjects.event(req.workspace, q.asset_kind, subjects.name_to_id(q.name))
        history = await self.cache.refresh(subject)
        state = asset.fold(r.envelope.data for r in history)
        seq = history[-1].seq if history else 0
        builtin = builtin_assets(self.settings, req.workspace, q.asset_kind).get(q.name)
        ev = asset.resolve(state, builtin, q.asset_kind, q.name, q.version)
        view = _view(ev.name, ev.version, ev.spec, state.latest is None or state.deleted,
                     ev.description)  # fmt: skip
        if q.sealed and isinstance(ev.spec, DatastoreSpec):
            view["sealed_credentials"] = ev.spec.sealed_credentials
        return view, seq

    def list(self, req: Request, db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
        q: ListAssets = req.body
        rows = db.execute(
            f"SELECT name, max(version), spec, description FROM {t('assets')} a"
            " WHERE workspace = ? AND kind = ? AND deleted = 0"
            f" AND version = (SELECT max(version) FROM {t('assets')} b WHERE"
            " b.workspace = a.workspace AND b.kind = a.kind AND b.asset_id = a.asset_id)"
            " GROUP BY asset_id ORDER BY name",
            (req.workspace, q.asset_kind),
        ).fetchall()
        found = {
            name: {
                "name": name,
                "version": v,
                "spec": json.loads(spec),
                "description": d,
                "builtin": False,
            }
            for name, v, spec, d in rows
        }
        for name, spec in builtin_assets(self.settings, req.workspace, q.asset_kind).items():
            found.setdefault(name, _view(name, 1, spec, True))
        return [found[n] for n in sorted(found)]


def _fields(spec: DatastoreSpec) -> dict[str, Any]:
    return {f: getattr(spec, f) for f in spec.__struct_fields__}
