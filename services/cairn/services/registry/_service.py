"""The registry service: model versions (subject CAS), aliases, archive; queries answered from
the aggregate itself (exact, and "as of" any sequence or moment) or from the read model
(listing with tag filters)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from cairn import lookup
from cairn.bus import Connection, Recorded, execute
from cairn.domain import model, run
from cairn.errors import InvalidInput, NotFound
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.assets import ASSET_KINDS, GetAsset, ListAssets
from cairn.proto.commands import Accepted, QueryResult
from cairn.proto.events import ArtifactCommitted, ModelFile
from cairn.proto.paths import validate_run_path
from cairn.proto.registry import (
    ArchiveModelVersion,
    GetModel,
    ListModels,
    ModelAliasHistory,
    ModelLineage,
    RegisterModelVersion,
    SetModelAlias,
)
from cairn.proto.secrets import SECRET_COMMAND_TYPES, SECRET_QUERY_TYPES, ListSecrets
from cairn.rpc import Request, Responder
from cairn.service import ProjectedService
from cairn.services.registry._assets import ASSET_COMMANDS, AssetHandlers
from cairn.services.registry._projection import RegistryProjection
from cairn.services.registry._secrets import SecretHandlers
from cairn.settings import Settings

__all__ = ["RegistryService", "version_view"]


def version_view(state: model.ModelState, version: int) -> dict[str, Any]:
    ev = state.versions[version]
    return {
        "name": ev.name,
        "version": version,
        "description": ev.description,
        "tags": ev.tags,
        "properties": ev.properties,
        "framework": ev.framework,
        "framework_version": ev.framework_version,
        "run_id": ev.source_run_id,
        "source_path": ev.source_path,
        "files": [{"path": f.path, "digest": f.digest, "size": f.size} for f in ev.files],
        "archived": version in state.archived,
        "aliases": sorted(a for a, v in state.aliases.items() if v == version),
    }


class RegistryService(ProjectedService):
    name = "registry"

    def __init__(self, conn: Connection, settings: Settings) -> None:
        super().__init__(conn, settings, RegistryProjection())
        self.assets = AssetHandlers(self.store, self.cache, settings)
        types = (RegisterModelVersion, SetModelAlias, ArchiveModelVersion)
        commands = Responder(
            conn,
            subjects=[subjects.command_filter("model")],
            queue="registry",
            types=types,
            routes={c.VERB: self._command for c in types},
        )
        asset_commands = Responder(
            conn,
            subjects=[subjects.command_filter(kind) for kind in ASSET_KINDS],
            queue="registry",
            types=ASSET_COMMANDS,
            routes={c.VERB: self.assets.command for c in ASSET_COMMANDS},
        )
        asset_queries = Responder(
            conn,
            subjects=[subjects.query_filter("asset")],
            queue="registry",
            types=(GetAsset, ListAssets),
            routes={GetAsset.NAME: self._get_asset, ListAssets.NAME: self._list_assets},
        )
        queries = Responder(
            conn,
            subjects=[subjects.query_filter("model")],
            queue="registry",
            types=(GetModel, ListModels, ModelLineage, ModelAliasHistory),
            routes={
                GetModel.NAME: self._get,
                ListModels.NAME: self._list,
                ModelLineage.NAME: self._lineage,
                ModelAliasHistory.NAME: self._alias_history,
            },
        )
        self.secrets = SecretHandlers(
            self.store,
            self.cache,
            settings,
            wait_for=lambda seq: self.projection.wait_for(seq, timeout=30.0),
            read_model=lambda fn: self.projection.read(fn)[0],
        )
        secret_commands = Responder(
            conn,
            subjects=[subjects.command_filter("secret")],
            queue="registry",
            types=SECRET_COMMAND_TYPES,
            routes={c.VERB: self.secrets.command for c in SECRET_COMMAND_TYPES},
        )
        secret_queries = Responder(
            conn,
            subjects=[subjects.query_filter("secret")],
            queue="registry",
            types=SECRET_QUERY_TYPES,
            routes={ListSecrets.NAME: self._list_secrets},
        )
        self.responders = [
            commands,
            queries,
            asset_commands,
            asset_queries,
            secret_commands,
            secret_queries,
        ]

    # -- commands -------------------------------------------------------------------------

    async def _source_files(self, ws: str, cmd: RegisterModelVersion) -> list[ModelFile]:
        """The committed files ``cmd.path`` names in its run or staging area: never a URI, a
        local path or a digest the client made up."""
        if (cmd.run_id is None) == (cmd.staging_id is None):
            raise InvalidInput("name exactly one of run_id and staging_id as the source")
        path = validate_run_path(cmd.path)
        kind, owner = ("run", cmd.run_id) if cmd.run_id else ("staging", cmd.staging_id)
        assert owner is not None

        def names_the_file(h: list[Recorded]) -> bool:
            # a committed file is for good: a cached history that has it is enough (a folder
            # may still be growing, so naming one reads the log)
            events = (r.envelope.data for r in h)
            return any(isinstance(e, ArtifactCommitted) and e.path == path for e in events)

        subject = subjects.event(ws, kind, owner)
        history = await self.cache.read(subject, names_the_file)
        if kind == "run" and not self.cache.state(subject, run.AGGREGATE, history).exists:
            raise NotFound(f"run {owner} does not exist")
        files = [
            ModelFile(path=e.path, digest=e.digest, size=e.size)
            for e in (r.envelope.data for r in history)
            if isinstance(e, ArtifactCommitted)
            and (e.path == path or e.path.startswith(path + "/"))
        ]
        if not files:
            raise NotFound(f"no file committed at {path!r} in {kind} {owner}")
        return files

    async def _run_lineage(self, ws: str, run_id: str | None) -> tuple[list[str], str | None]:
        """The dataset versions a run read and the environment it ran in (a job's; none for
        a run logged interactively)."""
        if run_id is None:
            return [], None
        job = (await lookup.state(self.cache, run.AGGREGATE, ws, run_id)).job
        if job is None:
            return [], None
        datasets = [f"{i.dataset}:{i.version}" for i in job.inputs if i.dataset]
        env = job.environment
        environment = None
        if env is not None:
            environment = f"{env.name}:{env.version}" if env.name else env.spec_hash
        return datasets, environment

    async def _command(self, req: Request) -> Accepted:
        cmd: RegisterModelVersion | SetModelAlias | ArchiveModelVersion = req.body
        command: model.ModelCommand
        match cmd:
            case RegisterModelVersion():
                files = await self._source_files(req.workspace, cmd)
                datasets, environment = await self._run_lineage(req.workspace, cmd.run_id)
                command = model.RegisterResolvedModel(
                    command=cmd, files=files, datasets=datasets, environment=environment
                )
            case _:
                command = cmd
        model_id = subjects.name_to_id(cmd.name)
        ctx = req.context()
        # a busy name meets many conflicts between replicas: more attempts than the default
        return await execute(ctx, model.AGGREGATE, model_id, command, cache=self.cache, attempts=64)

    # -- queries --------------------------------------------------------------------------

    async def _state(
        self, ws: str, name: str, as_of: GetModel | None = None
    ) -> tuple[model.ModelState, int]:
        """The model folded from its events: all of them, or those up to ``as_of``'s moment
        (stored by then, by the server's clock, as every ``as_of`` reads)."""
        history = await self.store.read_as_of(
            subjects.event(ws, model.KIND, subjects.name_to_id(name)),
            up_to_seq=as_of.as_of_seq if as_of else None,
            up_to_time=as_of.as_of_time if as_of else None,
        )
        if not history:
            raise NotFound(f"no model called {name!r}" + (as_of.then() if as_of else ""))
        return _fold(history), history[-1].seq

    async def _get(self, req: Request) -> QueryResult:
        q: GetModel = req.body
        state, seq = await self._state(req.workspace, q.name, q)
        version = model.resolve(state, q.name, q.version, q.alias)
        return QueryResult(seq=seq, data=version_view(state, version))

    async def _lineage(self, req: Request) -> QueryResult:
        q: ModelLineage = req.body
        state, seq = await self._state(req.workspace, q.name)
        view = version_view(state, model.resolve(state, q.name, q.version, None))
        lineage: dict[str, Any] = {"model": view, "run": None, "datasets": [], "environment": None}
        if view["run_id"]:
            history = await self.store.read(subjects.event(req.workspace, run.KIND, view["run_id"]))
            r = run.AGGREGATE.fold(e.envelope.data for e in history)
            lineage["run"] = {
                "run_id": r.run_id,
                "experiment_id": r.experiment_id,
                "status": r.status.value,
            }
            ev = state.versions[q.version]
            lineage["datasets"], lineage["environment"] = ev.datasets, ev.environment
        return QueryResult(seq=seq, data=lineage)

    async def _alias_history(self, req: Request) -> QueryResult:
        q: ModelAliasHistory = req.body
        history = await self.store.read(
            subjects.event(req.workspace, model.KIND, subjects.name_to_id(q.name))
        )
        if not history:
            raise NotFound(f"no model called {q.name!r}")
        moves = model.alias_moves(r.envelope.data for r in history)
        data = [
            {
                "alias": move.alias,
                "version": move.version,
                "previous": move.previous,
                "at": history[move.index].envelope.timestamp.isoformat(),
                "by": history[move.index].envelope.actor,
                "seq": history[move.index].seq,
            }
            for move in moves
        ]
        return QueryResult(seq=history[-1].seq, data=data)

    async def _get_asset(self, req: Request) -> QueryResult:
        data, seq = await self.assets.get(req)
        return QueryResult(seq=seq, data=data)

    async def _list_assets(self, req: Request) -> QueryResult:
        q: ListAssets = req.body
        of_kind = subjects.events_of_kind_in(req.workspace, q.asset_kind)
        if q.name is not None:  # that asset's versions: its own subject
            of_kind = subjects.event(req.workspace, q.asset_kind, subjects.name_to_id(q.name))
        found = await self.read_at(req, lambda db, t: self.assets.list(req, db, t), of_kind)
        if q.name is not None and not found.data:
            raise NotFound(f"no {q.asset_kind} called {q.name!r}" + q.then())
        return found

    async def _list_secrets(self, req: Request) -> QueryResult:
        self.secrets.check_list(req)
        return await self.read(req, lambda db, t: self.secrets.list(req, db, t))

    async def _list(self, req: Request) -> QueryResult:
        q: ListModels = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            sql = (
                f"SELECT m.name, m.version, m.description, m.tags, m.properties, m.framework,"
                f" m.framework_version, m.run_id, m.archived, m.created_at, m.created_by,"
                f" (SELECT json_group_array(a.alias) FROM {t('aliases')} a"
                "   WHERE a.workspace = m.workspace AND a.model_id = m.model_id"
                "   AND a.version = m.version)"
                f" FROM {t('models')} m WHERE m.workspace = ?"
            )
            args: list[Any] = [req.workspace]
            if q.name is not None:
                sql += " AND m.model_id = ?"
                args.append(subjects.name_to_id(q.name))
            if not q.include_archived:
                sql += " AND m.archived = 0"
            for key, value in q.tags.items():
                sql += " AND json_extract(m.tags, '$.' || json_quote(?)) = ?"
                args += [key, value]
            if q.latest:
                sql += (
                    f" AND m.version = (SELECT max(version) FROM {t('models')} x"
                    " WHERE x.workspace = m.workspace AND x.model_id = m.model_id"
                    + ("" if q.include_archived else " AND x.archived = 0")
                    + ")"
                )
            sql += " ORDER BY m.name, m.version"
            keys = (
                *("name", "version", "description", "tags", "properties", "framework"),
                *("framework_version", "run_id", "archived", "created_at", "created_by"),
                "aliases",
            )
            out = []
            for row in db.execute(sql, args):
                item = dict(zip(keys, row, strict=True))
                for k in ("tags", "properties", "aliases"):
                    item[k] = json.loads(item[k])
                item["archived"] = bool(item["archived"])
                out.append(item)
            return out

        models = subjects.events_of_kind_in(req.workspace, model.KIND)
        return await self.read_at(req, fn, models)


def _fold(history: list[Recorded]) -> model.ModelState:
    return model.AGGREGATE.fold(r.envelope.data for r in history)
