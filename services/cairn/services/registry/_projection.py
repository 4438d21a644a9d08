"""The registry read model: model versions and current aliases, for listing and filtering."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import msgspec

from cairn.projection import Delivered, Tables, events_of
from cairn.proto.assets import ASSET_KINDS, AssetSpec, DatastoreSpec
from cairn.proto.events import (
    AssetDeleted,
    AssetRegistered,
    Envelope,
    Event,
    ModelAliasSet,
    ModelVersionArchived,
    ModelVersionRegistered,
    ModelVersionRestored,
    SecretDeleted,
    SecretRead,
    SecretResealed,
    SecretSet,
)
from cairn.proto.secrets import SECRET_KIND

__all__ = ["RegistryProjection", "public_spec"]


class RegistryProjection:
    name = "registry"
    version = 3
    tables: tuple[str, ...] = ("models", "aliases", "assets", "secrets")
    source = events_of("model", *ASSET_KINDS, SECRET_KIND)

    def create(self, db: sqlite3.Connection, t: Tables) -> None:
        db.execute(
            f"CREATE TABLE {t('models')} (workspace TEXT, model_id TEXT, name TEXT,"
            " version INTEGER, description TEXT, tags TEXT, properties TEXT, framework TEXT,"
            " framework_version TEXT, run_id TEXT, files TEXT, archived INTEGER,"
            " created_at TEXT, created_by TEXT, seq INTEGER,"
            " PRIMARY KEY (workspace, model_id, version))"
        )
        db.execute(
            f"CREATE TABLE {t('aliases')} (workspace TEXT, model_id TEXT, alias TEXT,"
            " version INTEGER, PRIMARY KEY (workspace, model_id, alias))"
        )
        db.execute(
            f"CREATE TABLE {t('assets')} (workspace TEXT, kind TEXT, asset_id TEXT, name TEXT,"
            " version INTEGER, spec TEXT, description TEXT, deleted INTEGER, created_at TEXT,"
            " created_by TEXT, PRIMARY KEY (workspace, kind, asset_id, version))"
        )
        # a secret's name, version and who set it when, how often it was read: never a value
        db.execute(
            f"CREATE TABLE {t('secrets')} (workspace TEXT, secret_id TEXT, name TEXT,"
            " version INTEGER, key_id TEXT, deleted INTEGER, updated_at TEXT, updated_by TEXT,"
            " reads INTEGER, last_read_at TEXT, last_read_by TEXT,"
            " PRIMARY KEY (workspace, secret_id))"
        )

    def apply(self, db: sqlite3.Connection, t: Tables, item: Delivered[Envelope[Event]]) -> None:
        env = item.value
        if env.aggregate_kind in ASSET_KINDS:
            self._apply_asset(db, t, env)
            return
        if env.aggregate_kind == SECRET_KIND:
            self._apply_secret(db, t, env)
            return
        if env.aggregate_kind != "model":
            return
        key = (env.workspace, env.aggregate_id)
        match env.data:
            case ModelVersionRegistered() as ev:
                files = json.dumps(
                    [{"path": f.path, "digest": f.digest, "size": f.size} for f in ev.files]
                )
                db.execute(
                    f"INSERT OR IGNORE INTO {t('models')} VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?,?,?)",
                    (
                        *key,
                        ev.name,
                        ev.version,
                        ev.description,
                        json.dumps(ev.tags),
                        json.dumps(ev.properties),
                        ev.framework,
                        ev.framework_version,
                        ev.source_run_id,
                        files,
                        env.timestamp.isoformat(),
                        env.actor,
                        item.seq,
                    ),
                )
            case ModelAliasSet(alias=alias, version=version):
                db.execute(
                    f"INSERT INTO {t('aliases')} VALUES (?,?,?,?) ON CONFLICT"
                    " (workspace, model_id, alias) DO UPDATE SET version = excluded.version",
                    (*key, alias, version),
                )
            case ModelVersionArchived(version=v) | ModelVersionRestored(version=v):
                archived = int(isinstance(env.data, ModelVersionArchived))
                db.execute(
                    f"UPDATE {t('models')} SET archived = ? WHERE workspace = ? AND model_id = ?"
                    " AND version = ?",
                    (archived, *key, v),
                )

    def _apply_asset(self, db: sqlite3.Connection, t: Tables, env: Envelope[Event]) -> None:
        key = (env.workspace, env.aggregate_kind, env.aggregate_id)
        match env.data:
            case AssetRegistered() as ev:
                db.execute(
                    f"INSERT OR IGNORE INTO {t('assets')} VALUES (?,?,?,?,?,?,?,0,?,?)",
                    (
                        *key,
                        ev.name,
                        ev.version,
                        json.dumps(public_spec(ev.spec)),
                        ev.description,
                        env.timestamp.isoformat(),
                        env.actor,
                    ),
                )
            case AssetDeleted():
                db.execute(
                    f"UPDATE {t('assets')} SET deleted = 1 WHERE workspace=? AND kind=?"
                    " AND asset_id=?",
                    key,
                )

    def _apply_secret(self, db: sqlite3.Connection, t: Tables, env: Envelope[Event]) -> None:
        key = (env.workspace, env.aggregate_id)
        at = env.timestamp.isoformat()
        match env.data:
            case SecretSet(name=name, version=version, key_id=key_id):
                db.execute(
                    f"INSERT INTO {t('secrets')} VALUES (?,?,?,?,?,0,?,?,0,NULL,NULL)"
                    " ON CONFLICT (workspace, secret_id) DO UPDATE SET name = excluded.name,"
                    " version = excluded.version, key_id = excluded.key_id, deleted = 0,"
                    " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                    (*key, name, version, key_id, at, env.actor),
                )
            case SecretResealed(key_id=key_id):
                db.execute(
                    f"UPDATE {t('secrets')} SET key_id = ? WHERE workspace = ? AND secret_id = ?",
                    (key_id, *key),
                )
            case SecretDeleted():
                db.execute(
                    f"UPDATE {t('secrets')} SET deleted = 1, updated_at = ?, updated_by = ?"
                    " WHERE workspace = ? AND secret_id = ?",
                    (at, env.actor, *key),
                )
            case SecretRead(reader=reader):
                db.execute(
                    f"UPDATE {t('secrets')} SET reads = reads + 1, last_read_at = ?,"
                    " last_read_by = ? WHERE workspace = ? AND secret_id = ?",
                    (at, reader, *key),
                )


def public_spec(spec: AssetSpec) -> dict[str, Any]:
    """A spec as replies show it: sealed credentials replaced by whether there are any."""
    out: dict[str, Any] = msgspec.to_builtins(spec)
    if isinstance(spec, DatastoreSpec):
        out["has_credentials"] = out.pop("sealed_credentials", None) is not None
    return out
