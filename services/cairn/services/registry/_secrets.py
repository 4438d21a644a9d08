"""Workspace secrets and key rotation in the registry service (which holds the workspace keys).

A value is sealed here before anything is decided or stored, and opened here only to answer a
``ReadSecret`` whose ``SecretRead`` event is already in the log. Nothing logged or answered to a
query holds a value or a sealed token.

Who may do what (the second gate, after the server's subject permissions): people with the
data-scientist role set, read, delete, rotate and list; auditors list names only; members of
the services' account (services, agents and the jobs they run) act as the actor ``cairn``
and may read (the server lets agents send ``secret.read`` only).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from cairn import lookup
from cairn.bus import AggregateCache, CommandContext, EventStore, execute
from cairn.domain import asset, secret, webhook
from cairn.errors import CairnError, ConcurrencyConflict, PermissionDenied
from cairn.log import get_logger
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.assets import DatastoreSpec
from cairn.proto.commands import Accepted, QueryResult
from cairn.proto.events import SecretRead
from cairn.proto.secrets import (
    SECRET_KIND,
    DeleteSecret,
    ReadSecret,
    RotateWorkspaceKey,
    SetSecret,
    check_secret_name,
    check_secret_value,
)
from cairn.proto.webhooks import WEBHOOK_KIND
from cairn.rpc import SERVICE_ACTOR, Request
from cairn.secrets import (
    add_key,
    drop_keys,
    key_id_of,
    require_any_role,
    rotation_key_id,
    seal,
    seal_text,
    sealing,
    unseal,
    unseal_text,
)
from cairn.settings import Settings

__all__ = ["SecretHandlers"]

log = get_logger("cairn.registry.secrets")

#: the roles (as ``roles.json`` names them) that may change and read secrets, or list them
WRITERS = ("data_scientists",)
LISTERS = ("data_scientists", "auditors")

SecretWire = SetSecret | DeleteSecret | ReadSecret | RotateWorkspaceKey
#: waits until the read model has applied a stream sequence
WaitFor = Callable[[int], Awaitable[object]]
#: runs a function on the read model
ReadModel = Callable[[Callable[[sqlite3.Connection, Tables], Any]], Any]


def _derived_id(command_id: str, *parts: object) -> str:
    """A command id for one step of a command (a rotation re-seals many aggregates, each
    under an id of its own, the same on a retry)."""
    text = "/".join(map(str, (command_id, *parts)))
    return "rs" + hashlib.sha256(text.encode()).hexdigest()[:40]


class SecretHandlers:
    def __init__(
        self,
        store: EventStore,
        cache: AggregateCache,
        settings: Settings,
        *,
        wait_for: WaitFor,
        read_model: ReadModel,
    ) -> None:
        self.store, self.cache, self.settings = store, cache, settings
        self.wait_for, self.read_model = wait_for, read_model
        self._rotations: dict[str, asyncio.Lock] = {}

    def _allow(self, req: Request, roles: tuple[str, ...], what: str) -> None:
        if req.actor != SERVICE_ACTOR:
            require_any_role(self.settings, req.actor, roles, what)

    # -- commands -------------------------------------------------------------------------

    async def command(self, req: Request) -> Accepted | QueryResult:
        cmd: SecretWire = req.body
        match cmd:
            case SetSecret(name=name, value=value):
                self._allow(req, WRITERS, "set secrets")
                check_secret_name(name)
                check_secret_value(value)
                async with sealing(self.settings, req.workspace):
                    sealed = seal_text(self.settings, req.workspace, value)
                    store = secret.StoreValue(name=name, sealed=sealed, key_id=_key_id(sealed))
                    return await self._execute(req, name, store)
            case DeleteSecret(name=name):
                self._allow(req, WRITERS, "delete secrets")
                return await self._execute(req, check_secret_name(name), cmd)
            case ReadSecret():
                return await self._read(req, cmd)
            case RotateWorkspaceKey():
                self._allow(req, WRITERS, "rotate the workspace key")
                return await self._rotate(req, cmd)

    async def _execute(self, req: Request, name: str, command: secret.SecretCommand) -> Accepted:
        return await execute(
            req.context(), secret.AGGREGATE, subjects.name_to_id(name), command, cache=self.cache
        )

    async def _read(self, req: Request, cmd: ReadSecret) -> QueryResult:
        """Append ``SecretRead`` first; answer with the value only once it is stored."""
        self._allow(req, WRITERS, "read secrets")
        if cmd.run_id is not None:  # the reading run must exist here and still be going
            run = await lookup.run_state(self.cache, req.workspace, cmd.run_id, fresh=True)
            if run.status.terminal:
                raise PermissionDenied(f"run {cmd.run_id} has ended: it reads no more secrets")
        name = check_secret_name(cmd.name)
        read = secret.ReadValue(name=name, reader=req.actor, run_id=cmd.run_id)
        accepted = await self._execute(req, name, read)
        version, sealed = await self._value_of(req.workspace, name, accepted.seq)
        value = unseal_text(self.settings, req.workspace, sealed)
        data = {"name": name, "version": version, "value": value}
        return QueryResult(seq=accepted.seq, data=data)

    async def _value_of(self, ws: str, name: str, seq: int) -> tuple[int, str]:
        """The version the read at ``seq`` recorded, and its sealed value."""
        subject = subjects.event(ws, SECRET_KIND, subjects.name_to_id(name))
        history = self.cache.get(subject) or []
        if not any(r.seq == seq for r in history):
            history = await self.cache.refresh(subject)
        event = next((r.envelope.data for r in history if r.seq == seq), None)
        state = self.cache.state(subject, secret.AGGREGATE, history)
        if not isinstance(event, SecretRead):
            raise CairnError(f"the read of secret {name!r} is not at sequence {seq}")
        if state.sealed is None or state.version != event.version:
            raise ConcurrencyConflict(f"secret {name!r} changed since this read; read it again")
        return event.version, state.sealed

    # -- rotation -------------------------------------------------------------------------

    async def _rotate(self, req: Request, cmd: RotateWorkspaceKey) -> Accepted:
        """New key current, every live value re-sealed under it (an event each), the old
        keys dropped; then ``WorkspaceKeyRotated`` under the command's id. A retried command
        whose rotation is in the log gets its reply again and rotates nothing."""
        ws = req.workspace
        keyring_subject = subjects.event(ws, secret.KEYRING.kind, ws)
        lock = self._rotations.setdefault(ws, asyncio.Lock())
        async with lock:
            done = self.cache.caused_by(
                keyring_subject, await self.cache.refresh(keyring_subject), cmd.command_id
            )
            if done is not None:
                return Accepted(
                    command_id=cmd.command_id, aggregate_id=ws, seq=done.seq, replayed=True
                )
            # the key's id from the command's: a copy of this command run again (resent, or
            # on another replica of this service) adds no second key and drops none it needs
            key_id = rotation_key_id(ws, cmd.command_id)
            key_id, previous = await asyncio.to_thread(add_key, self.settings, ws, key_id)
            log.info("workspace_key_added", key_id=key_id, previous=previous)
            secrets_n, stores_n = await self._reseal_all(req, key_id)
            dropped: list[str] = []
            if not cmd.keep_old_keys:
                # a value sealed under an old key just before the switch may have landed since
                more = await self._reseal_all(req, key_id)
                secrets_n, stores_n = secrets_n + more[0], stores_n + more[1]
                dropped = await asyncio.to_thread(drop_keys, self.settings, ws, key_id)
                log.info("workspace_keys_dropped", key_id=key_id, dropped=dropped)
            record = secret.RecordRotation(
                key_id=key_id,
                previous=previous,
                dropped=dropped,
                resealed_secrets=secrets_n,
                resealed_datastores=stores_n,
            )
            return await execute(req.context(), secret.KEYRING, ws, record, cache=self.cache)

    async def _reseal_all(self, req: Request, key_id: str) -> tuple[int, int]:
        ws = req.workspace
        await self.wait_for(await self.store.last_seq())  # every secret and datastore named

        def names(db: sqlite3.Connection, t: Tables) -> tuple[list[str], list[str]]:
            secrets = db.execute(
                f"SELECT name FROM {t('secrets')} WHERE workspace = ? AND deleted = 0"
                " ORDER BY name",
                (ws,),
            ).fetchall()
            stores = db.execute(
                f"SELECT DISTINCT asset_id FROM {t('assets')} WHERE workspace = ?"
                " AND kind = 'datastore' ORDER BY asset_id",
                (ws,),
            ).fetchall()
            return [r[0] for r in secrets], [r[0] for r in stores]

        secret_names, datastore_ids = self.read_model(names)
        secrets_n = 0
        for name in secret_names:
            secrets_n += await self._reseal_secret(req, name, key_id)
        stores_n = 0
        for datastore_id in datastore_ids:
            stores_n += await self._reseal_datastore(req, datastore_id, key_id)
        await self._reseal_webhooks(req, key_id)
        return secrets_n, stores_n

    async def _reseal_webhooks(self, req: Request, key_id: str) -> None:
        """Every live webhook's signing secret sealed again under ``key_id`` (an event each:
        ``WebhookSecretResealed``), read from the log (the webhooks service owns no read
        model here)."""
        ws = req.workspace
        filt = subjects.event(ws, WEBHOOK_KIND, "x").removesuffix(".x") + ".*"
        ids: dict[str, None] = {}
        after = 0
        while page := await self.store.page(filt, after_seq=after, limit=256):
            ids.update((subject.rsplit(".", 1)[1], None) for _, subject, _ in page)
            after = page[-1][0]
        for webhook_id in ids:
            state = await lookup.state(self.cache, webhook.AGGREGATE, ws, webhook_id, fresh=True)
            if not state.live or state.sealed_secret is None or state.key_id == key_id:
                continue
            try:
                value = unseal_text(self.settings, ws, state.sealed_secret)
            except CairnError as exc:  # its key is gone: nothing can open it any more
                log.warning("webhook_secret_unopenable", webhook=webhook_id, error=exc.message)
                continue
            async with sealing(self.settings, ws):  # sealed until stored, as any value
                sealed = seal_text(self.settings, ws, value)
                command = webhook.ResealSecret(sealed=sealed, key_id=_key_id(sealed))
                await execute(
                    self._step(req, WEBHOOK_KIND, webhook_id, state.key_id),
                    webhook.AGGREGATE,
                    webhook_id,
                    command,
                    cache=self.cache,
                )

    async def _reseal_secret(self, req: Request, name: str, key_id: str) -> int:
        ws = req.workspace
        state = await lookup.state(
            self.cache, secret.AGGREGATE, ws, subjects.name_to_id(name), fresh=True
        )
        if state.sealed is None or state.key_id == key_id:
            return 0
        try:
            value = unseal_text(self.settings, ws, state.sealed)
        except CairnError as exc:  # its key is gone: nothing can open it any more
            log.warning("secret_unopenable", name=name, key_id=state.key_id, error=exc.message)
            return 0
        # sealed until stored, as any value: another rotation's new key waits for it
        async with sealing(self.settings, ws):
            sealed = seal_text(self.settings, ws, value)
            command = secret.ResealValue(
                name=name, version=state.version, sealed=sealed, key_id=_key_id(sealed)
            )
            reply = await execute(
                self._step(req, SECRET_KIND, name, state.version),
                secret.AGGREGATE,
                subjects.name_to_id(name),
                command,
                cache=self.cache,
            )
        return 0 if reply.replayed else 1

    async def _reseal_datastore(self, req: Request, datastore_id: str, key_id: str) -> int:
        ws = req.workspace
        datastores = asset.aggregate("datastore")
        state = await lookup.state(self.cache, datastores, ws, datastore_id, fresh=True)
        count = 0
        for version, ev in sorted(state.versions.items()):
            spec = ev.spec
            if not isinstance(spec, DatastoreSpec) or spec.sealed_credentials is None:
                continue
            token = spec.sealed_credentials
            if key_id_of(token) == key_id:
                continue
            try:
                credentials = unseal(self.settings, ws, token)
            except CairnError as exc:
                log.warning(
                    "credentials_unopenable", datastore=ev.name, version=version, error=exc.message
                )
                continue
            async with sealing(self.settings, ws):  # sealed until stored, as any value
                sealed = seal(self.settings, ws, credentials)
                command = asset.ResealCredentials(
                    name=ev.name,
                    version=version,
                    replaces=token,
                    sealed=sealed,
                    key_id=_key_id(sealed),
                )
                reply = await execute(
                    self._step(req, "datastore", datastore_id, version),
                    datastores,
                    datastore_id,
                    command,
                    cache=self.cache,
                )
            count += 0 if reply.replayed else 1
        return count

    def _step(self, req: Request, *parts: object) -> CommandContext:
        ctx = req.context()
        ctx.command_id = _derived_id(ctx.command_id, *parts)
        return ctx

    # -- queries --------------------------------------------------------------------------

    def check_list(self, req: Request) -> None:
        self._allow(req, LISTERS, "list secrets")

    def list(self, req: Request, db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
        """The live secrets' names, versions, key ids, when and by whom last set and read."""
        keys = ("name", "version", "key_id", "updated_at", "updated_by", "reads", "last_read_at")
        rows = db.execute(
            f"SELECT {', '.join(keys)} FROM {t('secrets')} WHERE workspace = ? AND deleted = 0"
            " ORDER BY name",
            (req.workspace,),
        ).fetchall()
        return [dict(zip(keys, row, strict=True)) for row in rows]


def _key_id(token: str) -> str:
    key_id = key_id_of(token)
    assert key_id is not None  # what this process seals names its key
    return key_id
